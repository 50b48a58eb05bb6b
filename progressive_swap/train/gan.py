"""Optional patch-GAN term, trained in the same step as the autoencoder.

A gradient-reversal layer sits between the decoder output and the discriminator, so one
backward pass trains both sides: the discriminator descends its hinge loss, and the decoder
receives the negated gradient, i.e. it ascends the same loss (pushes fakes to look real).
This keeps a single optimizer, Lightning's automatic optimization, and exact resume.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward."""
    return _GradReverse.apply(x, scale)


class PatchDiscriminator(nn.Module):
    """A small convolution-only discriminator scoring overlapping patches.

    Args:
        channels: features of the first layer (doubled per layer, at most 8×).
        layers: stride-2 layers; the receptive field grows with it (3 layers ≈ 30 px patches).
    """

    def __init__(self, channels: int = 32, layers: int = 3, in_channels: int = 3):
        super().__init__()
        mods: list[nn.Module] = []
        c_in = in_channels
        for i in range(layers):
            c_out = channels * min(2**i, 8)
            mods += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
        mods.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] → patch logits ``(B, 1, H / 2**layers, W / 2**layers)``."""
        return self.net(x * 2.0 - 1.0)


def patch_gan_loss(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Hinge loss of ``disc``; its gradient reaches ``fake``'s producer reversed.

    Args:
        real, fake: ``(B, 3, H, W)`` in [0, 1].
        mask: optional ``(B, 1, H, W)``; patches are weighted by the mask's average over them.
    """
    d_real = disc(real.detach())
    d_fake = disc(grad_reverse(fake))
    per = F.relu(1.0 - d_real) + F.relu(1.0 + d_fake)  # (B, 1, h, w)
    if mask is None:
        return per.mean()
    w = F.adaptive_avg_pool2d(mask.float(), per.shape[-2:])
    return (per * w).sum() / w.sum().clamp_min(1e-8)
