"""What surrounds the phantom's face: a procedural background and occluders.

Everything is placed in fractions of the frame side (or, for occluders, in face units around
the head's pivot), so a scene looks the same at every resolution. Images are float32
``(S, S, 3)`` sRGB in ``[0, 1]``; masks are float32 ``(S, S)`` in ``[0, 1]``.
"""
from __future__ import annotations

import cv2
import numpy as np

from progressive_swap.phantom.params import FrameParams, Occluder

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fix(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, np.float64) * _ONE).astype(np.int32)


def background(seed: int, size: int) -> np.ndarray:
    """A seeded background: a two-colour gradient, soft blobs and a few hard-edged shapes.

    Args:
        seed: background seed (``FrameParams.background``).
        size: side in pixels.

    Returns:
        ``(size, size, 3)`` float32 in ``[0, 1]``.
    """
    rng = np.random.default_rng([int(seed), 0xB6])
    # Smooth part on a coarse grid, upsampled: resolution-free and cheap.
    n = 48
    g = (np.arange(n, dtype=np.float32) + 0.5) / n
    gx, gy = g[None, :], g[:, None]
    theta = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (gx - 0.5) * np.cos(theta) + (gy - 0.5) * np.sin(theta), 0, 1)[..., None]
    c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    low = (c0 * (1 - t) + c1 * t).astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.35)
        a = (rng.uniform(0.3, 0.7) * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / r**2))[..., None]
        low = low * (1 - a) + a * rng.uniform(0.0, 1.0, 3).astype(np.float32)
    img = cv2.resize(low.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    # Hard edges (a door frame, a shelf, a lamp): something sharp for the model to ignore.
    for _ in range(int(rng.integers(0, 4))):
        col = tuple(float(v) for v in rng.uniform(0.0, 1.0, 3))
        if rng.uniform() < 0.6:
            c = rng.uniform(-0.1, 1.1, 2)
            half = rng.uniform(0.03, 0.4, 2)
            a = rng.uniform(-0.3, 0.3)
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            corners = (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half) @ rot.T + c
            cv2.fillPoly(img, [_fix(corners * size - 0.5)], col, cv2.LINE_AA, _SHIFT)
        else:
            c = _fix(rng.uniform(0, 1, 2) * size - 0.5)
            cv2.circle(img, (int(c[0]), int(c[1])), int(rng.uniform(0.03, 0.15) * size * _ONE), col, -1,
                       cv2.LINE_AA, _SHIFT)
    return np.clip(img, 0.0, 1.0)


# Shoulders and collar in face units around the head's pivot (x right, y down). The collar
# sits 1.3 units below the pivot: lower than the chin can reach (~1.15 at full pitch and open
# mouth), so clothing never covers the face.
_TORSO = np.array([
    (-0.32, 1.30), (0.0, 1.42), (0.32, 1.30), (0.5, 1.34), (0.95, 1.48), (1.3, 1.72), (1.45, 2.2),
    (1.5, 12.0), (-1.5, 12.0), (-1.45, 2.2), (-1.3, 1.72), (-0.95, 1.48), (-0.5, 1.34),
])
TORSO_TOP = 1.3
"""Collar height below the head pivot, face units."""


def draw_torso(img: np.ndarray, frame: FrameParams) -> np.ndarray:
    """Draw upright shoulders in clothing (colour from the background seed) over ``img``
    in place, hiding the neck's end. Returns the torso's coverage ``(S, S)`` float32.

    The torso belongs to the scene, not to the identity, so a true swap keeps it.
    """
    size = img.shape[0]
    rng = np.random.default_rng([int(frame.background), 0x70])
    pivot = np.array([frame.cx, frame.cy])
    poly = (pivot + frame.scale * _TORSO) * size - 0.5
    m = np.zeros((size, size), np.float32)
    cv2.fillPoly(m, [_fix(poly)], 1.0, cv2.LINE_AA, _SHIFT)
    y0 = int(np.clip(np.floor(poly[:, 1].min()), 0, size))
    if y0 >= size:
        return m
    col = rng.uniform(0.05, 0.85, 3).astype(np.float32)
    # Darker towards the sides: a rough cylinder lit from the front.
    gx = (np.arange(size, dtype=np.float32) + 0.5) / size
    shade = 1.0 - 0.35 * np.clip(np.abs(gx - frame.cx) / (1.5 * frame.scale), 0, 1) ** 2
    sub, a = img[y0:], m[y0:, :, None]
    sub *= 1 - a
    sub += a * (col * shade[:, None])[None]
    return m


def _capsule(mask: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """A thick line with round caps (OpenCV draws them round), ``width`` in pixels."""
    cv2.line(mask, tuple(int(v) for v in _fix(a)), tuple(int(v) for v in _fix(b)), 1.0,
             max(1, int(round(width))), cv2.LINE_AA, _SHIFT)


def occluder_mask(occ: Occluder, frame: FrameParams, size: int) -> np.ndarray:
    """Coverage of the occluder, ``(size, size)`` float32 in ``[0, 1]`` (anti-aliased)."""
    unit = frame.scale * size  # pixels per face unit
    centre = np.array([frame.cx + frame.scale * occ.x, frame.cy + frame.scale * occ.y]) * size - 0.5
    a = np.deg2rad(occ.angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    def place(p):  # occluder-local (size units) → frame pixels
        return centre + (np.asarray(p, np.float64) * occ.size * unit) @ rot.T

    m = np.zeros((size, size), np.float32)
    s = occ.size * unit
    if occ.kind == "hand":
        cv2.ellipse(m, tuple(int(v) for v in _fix(centre)), (int(0.5 * s * _ONE), int(0.6 * s * _ONE)),
                    occ.angle, 0, 360, 1.0, -1, cv2.LINE_AA, _SHIFT)
        for fx, length in ((-0.33, 1.1), (-0.11, 1.25), (0.11, 1.2), (0.33, 1.0)):
            _capsule(m, place((fx, -0.35)), place((fx * 1.1, -0.35 - length * 0.75)), 0.2 * s)
        _capsule(m, place((0.4, 0.05)), place((0.9, -0.45)), 0.24 * s)
    elif occ.kind == "bar":
        # occ.size is the bar's thickness; it runs 4 face units, well past the face.
        half = np.array([4.0 / occ.size, 0.5])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        cv2.fillPoly(m, [_fix(place(corners))], 1.0, cv2.LINE_AA, _SHIFT)
    elif occ.kind == "mic":
        _capsule(m, place((0, 0)), place((0, 1.0 / occ.size)), 0.7 * s)  # handle, ~1 face unit
        cv2.circle(m, tuple(int(v) for v in _fix(centre)), int(s * _ONE), 1.0, -1, cv2.LINE_AA, _SHIFT)
    else:
        raise ValueError(f"unknown occluder kind {occ.kind!r}")
    return m


def draw_occluder(img: np.ndarray, occ: Occluder, frame: FrameParams) -> np.ndarray:
    """Composite an occluder over ``img`` (in place) and return its mask, ``(S, S)`` float32.

    The occluder is lit by a simple gradient along its axis so that it reads as an object.
    """
    size = img.shape[0]
    m = occluder_mask(occ, frame, size)
    ys, xs = np.nonzero(m > 0)
    if len(xs) == 0:
        return m
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = np.deg2rad(occ.angle)
    gx = np.arange(x0, x1, dtype=np.float32)[None, :] / size
    gy = np.arange(y0, y1, dtype=np.float32)[:, None] / size
    grad = 0.8 + 0.4 * np.clip(0.5 + ((gx - gx.mean()) * np.cos(a) + (gy - gy.mean()) * np.sin(a)) * 3.0, 0, 1)
    col = np.asarray(occ.color, np.float32) * grad[..., None]
    if occ.kind == "mic":  # a grille: fine dark dots on the head
        cx = frame.cx + frame.scale * occ.x
        cy = frame.cy + frame.scale * occ.y
        r = np.hypot(gx - cx, gy - cy) / (frame.scale * occ.size)
        k = 2 * np.pi / (0.04 * frame.scale)  # grille period: 0.04 face units, at any size
        grille = (r < 1.0) * (0.5 + 0.5 * (np.sin(gx * k) * np.sin(gy * k) > 0))
        col = col * (1 - 0.3 * grille[..., None]) + 0.25 * (r < 1.0)[..., None]
    sub = img[y0:y1, x0:x1]
    a_ = m[y0:y1, x0:x1, None]
    sub *= 1 - a_
    sub += a_ * np.clip(col, 0, 1)
    return m
