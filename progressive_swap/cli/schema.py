"""Typed options: the schema of ``recipes/train.yaml`` and the checks every command shares.

Options are dataclasses. Fields with a fixed set of values are ``Literal[...]``, fields with a
lower bound say so in their metadata (``field(metadata={"min": 0})``). OmegaConf checks the
types while a config is composed; :func:`check_options` checks the choices and bounds that it
cannot express, with a "did you mean" for near misses. Every default lives in one place: the
dataclass for the small commands, ``recipes/`` for ``swap-train`` (whose schema here only types
the keys).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Union

from omegaconf import MISSING, DictConfig

FreezeChoice = Literal["encoder"]


def closest(word: str, choices: typing.Iterable[str], n: int = 3) -> str:
    """``" (did you mean 'x'?)"`` for the nearest choices, or ``""``."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.5)
    if not near:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in near) + "?)"


def _literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of ``Literal[...]`` or ``Optional[Literal[...]]``, else ``None``."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            found = _literal_choices(arg)
            if found is not None:
                return found
    return None


def _plain(tp: Any) -> Any:
    """``tp`` with ``Literal[...]`` replaced by the type of its values (OmegaConf cannot check
    literals itself)."""
    choices = _literal_choices(tp)
    if choices is None:
        return tp
    base = type(choices[0])
    return Optional[base] if type(None) in typing.get_args(tp) else base


def omegaconf_schema(cls: type) -> type:
    """A copy of the options dataclass ``cls`` that OmegaConf accepts as a structured config."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            tp = omegaconf_schema(tp)
            default = field(default_factory=tp)
        elif f.default is not dataclasses.MISSING:
            default = field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = field(default_factory=f.default_factory)
        else:
            default = field(default=MISSING)
        specs.append((f.name, _plain(tp), default))
    return dataclasses.make_dataclass(cls.__name__, specs)


def check_options(cfg: DictConfig | Any, cls: type, prefix: str = "") -> None:
    """Check the values of ``cfg`` against the choices and bounds declared on ``cls``.

    Raises:
        ValueError: one line naming the key, the bad value and the allowed ones.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        value = cfg.get(f.name) if hasattr(cfg, "get") else getattr(cfg, f.name)
        if dataclasses.is_dataclass(tp):
            if value is not None:
                check_options(value, tp, key + ".")
            continue
        choices = _literal_choices(tp)
        if choices is not None and value is not None and value not in choices:
            raise ValueError(
                f"unknown {key} {value!r}: {key} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}{closest(value, choices)}"
            )
        low = f.metadata.get("min")
        values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else [value]
        for v in values:  # a list option (frame numbers) is bounded item by item
            if low is not None and v is not None and v < low:
                raise ValueError(f"{key} must be >= {low}, got {value!r}")
            above = f.metadata.get("gt")
            if above is not None and v is not None and v <= above:
                raise ValueError(f"{key} must be > {above}, got {value!r}")


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def explain_validation_error(e: BaseException) -> str | None:
    """One line for OmegaConf's "could not be converted" errors: ``seed must be an integer, got 'abc'``."""
    text = "\n".join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
    m = re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    k = re.search(r"full_key: ([\w.]+)", text)
    if not (m and k):
        return None
    return f"{k.group(1)} must be {_TYPE_WORDS.get(m.group(2), m.group(2))}, got {m.group(1)!r}"


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The first line of each field's documentation, as written in the class body: a string right
    under the field (an attribute docstring) or a ``# comment`` at the end of its line.

    Read from the source, so ``--help`` says what the code says without a second copy.
    """
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, [*body[1:], None]):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = ""
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            text = inspect.cleandoc(nxt.value.value).split("\n\n")[0].replace("\n", " ")
        text = text or comments.get(node.end_lineno or node.lineno, "")
        docs[node.target.id] = text.replace("``", "")
    return docs


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, help)`` rows for ``--help``, from the dataclass and its field docs."""
    rows = []
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".")
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        )
        choices = _literal_choices(tp)
        note = f.metadata.get("help", "") or docs.get(f.name, "")
        if choices:
            note = (note + " " if note else "") + "[" + "|".join(map(str, choices)) + "]"
        rows.append((prefix + f.name, repr(default), note))
    return rows


def help_text(cls: type) -> str:
    """The ``--help`` table of an options dataclass: one line per key, default and description."""
    rows = describe(cls)
    width = max(len(f"{k}={d}") for k, d, _ in rows)
    return "\n".join(f"  {f'{k}={d}':<{width}}  {h}".rstrip() for k, d, h in rows)


# ---------------------------------------------------------------------- swap-train's schema


