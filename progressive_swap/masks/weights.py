"""Segmenter weights: import public face-parsing checkpoints, save and load our own.

* Reading never unpickles code: ``.pth``/``.pt``/``.ckpt`` go through
  :func:`progressive_swap.train.checkpoint.safe_load` (``torch.load(weights_only=True)``),
  ``.safetensors`` through safetensors.
* The public face-parsing BiSeNet checkpoint names its encoder ``cp.resnet.*``; ours is an smp
  encoder at ``cp.encoder.*`` with otherwise identical names (torchvision ResNet layout):
  :data:`FACE_PARSING_KEY_MAP` is the whole mapping. ``module.`` prefixes (DataParallel) are
  stripped, and BatchNorm ``num_batches_tracked`` entries may be present or absent.
* Loading is strict: a checkpoint with missing or unknown keys or wrong shapes raises ONE
  :class:`CheckpointMismatchError` listing the first few mismatches of each kind.
* Class → mask: a multi-class model's soft mask is the sum of the softmax probabilities of the
  chosen classes (:func:`mask_from_logits`); a 1-class model's is its sigmoid.

Example:
    >>> net, info = load_segmenter("79999_iter.pth")  # doctest: +SKIP
    >>> info.labels[:3], info.input_size
    (('background', 'skin', 'l_brow'), 512)
    >>> m = mask_from_logits(net(x), face_class_indices(info.labels, include=("glasses",)))
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from progressive_swap.core.weights import safe_load, save_weights
from progressive_swap.masks.bisenet import BiSeNet, BiSeNetConfig

FACE_PARSING_LABELS: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
"""CelebAMask-HQ label order of the public face-parsing checkpoint (index 0 = background)."""

FACE_PARSING_INPUT_SIZE = 512
FACE_PARSING_KEY_MAP: tuple[tuple[str, str], ...] = (("cp.resnet.", "cp.encoder."),)
"""Prefix renames from the public checkpoint's names to ours (applied in order, first match)."""

FACE_CLASSES: tuple[str, ...] = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip")
"""Classes that make the default "face" mask."""

OPTIONAL_CLASSES: dict[str, tuple[str, ...]] = {
    "glasses": ("eye_g",),
    "ears": ("l_ear", "r_ear"),
    "hair": ("hair",),
}
"""Groups that can be added to the face mask by name (``include=("glasses", "hair")``)."""

_MAX_LISTED = 4


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the network (nothing was loaded)."""


@dataclass
class SegmenterInfo:
    """What a saved segmenter needs besides its weights.

    Attributes:
        config: architecture arguments (rebuilds the same :class:`BiSeNet`).
        labels: one name per output channel (``("visible",)`` for a binary mask model).
        input_size: side the model was trained at; images are resized to it for inference.
        metadata: everything else stored with the weights (training options, IoU, ...).
    """

    config: BiSeNetConfig
    labels: tuple[str, ...]
    input_size: int
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- reading files


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata from ``.safetensors`` or a torch file (never unpickles code).

    Returns:
        ``(state_dict, metadata)``; metadata values are JSON-decoded where possible (empty for
        torch files). Names are as stored, except a ``module.`` prefix on every key is removed.

    Raises:
        FileNotFoundError, ValueError (unreadable), UnsafeCheckpointError (pickled objects).
    """
    path = Path(path)
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
                raw = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors file {path}: {str(e).splitlines()[0]}") from None
        for k, v in raw.items():
            try:
                meta[k] = json.loads(v)
            except (json.JSONDecodeError, TypeError):
                meta[k] = v
    else:
        obj = safe_load(path)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{path} holds no state dict of tensors")
        sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, meta


