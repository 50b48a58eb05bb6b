"""Face alignment: similarity fit to the mean face, crop matrices, and warps both ways.

Convention (used everywhere in the project):
    * Frame and crop pixels: x right, y down, pixel centres at integer coordinates (OpenCV).
    * An *alignment matrix* ``M`` is a ``(2, 3)`` float64 similarity that maps **frame pixels
      to normalised crop coordinates** ``u`` in ``[0, 1]``: ``u = M @ [x, y, 1]``. The crop's
      left edge is ``u = 0`` and its right edge ``u = 1``, so it is resolution-free: one
      extraction serves 256, 512 and 1024 px crops.
    * In a crop of side ``S`` the pixel coordinate is ``p = u * S - 0.5``. :func:`crop_matrix`
      builds that pixel matrix; warping into the crop samples the frame at ``M_px^-1 p``.
    * **Anamorphic frames** (a plate whose ``PixelAspectRatio`` ``a`` is not 1: each pixel is
      ``a`` times as wide as it is tall) are aligned on *de-squeezed* pixels,
      ``x' = a x + (a - 1) / 2``, ``y' = y`` (:func:`desqueeze_matrix`: pixel ``x`` covers
      de-squeezed pixels ``a x … a x + a - 1``). The matrix is the similarity fitted there,
      composed with that de-squeeze, so it still maps the **frame's own pixels** (an affine
      with ``a`` times the horizontal scale, no longer a similarity) and crops cut with it are
      undistorted; landmarks stay in the frame's own pixels (:func:`alignment_matrix`).

Single numpy images go through OpenCV; batches of tensors go through kornia. Both give the
same result (tested).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from progressive_swap.core.landmarks import STABLE_POINTS, template_uv


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Args:
        src: ``(N, 2)`` points.
        dst: ``(N, 2)`` points.

    Returns:
        ``(2, 3)`` float64 matrix ``T`` with ``dst ≈ T @ [src, 1]``. Reflections are excluded.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"umeyama needs two (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("cannot fit an alignment to coincident landmarks")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1.0
    r = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var_s
    t = mu_d - scale * r @ mu_s
    return np.concatenate([scale * r, t[:, None]], axis=1)


def check_pixel_aspect(value, what: str = "pixel aspect") -> float:
    """``value`` as a float if it is a usable pixel aspect ratio (finite, 0.1 to 10); one-line
    ``ValueError`` otherwise."""
    try:
        a = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not (np.isfinite(a) and 0.1 <= a <= 10.0):
        raise ValueError(f"{what} {value!r} is not a pixel aspect ratio (expected 0.1 to 10)")
    return a


def desqueeze_matrix(pixel_aspect: float) -> np.ndarray:
    """``(2, 3)`` frame pixels → de-squeezed pixels of an anamorphic frame: ``x' = a x + (a - 1) / 2``,
    ``y' = y`` (pixel ``x`` spans de-squeezed ``a x - 0.5 … a x + a - 0.5``; the identity for ``a = 1``)."""
    a = float(pixel_aspect)
    return np.array([[a, 0.0, (a - 1.0) / 2.0], [0.0, 1.0, 0.0]], np.float64)


def desqueeze_points(points: np.ndarray, pixel_aspect: float) -> np.ndarray:
    """Frame-pixel points ``(..., 2)`` in de-squeezed pixels (unchanged for ``a = 1``)."""
    p = np.array(points, np.float64, copy=True)
    if pixel_aspect != 1.0:
        p[..., 0] = p[..., 0] * pixel_aspect + (pixel_aspect - 1.0) / 2.0
    return p


def squeeze_points(points: np.ndarray, pixel_aspect: float) -> np.ndarray:
    """De-squeezed points ``(..., 2)`` back in the frame's own pixels (inverse of :func:`desqueeze_points`)."""
    p = np.array(points, np.float64, copy=True)
    if pixel_aspect != 1.0:
        p[..., 0] = (p[..., 0] - (pixel_aspect - 1.0) / 2.0) / pixel_aspect
    return p