def opt(default: Any = None, help: str = "", *, factory: Any = None, **meta: Any) -> Any:  # noqa: A002
    """A schema field with its one-line help (shown by ``--help``) and bounds (``min=``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class Derived:
    identities: int = opt(2, "face sets given (data.faces); filled in by swap-train", min=2)
    world_size: int = opt(1, "processes (devices x nodes); filled in by swap-train", min=1)


@dataclass
class Augment:
    geometry: Dict[str, float] = opt(help="random rotate (deg), scale, shift and flip, shared by input and target",
                                     factory=dict)
    warp: float = opt(0.04, "encoder-input grid warp, fraction of the image side", min=0.0)
    input_color: float = opt(0.0, "encoder-input colour scramble (random 3x3 colour matrix); "
                             "model.colour_norm does its job without hiding the lighting", min=0.0)
    latent_noise: float = opt(0.0, "Gaussian noise on the shared latent in training, as a fraction of its "
                              "deviation (0: none)", min=0.0)


@dataclass
class Checkpointing:
    every_minutes: float = opt(10.0, "minutes between rolling checkpoints", min=0.0)
    every_steps: Optional[int] = opt(None, "or every N optimizer steps (overrides minutes)", min=1)
    keep: int = opt(3, "rolling checkpoints kept besides last.ckpt", min=-1)
    every_images: Optional[int] = opt(None, "also keep a checkpoint every N images, forever (images*.ckpt)", min=0)


@dataclass
class TrainConfig:
    """The keys of ``recipes/train.yaml``; the values there (and in the recipes) are the defaults."""

    derived: Derived = opt(factory=Derived)
    run_dir: Optional[str] = opt(None, "filled in by swap-train: out, or checkpoints/<name>/<run>")
    name: str = opt("demo", "recipe name: runs go to checkpoints/<name>/<run>")
    run: Optional[str] = opt(None, "run name; default: a timestamp")
    out: Optional[str] = opt(None, "run directory; overrides checkpoints/<name>/<run>")
    resume: Optional[str] = opt(None, "checkpoint to continue from exactly, or auto (newest in the run directory)")
    warm_start: Optional[str] = opt(None, "weights to start from: any earlier stage, resolution or identity count")
    freeze: Optional[FreezeChoice] = opt(None, "hold the encoder fixed for freeze_steps optimizer steps")
    freeze_steps: int = opt(0, "optimizer steps of freeze", min=0)
    seed: int = opt(0, "seed of weights, data order and augmentation", min=0)
    dry_run: bool = opt(False, "print the plan, the model size and an estimated time per stage, then stop")
    dry_run_steps: int = opt(1, "timed training steps per phase behind dry_run's time estimate (0: no estimate)",
                             min=0)
    max_steps: Optional[int] = opt(None, "stop after this many optimizer steps (resume later with resume=auto)", min=1)
    schedule_seconds: Optional[float] = opt(
        None, "on the CPU: scale every stage's images down so the schedule's steps, timed on this CPU at the "
        "start, fit this many seconds (never up; null: the schedule as written)", min=1.0)
    preview_every: int = opt(100, "optimizer steps between preview grids (0: off)", min=0)
    preview_faces: int = opt(4, "faces per identity in a preview grid", min=1)
    progress_every: float = opt(30.0, "seconds between progress lines when stderr is not a terminal", min=0.0)
    channels_last: bool = opt(False, "channels-last memory format (faster on CPUs)")
    activation_checkpointing: bool = opt(False, "recompute each block's activations in backward (less memory, "
                                         "about 30% slower); trainer=fsdp has its own")
    compile: bool = opt(False, "torch.compile each encoder/decoder block")
    find_batch: bool = opt(False, "raise each stage's batch to the largest that fits in GPU memory first")
    max_memory_gb: Optional[float] = opt(None, "with find_batch: plan for this much GPU memory (e.g. 8)", min=0.0)
    augment: Augment = opt(factory=Augment)
    checkpoint: Checkpointing = opt(factory=Checkpointing)
    # Groups: each is one constructor's arguments (its _target_ says which; see --cfg job).
    guard: Any = opt(None, "non-finite or spiking loss, non-finite grads: skip the step, roll back (train/guard.py)")
    model: Any = opt(None, "the architecture (CombArch): choose with model=NAME, override model.KEY=")
    schedule: Any = opt(None, "growth: stages with images, fade, batch and learning rate (GrowthSchedule)")
    data: Any = opt(None, "the face sets (data=facesets data.faces=[A,B]) or the phantom (data=phantom)")
    loss: Any = opt(None, "loss weights (SwapLoss)")
    optimizer: Any = opt(None, "the optimizer (its learning rate comes from the schedule)")
    trainer: Any = opt(None, "Lightning's Trainer: trainer=cpu|gpu|ddp|fsdp|model_parallel")
    module: Any = opt(None, "the training module (SwapModule), built from the groups above")
    callbacks: Any = opt(None, "checkpoints, previews, guard, progress, final weights")
    logger: Any = opt(None, "TensorBoard and CSV logs in <run>/logs")
