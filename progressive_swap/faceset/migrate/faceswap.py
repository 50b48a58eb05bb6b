"""FaceSwap faces: extracted face PNGs (Python-literal text in an ``iTXt`` chunk ``faceswap``) and
``alignments.fsa`` files (a zlib-compressed pickle).

Facts used (``shared/fixtures/migration/FORMATS.md`` section 2): ``landmarks_xy`` are source-frame
pixels; each stored mask is ``zlib`` of a ``stored_size``² uint8 array with an affine from frame
pixels to its pixels (2x3, or 3x3 in recent versions); the face PNG is always *head*-centred at
coverage 1 and does not store its crop matrix. Its rotation and scale are the classic 51-point
mean-face fit (:data:`MEAN_FACE_51`), but its position depends on a head-pose estimate made with a
3D model we do not reproduce, so without the source frames a FaceSwap face's pixels cannot be
placed exactly, except from a stored mask of ``head`` centering (whose matrix is the PNG's, at the
mask's size): :func:`read_faceswap_png` then returns the PNG's ``crop_from_frame``, and otherwise
None, and the importer re-crops from ``frames=`` instead.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from progressive_swap.core.align import umeyama
from progressive_swap.faceset.migrate.containers import decode_image, image_size, png_chunks, png_itxt
from progressive_swap.faceset.migrate.peer_face import (
    PeerFace,
    PeerMask,
    affine,
    finite_int,
    frame_number,
    points68,
)
from progressive_swap.faceset.migrate.safe_load import (
    DamagedMetadataError,
    UnsafeMetadataError,
    bounded_zlib,
    literal_text,
    restricted_loads,
)

MAX_FSA_BYTES = 1 << 30
"""Largest decompressed ``alignments.fsa`` accepted (100k frames with thumbnails: ~300 MB)."""
MAX_MASK_SIZE = 2048

# The 51-point mean face (points 17..67) in unit-template coordinates, the same numbers
# DeepFaceLab calls ``landmarks_2D``; FaceSwap shifts x by +0.009873 to centre the face at 0.5.
_MEAN_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
    0.42689,
]
_MEAN_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454,
    0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423,
    0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077,
    0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192,
    0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803,
    0.824182,
]
MEAN_FACE_51 = np.stack([np.array(_MEAN_X) + 0.009873, np.array(_MEAN_Y)], axis=1)
"""FaceSwap's normalisation target for landmarks 17..67 (x, y in [0, 1])."""


def legacy_matrix(landmarks: np.ndarray) -> np.ndarray:
    """FaceSwap's pose-free alignment: frame px -> unit template (``(2, 3)``). The rotation and
    scale of every FaceSwap crop; the position also depends on the centering's pose offset."""
    return umeyama(landmarks[17:], MEAN_FACE_51)


def mask_name(name: str) -> str:
    """Our mask name for a FaceSwap mask: ``components`` -> ``user_fs_components``."""
    return "user_fs_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:48]


def _padding(size: int, centering_ratio: float) -> int:
    """FaceSwap's border of a crop at coverage 1: ``round(size * ratio / 2)`` (head 0.625, face 0.5)."""
    return int(round(size * (1.0 - (1.0 - centering_ratio)) / 2))


def head_crop_from_mask(mask_from_frame: np.ndarray, stored_size: int, png_size: int) -> np.ndarray:
    """The face PNG's frame -> crop matrix from a ``head``-centred mask's matrix: both are the same
    normalised head matrix, scaled to ``size - 2 * padding`` and shifted by ``padding``."""
    pad_m, pad_p = _padding(stored_size, 0.625), _padding(png_size, 0.625)
    unit = mask_from_frame.copy()
    unit[:, 2] -= pad_m
    unit /= stored_size - 2 * pad_m
    out = unit * (png_size - 2 * pad_p)
    out[:, 2] += pad_p
    return out


def _face(d: Any, what: str) -> tuple[np.ndarray, dict[str, PeerMask], tuple[np.ndarray, int] | None]:
    """Landmarks, masks and the first ``head``-centred mask's ``(matrix, stored_size)`` (or None)
    of one face dict (a PNG header's ``alignments``, or an fsa face)."""
    if not isinstance(d, dict):
        raise DamagedMetadataError(f"{what} is not a dict")
    lm = d.get("landmarks_xy")
    n = len(lm) if isinstance(lm, (list, tuple, np.ndarray)) else 0
    if n and n != 68:
        raise DamagedMetadataError(f"{what} has {n}-point landmarks; only 68-point faces are imported")
    landmarks = points68(lm, f"{what} landmarks_xy")
    masks: dict[str, PeerMask] = {}
    head = None
    raw = d.get("mask") or {}
    if not isinstance(raw, dict):
        raise DamagedMetadataError(f"{what} mask is not a dict")
    for name, m in raw.items():
        if not isinstance(name, str) or not isinstance(m, dict):
            raise DamagedMetadataError(f"{what} has a malformed mask entry")
        size = finite_int(m.get("stored_size"), f"mask {name[:40]} stored_size", 8, MAX_MASK_SIZE)
        blob = m.get("mask")
        if isinstance(blob, np.ndarray) and blob.dtype == np.uint8:
            blob = blob.tobytes()
        if not isinstance(blob, bytes):
            raise DamagedMetadataError(f"mask {name[:40]} holds no bytes")
        pixels = bounded_zlib(blob, size * size, exact=size * size)
        arr = np.frombuffer(pixels, np.uint8).reshape(size, size).astype(np.float32) / 255.0
        mat = affine(m.get("affine_matrix"), f"mask {name[:40]} affine_matrix")
        masks[mask_name(name)] = PeerMask(arr, mat)
        if m.get("stored_centering") == "head" and head is None:
            head = (mat, size)
    return landmarks, masks, head


