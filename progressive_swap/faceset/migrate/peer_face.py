"""One face read from another tool's face set, in frame coordinates: what every reader returns.

Convention: ``landmarks`` are ``(68, 2)`` **source-frame pixels** (x right, y down, pixel
centres at integers). ``crop_from_frame`` and each mask's ``from_frame`` are ``(2, 3)`` affines
mapping frame pixels to that image's pixels (OpenCV ``warpAffine`` convention, pixel centres at
integers). Images are RGB uint8; masks float32 in [0, 1].
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Callable

import numpy as np

from progressive_swap.faceset.migrate.safe_load import DamagedMetadataError


@dataclass
class PeerMask:
    """A mask stored by another tool: ``mask`` ``(h, w)`` float32 in [0, 1] and the affine from
    frame pixels to its pixels."""

    mask: np.ndarray
    from_frame: np.ndarray


@dataclass
class PeerFace:
    """One face of another tool, as our importer needs it.

    Attributes:
        file: the file it came from (its name, for messages and the record).
        origin: ``"deepfacelab"`` or ``"faceswap"``.
        image: their aligned crop, RGB uint8 ``(h, w, 3)``; None when read without pixels
            (then ``reload()`` reads the face again with them).
        crop_from_frame: ``(2, 3)`` frame px -> their crop px; None when the file does not hold
            it and it cannot be recomputed (FaceSwap PNGs without ``frames=``).
        landmarks: ``(68, 2)`` frame px.
        source: source frame file name.
        frame_index: frame number (the trailing digits of the frame's name; 0 for a still).
        frame_size: ``(w, h)`` of the source frame, or None when the file does not say.
        peer_face_type: their crop type (e.g. ``whole_face``, ``head``).
        masks: ``{our mask name: PeerMask}``.
        polygons: hand-drawn polygons in frame px, in drawing order:
            ``[("include" | "exclude", (n, 2) array)]``.
        note: what is approximate about this face (said in its record), or "".
        identity: the identity name the file carries (DeepFaceLab ``faceset.pak``), or "".
        reload: reads this face again with its image and masks (None: it has them).
    """

    file: str
    origin: str
    image: np.ndarray | None
    crop_from_frame: np.ndarray | None
    landmarks: np.ndarray
    source: str
    frame_index: int
    frame_size: tuple[int, int] | None
    peer_face_type: str
    masks: dict[str, PeerMask] = field(default_factory=dict)
    polygons: list[tuple[str, np.ndarray]] = field(default_factory=list)
    note: str = ""
    identity: str = ""
    reload: Callable[[], "PeerFace"] | None = None


def points68(value: Any, what: str) -> np.ndarray:
    """A ``(68, 2)`` finite float64 array from a list or an array, or a one-line error."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DamagedMetadataError(f"{what} are not numbers") from None
    if a.shape != (68, 2):
        raise DamagedMetadataError(f"{what} have shape {a.shape}, not (68, 2)")
    if not np.isfinite(a).all() or np.abs(a).max() > 1e6:
        raise DamagedMetadataError(f"{what} are not finite")
    return a


def affine(value: Any, what: str) -> np.ndarray:
    """A ``(2, 3)`` invertible finite affine from a 2x3 or 3x3 list or array."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DamagedMetadataError(f"{what} is not numbers") from None
    if a.shape == (3, 3):
        a = a[:2]
    if a.shape != (2, 3) or not np.isfinite(a).all():
        raise DamagedMetadataError(f"{what} is not a finite 2x3 or 3x3 matrix")
    if abs(np.linalg.det(a[:, :2])) < 1e-12:
        raise DamagedMetadataError(f"{what} is singular")
    return a


def frame_number(name: str) -> int:
    """The trailing digits of a frame's file stem (``clip_000123.png`` -> 123), else 0."""
    m = re.search(r"(\d+)$", PurePath(name).stem)
    return int(m.group(1)) if m and len(m.group(1)) <= 12 else 0


def pixel_scale(from_size: int, to_size: int) -> np.ndarray:
    """The affine of ``cv2.resize`` from ``from_size`` to ``to_size`` px (pixel centres kept)."""
    k = to_size / from_size
    return np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])


def finite_int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)):
        raise DamagedMetadataError(f"{what} is not a number")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise DamagedMetadataError(f"{what} is not an integer")
    v = int(value)
    if not lo <= v <= hi:
        raise DamagedMetadataError(f"{what} {v} is outside [{lo}, {hi}]")
    return v
