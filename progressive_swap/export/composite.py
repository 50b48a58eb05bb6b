"""Compositing: swapped aligned faces back into frame coordinates as straight-alpha RGBA layers.

Convention:
    * Alignment matrices ``m_norm`` are ``(2, 3)`` similarities mapping **frame pixels →
      normalised crop coordinates** ``[0, 1]`` (``core/align.py``); a crop of side ``S`` has
      pixel ``p = u * S - 0.5`` (pixel centres at integers, OpenCV).
    * Crops and frames here are float32 RGB in ``[0, 1]`` (sRGB, as decoded), masks float32 in
      ``[0, 1]``.
    * A *layer* is float32 ``(H, W, 4)``: sRGB colour with **straight (unassociated) alpha**.
      Where alpha is 0 the colour is 0. Writers convert to premultiplied/linear where a file
      format wants it (``export/writers.py``).
    * Mask refinement sizes (``erode``, ``dilate``, ``feather``) are **fractions of the aligned
      crop's side** (the face size), so one setting looks the same at any frame or model
      resolution: ``erode=0.02`` is about 20 px on a face 1024 px wide.

Example:
    >>> layer = face_layer(rgb, mask, m, (1920, 1080))            # doctest: +SKIP
    >>> frame_out = over(layer, plate)                            # composite for a preview
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from progressive_swap.core import align
from progressive_swap.export.writers import alpha_box, linear_to_srgb, srgb_to_linear

COLOR_METHODS = ("none", "reinhard", "histogram")


@dataclass(frozen=True)
class MaskOptions:
    """How the face mask becomes the layer's alpha.

    Args:
        erode: shrink the mask by this fraction of the crop side (grey erosion, elliptic).
        dilate: grow it by this fraction of the crop side (applied after ``erode``).
        feather: Gaussian sigma of the edge softening, a fraction of the crop side.
    """

    erode: float = 0.0
    dilate: float = 0.0
    feather: float = 0.0

    def __post_init__(self) -> None:
        for k in ("erode", "dilate", "feather"):
            v = float(getattr(self, k))
            if not (np.isfinite(v) and 0.0 <= v <= 0.5):
                raise ValueError(f"{k} must be a fraction of the face size in [0, 0.5], got {v}")


def _ellipse(radius_px: float) -> np.ndarray | None:
    r = int(round(radius_px))
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def refine_mask(mask: np.ndarray, opts: MaskOptions) -> np.ndarray:
    """Erode, dilate and feather an aligned-crop mask ``(S, S)`` (sizes relative to ``S``).

    Returns:
        float32 ``(S, S)`` in ``[0, 1]``.
    """
    m = np.asarray(mask, np.float32)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"mask must be a square (S, S) array, got {m.shape}")
    s = m.shape[0]
    if (k := _ellipse(opts.erode * s)) is not None:
        m = cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if (k := _ellipse(opts.dilate * s)) is not None:
        m = cv2.dilate(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if opts.feather * s > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), opts.feather * s, borderType=cv2.BORDER_CONSTANT)
    return np.clip(m, 0.0, 1.0)


# ----------------------------------------------------------------------------- colour


def _lab(rgb: np.ndarray) -> np.ndarray:
    """float RGB [0, 1] (sRGB) → CIE LAB (L in [0, 100]); OpenCV's float conversion."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2LAB)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return np.clip(cv2.cvtColor(np.ascontiguousarray(lab, np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0)


