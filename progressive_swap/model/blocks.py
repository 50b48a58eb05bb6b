"""Building blocks of the progressive comb autoencoder: resamplers, RGB adapters, conv blocks.

Everything here is convolution-only (3x3 and 1x1 kernels): no dense layer, so memory and
parameters never grow with the square of the resolution.

Resampling convention (shared with the trainer, which blends targets with the same functions):
    * ``downsample2x``: 2x2 average pooling, stride 2 (an exact box filter),
      (B, C, 2H, 2W) -> (B, C, H, W).
    * ``upsample2x``: bilinear, ``align_corners=False`` (pixel centres at half-integers of the
      grid, the same convention as ``F.interpolate`` and OpenCV ``resize``), (B, C, H, W) ->
      (B, C, 2H, 2W). It is a convex combination of neighbours, so values in [0, 1] stay in [0, 1].

Example:
    >>> x = torch.rand(2, 3, 8, 8)
    >>> upsample2x(x).shape, downsample2x(x).shape
    (torch.Size([2, 3, 16, 16]), torch.Size([2, 3, 4, 4]))
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "downsample2x",
    "upsample2x",
    "output_activation",
    "FromRGB",
    "ToRGB",
    "EncoderBlock",
    "DecoderBlock",
    "Core",
    "BLOCK_KINDS",
]

#: Kinds of 3x3 convolution inside the residual blocks: ``conv`` a dense 3x3 convolution,
#: ``dwsep`` a depthwise-separable one (a per-channel 3x3, then a 1x1 that mixes channels).
BLOCK_KINDS = ("conv", "dwsep")
BlockKind = Literal["conv", "dwsep"]

# Residual branches are summed with their skip and scaled by 1/sqrt(2) to keep the variance of
# activations constant through depth, whatever the number of stages.
_RES_GAIN = 1.0 / math.sqrt(2.0)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """Halve the spatial size with 2x2 average pooling.

    Args:
        x: (B, C, H, W) with even H and W.

    Returns:
        (B, C, H/2, W/2).
    """
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"downsample2x expects (B, C, H, W) with even H, W; got {tuple(x.shape)}")
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Double the spatial size with bilinear interpolation (``align_corners=False``).

    Args:
        x: (B, C, H, W).

    Returns:
        (B, C, 2H, 2W); a convex combination of input pixels, so the value range is kept.
    """
    if x.ndim != 4:
        raise ValueError(f"upsample2x expects (B, C, H, W); got {tuple(x.shape)}")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def output_activation(raw: torch.Tensor) -> torch.Tensor:
    """Map raw decoder channels to the *output space*: colour in [0, 1], mask as a logit.

    Channels ``[:-1]`` get a sigmoid (colour, RGB in [0, 1]); the last channel is left raw
    (mask logit, for ``binary_cross_entropy_with_logits``, which is autocast-safe).

    Args:
        raw: (B, C, H, W), C >= 2.

    Returns:
        (B, C, H, W) in the output space.
    """
    return torch.cat([torch.sigmoid(raw[:, :-1]), raw[:, -1:]], dim=1)


