"""The progressive comb autoencoder: one shared encoder, one decoder per identity.

The network is built for its final resolution. Blocks are stored by resolution (``b256``,
``b512``) and only those up to the current stage run. A stage is an image side ``stage_res`` in
``stages = [start_res, 2 * start_res, ..., final_res]``; the bottleneck is always
``(latent_channels, latent_res, latent_res)``, whatever the stage.

Fade-in. When a stage grows from ``r`` to ``2r`` (``stage_res = 2r``), with ``alpha`` in [0, 1]:

    input  = lerp(fromRGB_r(downsample2x(img)), block_2r(fromRGB_2r(img)), alpha)
    output = lerp(upsample2x(toRGB_r(x_r)), toRGB_2r(block_2r(x_r)), alpha)

``toRGB`` ends in :func:`~progressive_swap.model.blocks.output_activation`, so the output
blend happens in the *output space* (colour in [0, 1] after the sigmoid, mask as a logit).
Hence the continuity property holds exactly, for both colour and mask logit:

    model(img_2r, 2r, alpha=0) == upsample2x(model(downsample2x(img_2r), r, alpha=1))

and ``alpha = 1`` is the pure ``2r`` network. The trainer blends targets the same way:
``lerp(upsample2x(downsample2x(target)), target, alpha)`` (colour and mask probability).

Which parameters run. At the first stage ``alpha`` is ignored. While fading (``0 < alpha < 1``)
both paths run. At ``alpha == 1`` the ``r`` adapters are skipped, and at ``alpha == 0`` the new
``2r`` block and adapter are skipped, so the set of parameters with gradients depends on
``(stage_res, alpha)`` (:meth:`CombAutoencoder.active_parameters` lists it). Outer blocks (and,
with per-sample routing, absent identities' decoders) are unused at most steps anyway, so DDP
needs ``find_unused_parameters=True`` whatever we skip; skipping adds no new requirement.

Example:
    >>> model = CombAutoencoder(CombArch(2, final_res=64, start_res=32, latent_res=8,
    ...                                  latent_channels=64, channel_base=1024, channel_max=64))
    >>> rgb, mask_logit = model(torch.rand(4, 3, 64, 64), identity=0, stage_res=64, alpha=0.5)
    >>> rgb.shape, mask_logit.shape
    (torch.Size([4, 3, 64, 64]), torch.Size([4, 1, 64, 64]))
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping

import torch
from torch import nn

from progressive_swap.model.blocks import BLOCK_KINDS
from progressive_swap.model.stacks import ProgressiveDecoder, ProgressiveEncoder

__all__ = ["CombArch", "CombAutoencoder"]


@dataclass(frozen=True)
class CombArch:
    """Everything that fixes a comb's weights' names and shapes: the constructor argument of
    :class:`CombAutoencoder`, the ``arch`` entry of every checkpoint and what a resume compares.

    Args:
        num_identities: number of decoders (>= 2).
        final_res: largest image side the network is built for.
        start_res: image side of the first stage.
        latent_res: spatial side of the bottleneck (>= 4; start_res = latent_res * 2**m).
        latent_channels: bottleneck channels.
        channel_base: channels at side ``res`` are ``clamp(channel_base // res, channel_min,
            channel_max)``.
        channel_max: upper clamp of the channel schedule.
        channel_min: lower clamp of the channel schedule.
        act_slope: negative slope of the LeakyReLU activations.
        norm_groups: GroupNorm groups inside blocks; 0 means no normalisation.
        colour_norm: standardise each face by its *source identity's* colour statistics before
            the encoder (see :meth:`CombAutoencoder.normalise_input`). The encoder then sees a
            face relative to its own identity's average look: a frame's lighting passes through
            the latent, a person's skin tone does not, so each decoder paints its own
            identity's colours.
        block: kind of 3x3 convolution in every encoder and decoder block: ``conv`` (dense, the
            original design) or ``dwsep`` (depthwise 3x3 then pointwise 1x1). Checkpoints
            written before this field existed lack it and read back as ``conv``.
        core_channels: width of the wide cores at half the latent side (0: the latent-side
            width); see :class:`~progressive_swap.model.blocks.Core`.
        core_blocks: residual blocks in each decoder's core (0: no core). Decoders are per
            identity, so this is where a person's detail gets its capacity.
        encoder_core_blocks: residual blocks in the shared encoder's core (0: no core).
        light_res: blocks at this side and above have one 3x3 convolution instead of two
            (0: every block has two), halving the cost of the outer, high-resolution levels.

    Every field added after v0.1 defaults to the behaviour before it, so an old checkpoint's
    ``arch`` entry rebuilds the same network, weight for weight.

    Example:
        >>> arch = CombArch(2, final_res=64, start_res=32)
        >>> CombArch.from_dict(arch.as_dict()) == arch
        True
    """

    num_identities: int = 2
    final_res: int = 1024
    start_res: int = 256
    latent_res: int = 16
    latent_channels: int = 256
    channel_base: int = 32768
    channel_max: int = 512
    channel_min: int = 16
    act_slope: float = 0.2
    norm_groups: int = 0
    colour_norm: bool = False
    block: Literal["conv", "dwsep"] = "conv"
    core_channels: int = 0
    core_blocks: int = 0
    encoder_core_blocks: int = 0
    light_res: int = 0

    def __post_init__(self) -> None:
        if self.num_identities < 2:
            raise ValueError(f"a comb needs num_identities >= 2, got {self.num_identities}")
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"block must be one of {BLOCK_KINDS}, got {self.block!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as stored in checkpoints and safetensors metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CombArch":
        """Read a checkpoint's ``arch`` entry (also those written before this class existed,
        which hold the same keys)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown architecture keys {unknown}: written by a newer version?")
        return cls(**dict(d))

    def differences(self, other: "CombArch") -> dict[str, tuple[Any, Any]]:
        """``{field: (self's, other's)}`` for every field that differs."""
        a, b = self.as_dict(), other.as_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