def png_header(data: bytes) -> dict[str, Any] | None:
    """The parsed ``faceswap`` iTXt text of a face PNG, or None if the PNG has none."""
    texts = []
    for _, payload in png_chunks(data, {b"iTXt"}):
        keyword, text = png_itxt(payload)
        if keyword == "faceswap":
            texts.append(text)
    if not texts:
        return None
    if len(texts) > 1:
        raise UnsafeMetadataError(f"{len(texts)} faceswap iTXt chunks (FaceSwap writes one)")
    meta = literal_text(texts[0])
    if not isinstance(meta, dict) or not isinstance(meta.get("alignments"), dict):
        raise DamagedMetadataError("faceswap text has no 'alignments' dict")
    return meta


def read_alignments(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """``{frame name: [face dict, ...]}`` from an ``alignments.fsa``, unpickled safely."""
    raw = restricted_loads(bounded_zlib(data, MAX_FSA_BYTES))
    if not isinstance(raw, dict):
        raise DamagedMetadataError("alignments are not a dict")
    frames = raw.get("__data__", raw)  # files before version 2.1 have no __meta__/__data__ wrapper
    if not isinstance(frames, dict):
        raise DamagedMetadataError("alignments __data__ is not a dict")
    out: dict[str, list[dict[str, Any]]] = {}
    for frame, entry in frames.items():
        if frame == "__meta__":
            continue
        faces = entry.get("faces") if isinstance(entry, dict) else entry
        if not isinstance(frame, str) or not isinstance(faces, list):
            raise DamagedMetadataError("an alignments entry is not {frame: {'faces': [...]}}")
        out[frame] = faces
    return out


def read_faceswap_png(path: Path, data: bytes, alignments: dict[str, list[dict[str, Any]]] | None, *,
                      pixels: bool = True) -> PeerFace:
    """Read one FaceSwap face PNG, from its own header or else from the folder's alignments.

    ``pixels=False`` keeps no image and no masks (they are checked, then dropped).

    Raises:
        UnsafeMetadataError / DamagedMetadataError: one line saying what is wrong.
    """
    meta = png_header(data)
    if meta is not None:
        src = meta.get("source") if isinstance(meta.get("source"), dict) else {}
        landmarks, masks, head = _face(meta["alignments"], "alignments")
        source = src.get("source_filename") if isinstance(src.get("source_filename"), str) else path.name
        dims = src.get("source_frame_dims")
        frame_size = None
        if isinstance(dims, (tuple, list)) and len(dims) == 2:
            frame_size = (finite_int(dims[1], "frame width", 1, 1 << 16),
                          finite_int(dims[0], "frame height", 1, 1 << 16))
    elif alignments is not None:
        # Before headers (alignments < 2.1) faces are named <frame stem>_<face index>.png.
        m = re.match(r"^(.*)_(\d+)$", path.stem)
        found = None
        if m:
            for frame, faces in alignments.items():
                if PurePath(frame).stem == m.group(1) and int(m.group(2)) < len(faces):
                    found = frame, faces[int(m.group(2))]
        if found is None:
            raise DamagedMetadataError("no faceswap header, and alignments.fsa lists no such face")
        source = found[0]
        landmarks, masks, head = _face(found[1], "alignments")
        frame_size = None
    else:
        raise DamagedMetadataError("no FaceSwap metadata (no faceswap iTXt chunk, no alignments.fsa)")
    w, h = image_size(data)
    if w != h:
        raise DamagedMetadataError(f"face image is {w}x{h}, not square")
    image = decode_image(data) if pixels else None
    return PeerFace(
        file=path.name, origin="faceswap", image=image, landmarks=landmarks,
        crop_from_frame=None if head is None else head_crop_from_mask(head[0], head[1], w),
        source=source, frame_index=frame_number(source), frame_size=frame_size, peer_face_type="head",
        masks=masks if pixels else {},
    )
