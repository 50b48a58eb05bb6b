"""``swap-mask``: occlusion-aware face masks (train a segmenter, apply it, import painted masks).

    swap-mask train FACESET [FACESET ...] out=masks.safetensors [mask=visible size=128 steps=1500 ...]
    swap-mask apply FACESET model=masks.safetensors [name=segment union=[user_add] subtract=[user_remove]]
    swap-mask apply FACESET hull=both                  # the extractor's landmark hulls, for a set without them
    swap-mask import FACESET dir=PNG_DIR [name=segment]        # painted masks -> user_segment
    swap-mask convert face_parsing.pth out=face_parsing.safetensors

``apply`` also takes a public 19-class face-parsing checkpoint (``model=79999_iter.pth``);
``include=[glasses,hair]`` widens its face classes. It never writes ``user_*`` masks, so a
hand edit survives any rerun. Details: ``docs/masks.md``. Exit codes: 0 ok, 2 bad input (one
line on stderr), 3 other I/O errors.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from omegaconf import OmegaConf

from progressive_swap import faceset
from progressive_swap.cli.common import UserError, parse_overrides, run_cli, split_positional, usage
from progressive_swap.cli.schema import closest
from progressive_swap.core.progress import DEFAULT_EVERY, Progress
from progressive_swap.faceset.format import software_version
from progressive_swap.masks import segment
from progressive_swap.masks.bisenet import BiSeNet
from progressive_swap.masks.hull import LANDMARK_MASKS
from progressive_swap.masks.weights import face_class_indices, load_segmenter, save_segmenter

PROG = "swap-mask"


@dataclass
class TrainOptions:
    """Options of ``swap-mask train``."""

    out: str = ""
    """Weights file to write (``.safetensors``; required)."""
    mask: str = "visible"
    """Mask kind to learn (a user's ``user_<mask>`` is preferred where present)."""
    val: list[str] = field(default_factory=list)
    """Held-out face sets; empty: hold out ``val_fraction`` of the training faces."""
    val_fraction: float = field(default=0.1, metadata={"min": 0.0})
    """Share of the training faces held out when val is empty."""
    size: int = field(default=128, metadata={"min": 32})
    """Training and inference resolution (multiple of 32)."""
    steps: int = field(default=1500, metadata={"min": 1})
    """Optimizer steps."""
    batch: int = field(default=8, metadata={"min": 1})
    """Faces per step."""
    lr: float = field(default=2e-3, metadata={"gt": 0.0})
    """Learning rate."""
    encoder: str = "tu-mobilenetv3_small_100"
    """Any segmentation-models-pytorch encoder name (built without downloaded weights)."""
    context_channels: int = 64
    """Channels of the context path."""
    fuse_channels: int = 64
    """Channels of the feature fusion."""
    aux_channels: int = 32
    """Channels of the auxiliary heads."""
    loss: Literal["dice+bce", "dice+focal"] = "dice+bce"
    """``dice+bce`` or ``dice+focal``."""
    occluders: float = field(default=0.5, metadata={"min": 0.0})
    """Probability of pasting a random occluder on a training face."""
    workers: int = field(default=0, metadata={"min": 0})
    """Loader processes."""
    minutes: float = field(default=0.0, metadata={"min": 0.0})
    """Stop after this many minutes (0: run all steps)."""
    threads: int = field(default=0, metadata={"min": 0})
    """torch CPU threads (0: torch's default)."""
    device: str = "auto"
    """auto (CUDA if available), cpu, cuda, cuda:N."""
    seed: int = field(default=0, metadata={"min": 0})
    """Seed of the held-out split, the weights and the augmentation."""
    progress_every: float = field(default=DEFAULT_EVERY, metadata={"min": 0.0})
    """Seconds between progress lines when stderr is not a terminal (0: every step)."""


@dataclass
class ApplyOptions:
    """Options of ``swap-mask apply``."""

    model: str = ""
    """Weights: ours (``.safetensors``) or a public face-parsing ``.pth`` (required unless hull=)."""
    hull: Literal["", "components", "extended", "both"] = ""
    """Instead of a model: write the extractor's landmark hull masks (components, extended or both)."""
    name: str = "segment"
    """Mask kind to write (never a ``user_*`` name)."""
    union: list[str] = field(default_factory=lambda: ["user_add"])
    """Masks added to the prediction (max), where a face has them."""
    subtract: list[str] = field(default_factory=lambda: ["user_remove"])
    """Masks cut from it (``m * (1 - s)``)."""
    intersect: list[str] = field(default_factory=list)
    """Masks that bound it (product), e.g. ``[hull]``."""
    include: list[str] = field(default_factory=list)
    """Multi-class models: extra face classes or groups (glasses, ears, hair)."""
    classes: list[str] = field(default_factory=list)
    """Multi-class models: replace the default face classes entirely."""
    size: int = field(default=0, metadata={"min": 0})
    """Inference resolution; 0: the model's own."""
    batch: int = field(default=8, metadata={"min": 1})
    """Faces per forward pass."""
    device: str = "auto"
    """auto (CUDA if available), cpu, cuda, cuda:N."""
    progress_every: float = field(default=DEFAULT_EVERY, metadata={"min": 0.0})
    """Seconds between progress lines when stderr is not a terminal (0: every batch)."""


@dataclass
class ImportOptions:
    """Options of ``swap-mask import``."""

    dir: str = ""
    """Directory of painted masks named ``<face id>.png`` (required)."""
    name: str = "segment"
    """Mask kind they edit; stored as ``user_<name>``."""


@dataclass
class ConvertOptions:
    """Options of ``swap-mask convert``."""

    out: str = ""
    """The .safetensors file to write (required)."""
    encoder: str = ""
    """Encoder of a checkpoint without metadata (default resnet18)."""


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional paths and ``key=value`` overrides (a path may hold ``=``: ``faces/run=1``)."""
    return split_positional(argv)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _open_sets(paths: Sequence[str], verify: bool = False) -> list:
    """Open the face sets; ``verify``: for writing masks into them (a damaged set is refused)."""
    if not paths:
        raise UserError("give at least one FACESET directory")
    return [faceset.open(p, verify=verify) for p in paths]


def cmd_train(argv: Sequence[str]) -> int:
    import torch


    paths, kv = _split(argv)
    opt = parse_overrides(kv, TrainOptions(), PROG)
    if not opt.out:
        raise UserError("out=FILE.safetensors is required")
    if not opt.out.endswith(".safetensors"):
        raise UserError(f"out must end in .safetensors, got {opt.out!r}")
    if opt.size % 32 or opt.size < 32:
        raise UserError(f"size must be a multiple of 32, got {opt.size}")
    if opt.threads:
        torch.set_num_threads(opt.threads)
    faces = segment.faces_with_mask(_open_sets(paths), opt.mask)
    if opt.val:
        train, held = faces, segment.faces_with_mask(_open_sets(list(opt.val)), opt.mask)
    else:
        train, held = segment.split_faces(faces, opt.val_fraction, opt.seed)
    torch.manual_seed(opt.seed)
    model = BiSeNet(1, opt.encoder, opt.context_channels, opt.fuse_channels, opt.aux_channels).to(_device(opt.device))
    print(f"{PROG}: training on {len(train)} faces, evaluating on {len(held)}", file=sys.stderr)
    with Progress(opt.progress_every) as bar:
        task = bar.task("mask train", opt.steps * opt.batch, "faces")
        r = segment.train_segmenter(
            model, train, held, mask_name=opt.mask, size=opt.size, steps=opt.steps, batch=opt.batch, lr=opt.lr,
            loss=opt.loss, occluder_p=opt.occluders, workers=opt.workers, max_minutes=opt.minutes, seed=opt.seed,
            log=lambda s: print(s, file=sys.stderr),
            on_step=lambda k, n: task.update(k * opt.batch, total=n * opt.batch),
        )
    summary = {"out": opt.out, "steps": r.steps, "seconds": round(r.seconds, 1), "before": r.before, "after": r.after}
    meta = {"options": OmegaConf.to_container(opt),
            "train_faces": len(train), "held_out": r.after, "steps": r.steps, "seconds": r.seconds,
            "mask": opt.mask, "created_by": software_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_segmenter(r.model.cpu(), opt.out, labels=[opt.mask], input_size=opt.size, metadata=meta)
    print(json.dumps(summary, indent=1))
    return 0


_OPTIONAL_EDITS = ("user_add", "user_remove")  # the defaults: applied where a hand edit exists, often nowhere yet


def _check_mask_names(sets: list, opt: Any) -> None:
    """Every mask named in union=/subtract=/intersect= must exist in each face set (the default
    user edits excepted)."""
    for key in ("union", "subtract", "intersect"):
        for m in getattr(opt, key):
            if m in _OPTIONAL_EDITS and key != "intersect":
                continue
            for fs in sets:
                if m not in fs.mask_names:
                    raise UserError(
                        f"{key}=[{m}]: face set {str(fs.root)!r} has no {m!r} masks"
                        f"{closest(m, fs.mask_names)}; it has: {', '.join(fs.mask_names) or 'none'}"
                    )


_HULL_ONLY = ("model", "name", "union", "subtract", "intersect", "include", "classes", "size")  # segmenter options


def cmd_apply(argv: Sequence[str]) -> int:
    paths, kv = _split(argv)
    opt = parse_overrides(kv, ApplyOptions(), PROG)
    if opt.hull:
        return _apply_hulls(paths, opt)
    if not opt.model:
        raise UserError("model=WEIGHTS is required (or hull=components|extended|both for landmark masks)")
    sets = _open_sets(paths, verify=True)
    _check_mask_names(sets, opt)  # a misspelt name would silently do nothing
    model, info = load_segmenter(opt.model)
    model = model.to(_device(opt.device))
    idx = face_class_indices(info.labels, include=list(opt.include), classes=list(opt.classes) or None)
    size = opt.size or info.input_size
    if size % 32:
        raise UserError(f"size must be a multiple of 32, got {size}")
    results = []
    with Progress(opt.progress_every) as bar:
        for fs in sets:
            task = bar.task(f"mask apply {fs.root.name}", len(fs), "faces")
            r = segment.apply_to_faceset(
                fs,
                model,
                size,
                indices=idx,
                name=opt.name,
                union=list(opt.union),
                subtract=list(opt.subtract),
                intersect=list(opt.intersect),
                batch=opt.batch,
                progress=lambda k, n, t=task: t.update(k),
            )
            task.close()
            results.append({"faceset": str(fs.root), **r})
    print(json.dumps(results, indent=1))
    return 0


def _apply_hulls(paths: Sequence[str], opt: Any) -> int:
    """``apply hull=KIND``: the extractor's landmark hull masks, for face sets made without them."""
    defaults = ApplyOptions()
    given = [k for k in _HULL_ONLY if opt[k] != getattr(defaults, k)]
    if given:
        raise UserError(f"{given[0]}= is a segmenter option; hull= draws masks from the landmarks alone")
    kinds = list(LANDMARK_MASKS) if opt.hull == "both" else [opt.hull]
    sets = _open_sets(paths, verify=True)
    results = []
    with Progress(opt.progress_every) as bar:
        for fs in sets:
            task = bar.task(f"mask hull {fs.root.name}", len(fs), "faces")
            r = segment.apply_hulls(fs, kinds, progress=lambda k, n, t=task: t.update(k))
            task.close()
            results.append({"faceset": str(fs.root), **r})
    print(json.dumps(results, indent=1))
    return 0


def cmd_import(argv: Sequence[str]) -> int:
    paths, kv = _split(argv)
    opt = parse_overrides(kv, ImportOptions(), PROG)
    if not opt.dir:
        raise UserError("dir=PNG_DIR is required")
    if len(paths) != 1:
        raise UserError("give exactly one FACESET directory")
    (fs,) = _open_sets(paths, verify=True)
    r = segment.import_user_masks(fs, opt.dir, opt.name)
    print(json.dumps({"faceset": str(fs.root), **r}, indent=1))
    return 0


def cmd_convert(argv: Sequence[str]) -> int:
    paths, kv = _split(argv)
    opt = parse_overrides(kv, ConvertOptions(), PROG)
    if len(paths) != 1 or not opt.out:
        raise UserError("usage: swap-mask convert CHECKPOINT out=FILE.safetensors")
    model, info = load_segmenter(paths[0], encoder=opt.encoder or None)
    save_segmenter(
        model, opt.out, labels=info.labels, input_size=info.input_size, metadata={"converted_from": paths[0]}
    )
    print(json.dumps({"out": opt.out, "classes": len(info.labels), "encoder": info.config.encoder}))
    return 0


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], Any]] = {
    "train": (cmd_train, TrainOptions()),
    "apply": (cmd_apply, ApplyOptions()),
    "import": (cmd_import, ImportOptions()),
    "convert": (cmd_convert, ConvertOptions()),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv[0]`` is the subcommand. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"{PROG}: error: unknown command {argv[0]!r}{closest(argv[0], COMMANDS)}; choose one of "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    fn, defaults = COMMANDS[argv[0]]
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(f"{PROG} {argv[0]} options:{usage(defaults)}")
        return 0
    return run_cli(lambda: fn(argv[1:]), PROG)


if __name__ == "__main__":
    sys.exit(main())
