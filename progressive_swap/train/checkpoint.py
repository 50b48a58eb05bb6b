"""Checkpoint files: crash-safe writing, loading that never unpickles code, weight export.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file, fsyncs it and
  renames it into place, so ``last.ckpt`` always names a complete file.
* Every load goes through :mod:`progressive_swap.core.weights` (``torch.load(weights_only=True)``):
  a file that would execute code is refused with a clear error.
* :func:`good_checkpoints` finds the readable checkpoints of a run directory, newest first, so
  ``resume=auto`` and the non-finite guard's rollback skip a damaged file instead of failing.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from progressive_swap.core.io import TEMP_PREFIX, atomic_write, fsync_dir, write_error
from progressive_swap.core.weights import UnsafeCheckpointError, load_weights, safe_load, save_weights, torch_load

__all__ = [
    "UnsafeCheckpointError",
    "load_weights",
    "safe_load",
    "save_weights",
]  # re-exported for callers of the trainer's checkpoints

CKPT_KEY = "progressive_swap"
# What a run directory's checkpoints are called (hpc_ckpt_N: Lightning's SLURM requeue checkpoint).
CHECKPOINT_GLOBS = ("last.ckpt", "step*.ckpt", "images*.ckpt", "hpc_ckpt_*.ckpt")
STALE_TMP_GLOB = f"{TEMP_PREFIX}*.ckpt.*.tmp"  # what atomic_write leaves behind when the process is killed mid-write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically and loads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_write(path, "wb") as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as e:  # torch.save may wrap the OSError in a RuntimeError
            # disk full, quota, I/O error: the temp file is gone, the old file untouched
            err = write_error(e, f"checkpoint {path} (the previous checkpoints are intact)")
            if err is None:
                raise
            raise err from None

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_load(path, map_location or "cpu")

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Unlink (atomic) and flush the directory entry; a file already gone is fine."""
        path = Path(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a trainer checkpoint and check it is one of ours, with finite colour statistics."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a progressive_swap training checkpoint")
    info = ckpt[CKPT_KEY] if isinstance(ckpt[CKPT_KEY], dict) else {}
    check_identity_colour(ckpt["state_dict"].get("model.identity_colour"), path, info.get("identities"))
    return ckpt


def check_identity_colour(stats: Any, path: str | os.PathLike, names: Sequence[str] | None = None) -> None:
    """Refuse a checkpoint whose colour statistics (``identity_colour``, ``(N, 2, 3)``: RGB mean
    and standard deviation per identity) hold NaN, an infinity or a standard deviation <= 0.

    A model normalises every face by them (``colour_norm``): one bad value turns every output
    of that identity into NaN, silently. ``None`` (a model without ``colour_norm``) passes.

    Raises:
        ValueError: one line naming the file and the identity.
    """
    if stats is None:
        return
    t = torch.as_tensor(stats).detach().double().cpu()
    if t.ndim != 3 or t.shape[1:] != (2, 3):
        raise ValueError(f"{path}: identity_colour has shape {tuple(t.shape)}, not (identities, 2, 3)")
    for i in range(t.shape[0]):
        mean, std = t[i, 0], t[i, 1]
        if not (bool(torch.isfinite(t[i]).all()) and bool((std > 0).all())):
            who = f"{i} ({names[i]})" if names is not None and i < len(names) else str(i)
            raise ValueError(
                f"{path}: the colour statistics of identity {who} are not finite or have a std <= 0 "
                f"(mean {[round(float(v), 4) for v in mean]}, std {[round(float(v), 4) for v in std]}); "
                "the file is damaged: use an earlier checkpoint"
            )


def peek_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The ``progressive_swap`` entry of a training checkpoint, without reading its tensors.

    The file is memory-mapped, so this is cheap at any model size, yet the zip directory and the
    whole pickle are read: a truncated file fails here.

    Raises:
        ValueError: unreadable, truncated, or not a progressive_swap training checkpoint.
    """
    try:
        ckpt = torch_load(Path(path), "cpu", mmap=True)
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
        raise ValueError(
            f"no readable checkpoint in {run_dir}: all {len(bad)} are damaged (e.g. {bad[0].name}); "
            "pass resume=PATH to one you trust, or start a new run"
        )
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [(b, p) for b, _, p in found if max_batches is None or b <= max_batches]


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary checkpoint files a killed process left behind (``.progressive_swap.tmp.last.ckpt.XXXX.tmp``)."""
    removed = []
    for p in Path(run_dir).glob(STALE_TMP_GLOB):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
