"""Image quality metrics against ground truth: masked PSNR/SSIM, mask IoU, kept detail, flicker.

Images are float arrays in [0, 1], ``(H, W, 3)``; masks ``(H, W)`` in [0, 1] weight pixels.
"""
from __future__ import annotations

import numpy as np
import torch


def masked_psnr(x: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB over the (soft) mask; ``inf`` for identical images."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    w = np.ones(x.shape[:2]) if mask is None else np.asarray(mask, np.float64)
    w = np.broadcast_to(w[..., None], x.shape)
    mse = float((w * (x - ref) ** 2).sum() / max(w.sum(), 1e-12))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two soft masks thresholded at ``threshold``; 1 when both are empty."""
    p, t = np.asarray(pred) > threshold, np.asarray(truth) > threshold
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def masked_ssim(x: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, window: int = 7) -> float:
    """Mean SSIM (kornia's map) weighted by the mask; 1 for identical images."""
    import kornia

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float64)).permute(2, 0, 1)[None]

    s = kornia.metrics.ssim(t(x), t(ref), window, padding="same")[0].mean(0).numpy()  # (H, W)
    w = np.ones_like(s) if mask is None else np.asarray(mask, np.float64)
    return float((w * s).sum() / max(w.sum(), 1e-12))


def _band_power(img: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred-free 2-D spectrum of the luminance and a mask of frequencies above ``cutoff``.

    ``cutoff`` is in cycles per image side (e.g. 128 for "above the Nyquist of a 256 px image").
    """
    g = np.asarray(img, np.float64)
    if g.ndim == 3:
        g = g @ np.array([0.299, 0.587, 0.114])
    g = g - g.mean()
    f = np.fft.fft2(g)
    fy = np.fft.fftfreq(g.shape[0]) * g.shape[0]
    fx = np.fft.fftfreq(g.shape[1]) * g.shape[1]
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    return f, r > cutoff


def high_frequency_kept(x: np.ndarray, ref: np.ndarray, cutoff: float) -> dict[str, float]:
    """How much of the reference's detail above ``cutoff`` (cycles per side) ``x`` has.

    Returns:
        ``energy``: the ratio of high-frequency energies (1 = as much detail, 0 = none; can exceed 1
        with noise or ringing) and ``coherent``: the part of the reference's high-frequency energy
        that ``x`` reproduces in phase, ``Re<X, R> / |R|²`` over the band (noise does not count).
    """
    fx, band = _band_power(x, cutoff)
    fr, _ = _band_power(ref, cutoff)
    er = float((np.abs(fr[band]) ** 2).sum())
    if er == 0:
        return {"energy": float("nan"), "coherent": float("nan")}
    return {
        "energy": float((np.abs(fx[band]) ** 2).sum()) / er,
        "coherent": float(np.real(fx[band] * np.conj(fr[band])).sum()) / er,
    }


def flicker(frames: list[np.ndarray] | np.ndarray, masks: list[np.ndarray] | np.ndarray | None = None) -> float:
    """Mean absolute frame-to-frame change inside the masks (both frames' masks multiplied).

    Args:
        frames: ``T`` images ``(H, W, 3)`` in [0, 1] (T >= 2).
        masks: ``T`` masks ``(H, W)``; ``None`` uses whole frames.
    """
    if len(frames) < 2:
        raise ValueError("flicker needs at least two frames")
    total = weight = 0.0
    for t in range(1, len(frames)):
        d = np.abs(np.asarray(frames[t], np.float64) - np.asarray(frames[t - 1], np.float64)).mean(-1)
        w = (
            np.ones_like(d)
            if masks is None
            else np.asarray(masks[t], np.float64) * np.asarray(masks[t - 1], np.float64)
        )
        total += float((w * d).sum())
        weight += float(w.sum())
    return total / max(weight, 1e-12)