def desqueeze_image(image: np.ndarray, pixel_aspect: float) -> np.ndarray:
    """An anamorphic frame resampled to square pixels (``ceil(W a)`` wide, bilinear, exactly on
    :func:`desqueeze_matrix`'s grid; for ``a < 1`` a mild reduction, not pre-filtered), what a
    detector should see; the frame itself for ``a = 1``."""
    if pixel_aspect == 1.0:
        return image
    h, w = image.shape[:2]
    width = max(1, int(np.ceil(w * pixel_aspect - 1e-9)))
    return cv2.warpAffine(image, desqueeze_matrix(pixel_aspect), (width, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def alignment_matrix(landmarks: np.ndarray, face_type: str, pixel_aspect: float = 1.0) -> np.ndarray:
    """Fit the resolution-free alignment matrix for one face.

    Only the stable points (brows, eyes, nose) are used: the jaw and mouth move with
    expression and would make the crop breathe.

    Args:
        landmarks: ``(68, 2)`` frame pixels, iBUG-300W order.
        face_type: ``full``, ``whole`` or ``head``.
        pixel_aspect: the frame's pixel aspect ratio (an anamorphic plate's ``PixelAspectRatio``):
            the fit is made on de-squeezed pixels, then composed with :func:`desqueeze_matrix`.

    Returns:
        ``(2, 3)`` float64, frame pixels → normalised crop coordinates ``[0, 1]`` (a similarity
        for ``pixel_aspect=1``).
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or Inf")
    idx = list(STABLE_POINTS)
    if pixel_aspect == 1.0:
        return umeyama(lm[idx], template_uv(face_type)[idx])
    m = umeyama(desqueeze_points(lm[idx], pixel_aspect), template_uv(face_type)[idx])
    return compose(m, desqueeze_matrix(pixel_aspect))


def to3x3(m: np.ndarray) -> np.ndarray:
    """Append the ``[0, 0, 1]`` row to ``(..., 2, 3)`` matrices."""
    m = np.asarray(m, np.float64)
    bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), m.shape[:-2] + (1, 3))
    return np.concatenate([m, bottom], axis=-2)


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of ``(..., 2, 3)`` affine matrices."""
    return np.linalg.inv(to3x3(m))[..., :2, :]


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a ∘ b`` for ``(2, 3)`` affines: first ``b``, then ``a``."""
    return (to3x3(a) @ to3x3(b))[..., :2, :]


def crop_matrix(m_norm: np.ndarray, size: int) -> np.ndarray:
    """Pixel matrix of a crop of side ``size``: frame pixels → crop pixels.

    ``p = u * size - 0.5`` turns normalised crop coordinates into pixel coordinates with
    centres at integers. Works on ``(2, 3)`` or ``(B, 2, 3)``.
    """
    s = np.array([[size, 0.0, -0.5], [0.0, size, -0.5]], np.float64)
    return compose(s, m_norm)


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(..., 2)`` points."""
    p = np.asarray(points, np.float64)
    m = np.asarray(m, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def matrix_scale(m: np.ndarray) -> float:
    """Uniform scale of a similarity matrix (crop units per frame pixel for an alignment)."""
    m = np.asarray(m, np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))


def face_size(m_norm: np.ndarray) -> float:
    """Frame pixels spanned by the whole crop: the face's size in the frame."""
    return 1.0 / matrix_scale(m_norm)


def warp_to_crop(
    image: np.ndarray,
    m_norm: np.ndarray,
    size: int,
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REFLECT101,
) -> np.ndarray:
    """Warp a frame (``(H, W[, C])``, any dtype) into an aligned crop ``(size, size[, C])``.

    Convention: see the module docstring. When the crop is much smaller than the face in the
    frame, ``INTER_AREA`` is used automatically to avoid aliasing.
    """
    m_px = crop_matrix(m_norm, size)
    sx, sy = np.hypot(m_px[0, 0], m_px[1, 0]), np.hypot(m_px[0, 1], m_px[1, 1])  # crop px per frame px, by axis
    anisotropic = abs(sx - sy) > 1e-6 * max(sx, sy)  # an anamorphic frame's matrix (not a similarity)
    if interpolation == cv2.INTER_LINEAR and (min(sx, sy) < 0.5 if anisotropic else matrix_scale(m_px) < 0.5):
        # Downscaling by more than 2x: pre-blur by resizing the frame first (each axis by its own
        # scale when the frame's pixels are not square).
        f = matrix_scale(m_px) * 2.0
        fx, fy = (min(1.0, 2.0 * sx), min(1.0, 2.0 * sy)) if anisotropic else (f, f)
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * fx)), max(1, round(h * fy))), interpolation=cv2.INTER_AREA)
        # Map the small frame's pixels to the full frame's: x_full = (x_small + 0.5) * w/ws - 0.5.
        sx, sy = w / small.shape[1], h / small.shape[0]
        up = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
        m_px = compose(m_px, up)
        image = small
    return cv2.warpAffine(image, m_px, (size, size), flags=interpolation, borderMode=border)


