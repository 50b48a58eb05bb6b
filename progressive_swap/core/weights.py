"""Weights on disk: loading that never unpickles code, and safetensors export.

* Every load uses ``torch.load(weights_only=True)``: a file that would execute code is refused
  with a clear error, and nothing in it runs.
* Weights are exported as safetensors, atomically, with JSON metadata.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save

from progressive_swap.core.io import atomic_write


class UnsafeCheckpointError(ValueError):
    """The file holds pickled objects beyond plain weights; it was not loaded."""


def torch_load(path: Path, map_location: Any, mmap: bool = False) -> Any:
    """The one ``torch.load`` call: never unpickles code."""
    with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files; callers explain
        warnings.filterwarnings("ignore", message=r".*pickle protocol.*")
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


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
        return torch_load(path, map_location)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it contains pickled objects other than weights (nothing was executed)"
            ) from None
        raise ValueError(f"cannot read checkpoint {path}: {first or 'corrupt file'}") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        # A damaged pickle surfaces as whatever the unpickler trips on (a bit flip: TypeError).
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read checkpoint {path} (truncated or corrupt?): {first}") from None


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a trainer checkpoint (``.ckpt``), a state dict (``.pt``/``.pth``) or safetensors.

    Returns:
        A state dict with the model's own names (``encoder.…``, ``decoders.0.…``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        try:
            return finite_weights(load_file(str(path)), path)
        except ValueError:
            raise
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors file {path}: {str(e).splitlines()[0]}") from None
    obj = safe_load(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    if all(k.startswith("model.") for k in obj):
        obj = {k[len("model."):]: v for k, v in obj.items()}
    return finite_weights(obj, path)


def finite_weights(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``state``, unless a floating-point tensor holds NaN or infinity (damaged or diverged
    weights would export a broken face or poison a warm start): then one line naming it."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: weight {name} holds NaN or infinite values (a damaged file or a "
                             f"diverged run); use an earlier checkpoint")
    return state


def save_weights(
    model: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> None:
    """Export model weights (a module or its state dict) as safetensors, atomically, with JSON
    metadata (e.g. the architecture)."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_write(path, "wb") as f:
        f.write(save(tensors, metadata=meta))
