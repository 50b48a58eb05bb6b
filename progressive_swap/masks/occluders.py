"""Random occluders pasted over faces: discs, bars, polygons and hand-like blobs.

Used to train occlusion awareness: the segmenter (``masks/segment.py``) and the swap model's
mask head (``data.occluders`` in the trainer's data loader) learn that whatever covers a face,
in any colour, is not face. Plain numpy/OpenCV, cheap enough for loader workers.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def _face_region_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return rng.uniform(0, mask.shape[1], 2)
    j = rng.integers(len(xs))
    return np.array([xs[j], ys[j]], np.float64)


def paste_occluder(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a random occluder (disc, bar, polygon or hand-like blob) over the face.

    Its fill is a colour gradient, a shifted copy of the image itself (skin-coloured
    occluders) or ``other`` (another training image). The target mask is cut by the occluder's
    (anti-aliased, slightly blurred) alpha: ``mask * (1 - alpha)``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or float32 values in [0, 1], returned as float32).
        mask: ``(H, W)`` float32 in [0, 1].
        other: optional ``(H, W, 3)`` image of the same kind, used as a texture.

    Returns:
        ``(image, mask)`` new arrays.
    """
    out, a = paste_occluder_alpha(image, mask, rng, other)
    return out, (mask * (1 - a)).astype(np.float32)


def paste_occluder_alpha(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`paste_occluder`, returning the occluder's alpha ``(H, W)`` float32 instead of the
    cut mask, so callers can cut other per-pixel maps (loss weights) the same way."""
    h, w = mask.shape
    s = float(min(h, w))
    sh = 4  # sub-pixel bits
    alpha = np.zeros((h, w), np.uint8)
    c = _face_region_point(mask, rng)
    P = lambda p: tuple(int(round(v * (1 << sh))) for v in p)  # noqa: E731
    kind = rng.integers(4)
    if kind == 0:  # disc / ellipse
        axes = (int(rng.uniform(0.04, 0.25) * s * (1 << sh)), int(rng.uniform(0.04, 0.25) * s * (1 << sh)))
        cv2.ellipse(alpha, P(c), axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA, sh)
    elif kind == 1:  # bar (a strap, a pen, a finger)
        d = np.array([math.cos(t := rng.uniform(0, math.pi)), math.sin(t)]) * s
        cv2.line(
            alpha, P(c - d), P(c + d * rng.uniform(0.1, 1.0)), 255, max(1, int(rng.uniform(0.02, 0.1) * s)), cv2.LINE_AA
        )
    elif kind == 2:  # random polygon
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = rng.uniform(0.05, 0.3) * s * rng.uniform(0.5, 1.0, n)
        pts = c + np.stack([np.cos(ang) * r, np.sin(ang) * r], 1)
        cv2.fillPoly(alpha, [np.round(pts * (1 << sh)).astype(np.int32)], 255, cv2.LINE_AA, shift=sh)
    else:  # hand-like: a palm with fingers
        palm = rng.uniform(0.08, 0.16) * s
        t0 = rng.uniform(0, 2 * math.pi)
        base = c + palm * 1.3 * np.array([math.cos(t0), math.sin(t0)])
        cv2.circle(alpha, P(base), int(palm * (1 << sh)), 255, -1, cv2.LINE_AA, sh)
        cv2.line(alpha, P(base), P(base + (base - c) * 3), 255, int(palm * 1.6), cv2.LINE_AA)  # wrist
        for k in range(int(rng.integers(2, 5))):
            t = t0 + math.pi + rng.uniform(-0.6, 0.6)
            tip = base + palm * rng.uniform(1.6, 2.6) * np.array([math.cos(t), math.sin(t)])
            cv2.line(alpha, P(base), P(tip), 255, max(1, int(palm * 0.35)), cv2.LINE_AA)
    a = alpha.astype(np.float32) / 255.0
    top = 1.0 if image.dtype.kind == "f" else 255.0  # float values in [0, 1], or uint8 codes
    if rng.random() < 0.5:
        a = cv2.GaussianBlur(a, (0, 0), rng.uniform(0.3, 1.2))
    u = rng.random()
    if u < 0.4 or (u >= 0.7 and other is None):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        g = (
            np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
            if rng.random() < 0.5
            else np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        )
        fill = (c0 * (1 - g) + c1 * g + rng.normal(0, rng.uniform(0, 12), (h, w, 3))) * (top / 255.0)
    elif u < 0.7:
        fill = np.roll(image, (int(rng.integers(h // 4, h)), int(rng.integers(w // 4, w))), (0, 1))
        fill = fill[:, ::-1] if rng.random() < 0.5 else fill
    else:
        fill = other
    fill = np.clip(np.broadcast_to(fill, image.shape).astype(np.float32), 0, top)
    a3 = a[..., None]
    out = image.astype(np.float32) * (1 - a3) + fill * a3
    if image.dtype.kind == "f":  # 16-bit crops' values, float in [0, 1]
        return np.clip(out, 0.0, 1.0).astype(np.float32), a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), a