def _conv(in_ch: int, out_ch: int, kernel: int, gain_slope: float | None) -> nn.Conv2d:
    """A same-padded conv with He init: ``gain_slope`` is the LeakyReLU slope that follows it,
    or None when nothing non-linear follows (skips, outputs)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=True)
    if gain_slope is None:
        nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
    else:
        nn.init.kaiming_normal_(conv.weight, a=gain_slope, nonlinearity="leaky_relu")
    nn.init.zeros_(conv.bias)
    return conv


class SeparableConv(nn.Module):
    """Depthwise-separable 3x3 conv: a per-channel 3x3 (``depthwise``) then a 1x1 (``pointwise``).

    Costs ``9 * in + in * out`` multiply-adds per pixel instead of ``9 * in * out``; the
    receptive field is the same. The depthwise part is variance-preserving (linear He init);
    the pointwise one carries the gain of the activation that follows.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, gain_slope: float | None) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        nn.init.kaiming_normal_(self.depthwise.weight, nonlinearity="linear")
        self.pointwise = _conv(in_ch, out_ch, 1, gain_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _conv3(in_ch: int, out_ch: int, gain_slope: float | None, block: BlockKind) -> nn.Module:
    """The blocks' 3x3 convolution of kind ``block`` (see :data:`BLOCK_KINDS`)."""
    if block == "conv":
        return _conv(in_ch, out_ch, 3, gain_slope)
    if block == "dwsep":
        return SeparableConv(in_ch, out_ch, gain_slope)
    raise ValueError(f"block must be one of {BLOCK_KINDS}, got {block!r}")


def _norm(channels: int, norm_groups: int) -> nn.Module:
    """GroupNorm with gcd(norm_groups, channels) groups; 0 groups means no normalisation.

    GroupNorm (not BatchNorm) because batches are small and per-identity: it has no batch
    statistics, so train and eval behave the same and DDP needs no stat syncing.
    """
    if norm_groups <= 0:
        return nn.Identity()
    return nn.GroupNorm(math.gcd(norm_groups, channels), channels)


class FromRGB(nn.Module):
    """1x1 conv + LeakyReLU: image (B, in_ch, H, W) -> features (B, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, act_slope: float = 0.2) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, 1, act_slope)
        self.act = nn.LeakyReLU(act_slope)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(img))


class ToRGB(nn.Module):
    """1x1 conv then :func:`output_activation`: features (B, in_ch, H, W) -> (B, out_ch, H, W).

    The result is already in the output space (colour in [0, 1], last channel a mask logit), so
    the fade-in blends and upsamples outputs, never raw logits (see ``ProgressiveDecoder``).

    At inference (no gradients) it runs at its weights' precision even under autocast: a bfloat16
    colour has 8 significant bits, one step in 256 of the value, which is about an 8-bit code of
    an sRGB crop but 2 % of a linear value for a model of ACEScct crops (log encoded;
    ``docs/plates.md``). Training keeps it under autocast: there the float32 copy of its input
    would be kept for the backward pass (128 MiB per 1024 px image for ``model=half``), and the
    step's rounding is far below what a network in training gets wrong.
    """

    def __init__(self, in_ch: int, out_ch: int = 4) -> None:
        super().__init__()
        if out_ch < 2:
            raise ValueError(f"ToRGB needs >= 2 output channels (colour + mask), got {out_ch}")
        self.conv = _conv(in_ch, out_ch, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device.type
        if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and not torch.is_grad_enabled():
            with torch.autocast(dev, enabled=False):
                return output_activation(self.conv(x.to(self.conv.weight.dtype)))
        return output_activation(self.conv(x))


class EncoderBlock(nn.Module):
    """Residual down block: two 3x3 convs at the input resolution, then 2x average pooling.

    ``main = act(norm(conv2(act(norm(conv1(x))))))``, ``skip = conv1x1(x)`` (identity when the
    channel count is unchanged), ``out = downsample2x(main + skip) / sqrt(2)``. The skip conv runs
    after pooling (a 1x1 conv commutes with average pooling), at a quarter of the cost.

    With ``down=False`` the block keeps the resolution (used as the encoder's bottleneck), and
    with ``out_act=False`` its main branch ends linearly (a linear latent). ``block`` picks the
    kind of 3x3 convolution (:data:`BLOCK_KINDS`). With ``convs=1`` the main branch is a single
    3x3 convolution (``in_ch -> out_ch``): a *light* block, half the cost, for the outer levels.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H/2, W/2) (or (B, out_ch, H, W) when ``down=False``).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        down: bool = True,
        out_act: bool = True,
        act_slope: float = 0.2,
        norm_groups: int = 0,
        block: BlockKind = "conv",
        convs: int = 2,
    ) -> None:
        super().__init__()
        if convs not in (1, 2):
            raise ValueError(f"convs must be 1 or 2, got {convs}")
        self.down, self.convs = down, convs
        if convs == 2:
            self.conv1 = _conv3(in_ch, in_ch, act_slope, block)
            self.norm1 = _norm(in_ch, norm_groups)
        self.conv2 = _conv3(in_ch, out_ch, act_slope if out_act else None, block)
        self.norm2 = _norm(out_ch, norm_groups) if out_act else nn.Identity()
        self.act = nn.LeakyReLU(act_slope)
        self.out_act = out_act
        self.skip = nn.Identity() if in_ch == out_ch else _conv(in_ch, out_ch, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x))) if self.convs == 2 else x  # (B, in, H, W)
        y = self.norm2(self.conv2(y))  # (B, out, H, W)
        if self.out_act:
            y = self.act(y)
        if self.down:
            y, x = downsample2x(y), downsample2x(x)  # (B, out, H/2, W/2), (B, in, H/2, W/2)
        return (y + self.skip(x)) * _RES_GAIN


