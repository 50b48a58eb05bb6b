"""Writing masks into face sets: the segmenter's, the landmark hulls, and painted masks imported
from PNG files (never over a ``user_*`` mask).

Conventions: :mod:`progressive_swap.masks.segment`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from progressive_swap.core import align
from progressive_swap.faceset import USER_PREFIX, FaceSet
from progressive_swap.masks.bisenet import BiSeNet
from progressive_swap.masks.hull import LANDMARK_MASKS, landmark_mask
from progressive_swap.masks.segment_data import resize_to
from progressive_swap.masks.segment_train import predict_masks


def combine_masks(
    fs: FaceSet,
    i: int,
    pred: np.ndarray,
    union: Sequence[str] = (),
    subtract: Sequence[str] = (),
    intersect: Sequence[str] = (),
) -> np.ndarray:
    """``pred`` ∪ union masks, ∩ intersect masks, minus subtract masks (soft: max, product, ``*(1-m)``).

    Masks a face does not have are skipped.
    """
    m = pred
    for name in union:
        u = fs.mask(i, name)
        if u is not None:
            m = np.maximum(m, u)
    for name in intersect:
        u = fs.mask(i, name)
        if u is not None:
            m = m * u
    for name in subtract:
        u = fs.mask(i, name)
        if u is not None:
            m = m * (1.0 - u)
    return np.clip(m, 0, 1).astype(np.float32)


def apply_to_faceset(
    fs: FaceSet,
    model: BiSeNet,
    input_size: int,
    *,
    indices: Sequence[int] = (0,),
    name: str = "segment",
    union: Sequence[str] = (),
    subtract: Sequence[str] = (),
    intersect: Sequence[str] = (),
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the model's soft mask of every face as mask ``name`` (native resolution, 16-bit).

    ``user_*`` masks are never written: a hand-edited ``user_<name>`` stays as it is, and
    readers asking ``fs.mask(i, name, prefer_user=True)`` keep getting it after any rerun.

    Returns:
        ``{"written": n, "with_user_edit": faces that have user_<name>, "name": name}``.
    """
    if name.startswith(USER_PREFIX):
        raise ValueError(f"mask name {name!r} is reserved for hand-edited masks; choose another name")
    for n in (*union, *subtract, *intersect):
        if n == name:
            raise ValueError(f"mask {name!r} cannot be combined with itself")
    user = USER_PREFIX + name
    written = edited = 0
    for s in range(0, len(fs), batch):
        rows = list(range(s, min(s + batch, len(fs))))
        preds = predict_masks(model, [fs.image(i) for i in rows], input_size, indices, fs.size)
        for i, p in zip(rows, preds):
            fs.write_mask(i, name, combine_masks(fs, i, p, union, subtract, intersect))
            written += 1
            edited += fs.has_mask(i, user)
        if progress:
            progress(rows[-1] + 1, len(fs))
    return {"written": written, "with_user_edit": edited, "name": name}


def apply_hulls(
    fs: FaceSet,
    kinds: Sequence[str] = LANDMARK_MASKS,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the landmark hull masks of every face, exactly as the extractor draws them.

    Each face's stored (smoothed) frame landmarks go through its alignment matrix into crop
    pixels, and :func:`~progressive_swap.masks.hull.landmark_mask` draws the hull at the set's
    crop size with the border rule: the same masks an extraction with ``masks=true`` writes.
    Each file is written atomically; ``user_*`` masks are never touched.

    Args:
        fs: the face set.
        kinds: hull kinds to write (``components``, ``extended``).
        progress: called with (faces done, faces) after each face.

    Returns:
        ``{"written": faces, "names": kinds}``.
    """
    bad = [k for k in kinds if k not in LANDMARK_MASKS]
    if bad:
        raise ValueError(f"unknown hull {bad[0]!r}; choose from {', '.join(LANDMARK_MASKS)}")
    lms, mats = fs.landmarks, fs.matrices
    for i in range(len(fs)):
        lm_crop = align.transform_points(lms[i], align.crop_matrix(mats[i], fs.size))
        for kind in kinds:
            fs.write_mask(i, kind, landmark_mask(lm_crop, fs.size, kind))
        if progress:
            progress(i + 1, len(fs))
    return {"written": len(fs), "names": list(kinds)}


def read_mask_png(path: str | Path, size: int) -> np.ndarray:
    """A painted mask file (8/16-bit gray, or RGB(A): alpha if present, else luminance) as float32 ``(size, size)``."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read mask image {path}")
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 3:
        raw = raw[..., 3] if raw.shape[2] == 4 else cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
    m = raw.astype(np.float32) / scale
    return np.clip(resize_to(m, size), 0, 1)


def import_user_masks(fs: FaceSet, directory: str | Path, name: str = "segment") -> dict[str, Any]:
    """Store painted PNGs ``<face id>.png`` from ``directory`` as ``user_<name>`` masks.

    Files are resized to the crop's native size if needed. Returns counts and up to 5
    file names that match no face.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"mask directory not found: {directory}")
    name = name[len(USER_PREFIX) :] if name.startswith(USER_PREFIX) else name
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    unknown, ready = [], []
    for p in files:  # read (and so check) every file before writing any: a bad one leaves the set as it was
        try:
            i = fs.index_of(p.stem)
        except (KeyError, ValueError):
            unknown.append(p.name)
            continue
        ready.append((i, read_mask_png(p, fs.size)))
    for i, m in ready:
        fs.write_mask(i, name, m, user=True)
    imported = len(ready)
    if files and not imported:
        raise ValueError(
            f"none of the {len(files)} PNG files in {directory} is named after a face id of {fs.root} "
            f"(e.g. {fs.ids[0]}.png)"
        )
    if not files:
        raise ValueError(f"no PNG files in {directory}")
    return {
        "imported": imported,
        "unmatched": len(unknown),
        "unmatched_examples": unknown[:5],
        "name": USER_PREFIX + name,
    }
