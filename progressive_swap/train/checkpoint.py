"""Checkpoint files: crash-safe writing, loading that never unpickles code, weight export.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file, fsyncs it and
  renames it into place, so ``last.ckpt`` always names a complete file.
* Every load uses ``torch.load(weights_only=True)``: a file that would execute code is
  refused with a clear error.
* Weights can be imported and exported as safetensors.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from progressive_swap.io import atomic_write

CKPT_KEY = "progressive_swap"


class UnsafeCheckpointError(ValueError):
    """The file holds pickled objects beyond plain weights; it was not loaded."""


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle would construct arbitrary objects (possibly run code).
        ValueError: the file is truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it contains pickled objects other than weights (nothing was executed)"
            ) from None
        raise ValueError(f"cannot read checkpoint {path}: {first or 'corrupt file'}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read checkpoint {path} (truncated or corrupt?): {first}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically and loads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_load(path, map_location or "cpu")


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a trainer checkpoint and check it is one of ours."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a progressive_swap training checkpoint")
    return ckpt


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a trainer checkpoint (``.ckpt``), a state dict (``.pt``/``.pth``) or safetensors.

    Returns:
        A state dict with the model's own names (``encoder.…``, ``decoders.0.…``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors file {path}: {str(e).splitlines()[0]}") from None
    obj = safe_load(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    if all(k.startswith("model.") for k in obj):
        obj = {k[len("model."):]: v for k, v in obj.items()}
    return obj


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Export model weights as safetensors (atomically), with JSON metadata (e.g. the architecture)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_write(path, "wb") as f:
        f.write(save(tensors, metadata=meta))
