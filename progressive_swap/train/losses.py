"""Reconstruction losses: masked L1, masked SSIM, mask BCE, with eye and mouth priority.

Plain functions first, a thin ``nn.Module`` (:class:`SwapLoss`) that holds the weights.
Images are ``(B, 3, H, W)`` in [0, 1]; masks and weights ``(B, 1, H, W)``.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from progressive_swap.train.gan import PatchDiscriminator, patch_gan_loss


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean absolute error; ``weight`` broadcasts over channels."""
    w = weight.expand_as(pred)
    return (w * (pred - target).abs()).sum() / w.sum().clamp_min(1e-8)


def ssim_window(res: int) -> int:
    """An odd SSIM window that scales with resolution: 11 px at 256 px and above, 3 px at 32."""
    return max(3, min(11, (res // 24) | 1))


@lru_cache(maxsize=16)
def _gaussian_taps(window: int) -> torch.Tensor:
    """The SSIM window's 1-D Gaussian (σ = 1.5 px whatever the number of taps), summing to 1."""
    x = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    return (g / g.sum()).float()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int) -> torch.Tensor:
    """The SSIM map of two ``(B, C, H, W)`` images in [0, 1] (Gaussian window of ``window`` taps,
    σ = 1.5, reflect padding, c1 = 0.01², c2 = 0.03²: kornia's ``metrics.ssim`` to float rounding).

    The five local moments (x, y, x², y², xy) are stacked and filtered together: one reflect pad
    and two depthwise passes of the separable Gaussian instead of ten, forward and backward. In
    float32 whatever the autocast: the variances are differences of near-equal moments, which
    bfloat16's 8-bit mantissa would cancel away.
    """
    with torch.autocast(pred.device.type, enabled=False):
        x, y = pred.float(), target.float()
        c, r = x.shape[1], window // 2
        taps = _gaussian_taps(window).to(x.device)
        moments = F.pad(torch.cat([x, y, x * x, y * y, x * y], 1), [r, r, r, r], mode="reflect")
        k = 5 * c
        m = F.conv2d(moments, taps.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)
        m = F.conv2d(m, taps.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)
        mu1, mu2, xx, yy, xy = m.split(c, 1)
        mu12, mu1_sq, mu2_sq = mu1 * mu2, mu1 * mu1, mu2 * mu2
        num = (2 * mu12 + 0.01**2) * (2 * (xy - mu12) + 0.03**2)
        den = (mu1_sq + mu2_sq + 0.01**2) * ((xx - mu1_sq) + (yy - mu2_sq) + 0.03**2)
        return num / (den + 1e-12)


def masked_dssim(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """Structural dissimilarity ``(1 - SSIM) / 2`` averaged with ``weight`` (:func:`ssim_map`)."""
    window = window or ssim_window(pred.shape[-1])
    s = ssim_map(pred, target, window)
    w = weight.expand_as(s)
    return (w * (1.0 - s) / 2.0).sum() / w.sum().clamp_min(1e-8)


def mask_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the predicted mask logit against a soft target mask."""
    return F.binary_cross_entropy_with_logits(logit.float(), target.float())


def loss_weights(
    mask: torch.Tensor, regions: torch.Tensor, eyes: float, mouth: float, background: float
) -> torch.Tensor:
    """Per-pixel weights: ``background`` outside the face, 1 inside, plus eye and mouth priority."""
    w = background + (1.0 - background) * mask
    return w * (1.0 + eyes * regions[:, 0:1] + mouth * regions[:, 1:2])


def held_critic(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``critic(x)`` with its weights held: the gradient reaches ``x`` only, so what pushes the
    network against a critic never trains the critic."""
    held = {k: v.detach() for k, v in critic.named_parameters()}
    return torch.func.functional_call(critic, held, (x,))


class LatentIdentityCritic(nn.Module):
    """Tells whose face a latent came from: two 3x3 convolutions, a spatial mean, a linear layer
    (a few hundred thousand weights; training only, never exported)."""

    def __init__(self, latent_channels: int, identities: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(width, identities)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` latents → ``(B, identities)`` logits."""
        return self.head(self.net(latent).mean((2, 3)))


class SwapIdentityCritic(nn.Module):
    """Tells whose face an image is by its structure, not its colour: the image's luminance at
    32 px, standardised per image (zero mean, unit deviation), through three stride-2 3x3
    convolutions, a spatial mean and a linear layer (a few tens of thousands of weights; training
    only, never exported). Each decoder already paints its identity's colours, so a critic that
    could read colour would say nothing about features."""

    SIDE = 32

    def __init__(self, identities: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(2 * width, identities)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, 3, r, r)`` images in [0, 1] → ``(B, identities)`` logits."""
        luma = torch.tensor([0.2126, 0.7152, 0.0722], device=rgb.device).view(1, 3, 1, 1)
        y = (rgb.float() * luma).sum(1, keepdim=True)
        if y.shape[-1] != self.SIDE:
            y = F.adaptive_avg_pool2d(y, self.SIDE) if y.shape[-1] > self.SIDE else F.interpolate(
                y, size=self.SIDE, mode="bilinear", align_corners=False)
        y = (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 1e-4)
        return self.head(self.net(y).mean((2, 3)))


class SwapLoss(nn.Module):
    """Weighted sum of the reconstruction terms. Every weight is configurable; 0 turns a term off.

    Args:
        l1: masked L1 weight.
        ssim: masked DSSIM weight.
        mask: mask BCE weight.
        eyes: extra weight inside the eye regions (0 = no priority).
        mouth: extra weight inside the mouth region.
        background: weight of pixels outside the face mask relative to inside.
        gan: weight of the optional patch-GAN term (0: off, no discriminator is built).
        gan_channels: width of the discriminator's first layer.
        latent_adversary: strength of the latent identity adversary (0: off, no critic is built):
            a small critic learns to tell from the shared latent whose face was encoded, and the
            encoder, with this weight, to leave it unsure, so the latent is pushed to carry pose,
            expression and light but not identity, which is left to the decoders
            (:class:`LatentIdentityCritic`, :meth:`latent_term`).
        latent_channels: the latent's channels (the critic's input), with ``latent_adversary``.
        identities: decoders, with ``latent_adversary`` or ``swap_identity`` (the critics' classes).
        swap_identity: weight of the swap identity term (0: off, no critic is built): every
            identity's faces are also decoded by the next identity's decoder (the swap the export
            makes), and a critic that learns to tell the identities apart by the structure of
            their real faces (:class:`SwapIdentityCritic`) must take each swap for its decoder's
            identity (:meth:`swap_term`). It costs a second decoder pass per image.
    """

    def __init__(
        self, l1: float = 1.0, ssim: float = 1.0, mask: float = 0.5, eyes: float = 2.0, mouth: float = 1.0,
        background: float = 0.1, gan: float = 0.0, gan_channels: int = 32, latent_adversary: float = 0.0,
        latent_channels: int = 256, identities: int = 2, swap_identity: float = 0.0,
    ):
        super().__init__()
        self.w = {"l1": l1, "ssim": ssim, "mask": mask, "gan": gan}
        self.eyes, self.mouth, self.background = eyes, mouth, background
        self.discriminator = PatchDiscriminator(gan_channels) if gan > 0 else None
        self.latent_adversary = latent_adversary
        self.latent_critic = LatentIdentityCritic(latent_channels, identities) if latent_adversary > 0 else None
        self.swap_identity = swap_identity
        self.swap_critic = SwapIdentityCritic(identities) if swap_identity > 0 else None

    def latent_term(self, latent: torch.Tensor, source: torch.Tensor) -> torch.Tensor | None:
        """The latent identity adversary's terms, or None when it is off.

        Two terms, one backward: the critic learns to tell whose face each latent came from
        (cross-entropy on the latent with its gradient stopped), and the encoder is pushed to
        make the critic *unsure*: ``latent_adversary`` × the cross-entropy of the critic's
        answer against the uniform guess, through the critic with its weights held. The
        encoder's term is bounded below by log(identities) where a plain reversed gradient is
        not (the encoder could make the critic confidently wrong; at strength 1 that diverged).
        """
        if self.latent_critic is None:
            return None
        critic_loss = nn.functional.cross_entropy(self.latent_critic(latent.detach().float()), source)
        logits = held_critic(self.latent_critic, latent.float())
        confusion = -nn.functional.log_softmax(logits, dim=1).mean()  # CE against the uniform guess
        return critic_loss + self.latent_adversary * confusion

    def swap_term(self, real: torch.Tensor, real_id: torch.Tensor, swapped: torch.Tensor,
                  swapped_id: torch.Tensor) -> torch.Tensor | None:
        """The swap identity terms, or None when it is off.

        Two terms, one backward: the critic learns whose face each real training face is
        (cross-entropy on ``real``, whose gradient is stopped), and the swaps, decoded by identity
        ``swapped_id``'s decoder from other identities' faces, are pushed to be taken for that
        identity: ``swap_identity`` × the cross-entropy of the critic's answer on them against
        ``swapped_id``, through the critic with its weights held (the critic never learns from
        swaps, so it cannot learn to call any swap "B" and stop asking for B's features).
        """
        if self.swap_critic is None:
            return None
        critic_loss = F.cross_entropy(self.swap_critic(real.detach()), real_id)
        logits = held_critic(self.swap_critic, swapped)
        return critic_loss + self.swap_identity * F.cross_entropy(logits, swapped_id)

    def forward(
        self,
        rgb: torch.Tensor,
        mask_logit: torch.Tensor,
        target: torch.Tensor,
        target_mask: torch.Tensor,
        regions: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and its parts (unweighted), for logging."""
        w = loss_weights(target_mask, regions, self.eyes, self.mouth, self.background)
        rgb, target = rgb.float(), target.float()
        parts: dict[str, torch.Tensor] = {}
        if self.w["l1"]:
            parts["l1"] = masked_l1(rgb, target, w)
        if self.w["ssim"]:
            parts["ssim"] = masked_dssim(rgb, target, w)
        if self.w["mask"]:
            parts["mask"] = mask_loss(mask_logit, target_mask)
        if self.discriminator is not None:
            parts["gan"] = patch_gan_loss(self.discriminator, target, rgb, target_mask)
        total = sum(self.w[k] * v for k, v in parts.items())
        return total, parts
