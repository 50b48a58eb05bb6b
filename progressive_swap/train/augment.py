"""Augmentations: photometric in the loader workers (albumentations), geometric on the GPU (kornia).

* :func:`photometric` changes colour and contrast of a uint8 face before it becomes a tensor;
  input and target see the same change, so the decoder learns the augmented colours.
* :func:`random_affine` draws one small rotation/scale/shift/flip per sample; it is applied
  to input, target, mask and weights alike (the same geometry everywhere).
* :func:`random_grid_warp` bends the *encoder input only*: the decoder must reconstruct the
  unwarped target, so the encoder learns what a face is rather than where pixels were.

All random draws take an explicit ``torch.Generator`` so a resumed run repeats them.
"""
from __future__ import annotations

import math

import albumentations as A
import torch
import torch.nn.functional as F


def photometric(brightness: float = 0.15, contrast: float = 0.15, hue: int = 6, saturation: int = 15,
                gamma: float = 0.15, p: float = 0.8) -> A.Compose:
    """Colour augmentation for uint8 RGB faces (run in loader workers, reseeded per sample).

    Args:
        brightness, contrast: maximum relative change.
        hue, saturation: maximum shift (OpenCV HSV units).
        gamma: maximum relative gamma change.
        p: probability that each transform applies.
    """
    g = (max(1, int(100 * (1 - gamma))), int(100 * (1 + gamma)))
    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=brightness, contrast_limit=contrast, p=p),
            A.HueSaturationValue(hue_shift_limit=hue, sat_shift_limit=saturation, val_shift_limit=0, p=p),
            A.RandomGamma(gamma_limit=g, p=p),
        ]
    )


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def random_affine(
    batch: int, size: int, gen: torch.Generator, rotate: float = 10.0, scale: float = 0.05, shift: float = 0.05,
    flip: float = 0.5,
) -> torch.Tensor:
    """Random similarity matrices about the crop centre, in pixels of a ``size`` crop.

    Args:
        rotate: maximum rotation in degrees.
        scale: maximum relative zoom.
        shift: maximum shift as a fraction of ``size``.
        flip: probability of a horizontal flip.

    Returns:
        ``(batch, 2, 3)`` float32 (CPU); pixel centres at integers (kornia ``align_corners=True``).
    """
    a = _uniform(batch, -rotate, rotate, gen) * math.pi / 180
    s = _uniform(batch, 1 - scale, 1 + scale, gen)
    t = _uniform(2 * batch, -shift, shift, gen).view(batch, 2) * size
    f = torch.where(torch.rand(batch, generator=gen) < flip, -1.0, 1.0)
    c = (size - 1) / 2.0
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    m = torch.zeros(batch, 2, 3)
    m[:, 0, 0], m[:, 0, 1] = cos * f, -sin
    m[:, 1, 0], m[:, 1, 1] = sin * f, cos
    # Rotate/flip about the centre, then shift.
    m[:, 0, 2] = c - (m[:, 0, 0] * c + m[:, 0, 1] * c) + t[:, 0]
    m[:, 1, 2] = c - (m[:, 1, 0] * c + m[:, 1, 1] * c) + t[:, 1]
    return m


def apply_affine(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Warp ``(B, C, H, W)`` by ``(B, 2, 3)`` pixel matrices (source → destination), reflecting at borders."""
    import kornia.geometry.transform as KT

    return KT.warp_affine(
        x, m.to(x), dsize=x.shape[-2:], mode="bilinear", padding_mode="reflection", align_corners=True
    )


def random_grid_warp(x: torch.Tensor, gen: torch.Generator, strength: float = 0.04, cells: int = 5) -> torch.Tensor:
    """Smooth random bend of ``(B, C, H, W)`` images: the classic encoder-input warp.

    A ``(cells+1)²`` grid of random offsets (normal, ``strength`` × image side, fixed at the
    border) is upsampled bicubically to a dense flow. Resolution-independent.
    """
    b, _, h, w = x.shape
    if strength <= 0:
        return x
    off = torch.randn(b, 2, cells + 1, cells + 1, generator=gen) * (2.0 * strength)
    off[:, :, 0, :] = off[:, :, -1, :] = off[:, :, :, 0] = off[:, :, :, -1] = 0.0
    flow = F.interpolate(off.to(x.device, x.dtype), size=(h, w), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None] + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def random_color_scramble(x: torch.Tensor, gen: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Random colour transform of the *encoder input only*: ``clamp(A x + b)`` per sample.

    ``A = I + N(0, strength)`` mixes and scales the channels and ``b ~ N(0, strength / 2)``
    shifts them. The targets keep their true colours, so skin tone cannot pass from the input
    through the shared encoder: each decoder has to paint its own identity's colours, which is
    what makes a swap take on the other identity's look.
    """
    if strength <= 0:
        return x
    b = x.shape[0]
    a = torch.eye(3).expand(b, 3, 3) + torch.randn(b, 3, 3, generator=gen) * strength
    shift = torch.randn(b, 3, 1, 1, generator=gen) * (strength / 2)
    a, shift = a.to(x), shift.to(x)
    return (torch.einsum("bij,bjhw->bihw", a, x) + shift).clamp(0, 1)