def to_model_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename public face-parsing keys (``cp.resnet.*``) to ours (``cp.encoder.*``); others pass."""
    out = {}
    for k, v in state_dict.items():
        for old, new in FACE_PARSING_KEY_MAP:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _listing(what: str, items: Sequence[str]) -> str:
    more = f", ... {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {what} ({', '.join(items[:_MAX_LISTED])}{more})"


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state_dict`` (our key names) into ``model``; counters may be absent.

    Raises:
        CheckpointMismatchError: one line listing the first missing, unknown and mis-shaped keys.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    missing = [k for k in own if k not in sd and not _is_counter(k)]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: {tuple(sd[k].shape)} in file, {tuple(own[k].shape)} in model"
        for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        parts = [_listing(w, x) for w, x in found if x]
        arch = getattr(model, "config", None)
        name = (
            f"{type(model).__name__}({', '.join(f'{k}={v!r}' for k, v in asdict(arch).items())})"
            if arch
            else type(model).__name__
        )
        raise CheckpointMismatchError(f"{source} does not fit {name}: {'; '.join(parts)}")
    for k in own:  # checkpoints saved without BatchNorm counters: keep the model's own
        if k not in sd:
            sd[k] = own[k]
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------------- segmenters


def _infer_config(sd: Mapping[str, torch.Tensor], encoder: str) -> BiSeNetConfig:
    """Architecture of a checkpoint without metadata, read from its head shapes."""
    try:
        return BiSeNetConfig(
            num_classes=int(sd["conv_out.conv_out.weight"].shape[0]),
            encoder=encoder,
            context_channels=int(sd["cp.arm16.conv.conv.weight"].shape[0]),
            fuse_channels=int(sd["ffm.convblk.conv.weight"].shape[0]),
            aux_channels=int(sd["conv_out16.conv.conv.weight"].shape[0]),
        )
    except KeyError as e:
        raise CheckpointMismatchError(
            f"not a BiSeNet checkpoint: no {e.args[0]!r} (keys start {sorted(sd)[:3]})"
        ) from None


def load_segmenter(
    path: str | os.PathLike, *, encoder: str | None = None, num_classes: int | None = None
) -> tuple[BiSeNet, SegmenterInfo]:
    """Build the network a weights file describes and load it strictly (in eval mode).

    Our safetensors files carry their architecture and labels; a public face-parsing
    ``.pth`` does not, so its widths are read from the head shapes and the encoder defaults to
    ``resnet18`` (its labels are :data:`FACE_PARSING_LABELS` when it has 19 classes).

    Args:
        path: ``.safetensors`` (ours or converted) or ``.pth``/``.pt`` state dict.
        encoder: override the encoder name (for checkpoints without metadata).
        num_classes: expected class count; a different one is reported as a mismatch.
    """
    sd, meta = read_state_dict(path)
    sd = to_model_keys(sd)
    if isinstance(meta.get("bisenet"), dict):
        config = BiSeNetConfig(**meta["bisenet"])
        if encoder:
            config = BiSeNetConfig(**{**asdict(config), "encoder": encoder})
    else:
        config = _infer_config(sd, encoder or "resnet18")
    if num_classes is not None and num_classes != config.num_classes:
        config = BiSeNetConfig(**{**asdict(config), "num_classes": num_classes})
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) != config.num_classes:
        labels = (
            FACE_PARSING_LABELS if config.num_classes == 19 else tuple(f"class_{i}" for i in range(config.num_classes))
        )
    input_size = int(meta.get("input_size", FACE_PARSING_INPUT_SIZE))
    model = BiSeNet.from_config(config)
    load_into(model, sd, source=str(path))
    return model.eval(), SegmenterInfo(config, tuple(labels), input_size, meta)


def save_segmenter(
    model: BiSeNet,
    path: str | os.PathLike,
    *,
    labels: Sequence[str],
    input_size: int,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Save weights as safetensors (atomically) with architecture, labels and input size."""
    if len(labels) != model.config.num_classes:
        raise ValueError(f"{len(labels)} labels for {model.config.num_classes} classes")
    meta = {
        **(metadata or {}),
        "bisenet": asdict(model.config),
        "labels": list(labels),
        "input_size": int(input_size),
        "format": "progressive_swap.segmenter",
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, path, meta)


# ---------------------------------------------------------------------- classes → mask


def face_class_indices(
    labels: Sequence[str], include: Iterable[str] = (), classes: Iterable[str] | None = None
) -> list[int]:
    """Output channels that make the face mask.

    Args:
        labels: the model's labels.
        include: optional groups from :data:`OPTIONAL_CLASSES` (``glasses``, ``ears``, ``hair``)
            or raw label names, added to the default face classes.
        classes: replace the default :data:`FACE_CLASSES` entirely.

    A 1-class model has one channel and ignores both.
    """
    labels = list(labels)
    if len(labels) == 1:
        return [0]
    names = list(FACE_CLASSES if classes is None else classes)
    for g in include:
        names.extend(OPTIONAL_CLASSES.get(g, (g,)))
    bad = [n for n in names if n not in labels]
    if bad:
        raise ValueError(
            f"unknown class {bad[0]!r}; the model's labels are {', '.join(labels)}; "
            f"groups: {', '.join(OPTIONAL_CLASSES)}"
        )
    return sorted({labels.index(n) for n in names})


def mask_from_logits(logits: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Soft mask ``(B, H, W)`` in ``[0, 1]`` from logits ``(B, K, H, W)``.

    K = 1: the sigmoid. K > 1: the summed softmax probability of the channels ``indices``.
    """
    if logits.ndim != 4:
        raise ValueError(f"expected (B, K, H, W) logits, got {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return logits.softmax(1)[:, list(indices)].sum(1).clamp(0, 1)