def warp_from_crop(
    crop: np.ndarray,
    m_norm: np.ndarray,
    frame_wh: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_CONSTANT,
) -> np.ndarray:
    """Un-warp an aligned crop (``(S, S[, C])``) back into frame coordinates ``(H, W[, C])``.

    Pixels outside the crop are 0 (``BORDER_CONSTANT``).
    """
    size = crop.shape[0]
    if crop.shape[1] != size:
        raise ValueError(f"crop must be square, got {crop.shape[:2]}")
    m_px = crop_matrix(m_norm, size)
    return cv2.warpAffine(
        crop, m_px, tuple(int(v) for v in frame_wh), flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=border, borderValue=0,
    )


def _kornia_warp(
    images: torch.Tensor, m_px: torch.Tensor, hw: tuple[int, int], mode: str, padding: str
) -> torch.Tensor:
    import kornia.geometry.transform as KT

    # align_corners=True makes kornia's normalisation treat pixel centres at 0 and W-1,
    # i.e. the same integer-centre convention as OpenCV.
    return KT.warp_affine(images, m_px.to(images), dsize=hw, mode=mode, padding_mode=padding, align_corners=True)


def warp_to_crop_tensor(
    images: torch.Tensor,
    m_norm: torch.Tensor | np.ndarray,
    size: int,
    mode: str = "bilinear",
    padding: str = "reflection",
) -> torch.Tensor:
    """Batched :func:`warp_to_crop` with kornia.

    Args:
        images: ``(B, C, H, W)`` float frames.
        m_norm: ``(B, 2, 3)`` alignment matrices (frame pixels → ``[0, 1]`` crop coordinates).
        size: crop side.

    Returns:
        ``(B, C, size, size)`` crops.
    """
    m_px = torch.as_tensor(crop_matrix(np.asarray(m_norm, np.float64), size))
    return _kornia_warp(images, m_px, (size, size), mode, padding)


def warp_from_crop_tensor(
    crops: torch.Tensor, m_norm: torch.Tensor | np.ndarray, frame_hw: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Batched :func:`warp_from_crop` with kornia.

    Args:
        crops: ``(B, C, S, S)`` aligned crops.
        m_norm: ``(B, 2, 3)`` alignment matrices.
        frame_hw: output ``(H, W)``.

    Returns:
        ``(B, C, H, W)``; zeros outside the crop.
    """
    size = crops.shape[-1]
    m_px = torch.as_tensor(invert(crop_matrix(np.asarray(m_norm, np.float64), size)))
    return _kornia_warp(crops, m_px, tuple(frame_hw), mode, "zeros")
