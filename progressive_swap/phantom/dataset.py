"""Generate a phantom data set on disk: one aligned face set per identity, plus videos.

Layout under ``out``::

    faces/id0/ ...            face set (aligned crops + masks face, occluder, visible)
    faces/id1/ ...
    videos/id0.mp4            a clip of identity 0 (id0_1.mp4, ... when videos > 1)
    videos/id0.truth.json     its ground truth (docs/phantom.md)

Seeds: identity ``i`` is ``sample_identity(seed * 1000 + i)``; its face ``k`` uses frame params
drawn in order from ``np.random.default_rng([seed, i, 1])``; its video ``v`` follows
``sample_trajectory((seed * 1000 + i) * 100 + v, ...)``. Held-out identities in benchmarks use
other seeds (e.g. ``sample_identity(10**6 + j)``).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from progressive_swap import faceset
from progressive_swap.core.align import alignment_matrix, warp_to_crop
from progressive_swap.core.io import check_writable_dir, fsync_dir
from progressive_swap.core.landmarks import FACE_TYPES
from progressive_swap.core.progress import DEFAULT_EVERY, Progress
from progressive_swap.phantom.renderer import render, sample_frame, sample_identity, sample_trajectory
from progressive_swap.phantom.video import write_phantom_video

# Faces per identity when nothing says otherwise (swap-phantom, the demo's data): the one place
# it is set. The demo overfits 256; 1,024 is what its quality figures were measured with.
DEFAULT_FACES = 1024

MAX_CROP = 2048
MASK_NAMES = ("face", "occluder", "visible")
_BATCH = 32


def identity_seed(seed: int, i: int) -> int:
    """Seed of identity ``i`` in a data set generated with ``seed``."""
    return int(seed) * 1000 + int(i)


def video_seed(seed: int, i: int, v: int) -> int:
    """Trajectory seed of video ``v`` of identity ``i``."""
    return identity_seed(seed, i) * 100 + int(v)


def video_name(i: int, v: int) -> str:
    """File stem of video ``v`` of identity ``i``: ``id0``, ``id0_1``, ..."""
    return f"id{i}" if v == 0 else f"id{i}_{v}"


def check_args(identities: int, faces: int, size: int, face_type: str, videos: int, frames: int,
               occluders: float, frame_size: int, fps: float, image_format: str) -> None:
    """Raise a one-line ``ValueError`` for any bad argument (before anything is written)."""
    if face_type not in FACE_TYPES:
        raise ValueError(f"unknown face_type {face_type!r}; choose one of {', '.join(FACE_TYPES)}")
    if size % 16 or not 16 <= size <= MAX_CROP:
        raise ValueError(f"size must be a multiple of 16 in [16, {MAX_CROP}], got {size}")
    if frame_size % 2 or not 16 <= frame_size <= 4096:
        raise ValueError(f"frame_size must be even and in [16, 4096], got {frame_size}")
    if identities < 1:
        raise ValueError(f"identities must be >= 1, got {identities}")
    if faces < 1:
        raise ValueError(f"faces must be >= 1, got {faces}")
    if videos < 0:
        raise ValueError(f"videos must be >= 0, got {videos}")
    if videos and frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not 0.0 <= occluders <= 1.0:
        raise ValueError(f"occluders is a probability in [0, 1], got {occluders}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be png or jpg, got {image_format!r}")


def _render_crop(job: tuple) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Render one face and cut its crop: ``(image, {mask name: mask}, landmarks, matrix)``.

    ``job`` is ``(identity seed, frame params, frame size, face type, crop size)``; a pure
    function of it, so faces render in any order, in any process, to the same pixels.
    """
    idn_seed, params, frame_size, face_type, size = job
    r = render(_identity(idn_seed), params, frame_size)
    m = alignment_matrix(r.landmarks, face_type)
    masks = {
        name: np.clip(warp_to_crop(mask, m, size, border=cv2.BORDER_CONSTANT), 0, 1)
        for name, mask in zip(MASK_NAMES, (r.face_mask, r.occluder_mask, r.visible_mask))
    }
    return warp_to_crop(r.image, m, size), masks, r.landmarks, m


@lru_cache(maxsize=8)
def _identity(idn_seed: int):
    return sample_identity(idn_seed)