class CombAutoencoder(nn.Module):
    """Shared encoder + one decoder per identity ("comb"), growing by stage.

    A swap encodes a face of identity j and decodes it with identity i's decoder. The encoder
    and each decoder are separate modules made of repeated :class:`EncoderBlock` /
    :class:`DecoderBlock`, so FSDP can auto-wrap per block and a strategy can put decoders on
    other devices (``train/strategy.py``); the network itself never moves tensors between devices.

    Args:
        arch: the architecture (:class:`CombArch`).
        checkpoint_blocks: activation checkpointing per block (``use_reentrant=False``); a
            runtime choice, not architecture, so it is settable and not part of ``arch``.
            Leave it off when the strategy (e.g. FSDP) already checkpoints the blocks.
    """

    def __init__(self, arch: CombArch, checkpoint_blocks: bool = False) -> None:
        super().__init__()
        if not isinstance(arch, CombArch):
            raise TypeError(f"CombAutoencoder takes a CombArch, got {type(arch).__name__}")
        self.arch = arch
        shared = {k: v for k, v in arch.as_dict().items() if k not in ("num_identities", "colour_norm")}
        self.encoder = ProgressiveEncoder(**shared, in_channels=3)
        self.decoders = nn.ModuleList(
            ProgressiveDecoder(**shared, out_channels=4) for _ in range(arch.num_identities)
        )
        self.checkpoint_blocks = checkpoint_blocks
        self.num_identities = arch.num_identities
        self.colour_norm = arch.colour_norm
        # Per identity: mean and standard deviation of RGB inside the face (N, 2, 3). Measured on
        # the face sets before training (set_identity_colour) and saved with the weights; the
        # placeholder (0.5, 0.25) is a plain rescaling until then.
        placeholder = torch.tensor([[0.5] * 3, [0.25] * 3]).expand(arch.num_identities, 2, 3)
        self.register_buffer("identity_colour", placeholder.clone(), persistent=arch.colour_norm)
        self.final_res, self.start_res, self.latent_res = arch.final_res, arch.start_res, arch.latent_res
        self.stages: list[int] = list(self.encoder.stages)  # [start_res, ..., final_res]

    # -- description -------------------------------------------------------------------------

    def arch_args(self) -> dict[str, Any]:
        """The architecture as plain values: ``CombAutoencoder(CombArch(**arch_args()))`` rebuilds it."""
        return self.arch.as_dict()

    @property
    def checkpoint_blocks(self) -> bool:
        return self.encoder.checkpoint_blocks

    @checkpoint_blocks.setter
    def checkpoint_blocks(self, value: bool) -> None:
        for stack in (self.encoder, *self.decoders):
            stack.checkpoint_blocks = bool(value)

    def active_parameters(self, stage_res: int, alpha: float | None = None) -> list[str]:
        """Names (as in ``named_parameters()``) of the parameters used at ``(stage_res, alpha)``.

        Covers the encoder and every decoder. With ``alpha=None`` it is the union over the whole
        stage (fade included), so at growth from r to 2r the new parameters are
        ``set(active_parameters(2r)) - set(active_parameters(r))``.
        """
        prefixes = [f"encoder.{m}" for m in self.encoder.active_modules(stage_res, alpha)]
        for i, dec in enumerate(self.decoders):
            prefixes += [f"decoders.{i}.{m}" for m in dec.active_modules(stage_res, alpha)]
        return [
            name
            for name, _ in self.named_parameters()
            if any(name.startswith(p + ".") for p in prefixes)
        ]

    def set_identity_colour(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set every identity's colour statistics (used when ``colour_norm`` is on).

        Args:
            mean: (N, 3) RGB mean inside the face, values in [0, 1], one row per identity.
            std: (N, 3) RGB standard deviation inside the face (> 0).
        """
        n = self.num_identities
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (n, 3) or std.shape != (n, 3):
            raise ValueError(f"mean and std must be ({n}, 3), got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("colour statistics must be finite with std > 0")
        self.identity_colour.copy_(torch.stack([mean, std], dim=1))

    # -- computation -------------------------------------------------------------------------

    def normalise_input(self, img: torch.Tensor, source: int | torch.Tensor | None = None) -> torch.Tensor:
        """Standardise faces by their source identity's colour: ``(img - mean) / std`` per channel.

        A per-channel affine map commutes with the average pooling of the fade-in, so growth
        continuity is untouched. Without ``colour_norm`` the image passes unchanged.

        Args:
            img: (B, 3, H, W) RGB in [0, 1].
            source: whose face each image shows: an int for the whole batch, a LongTensor (B,),
                or None for a face of nobody the model knows (the identities' average is used).

        Returns:
            (B, 3, H, W), about zero mean and unit deviation inside the face.
        """
        if not self.colour_norm:
            return img
        stats = self.identity_colour.to(img.device, img.dtype)  # (N, 2, 3)
        if source is None:
            stats = stats.mean(0, keepdim=True)  # (1, 2, 3)
        elif isinstance(source, torch.Tensor):
            if source.shape != (img.shape[0],) or source.is_floating_point():
                raise ValueError(f"source must be an int or an integer tensor ({img.shape[0]},), "
                                 f"got {source.dtype} {tuple(source.shape)}")
            stats = stats[source.to(stats.device)]  # (B, 2, 3)
        else:
            if not 0 <= operator.index(source) < self.num_identities:
                raise ValueError(f"source {source} out of range [0, {self.num_identities})")
            stats = stats[source : source + 1]  # (1, 2, 3)
        mean, std = stats[:, 0, :, None, None], stats[:, 1, :, None, None]  # (B|1, 3, 1, 1)
        return (img - mean) / std

    def encode(
        self, img: torch.Tensor, stage_res: int, alpha: float = 1.0, source: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image (B, 3, r, r) in [0, 1] -> latent (B, latent_channels, latent_res, latent_res).

        ``source`` names whose face each image shows (see :meth:`normalise_input`); it only
        matters with ``colour_norm``.
        """
        return self.encoder(self.normalise_input(img, source), stage_res, alpha)

    def decode(self, latent: torch.Tensor, identity: int | torch.Tensor, stage_res: int,
               alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode latents with the decoder(s) of ``identity``.

        Args:
            latent: (B, latent_channels, latent_res, latent_res).
            identity: an int (the whole batch goes through that decoder) or a LongTensor (B,)
                (each sample goes through its own decoder; samples are grouped by identity).
            stage_res: current stage side.
            alpha: fade-in weight; ignored at the first stage.

        Returns:
            ``(rgb, mask_logit)``: (B, 3, stage_res, stage_res) in [0, 1] and
            (B, 1, stage_res, stage_res) logits.
        """
        if not isinstance(identity, torch.Tensor):
            out = self._decode_one(operator.index(identity), latent, stage_res, alpha)
        else:
            bad_dtype = identity.is_floating_point() or identity.dtype == torch.bool
            if identity.shape != (latent.shape[0],) or bad_dtype:
                raise ValueError(
                    f"identity must be an int or an integer tensor ({latent.shape[0]},), "
                    f"got {identity.dtype} {tuple(identity.shape)}"
                )
            ids = identity.unique().tolist()  # one host sync per batch
            if len(ids) == 1:
                out = self._decode_one(ids[0], latent, stage_res, alpha)
            else:
                identity = identity.to(latent.device)
                out = None
                for i in ids:
                    idx = (identity == i).nonzero().squeeze(1)  # (B_i,)
                    part = self._decode_one(i, latent.index_select(0, idx), stage_res, alpha)
                    if out is None:
                        out = part.new_zeros((latent.shape[0], *part.shape[1:]))
                    out = out.index_copy(0, idx, part)  # out-of-place: autograd-safe
        return out[:, :3], out[:, 3:]  # (B, 3, H, W), (B, 1, H, W)

    def _decode_one(self, identity: int, latent: torch.Tensor, stage_res: int, alpha: float) -> torch.Tensor:
        if not 0 <= identity < len(self.decoders):
            raise ValueError(f"identity {identity} out of range [0, {len(self.decoders)})")
        return self.decoders[identity](latent, stage_res, alpha)  # (B, 4, H, W)

    def forward(self, img: torch.Tensor, identity: int | torch.Tensor, stage_res: int, alpha: float = 1.0,
                source: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct (or swap) faces.

        Args:
            img: (B, 3, stage_res, stage_res), RGB in [0, 1].
            identity: decoder(s) to use: an int for the whole batch, or a LongTensor (B,).
            stage_res: current stage side (one of :attr:`stages`).
            alpha: fade-in weight of the newest stage in [0, 1]; ignored at the first stage.
            source: whose face each image shows (an int, a LongTensor (B,) or None for someone
                the model does not know); used by ``colour_norm``.

        Returns:
            ``(rgb, mask_logit)``: (B, 3, stage_res, stage_res) in [0, 1] and
            (B, 1, stage_res, stage_res) logits. Both are blended in this space during a fade.
        """
        return self.decode(self.encode(img, stage_res, alpha, source), identity, stage_res, alpha)
