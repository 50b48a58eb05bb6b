"""Checkpoint files: crash-safe writing, loading that never unpickles code, weight export.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file, fsyncs it and
  renames it into place, so ``last.ckpt`` always names a complete file.
* Every load uses ``torch.load(weights_only=True)``: a file that would execute code is
  refused with a clear error.
* :func:`good_checkpoints` finds the readable checkpoints of a run directory, newest first, so
  ``resume=auto`` and the non-finite guard's rollback skip a damaged file instead of failing.
* Weights can be imported and exported as safetensors.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from progressive_swap.io import atomic_write, fsync_dir

CKPT_KEY = "progressive_swap"
# What a run directory's checkpoints are called (hpc_ckpt_N: Lightning's SLURM requeue checkpoint).
CHECKPOINT_GLOBS = ("last.ckpt", "step*.ckpt", "images*.ckpt", "hpc_ckpt_*.ckpt")
STALE_TMP_GLOB = ".*.ckpt.*.tmp"  # what atomic_write leaves behind when the process is killed mid-write


class UnsafeCheckpointError(ValueError):
    """The file holds pickled objects beyond plain weights; it was not loaded."""


def _torch_load(path: Path, map_location: Any, mmap: bool = False) -> Any:
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
        return _torch_load(path, map_location)
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
        try:
            with atomic_write(path, "wb") as f:
                torch.save(checkpoint, f)
        except OSError as e:  # disk full, quota, I/O error: the temp file is gone, the old file untouched
            raise OSError(e.errno or errno.EIO, f"{e.strerror or e} while writing checkpoint {path} "
                          "(the previous checkpoints are intact)") from None

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_load(path, map_location or "cpu")

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Unlink (atomic) and flush the directory entry; a file already gone is fine."""
        path = Path(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a trainer checkpoint and check it is one of ours."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a progressive_swap training checkpoint")
    return ckpt


def peek_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The ``progressive_swap`` entry of a training checkpoint, without reading its tensors.

    The file is memory-mapped, so this is cheap at any model size, yet the zip directory and the
    whole pickle are read: a truncated file fails here.

    Raises:
        ValueError: unreadable, truncated, or not a progressive_swap training checkpoint.
    """
    try:
        ckpt = _torch_load(Path(path), "cpu", mmap=True)
    except Exception:  # not a zip checkpoint, or damaged: the full load gives the one-line reason
        ckpt = read_training_checkpoint(path)
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a progressive_swap training checkpoint")
    return ckpt[CKPT_KEY]


def good_checkpoints(
    run_dir: str | os.PathLike, warn: Callable[[str], Any] = print, max_batches: int | None = None
) -> list[tuple[int, Path]]:
    """The readable checkpoints of a run directory as ``(batches_done, path)``, newest first.

    Candidates are ``last.ckpt``, ``step*.ckpt``, the milestone ``images*.ckpt`` and SLURM's
    ``hpc_ckpt_*.ckpt``. "Newest" is by training position, not file time: after a kill between
    writing ``stepN.ckpt`` and ``last.ckpt``, the step file is ahead. On a tie ``last.ckpt``
    comes first.

    Args:
        run_dir: the run directory.
        warn: called with one line per unreadable file (it is skipped, never deleted).
        max_batches: ignore checkpoints further than this (a rollback never goes forward).

    Raises:
        ValueError: there are checkpoints but none of them is readable (never a silent fresh start).
    """
    run_dir = Path(run_dir)
    paths = sorted({p for g in CHECKPOINT_GLOBS for p in run_dir.glob(g) if p.is_file()})
    found, bad = [], []
    for p in paths:
        try:
            info = peek_checkpoint(p)
            found.append((int(info["batches_done"]), p.name == "last.ckpt", p))
        except (ValueError, KeyError, TypeError) as e:
            bad.append(p)
            warn(f"skipping unreadable checkpoint {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if bad and not found:
        raise ValueError(f"no readable checkpoint in {run_dir}: all {len(bad)} are damaged (e.g. {bad[0].name}); "
                         "pass resume=PATH to one you trust, or start a new run")
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [(b, p) for b, _, p in found if max_batches is None or b <= max_batches]


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary checkpoint files a killed process left behind (``.last.ckpt.XXXX.tmp``)."""
    removed = []
    for p in Path(run_dir).glob(STALE_TMP_GLOB):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


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


def save_weights(
    model: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> None:
    """Export model weights (a module or its state dict) as safetensors, atomically, with JSON
    metadata (e.g. the architecture)."""
    from safetensors.torch import save

    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_write(path, "wb") as f:
        f.write(save(tensors, metadata=meta))
