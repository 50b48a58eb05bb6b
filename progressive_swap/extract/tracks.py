"""Face tracks: link the faces found in successive frames into per-person tracks.

Faces are given as flat arrays (one row per face, any number per frame), the form the
extractor's detection cache stores. Linking is frame by frame: each face is matched to a live
track (seen within ``max_gap`` frames) by the Hungarian algorithm on a cost of box overlap
and landmark distance; unmatched faces start new tracks. Track ids are 0, 1, 2… in order of
first appearance, so the result is deterministic.

Convention: boxes ``[x0, y0, x1, y1]`` and landmarks ``(68, 2)`` are frame pixels; face
sizes are :func:`faces.smoothing.face_scale` (the side of the ``full`` crop, in pixels).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from progressive_swap.extract.smoothing import face_scale


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` and ``(M, 4)`` ``[x0, y0, x1, y1]`` boxes: ``(N, M)``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def link_tracks(
    frame_index: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    identities: np.ndarray | None = None,
    min_iou: float = 0.2,
    max_distance: float = 0.5,
    max_gap: int = 8,
) -> np.ndarray:
    """Assign a track id to every face.

    Args:
        frame_index: ``(M,)`` frame of each face (non-decreasing).
        boxes: ``(M, 4)`` face boxes.
        landmarks: ``(M, 68, 2)``.
        identities: ``(M,)`` labels; faces with different non-empty labels never share a track.
        min_iou: a match needs at least this box overlap **or** ...
        max_distance: ... a mean landmark distance below this many face sizes.
        max_gap: a track absent for more than this many frames is closed.

    Returns:
        ``(M,)`` int64 track ids.

    Example:
        >>> lm = np.zeros((2, 68, 2)); lm[:, :, 0] = np.arange(68)
        >>> link_tracks(np.array([0, 1]), np.array([[0, 0, 68, 1.0]] * 2), lm).tolist()
        [0, 0]
    """
    fi = np.asarray(frame_index, np.int64)
    m = len(fi)
    if m and np.any(np.diff(fi) < 0):
        raise ValueError("faces must be ordered by frame")
    boxes = np.asarray(boxes, np.float64).reshape(m, 4)
    lms = np.asarray(landmarks, np.float64).reshape(m, 68, 2)
    ids = np.full(m, "", object) if identities is None else np.asarray(identities, object)
    sizes = np.maximum(face_scale(lms), 1e-6)
    out = np.full(m, -1, np.int64)
    # Live tracks: id -> (last frame, box, landmarks, size, identity)
    live: dict[int, tuple[int, np.ndarray, np.ndarray, float, str]] = {}
    next_id = 0
    starts = np.flatnonzero(np.r_[True, fi[1:] != fi[:-1]]) if m else np.zeros(0, int)
    for s, e in zip(starts, np.r_[starts[1:], m]):
        f = fi[s]
        live = {k: v for k, v in live.items() if f - v[0] <= max_gap}
        rows = np.arange(s, e)
        keys = list(live)
        if keys:
            tb = np.stack([live[k][1] for k in keys])
            iou = box_iou(tb, boxes[rows])
            tl = np.stack([live[k][2] for k in keys])
            tsize = np.array([live[k][3] for k in keys])
            dist = np.linalg.norm(tl[:, None] - lms[rows][None], axis=-1).mean(-1)
            dist = dist / np.maximum(tsize[:, None], sizes[rows][None])
            ok = (iou >= min_iou) | (dist <= max_distance)
            tid = np.array([live[k][4] for k in keys], object)
            ok &= (tid[:, None] == "") | (ids[rows][None] == "") | (tid[:, None] == ids[rows][None])
            cost = np.where(ok, (1.0 - iou) + dist, 1e6)
            r, c = linear_sum_assignment(cost)
            for a, b in zip(r, c):
                if ok[a, b]:
                    out[rows[b]] = keys[a]
        for j in rows:
            if out[j] < 0:
                out[j] = next_id
                next_id += 1
            live[int(out[j])] = (int(f), boxes[j], lms[j], float(sizes[j]), str(ids[j]))
    return out


def keep_tracks(tracks: np.ndarray, landmarks: np.ndarray, keep: str | int = "all") -> np.ndarray:
    """Which faces to keep by track.

    Args:
        tracks: ``(M,)`` track ids.
        landmarks: ``(M, 68, 2)``.
        keep: ``all``; ``largest``: the one track with the greatest summed face size over its
            frames (long and close: usually the lead actor); or a track id.

    Returns:
        ``(M,)`` bool.
    """
    tracks = np.asarray(tracks, np.int64)
    if isinstance(keep, str) and keep.lstrip("-").isdigit():
        keep = int(keep)
    if keep == "all":
        return np.ones(len(tracks), bool)
    if keep == "largest":
        if not len(tracks):
            return np.ones(0, bool)
        sizes = face_scale(np.asarray(landmarks, np.float64).reshape(-1, 68, 2))
        uniq = np.unique(tracks)
        totals = np.array([sizes[tracks == t].sum() for t in uniq])
        return tracks == uniq[int(np.argmax(totals))]
    if isinstance(keep, (int, np.integer)):
        return tracks == int(keep)
    raise ValueError(f"track must be 'all', 'largest' or a track id, got {keep!r}")


def min_size_filter(landmarks: np.ndarray, min_face: float) -> np.ndarray:
    """``(M,)`` bool: faces whose size (``full`` crop side, px) is at least ``min_face``."""
    lms = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    return face_scale(lms) >= float(min_face)
