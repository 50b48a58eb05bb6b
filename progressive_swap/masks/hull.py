"""Landmark masks: face hulls and eye/mouth regions, soft-edged, at any resolution.

Convention: landmarks are ``(68, 2)`` pixel coordinates of the image the mask is drawn for
(for aligned crops: ``u * size - 0.5``), pixel centres at integers. Masks are float32
``(H, W)`` in ``[0, 1]``; edges are feathered by a Gaussian whose width is a fraction of the
face size, so a mask drawn at 256 and at 1024 px looks the same.

The border rule: a landmark mask never ends in a hard edge at the image's border. Whatever
part of the hull lies outside the image, or within ``margin + 3 sigma`` pixels of its edge, is
cut off *before* feathering, so the mask fades to (nearly) 0 inside the image: at most
``BORDER_MAX`` on the outer ``margin`` pixels of every side (tested on real and phantom crops).
"""
from __future__ import annotations

import cv2
import numpy as np

from progressive_swap.core import landmarks as L

_SHIFT = 4  # sub-pixel precision bits for cv2 polygon filling
BORDER_PX = 2.0
"""Width of the image border (pixels) on which landmark masks must have faded out."""
BORDER_MAX = 0.02
"""The most a landmark mask may be on that border (the border rule, ``docs/architecture.md``)."""


LANDMARK_MASKS = ("components", "extended")  # the kinds landmark_mask draws; every other module takes them from here

def _fill(shape: tuple[int, int], polys: list[np.ndarray]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    pts = [np.round(cv2.convexHull(p.astype(np.float32))[:, 0] * (1 << _SHIFT)).astype(np.int32) for p in polys]
    cv2.fillPoly(m, pts, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return m.astype(np.float32) / 255.0


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.3:
        return mask
    return cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)


def _inside(shape: tuple[int, int], inset: float) -> np.ndarray:
    """1 on pixels at least ``inset`` pixels inside every edge of an image, else 0."""
    h, w = shape
    k = int(np.ceil(inset))
    m = np.zeros(shape, np.float32)
    if h > 2 * k and w > 2 * k:
        m[k:h - k, k:w - k] = 1.0
    return m


def fade_to_border(mask: np.ndarray, sigma: float, margin: float = BORDER_PX) -> np.ndarray:
    """Cut a hard mask ``margin + 3 sigma`` pixels inside the image's edges, then feather it.

    Args:
        mask: ``(H, W)`` float32 hard (or anti-aliased) mask.
        sigma: feather (Gaussian sigma) in pixels; <= 0.3 means no feathering.
        margin: pixels at each edge where the result must be (nearly) 0.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]`` that is at most :data:`BORDER_MAX` on the outer
        ``margin`` pixels (with ``sigma <= 0.3`` exactly 0 there).
    """
    inset = margin + (3.0 * sigma if sigma > 0.3 else 0.0)
    return np.clip(_feather(mask * _inside(mask.shape, inset), sigma), 0.0, 1.0)


def _face_scale(lm: np.ndarray) -> float:
    """Distance between the outer eye corners: a pose-robust face size in pixels."""
    return float(np.linalg.norm(lm[36] - lm[45])) + 1e-6


def forehead_points(lm: np.ndarray, height: float = 0.9) -> np.ndarray:
    """Points above the brows, ``height`` eye-corner distances up along the face's vertical axis."""
    lm = np.asarray(lm, np.float64)
    eye_r, eye_l = lm[list(L.RIGHT_EYE)].mean(0), lm[list(L.LEFT_EYE)].mean(0)
    across = eye_l - eye_r
    up = np.array([across[1], -across[0]]) / (np.linalg.norm(across) + 1e-9)  # perpendicular, pointing up
    brows = lm[list(L.BROWS)]
    return brows + up * height * _face_scale(lm)


def landmark_mask(
    landmarks: np.ndarray, size: int | tuple[int, int], kind: str = "components", feather: float = 0.04,
    margin: float | None = BORDER_PX,
) -> np.ndarray:
    """Soft face mask from landmarks.

    Args:
        landmarks: ``(68, 2)`` pixel coordinates in the target image.
        size: output side, or ``(H, W)``.
        kind: ``components`` (hull of jaw, brows and nose) or ``extended`` (adds the forehead).
        feather: Gaussian sigma as a fraction of the eye-corner distance; 0 gives a hard edge.
        margin: the border rule (module docstring): the mask is cut ``margin + 3 sigma`` pixels
            inside the image and fades out before its outer ``margin`` pixels. None: the hull
            is drawn as it falls (it may then end in a hard edge at the image border).

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    shape = (size, size) if isinstance(size, int) else tuple(size)
    pts = lm[list(L.JAW + L.BROWS + L.NOSE)]
    if kind == "extended":
        pts = np.concatenate([pts, forehead_points(lm)])
    elif kind not in LANDMARK_MASKS:
        raise ValueError(f"unknown landmark mask kind {kind!r}; choose {' or '.join(LANDMARK_MASKS)}")
    sigma = feather * _face_scale(lm)
    hull = _fill(shape, [pts])
    if margin is None:
        return np.clip(_feather(hull, sigma), 0.0, 1.0)
    return fade_to_border(hull, sigma, margin)


def region_masks(landmarks: np.ndarray, size: int | tuple[int, int], grow: float = 0.12) -> np.ndarray:
    """Eye and mouth regions for loss priority weights.

    Returns:
        ``(2, H, W)`` float32: channel 0 both eyes (with brows' lower edge), channel 1 the mouth.
        Regions are dilated by ``grow`` eye-corner distances and feathered.
    """
    lm = np.asarray(landmarks, np.float64)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    s = _face_scale(lm)

    def grown(idx: tuple[int, ...]) -> np.ndarray:
        p = lm[list(idx)]
        c = p.mean(0)
        d = p - c
        n = np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
        return c + d * (1.0 + grow * s / n)

    eyes = _fill(shape, [grown(L.RIGHT_EYE), grown(L.LEFT_EYE)])
    mouth = _fill(shape, [grown(L.OUTER_LIPS)])
    sig = 0.05 * s
    return np.stack([_feather(eyes, sig), _feather(mouth, sig)]).clip(0, 1)