class DecoderBlock(nn.Module):
    """Residual up block: 2x bilinear upsampling, then two 3x3 convs at the output resolution.

    ``u = upsample2x(x)``, ``main = act(norm(conv2(act(norm(conv1(u))))))``,
    ``skip = conv1x1(u)`` (identity when the channel count is unchanged),
    ``out = (main + skip) / sqrt(2)``. The skip conv runs before upsampling (a 1x1 conv commutes
    with bilinear upsampling, whose weights sum to one), at a quarter of the cost. With
    ``up=False`` it keeps the resolution (the decoder's stem on the latent). ``block`` picks the
    kind of 3x3 convolution (:data:`BLOCK_KINDS`); ``convs=1`` keeps only ``conv1`` (a light
    block, as in :class:`EncoderBlock`).

    Shapes: (B, in_ch, H, W) -> (B, out_ch, 2H, 2W) (or (B, out_ch, H, W) when ``up=False``).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        up: bool = True,
        act_slope: float = 0.2,
        norm_groups: int = 0,
        block: BlockKind = "conv",
        convs: int = 2,
    ) -> None:
        super().__init__()
        if convs not in (1, 2):
            raise ValueError(f"convs must be 1 or 2, got {convs}")
        self.up, self.convs = up, convs
        self.conv1 = _conv3(in_ch, out_ch, act_slope, block)
        self.norm1 = _norm(out_ch, norm_groups)
        if convs == 2:
            self.conv2 = _conv3(out_ch, out_ch, act_slope, block)
            self.norm2 = _norm(out_ch, norm_groups)
        self.act = nn.LeakyReLU(act_slope)
        self.skip = nn.Identity() if in_ch == out_ch else _conv(in_ch, out_ch, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.up:
            u, skip = x, self.skip(x)
        elif isinstance(self.skip, nn.Identity):
            u = skip = upsample2x(x)  # (B, in, 2H, 2W)
        else:
            u, skip = upsample2x(x), upsample2x(self.skip(x))  # (B, in, 2H, 2W), (B, out, 2H, 2W)
        y = self.act(self.norm1(self.conv1(u)))  # (B, out, 2H, 2W)
        if self.convs == 2:
            y = self.act(self.norm2(self.conv2(y)))
        return (y + skip) * _RES_GAIN


class Core(nn.Module):
    """A wide residual core at half the latent side: capacity where pixels are few.

    A 3x3 convolution costs as many multiply-adds per parameter as its map has pixels, so
    parameters at 8x8 cost 1/4 of those at 16x16 and 1/16,384 of those at 1024x1024. The core
    pools the map at the latent side (B, C, L, L) to (B, C, L/2, L/2), widens it to ``width``
    channels (1x1), runs ``blocks`` same-size residual :class:`DecoderBlock` s, narrows back to
    C (1x1, zero-initialised) and adds the bilinear upsampled result to its input:

        out = x + upsample2x(narrow(blocks(widen(downsample2x(x)))))

    Zero-initialising ``narrow`` makes a new core the identity, so adding one never changes what
    a network computes before it trains. Shapes: (B, C, L, L) -> (B, C, L, L), L even.
    """

    def __init__(self, channels: int, width: int, blocks: int, act_slope: float = 0.2,
                 norm_groups: int = 0) -> None:
        super().__init__()
        if blocks < 1 or width < 1:
            raise ValueError(f"a core needs blocks >= 1 and width >= 1, got {blocks} and {width}")
        self.widen = _conv(channels, width, 1, act_slope)
        self.act = nn.LeakyReLU(act_slope)
        self.blocks = nn.Sequential(*(
            DecoderBlock(width, width, up=False, act_slope=act_slope, norm_groups=norm_groups)
            for _ in range(blocks)
        ))
        self.narrow = _conv(width, channels, 1, None)
        nn.init.zeros_(self.narrow.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.widen(downsample2x(x)))  # (B, width, L/2, L/2)
        y = self.narrow(self.blocks(y))  # (B, C, L/2, L/2)
        return x + upsample2x(y)