def lab_stats(rgb: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and standard deviation of an image's LAB channels.

    Args:
        rgb: ``(S, S, 3)`` float RGB in [0, 1].
        weight: ``(S, S)`` non-negative weights (a mask).

    Returns:
        ``(mean, std)``, each ``(3,)`` float64 (L, a, b).
    """
    lab = _lab(rgb).reshape(-1, 3).astype(np.float64)
    w = np.asarray(weight, np.float64).reshape(-1)
    tot = w.sum()
    if tot <= 1e-6:
        raise ValueError("colour statistics need a non-empty mask")
    mu = (lab * w[:, None]).sum(0) / tot
    var = (((lab - mu) ** 2) * w[:, None]).sum(0) / tot
    return mu, np.sqrt(var)


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    cdf = np.cumsum(ws)
    cdf = (cdf - 0.5 * ws) / cdf[-1]
    q = np.linspace(0.0, 1.0, n)
    return q, np.interp(q, cdf, xs)


def color_match(src: np.ndarray, ref: np.ndarray, mask: np.ndarray, method: str) -> np.ndarray:
    """Match the colour of a swapped face to the target's skin inside ``mask``.

    Both images are aligned crops of the same face (same geometry), so statistics come from
    the same region of the face in both.

    Args:
        src: ``(S, S, 3)`` float RGB [0, 1], the swapped face.
        ref: ``(S, S, 3)`` float RGB [0, 1], the target (plate) face.
        mask: ``(S, S)`` weights in [0, 1] selecting the skin to compare.
        method: ``none``; ``reinhard`` (per-channel LAB mean and standard deviation); or
            ``histogram`` (per-channel LAB histogram matching, weighted by the mask).

    Returns:
        ``(S, S, 3)`` float32 RGB in [0, 1].
    """
    if method not in COLOR_METHODS:
        raise ValueError(f"unknown color method {method!r}; choose one of {', '.join(COLOR_METHODS)}")
    src = np.asarray(src, np.float32)
    if method == "none" or float(np.sum(mask)) <= 1.0:  # no skin to compare: leave it unchanged
        return src
    if method == "reinhard":
        mu_s, sd_s = lab_stats(src, mask)
        mu_r, sd_r = lab_stats(ref, mask)
        gain = sd_r / np.maximum(sd_s, 1e-3)
        lab = (_lab(src) - mu_s) * gain + mu_r
        return _rgb(lab.astype(np.float32))
    # Histogram matching on the pixels the mask selects (weighted), applied to the whole crop.
    lab_s, lab_r = _lab(src), _lab(ref)
    w = np.asarray(mask, np.float64).reshape(-1)
    keep = w > 1e-3
    out = np.empty_like(lab_s)
    for c in range(3):
        xs, xr = lab_s[..., c].reshape(-1), lab_r[..., c].reshape(-1)
        q, qs = _weighted_quantiles(xs[keep], w[keep])
        _, qr = _weighted_quantiles(xr[keep], w[keep])
        # qs may repeat values (flat regions); np.interp needs increasing xp.
        qs_u, first = np.unique(qs, return_index=True)
        if len(qs_u) < 2:
            out[..., c] = lab_s[..., c] - qs[0] + qr[len(qr) // 2]
            continue
        out[..., c] = np.interp(lab_s[..., c], qs_u, qr[first]).astype(np.float32)
    return _rgb(out)


# ----------------------------------------------------------------------------- geometry


def crop_bbox(m_norm: np.ndarray, frame_wh: tuple[int, int], pad: int = 2) -> tuple[int, int, int, int] | None:
    """Frame-pixel box ``(x0, y0, x1, y1)`` (end exclusive) covering the crop, or None if off-frame."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pts = align.transform_points(corners, align.invert(m_norm))
    w, h = int(frame_wh[0]), int(frame_wh[1])
    x0, y0 = np.floor(pts.min(0)).astype(int) - pad
    x1, y1 = np.ceil(pts.max(0)).astype(int) + pad + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def unwarp_roi(
    crop: np.ndarray,
    m_norm: np.ndarray,
    box: tuple[int, int, int, int],
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_CONSTANT,
) -> np.ndarray:
    """Un-warp an aligned crop ``(S, S[, C])`` into the frame box ``box`` only.

    Same result as :func:`progressive_swap.core.align.warp_from_crop` cut to ``box``, but only
    the box is computed. When the crop is more than 2.5x larger than the face in the frame it
    is first reduced with ``INTER_AREA`` to twice the face's size (the matrix is
    resolution-free), to avoid aliasing. Milder reductions skip that step: averaging an
    upsampled crop is a blur (it doubles the round-trip error on the phantom).
    """
    s = crop.shape[0]
    m_px = align.crop_matrix(m_norm, s)
    scale = align.matrix_scale(m_px)  # crop px per frame px
    if scale > 2.5:
        s2 = max(8, int(round(2.0 * s / scale)))
        crop = cv2.resize(crop, (s2, s2), interpolation=cv2.INTER_AREA)
        m_px = align.crop_matrix(m_norm, s2)
    x0, y0, x1, y1 = box
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
    m_roi = align.compose(m_px, shift)  # ROI px -> crop px
    return cv2.warpAffine(
        crop, m_roi, (x1 - x0, y1 - y0), flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=border, borderValue=0,
    )


# ----------------------------------------------------------------------------- layers


@dataclass
class SwappedFace:
    """One swapped face, ready to composite.

    Attributes:
        rgb: ``(S, S, 3)`` float32 RGB in [0, 1], the swapped aligned face (sRGB).
        mask: ``(S, S)`` float32 in [0, 1], its alpha in crop space (before refinement).
        matrix: ``(2, 3)`` alignment, frame px → normalised crop coordinates.
        track: face track id (-1 if none).
    """

    rgb: np.ndarray
    mask: np.ndarray
    matrix: np.ndarray
    track: int = -1


def empty_layer(frame_wh: tuple[int, int]) -> np.ndarray:
    """Fully transparent ``(H, W, 4)`` float32 layer."""
    return np.zeros((int(frame_wh[1]), int(frame_wh[0]), 4), np.float32)


def face_layer_roi(
    face: SwappedFace, frame_wh: tuple[int, int], opts: MaskOptions = MaskOptions()
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Straight-alpha RGBA of one face, cut to the face's box in the frame.

    Returns:
        ``(rgba (h, w, 4) float32, (x0, y0, x1, y1))`` or None when the face is off-frame.
    """
    rgb = np.asarray(face.rgb, np.float32)
    s = rgb.shape[0]
    if rgb.shape != (s, s, 3) or np.shape(face.mask) != (s, s):
        raise ValueError(f"face rgb must be (S, S, 3) and mask (S, S), got {rgb.shape} and {np.shape(face.mask)}")
    box = crop_bbox(face.matrix, frame_wh)
    if box is None:
        return None
    alpha = refine_mask(face.mask, opts)
    # Colour is un-warped with edge replication so the crop border never darkens the edge of the
    # face; alpha is 0 outside the crop. Cubic for colour (sharper), linear for alpha (no ringing).
    col = unwarp_roi(rgb, face.matrix, box, cv2.INTER_CUBIC, cv2.BORDER_REPLICATE)
    a = unwarp_roi(alpha, face.matrix, box, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
    a = np.clip(a, 0.0, 1.0)
    a[a < 1.0 / 65535.0] = 0.0  # below a 16-bit step: truly transparent
    col = np.clip(col, 0.0, 1.0) * (a > 0)[..., None]
    return np.concatenate([col, a[..., None]], axis=2), box


def face_layer(face: SwappedFace, frame_wh: tuple[int, int], opts: MaskOptions = MaskOptions()) -> np.ndarray:
    """Frame-sized straight-alpha layer ``(H, W, 4)`` float32 of one face."""
    layer = empty_layer(frame_wh)
    got = face_layer_roi(face, frame_wh, opts)
    if got is not None:
        rgba, (x0, y0, x1, y1) = got
        layer[y0:y1, x0:x1] = rgba
    return layer


def merged_layer(faces: list[SwappedFace], frame_wh: tuple[int, int], opts: MaskOptions = MaskOptions()) -> np.ndarray:
    """All faces of a frame in one straight-alpha layer ``(H, W, 4)`` float32.

    Faces are stacked with the "over" operator (premultiplied internally), smaller faces first
    so the nearest (largest) face ends on top. No faces gives a fully transparent layer.
    """
    layer = empty_layer(frame_wh)
    order = sorted(faces, key=lambda f: align.face_size(f.matrix))
    if len(order) == 1:
        return face_layer(order[0], frame_wh, opts)
    premult = layer  # accumulate premultiplied RGBA in place
    for f in order:
        got = face_layer_roi(f, frame_wh, opts)
        if got is None:
            continue
        rgba, (x0, y0, x1, y1) = got
        a = rgba[..., 3:4]
        dst = premult[y0:y1, x0:x1]
        dst[..., :3] = rgba[..., :3] * a + dst[..., :3] * (1.0 - a)
        dst[..., 3:4] = a + dst[..., 3:4] * (1.0 - a)
    a = premult[..., 3:4]
    np.divide(premult[..., :3], a, out=premult[..., :3], where=a > 0)
    return premult


def over(layer: np.ndarray, plate: np.ndarray, linear: bool = False) -> np.ndarray:
    """Composite a straight-alpha layer over a plate.

    Args:
        layer: ``(H, W, 4)`` float straight RGBA in [0, 1] (sRGB).
        plate: ``(H, W, 3)`` uint8 or float in [0, 1] (sRGB).
        linear: blend in linear light, as a compositing package does with the EXR layers
            (edges and semi-transparent pixels come out as they will in the comp); otherwise
            blend the sRGB values directly.

    Returns:
        ``(H, W, 3)`` float32 sRGB in [0, 1]: ``rgb * a + plate * (1 - a)``, in the chosen space.
    """
    p = np.asarray(plate)
    p = p.astype(np.float32) / 255.0 if p.dtype == np.uint8 else p.astype(np.float32)
    a = layer[..., 3:4]
    if not linear:
        return layer[..., :3] * a + p * (1.0 - a)

    out = p.copy()
    box = alpha_box(layer[..., 3])  # where alpha is 0 the plate passes through untouched
    lin = srgb_to_linear(layer[box][..., :3]) * a[box] + srgb_to_linear(p[box]) * (1.0 - a[box])
    out[box] = linear_to_srgb(lin)
    return out
