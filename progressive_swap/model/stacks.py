"""The growing stacks of the comb: a progressive encoder and decoder built from a list of
resolutions, with blocks stored by resolution (``b64``, ``b128``).

How they grow, and the continuity they keep, is written in :mod:`progressive_swap.model.autoencoder`.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from progressive_swap.model.blocks import (
    BLOCK_KINDS,
    Core,
    DecoderBlock,
    EncoderBlock,
    FromRGB,
    ToRGB,
    downsample2x,
    upsample2x,
)

__all__ = ["channels_at", "stage_resolutions", "ProgressiveEncoder", "ProgressiveDecoder"]


def channels_at(res: int, channel_base: int, channel_max: int, channel_min: int = 1) -> int:
    """Feature channels at side ``res``: ``clamp(channel_base // res, channel_min, channel_max)``.

    Example:
        >>> channels_at(1024, 32768, 512), channels_at(64, 32768, 512)
        (32, 512)
    """
    return max(channel_min, min(channel_base // res, channel_max))


def stage_resolutions(start_res: int, final_res: int) -> list[int]:
    """Sides ``[start_res, 2 * start_res, ..., final_res]``.

    Raises:
        ValueError: unless ``final_res = start_res * 2**k`` with k >= 0.
    """
    stages = [start_res]
    while stages[-1] < final_res:
        stages.append(stages[-1] * 2)
    if stages[-1] != final_res:
        raise ValueError(f"final_res={final_res} is not start_res={start_res} times a power of two")
    return stages


class _ProgressiveStack(nn.Module):
    """Stage bookkeeping shared by the encoder and the decoder (no parameters of its own).

    Subclasses hold ``blocks`` (``b{res}``, latent_res < res <= final_res), an adapter dict named
    by ``_adapters`` (``r{res}`` for every stage) and a fixed inner module named by ``_inner``.
    """

    _adapters: str
    _inner: str

    def __init__(
        self,
        final_res: int,
        start_res: int,
        latent_res: int,
        channel_base: int,
        channel_max: int,
        channel_min: int,
        checkpoint_blocks: bool,
        block: str = "conv",
        light_res: int = 0,
    ) -> None:
        super().__init__()
        if block not in BLOCK_KINDS:
            raise ValueError(f"block must be one of {BLOCK_KINDS}, got {block!r}")
        self.block = block
        if latent_res < 4:
            # A 3x3 kernel must not cover the whole bottleneck map (that would be a dense layer).
            raise ValueError(f"latent_res must be >= 4, got {latent_res}")
        stage_resolutions(latent_res, start_res)  # raises unless start_res = latent_res * 2**m
        self.stages = stage_resolutions(start_res, final_res)
        self.final_res, self.start_res, self.latent_res = final_res, start_res, latent_res
        self.channel_base, self.channel_max = channel_base, channel_max
        self.channel_min = channel_min
        self.checkpoint_blocks = checkpoint_blocks
        self.light_res = light_res
        self.core: Core | None = None

    def channels(self, res: int) -> int:
        """Feature channels at side ``res``."""
        return channels_at(res, self.channel_base, self.channel_max, self.channel_min)

    def convs(self, res: int) -> int:
        """3x3 convolutions in the block at side ``res``: 1 from ``light_res`` out (when set), else 2."""
        return 1 if 0 < self.light_res <= res else 2

    def _make_core(self, channels: int, width: int, blocks: int, act_slope: float, norm_groups: int) -> None:
        """A :class:`Core` on the latent-side map when ``blocks > 0`` (``width`` 0: ``channels``)."""
        if blocks > 0:
            self.core = Core(channels, width or channels, blocks, act_slope=act_slope, norm_groups=norm_groups)

    def _run_core(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.core is None else self._run(self.core, x)

    def block_resolutions(self) -> list[int]:
        """Sides that have a ``b{res}`` block: ``2 * latent_res, ..., final_res``."""
        return stage_resolutions(self.latent_res, self.final_res)[1:]

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Call ``block``, recomputing its activations in backward when ``checkpoint_blocks``."""
        if self.checkpoint_blocks and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _check_stage(self, stage_res: int, alpha: float) -> tuple[float, bool]:
        """Validate ``(stage_res, alpha)``; return ``(alpha, fading)``."""
        if stage_res not in self.stages:
            raise ValueError(f"stage_res={stage_res} is not one of the stages {self.stages}")
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        return alpha, stage_res > self.start_res and alpha < 1.0

    def active_modules(self, stage_res: int, alpha: float | None = None) -> list[str]:
        """Names of the submodules that run at ``(stage_res, alpha)``.

        Args:
            stage_res: current stage side.
            alpha: fade weight; None means "any alpha at this stage" (the union over the fade).
        """
        if stage_res not in self.stages:
            raise ValueError(f"stage_res={stage_res} is not one of the stages {self.stages}")
        can_fade = stage_res > self.start_res and (alpha is None or alpha < 1.0)
        new_path = not can_fade or alpha is None or alpha > 0.0
        names = [self._inner] + (["core"] if self.core is not None else [])
        names += [
            f"blocks.b{r}"
            for r in self.block_resolutions()
            if r < stage_res or (r == stage_res and new_path)
        ]
        if new_path:
            names.append(f"{self._adapters}.r{stage_res}")
        if can_fade:
            names.append(f"{self._adapters}.r{stage_res // 2}")
        return names


class ProgressiveEncoder(_ProgressiveStack):
    """Image at the stage side -> latent ``(B, latent_channels, latent_res, latent_res)``.

    Modules: ``from_rgb["r{res}"]`` (1x1 conv per stage), ``blocks["b{res}"]``
    (:class:`EncoderBlock`, res -> res/2, for latent_res < res <= final_res) and ``neck``
    (an :class:`EncoderBlock` at latent_res with a linear output of ``latent_channels``).

    Args:
        final_res: largest image side the network is built for.
        start_res: image side of the first stage.
        latent_res: spatial side of the bottleneck (>= 4; start_res = latent_res * 2**m).
        latent_channels: bottleneck channels; keep it narrow so identity is left to the decoders.
        channel_base: channels at side ``res`` are ``channel_base // res`` ...
        channel_max: ... at most this ...
        channel_min: ... and at least this.
        in_channels: image channels (3 for RGB).
        act_slope: negative slope of the LeakyReLU activations.
        norm_groups: GroupNorm groups inside blocks; 0 means no normalisation.
        checkpoint_blocks: recompute each block's activations in backward (saves memory).
        block: kind of 3x3 convolution in every block, ``conv`` (dense) or ``dwsep``
            (depthwise-separable; see :class:`~progressive_swap.model.blocks.SeparableConv`).
        core_channels, core_blocks, encoder_core_blocks: a wide :class:`~progressive_swap.model.
            blocks.Core` of ``encoder_core_blocks`` blocks and ``core_channels`` channels (0: the
            latent-side width) on the map at the latent side, before ``neck`` (none when 0).
            ``core_blocks`` is the decoders' and is accepted here so both stacks take one arch.
        light_res: blocks at this side and above have one 3x3 convolution instead of two (0: none).
    """

    _adapters = "from_rgb"
    _inner = "neck"

    def __init__(
        self,
        final_res: int = 1024,
        start_res: int = 256,
        latent_res: int = 16,
        latent_channels: int = 256,
        channel_base: int = 32768,
        channel_max: int = 512,
        channel_min: int = 16,
        in_channels: int = 3,
        act_slope: float = 0.2,
        norm_groups: int = 0,
        checkpoint_blocks: bool = False,
        block: Literal["conv", "dwsep"] = "conv",
        core_channels: int = 0,
        core_blocks: int = 0,
        encoder_core_blocks: int = 0,
        light_res: int = 0,
    ) -> None:
        super().__init__(
            final_res, start_res, latent_res,
            channel_base, channel_max, channel_min, checkpoint_blocks, block, light_res,
        )
        self.in_channels, self.latent_channels = in_channels, latent_channels
        ch = self.channels
        self.from_rgb = nn.ModuleDict(
            {f"r{s}": FromRGB(in_channels, ch(s), act_slope) for s in reversed(self.stages)}
        )
        self.blocks = nn.ModuleDict(
            {
                f"b{r}": EncoderBlock(
                    ch(r), ch(r // 2), act_slope=act_slope, norm_groups=norm_groups, block=block,
                    convs=self.convs(r),
                )
                for r in reversed(self.block_resolutions())
            }
        )
        self._make_core(ch(latent_res), core_channels, encoder_core_blocks, act_slope, norm_groups)
        self.neck = EncoderBlock(
            ch(latent_res), latent_channels, down=False, out_act=False,
            act_slope=act_slope, norm_groups=norm_groups, block=block,
        )

    def forward(self, img: torch.Tensor, stage_res: int, alpha: float = 1.0) -> torch.Tensor:
        """Encode an image at the stage side.

        Args:
            img: (B, in_channels, stage_res, stage_res), values in [0, 1].
            stage_res: current stage side (one of ``stages``).
            alpha: fade-in weight of the ``stage_res`` input path; ignored at the first stage.

        Returns:
            Latent (B, latent_channels, latent_res, latent_res).
        """
        alpha, fading = self._check_stage(stage_res, alpha)
        if img.ndim != 4 or img.shape[1:] != (self.in_channels, stage_res, stage_res):
            want = f"(B, {self.in_channels}, {stage_res}, {stage_res})"
            raise ValueError(f"img must be {want}, got {tuple(img.shape)}")
        res = stage_res
        if fading:
            res = stage_res // 2
            x = self.from_rgb[f"r{res}"](downsample2x(img))  # (B, C_r, r, r)
            if alpha > 0.0:
                new = self.from_rgb[f"r{stage_res}"](img)  # (B, C_2r, 2r, 2r)
                new = self._run(self.blocks[f"b{stage_res}"], new)  # (B, C_r, r, r)
                x = torch.lerp(x, new, alpha)
        else:
            x = self.from_rgb[f"r{res}"](img)  # (B, C_res, res, res)
        while res > self.latent_res:
            x = self._run(self.blocks[f"b{res}"], x)  # (B, C_res/2, res/2, res/2)
            res //= 2
        x = self._run_core(x)  # (B, C_l, l, l)
        return self._run(self.neck, x)  # (B, latent_channels, latent_res, latent_res)


class ProgressiveDecoder(_ProgressiveStack):
    """Latent -> output ``(B, out_channels, stage_res, stage_res)`` in the output space.

    Output space: channels ``[:-1]`` are colour in [0, 1] (sigmoid applied), the last channel is
    a mask logit. Fading blends and upsamples in this space (see the module docstring).

    Modules: ``stem`` (a :class:`DecoderBlock` at latent_res), ``blocks["b{res}"]``
    (:class:`DecoderBlock`, res/2 -> res) and ``to_rgb["r{res}"]`` (1x1 conv per stage).

    Args:
        final_res, start_res, latent_res, latent_channels, channel_base, channel_max,
        channel_min, act_slope, norm_groups, checkpoint_blocks, block, core_channels,
        light_res: as in :class:`ProgressiveEncoder`.
        core_blocks: blocks of the decoder's :class:`~progressive_swap.model.blocks.Core`, run
            after ``stem`` (none when 0); ``encoder_core_blocks`` is the encoder's.
        out_channels: colour channels + 1 mask channel (4 for RGB + mask).
    """

    _adapters = "to_rgb"
    _inner = "stem"

    def __init__(
        self,
        final_res: int = 1024,
        start_res: int = 256,
        latent_res: int = 16,
        latent_channels: int = 256,
        channel_base: int = 32768,
        channel_max: int = 512,
        channel_min: int = 16,
        out_channels: int = 4,
        act_slope: float = 0.2,
        norm_groups: int = 0,
        checkpoint_blocks: bool = False,
        block: Literal["conv", "dwsep"] = "conv",
        core_channels: int = 0,
        core_blocks: int = 0,
        encoder_core_blocks: int = 0,
        light_res: int = 0,
    ) -> None:
        super().__init__(
            final_res, start_res, latent_res,
            channel_base, channel_max, channel_min, checkpoint_blocks, block, light_res,
        )
        self.latent_channels, self.out_channels = latent_channels, out_channels
        ch = self.channels
        self.stem = DecoderBlock(
            latent_channels, ch(latent_res), up=False, act_slope=act_slope, norm_groups=norm_groups,
            block=block,
        )
        self._make_core(ch(latent_res), core_channels, core_blocks, act_slope, norm_groups)
        self.blocks = nn.ModuleDict(
            {
                f"b{r}": DecoderBlock(
                    ch(r // 2), ch(r), act_slope=act_slope, norm_groups=norm_groups, block=block,
                    convs=self.convs(r),
                )
                for r in self.block_resolutions()
            }
        )
        self.to_rgb = nn.ModuleDict({f"r{s}": ToRGB(ch(s), out_channels) for s in self.stages})

    def forward(self, latent: torch.Tensor, stage_res: int, alpha: float = 1.0) -> torch.Tensor:
        """Decode a latent at the stage side.

        Args:
            latent: (B, latent_channels, latent_res, latent_res).
            stage_res: current stage side (one of ``stages``).
            alpha: fade-in weight of the ``stage_res`` output path; ignored at the first stage.

        Returns:
            (B, out_channels, stage_res, stage_res): colour in [0, 1], then a mask logit.
        """
        alpha, fading = self._check_stage(stage_res, alpha)
        lr = self.latent_res
        if latent.ndim != 4 or latent.shape[1:] != (self.latent_channels, lr, lr):
            raise ValueError(
                f"latent must be (B, {self.latent_channels}, {lr}, {lr}), got {tuple(latent.shape)}"
            )
        top = stage_res // 2 if fading else stage_res
        x = self._run_core(self._run(self.stem, latent))  # (B, C_l, l, l)
        res = lr
        while res < top:
            res *= 2
            x = self._run(self.blocks[f"b{res}"], x)  # (B, C_res, res, res)
        if not fading:
            return self.to_rgb[f"r{stage_res}"](x)  # (B, out, stage_res, stage_res)
        out = upsample2x(self.to_rgb[f"r{top}"](x))  # (B, out, 2r, 2r)
        if alpha > 0.0:
            new = self._run(self.blocks[f"b{stage_res}"], x)  # (B, C_2r, 2r, 2r)
            out = torch.lerp(out, self.to_rgb[f"r{stage_res}"](new), alpha)
        return out
