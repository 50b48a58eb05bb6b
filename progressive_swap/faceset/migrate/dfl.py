"""DeepFaceLab aligned faces: JPGs with an APP15 pickle, and legacy PNGs with an ``fcWp`` chunk.

Facts used (``shared/fixtures/migration/FORMATS.md`` section 1): the metadata is one pickled
dict; ``landmarks`` are in aligned-image pixels, ``source_landmarks`` in frame pixels, and
``image_to_face_mat`` maps frame pixels to aligned pixels at the image's size (when it is missing,
as in files from before 2019-04, the similarity from ``source_landmarks`` to ``landmarks`` is the
same map). ``xseg_mask`` is an encoded PNG/JPEG of the mask at the XSeg resolution (256 px)
covering the whole aligned image; ``seg_ie_polys`` (and the older ``ie_polys``) are hand-drawn
polygons in aligned-image pixels, includes drawn before excludes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from progressive_swap.core.align import compose, invert, transform_points, umeyama
from progressive_swap.faceset.migrate.containers import decode_image, image_size, jpeg_app15, png_chunks
from progressive_swap.faceset.migrate.peer_face import (
    PeerFace,
    PeerMask,
    affine,
    frame_number,
    pixel_scale,
    points68,
)
from progressive_swap.faceset.migrate.safe_load import (
    DamagedMetadataError,
    UnsafeMetadataError,
    restricted_loads,
)

APP15_CAP = 65533
"""Largest APP15 payload DeepFaceLab can write (a uint16 length that counts itself)."""
FACE_TYPES = ("half_face", "midfull_face", "full_face", "full_face_no_align", "whole_face", "head",
              "head_no_align")
"""Crop types we can convert (``mark_only`` has no crop)."""
MAX_POLYGONS, MAX_POLY_POINTS = 256, 4096
LANDMARK_TOLERANCE_PX = 2.0
"""How far stored crop landmarks may sit from the stored matrix applied to the frame landmarks."""


def dfl_metadata(data: bytes, name: str) -> dict[str, Any]:
    """The metadata dict of a DeepFaceLab JPG or legacy PNG, unpickled safely.

    Raises:
        UnsafeMetadataError / DamagedMetadataError: one line saying what is wrong.
    """
    if data[:2] == b"\xff\xd8":
        payload, count = jpeg_app15(data)
        if count == 0:
            raise DamagedMetadataError("no DeepFaceLab metadata (no APP15 segment)")
        if count > 1:
            raise UnsafeMetadataError(f"{count} APP15 segments (DeepFaceLab writes one; its reader lets the last win)")
        if len(payload) > APP15_CAP:
            raise DamagedMetadataError(f"an APP15 segment of {len(payload)} bytes")
    else:
        chunks = png_chunks(data, {b"fcWp"})
        if not chunks:
            raise DamagedMetadataError("no DeepFaceLab metadata (no fcWp chunk)")
        if len(chunks) > 1:
            raise UnsafeMetadataError(f"{len(chunks)} fcWp chunks (DeepFaceLab writes one)")
        payload = chunks[0][1]
    meta = restricted_loads(payload)
    if not isinstance(meta, dict):
        raise DamagedMetadataError(f"metadata is a {type(meta).__name__}, not a dict")
    return meta


def _polygons(meta: dict[str, Any]) -> list[tuple[int, np.ndarray]]:
    """``[(1 include | 0 exclude, (n, 2) crop px)]`` from ``seg_ie_polys`` (or legacy ``ie_polys``)."""
    raw = meta.get("seg_ie_polys")
    if raw is None:
        raw = meta.get("ie_polys")
    if raw is None:
        return []
    if isinstance(raw, dict):
        raw = raw.get("polys", [])
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_POLYGONS:
        raise DamagedMetadataError("seg_ie_polys is not a list of polygons")
    out = []
    for p in raw:
        if isinstance(p, dict):
            kind, pts = p.get("type"), p.get("pts")
        elif isinstance(p, (list, tuple)) and len(p) == 2:
            kind, pts = p
        else:
            raise DamagedMetadataError("a polygon of seg_ie_polys has an unknown form")
        try:
            pts = np.asarray(pts, np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise DamagedMetadataError("a polygon's points are not (n, 2) numbers") from None
        if kind not in (0, 1) or len(pts) > MAX_POLY_POINTS or not np.isfinite(pts).all():
            raise DamagedMetadataError("a polygon of seg_ie_polys has a bad type or points")
        if len(pts) >= 3:
            out.append((int(kind), pts))
    # Includes first, then excludes, each kind in drawing order (what DeepFaceLab renders).
    return [p for p in out if p[0] == 1] + [p for p in out if p[0] == 0]


def rasterise_polygons(polys: list[tuple[int, np.ndarray]], size: int) -> np.ndarray:
    """Draw include polygons, then exclude polygons, into a ``(size, size)`` float32 mask."""
    m = np.zeros((size, size), np.uint8)
    for kind, pts in polys:
        cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1 if kind == 1 else 0, cv2.LINE_8, shift=4)
    return m.astype(np.float32)


def read_dfl(path: Path, data: bytes, *, pixels: bool = True) -> PeerFace:
    """Read one DeepFaceLab aligned face (JPG or legacy PNG).

    ``pixels=False`` reads the metadata only (no image, no masks): what a first pass over a large
    set keeps in memory.

    Raises:
        UnsafeMetadataError / DamagedMetadataError: one line saying what is wrong.
    """
    meta = dfl_metadata(data, path.name)
    ft = meta.get("face_type", "full_face")
    if ft not in FACE_TYPES:
        raise DamagedMetadataError(f"face_type {ft!r} has no crop to convert" if ft == "mark_only"
                                   else f"unknown face_type {str(ft)[:40]!r}")
    crop_lm = points68(meta.get("landmarks"), "landmarks")
    if meta.get("source_landmarks") is None:
        raise DamagedMetadataError("no source_landmarks: the face cannot be placed in its frame")
    frame_lm = points68(meta.get("source_landmarks"), "source_landmarks")
    w, h = image_size(data)
    image = decode_image(data) if pixels else None
    if h != w:
        raise DamagedMetadataError(f"aligned image is {w}x{h}, not square")
    if meta.get("image_to_face_mat") is not None:
        mat = affine(meta["image_to_face_mat"], "image_to_face_mat")
    else:  # files from before 2019-04: landmarks are the same map applied to source_landmarks
        mat = umeyama(frame_lm, crop_lm)
    err = float(np.abs(transform_points(frame_lm, mat) - crop_lm).max())
    if err > LANDMARK_TOLERANCE_PX * max(1.0, w / 512):
        raise DamagedMetadataError(f"landmarks disagree with image_to_face_mat by {err:.1f} px")

    masks: dict[str, PeerMask] = {}
    x = meta.get("xseg_mask")
    if x is not None and pixels:
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
            raise DamagedMetadataError("xseg_mask is not an encoded image")
        m = decode_image(x.reshape(-1).tobytes(), gray=True, max_side=4096).astype(np.float32)
        m = m / (65535.0 if m.max() > 255 else 255.0)
        if m.shape[0] != m.shape[1]:
            raise DamagedMetadataError(f"xseg_mask is {m.shape[1]}x{m.shape[0]}, not square")
        # A JPEG fallback is lossy: the stored mask is binary, so threshold it again.
        m = (m >= 0.5).astype(np.float32)
        masks["user_xseg"] = PeerMask(m, compose(pixel_scale(w, m.shape[0]), mat))
    polys = _polygons(meta)
    polygons = []
    if polys:
        if pixels:
            masks["user_xseg_polys"] = PeerMask(rasterise_polygons(polys, w), mat)
        back = invert(mat)
        polygons = [("include" if k == 1 else "exclude", transform_points(p, back)) for k, p in polys]
    source = meta.get("source_filename")
    source = source if isinstance(source, str) and source else path.name
    return PeerFace(
        file=path.name, origin="deepfacelab", image=image, crop_from_frame=mat, landmarks=frame_lm,
        source=source, frame_index=frame_number(source), frame_size=None, peer_face_type=str(ft),
        masks=masks, polygons=polygons,
    )


PAK_MAX_HEADER = 256 << 20
"""Largest sample-config pickle of a ``faceset.pak`` accepted (about 4 KB a face)."""


def read_pak(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The sample configs of a DeepFaceLab ``faceset.pak`` and each embedded JPG's ``(start, end)``.

    Layout: ``Q version (1)``, ``Q n``, ``n`` bytes of pickled configs, ``len + 1`` ``Q`` offsets,
    then the JPGs byte for byte. The offsets count from the end of the table, except the last,
    which DeepFaceLab writes as an absolute file position: every range is clamped to the file.

    Raises:
        UnsafeMetadataError / DamagedMetadataError: one line saying what is wrong.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16:
            raise DamagedMetadataError("faceset.pak shorter than its header")
        version, n = np.frombuffer(head, "<u8")
        if version != 1:
            raise DamagedMetadataError(f"faceset.pak version {int(version)} (known: 1)")
        if not 0 < n <= min(PAK_MAX_HEADER, size - 16):
            raise DamagedMetadataError(f"faceset.pak declares a {int(n)}-byte header")
        configs = restricted_loads(f.read(int(n)), pak=True)
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise DamagedMetadataError("faceset.pak header is not a list of sample dicts")
        table = f.read(8 * (len(configs) + 1))
        if len(table) != 8 * (len(configs) + 1):
            raise DamagedMetadataError("faceset.pak offset table is truncated")
    offsets = np.frombuffer(table, "<u8").astype(np.int64)
    data_start = 16 + int(n) + len(table)
    ranges = []
    for k in range(len(configs)):
        start = data_start + int(offsets[k])
        end = min(size, data_start + int(offsets[k + 1]))
        if not data_start <= start < end <= size:
            raise DamagedMetadataError(f"faceset.pak sample {k} has offsets outside the file")
        ranges.append((start, end))
    return configs, ranges