def _render_all(jobs: list[tuple], pool: Executor | None) -> Iterator[tuple]:
    """:func:`_render_crop` over ``jobs``, in order; spread over ``pool``'s processes when given."""
    if pool is None:
        return map(_render_crop, jobs)
    return pool.map(_render_crop, jobs, chunksize=_BATCH // 2)


_SET_ENTRIES = {"faceset.json", ".lock", "images", "masks", "index", "cache"}


def check_replaceable(final: Path) -> None:
    """Refuse (one-line ``ValueError``) to replace ``final`` unless it is absent, an empty folder,
    or a phantom face set an earlier run wrote (its records' sources are ``phantom:…``) holding
    nothing else: a user's folder that happens to sit at ``out/faces/idN`` is never deleted."""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_dir() and not final.is_symlink() and not any(os.scandir(final)):
        return
    why = "it is not a folder"
    if final.is_dir() and not final.is_symlink():
        extra = sorted(set(os.listdir(final)) - _SET_ENTRIES)
        try:
            fs = faceset.open(final)
            ours = all(str(s).startswith("phantom:") for s in fs.sources)
        except (ValueError, OSError):
            ours = False
        why = (f"it holds {extra[0]!r}, which no phantom set has" if extra
               else "it is not a phantom face set" if not ours else "")
        if not why:
            return
    raise ValueError(f"{str(final)!r} exists and {why}; nothing was written: choose another out=")


def _write_faceset(final: Path, i: int, seed: int, faces: int, size: int, face_type: str,
                   occluders: float, frame_size: int, image_format: str, advance, pool: Executor | None) -> None:
    """Write identity ``i``'s face set into a temporary directory, then rename it to ``final``."""
    label = f"id{i}"
    idn_seed = identity_seed(seed, i)
    rng = np.random.default_rng([int(seed), int(i), 1])
    # Frame parameters are drawn in order from one generator; rendering is pure, so it can run
    # in other processes and the set is the same whatever the number of workers.
    params = [sample_frame(rng, frame_size, occluders) for _ in range(faces)]
    crops = _render_all([(idn_seed, p, frame_size, face_type, size) for p in params], pool)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        # Not durable file by file: the set is renamed into place only when complete (and
        # deleted otherwise); closing the writer flushes everything once.
        with faceset.create(tmp, face_type=face_type, size=size, image_format=image_format, identity=label,
                            durable=False) as w:
            for start in range(0, faces, _BATCH):
                records, images = [], []
                masks: dict[str, list[np.ndarray]] = {m: [] for m in MASK_NAMES}
                for k in range(start, min(start + _BATCH, faces)):
                    image, face_masks, landmarks, m = next(crops)
                    images.append(image)
                    for name in MASK_NAMES:
                        masks[name].append(face_masks[name])
                    records.append(faceset.FaceRecord(
                        id=f"{label}_{k:06d}", source=f"phantom:{label}", frame_index=k, time=float("nan"),
                        track=0, identity=label, landmarks=landmarks, matrix=m, frame_size=(frame_size, frame_size),
                        extra={"phantom": {"identity_seed": idn_seed, "params": asdict(params[k])}},
                    ))
                    advance()
                w.append(records, images, masks)
        if final.exists():
            # Swap the old set out and the new one in, then delete the old one.
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def render_workers(faces: int) -> int:
    """Processes that render ``faces`` faces: one per usable core, and none (render inline) for
    a few hundred faces, where starting processes costs more than it saves."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 2 or faces < 256 else min(cores, 8)


def generate_phantom_dataset(
    out: str | os.PathLike,
    identities: int = 2,
    faces: int = DEFAULT_FACES,
    size: int = 128,
    face_type: str = "whole",
    seed: int = 0,
    videos: int = 1,
    frames: int = 48,
    occluders: float = 0.3,
    frame_size: int | None = None,
    fps: float = 24.0,
    image_format: str = "png",
    progress: bool = True,
    progress_every: float = DEFAULT_EVERY,
    workers: int | None = None,
) -> dict:
    """Render a phantom data set (layout and seeds: module docstring).

    Args:
        out: output directory (created; existing identity sets are replaced whole).
        identities: number of identities.
        faces: faces per identity in each face set.
        size: crop side of the face sets, a multiple of 16 up to 2048.
        face_type: ``full``, ``whole`` or ``head``.
        seed: data set seed.
        videos: videos per identity (0 for none).
        frames: frames per video.
        occluders: probability of an occluder per face (and per video).
        frame_size: side of the rendered frames and videos; default ``2 * size``, so the crop is
            not upsampled.
        fps: video frame rate.
        image_format: face-set image format, ``png`` or ``jpg``.
        progress: show progress on stderr (a bar on a terminal, plain lines in a log).
        progress_every: seconds between progress lines when stderr is not a terminal.
        workers: processes that render the face sets' faces (0: in this process); default
            :func:`render_workers`. The output is the same for any number.

    Returns:
        ``{"faces": [face set dirs], "videos": [video paths], "truth": [truth paths]}``.

    Raises:
        ValueError: bad arguments (checked before anything is written).
        PermissionError: ``out`` cannot be written.
    """
    frame_size = int(frame_size) if frame_size else 2 * int(size)
    check_args(identities, faces, size, face_type, videos, frames, occluders, frame_size, fps, image_format)
    for i in range(identities):  # before anything is written: replace only what an earlier run wrote
        check_replaceable(Path(out) / "faces" / f"id{i}")
    out = check_writable_dir(out)
    total = identities * (faces + videos * frames)
    result: dict[str, list[str]] = {"faces": [], "videos": [], "truth": []}
    workers = render_workers(faces) if workers is None else int(workers)
    # forkserver: the caller may already run threads (torch's), which a plain fork would copy half-made.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) if workers > 0 else None
    with pool or nullcontext(), Progress(progress_every, enabled=progress) as bar:
        task = bar.task("phantom faces id0", total, "faces")

        def advance() -> None:
            task.advance(1)

        (out / "faces").mkdir(exist_ok=True)
        for i in range(identities):
            task.update(label=f"phantom faces id{i}")
            final = out / "faces" / f"id{i}"
            _write_faceset(final, i, seed, faces, size, face_type, occluders, frame_size, image_format, advance, pool)
            result["faces"].append(str(final))
        if videos:
            (out / "videos").mkdir(exist_ok=True)
        for i in range(identities):
            idn = sample_identity(identity_seed(seed, i))
            for v in range(videos):
                task.update(label=f"phantom video {video_name(i, v)}")
                traj = sample_trajectory(video_seed(seed, i, v), frames, fps, occluders=occluders)
                video, truth = write_phantom_video(out / "videos", video_name(i, v), idn, _Tracked(traj, advance),
                                                   frame_size, fps, identity_label=f"id{i}")
                result["videos"].append(str(video))
                result["truth"].append(str(truth))
    return result


class _Tracked(list):
    """A list whose iteration reports progress (the video writer renders while iterating)."""

    def __init__(self, items, advance):
        super().__init__(items)
        self._advance = advance

    def __iter__(self):
        for x in super().__iter__():
            yield x
            self._advance()
