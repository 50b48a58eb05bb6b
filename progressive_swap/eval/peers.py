"""The peers' network designs, rebuilt in PyTorch for the efficiency study (docs/peers.md).

Two families, each written from the published description of the original (no code taken):

- FaceSwap's Phaze-A presets ``dny256``, ``dny512`` and ``dny1024``: a plain convolutional
  encoder (3x3 convolutions, max pooling, a 4x4 "valid" convolution down to 1x1), a dense
  bottleneck, a shared head that upsamples the bottleneck to 4x4 and runs the first upscales for
  both identities, then one decoder per identity of bilinear-upsample + two 3x3 convolution
  blocks per level.
- DeepFaceLab's SAEHD ``df-ud`` and ``liae-ud`` at its default dimensions (ae 256, encoder 64,
  decoder 64, decoder mask 22): stride-2 5x5 encoder, two dense layers around an ``ae_dims``
  bottleneck, sub-pixel upscales with residual blocks, a separate mask path, and (``-d``) a final
  2x sub-pixel output. ``df`` has one decoder per identity; ``liae`` one shared decoder and an
  "inter" per identity (identity 0 uses the shared inter twice, like DeepFaceLab's source side).

Every port has the trainer's encoder/decoder interface (as
:class:`~progressive_swap.model.autoencoder.CombAutoencoder`): ``encode``, ``decode``,
``forward``, ``num_identities``, ``stages = [res]`` (a peer does not grow), ``start_res``,
``final_res``, ``colour_norm = False`` and ``arch_args()`` (``build_peer(model.arch_args())``
rebuilds it). ``scaled(side_div, width_div)`` gives the study's CPU-sized version: every side
divided by ``side_div`` and every width by ``width_div``; layers whose side would fall below the
design's smallest side (Phaze-A's 4x4 start) are dropped, as the study does for our comb.

Counts (:func:`describe`) follow ``model/summary.py``: one forward + backward of the encoder
and identity 0's decoder on the ``meta`` device, FLOPs from :class:`FlopCounterMode`.

Example:
    >>> model = PEERS["fs_dny1024"](side_div=8, width_div=2)
    >>> rgb, mask_logit = model(torch.rand(2, 3, 128, 128), identity=1, stage_res=128)
    >>> rgb.shape, mask_logit.shape
    (torch.Size([2, 3, 128, 128]), torch.Size([2, 1, 128, 128]))
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "PhazeAArch", "PhazeA", "phaze_a_preset", "SAEHDArch", "SAEHD", "CodeDiscriminator",
    "PEERS", "build_peer", "describe", "measure", "train_overrides",
]


# -- the common interface ----------------------------------------------------------------------


class _Peer(nn.Module):
    """What every port shares: the fixed resolution, identity routing and the trainer's interface.

    Subclasses set ``self.arch`` (a frozen dataclass with ``res`` and ``num_identities``) and
    implement ``_encode(img)`` and ``_decode_one(identity, latent) -> (B, 4, res, res)`` (RGB in
    [0, 1] then the mask logit).
    """

    design: str = ""

    def __init__(self, arch: Any) -> None:
        super().__init__()
        if arch.num_identities < 2:
            raise ValueError(f"a face-swap model needs num_identities >= 2, got {arch.num_identities}")
        self.arch = arch
        self.num_identities = arch.num_identities
        self.res = self.start_res = self.final_res = arch.res
        self.stages: list[int] = [arch.res]
        self.colour_norm = False

    # -- description ---------------------------------------------------------------------------

    def arch_args(self) -> dict[str, Any]:
        """Plain values (JSON-ready): ``build_peer(model.arch_args())`` rebuilds the model.
        ``builder`` names :func:`build_peer`, so ``model/builders.py`` (and with it
        ``swap-export`` and ``eval.quality``) rebuilds a trained port from its checkpoint."""
        return {"builder": BUILDER, "design": self.design,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.arch).items()}}

    def scaled(self, side_div: int = 1, width_div: int = 1) -> "_Peer":
        """A smaller model of the same shape: sides ÷ ``side_div``, widths ÷ ``width_div``."""
        return type(self)(self.arch.scaled(side_div, width_div))

    def active_parameters(self, stage_res: int, alpha: float | None = None) -> list[str]:
        """Every parameter is used at the peer's one stage (the interface of the comb)."""
        self._check_res(stage_res)
        return [name for name, _ in self.named_parameters()]

    def _check_res(self, stage_res: int) -> None:
        if stage_res != self.res:
            raise ValueError(f"{self.design} is built for {self.res} px only (it does not grow), got {stage_res}")

    # -- computation -----------------------------------------------------------------------------

    def normalise_input(self, img: torch.Tensor, source: int | torch.Tensor | None = None) -> torch.Tensor:
        """Peers read faces as they are (no per-identity colour normalisation)."""
        return img

    def encode(self, img: torch.Tensor, stage_res: int, alpha: float = 1.0,
               source: int | torch.Tensor | None = None) -> torch.Tensor:
        """Image (B, 3, res, res) in [0, 1] -> the design's latent (``alpha``, ``source`` unused)."""
        self._check_res(stage_res)
        if img.shape[-2:] != (self.res, self.res):
            raise ValueError(f"{self.design} takes {self.res} px images, got {tuple(img.shape)}")
        return self._encode(img)

    def decode(self, latent: torch.Tensor, identity: int | torch.Tensor, stage_res: int,
               alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode latents as ``identity`` (an int, or a LongTensor (B,) grouped by identity).

        Returns:
            ``(rgb, mask_logit)``: (B, 3, res, res) in [0, 1] and (B, 1, res, res) logits.
        """
        self._check_res(stage_res)
        if not isinstance(identity, torch.Tensor):
            out = self._decode_checked(operator.index(identity), latent)
        else:
            if identity.shape != (latent.shape[0],) or identity.is_floating_point() or identity.dtype == torch.bool:
                raise ValueError(f"identity must be an int or an integer tensor ({latent.shape[0]},), "
                                 f"got {identity.dtype} {tuple(identity.shape)}")
            ids = identity.unique().tolist()
            if len(ids) == 1:
                out = self._decode_checked(ids[0], latent)
            else:
                identity = identity.to(latent.device)
                out = None
                for i in ids:
                    idx = (identity == i).nonzero().squeeze(1)
                    part = self._decode_checked(i, latent.index_select(0, idx))
                    if out is None:
                        out = part.new_zeros((latent.shape[0], *part.shape[1:]))
                    out = out.index_copy(0, idx, part)
        return out[:, :3], out[:, 3:]

    def _decode_checked(self, identity: int, latent: torch.Tensor) -> torch.Tensor:
        if not 0 <= identity < self.num_identities:
            raise ValueError(f"identity {identity} out of range [0, {self.num_identities})")
        return self._decode_one(identity, latent)

    def forward(self, img: torch.Tensor, identity: int | torch.Tensor, stage_res: int, alpha: float = 1.0,
                source: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct (or swap) faces: ``decode(encode(img), identity)``."""
        return self.decode(self.encode(img, stage_res, alpha, source), identity, stage_res, alpha)

    def _encode(self, img: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_one(self, identity: int, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _conv(cin: int, cout: int, k: int, padding: int | str | None = None) -> nn.Conv2d:
    """A biased convolution; ``padding`` defaults to "same" (stride 1)."""
    return nn.Conv2d(cin, cout, k, padding="same" if padding is None else padding)


def _check_div(name: str, value: int, div: int) -> int:
    if div < 1 or value % div:
        raise ValueError(f"{name} = {value} is not divisible by {div}")
    return value // div


# -- FaceSwap Phaze-A ------------------------------------------------------------------------


@dataclass(frozen=True)
class PhazeAArch:
    """A Phaze-A network with an ``fs_original`` ("alt") encoder, dense bottleneck in the
    encoder, no fully-connected depth, bilinear upsampling of the bottleneck to 4x4, and
    "dny" upscales (the layout of the ``dny`` presets).

    Args:
        res: input and output side; the encoder has ``len(enc_widths) - 1`` levels and
            ``res == 4 * 2 ** (levels - 1)``.
        enc_widths: ``w0`` (the 1x1 entry convolution's width), then the width each level ends
            with; level ``i`` runs ``w_i -> w_i`` and ``w_i -> w_{i+1}`` 3x3 convolutions and a
            2x max pool, the last level a 4x4 valid convolution to 1x1 instead of the second 3x3.
        bottleneck: width of the dense bottleneck (also the channels of the 4x4 start).
        entry_width: width of the two entry convolutions (4x4 then 3x3) at the 4x4 start.
        dec_widths: width of each upscale, innermost first (4 -> 8 px first); one per doubling.
        shared_upscales: how many of the first upscales are shared by every identity.
        mask: ``head`` adds a fourth channel (the mask logit) to the output convolution;
            ``branch`` is FaceSwap's ``learn_mask``: a second entry + upscale path of the same
            widths, shared and per identity, ending in a 1-channel output.
        num_identities: number of decoders.
    """

    res: int = 256
    enc_widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512, 512)
    bottleneck: int = 512
    entry_width: int = 512
    dec_widths: tuple[int, ...] = (512, 256, 128, 64, 32, 16)
    shared_upscales: int = 1
    mask: Literal["head", "branch"] = "head"
    num_identities: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "enc_widths", tuple(self.enc_widths))
        object.__setattr__(self, "dec_widths", tuple(self.dec_widths))
        levels = len(self.enc_widths) - 1
        if levels < 1 or self.res != 4 * 2 ** (levels - 1):
            raise ValueError(f"res {self.res} needs {int(math.log2(self.res / 4)) + 2} encoder widths, "
                             f"got {len(self.enc_widths)}")
        if 4 * 2 ** len(self.dec_widths) != self.res:
            raise ValueError(f"res {self.res} needs {int(math.log2(self.res / 4))} decoder widths, "
                             f"got {len(self.dec_widths)}")
        if not 0 <= self.shared_upscales <= len(self.dec_widths):
            raise ValueError(f"shared_upscales must be in [0, {len(self.dec_widths)}], got {self.shared_upscales}")
        if self.mask not in ("head", "branch"):
            raise ValueError(f"mask must be 'head' or 'branch', got {self.mask!r}")

    def scaled(self, side_div: int = 1, width_div: int = 1) -> "PhazeAArch":
        """Sides ÷ ``side_div`` (a power of 2: the innermost levels go, the 4x4 start and the
        1x1 bottleneck stay) and widths ÷ ``width_div``."""
        k = int(math.log2(side_div))
        if side_div < 1 or 2 ** k != side_div or k > len(self.dec_widths) - 1:
            raise ValueError(f"side_div must be a power of 2 below {self.res // 4}, got {side_div}")
        w = [_check_div("width", x, width_div) for x in self.enc_widths[: len(self.enc_widths) - k]]
        d = [_check_div("width", x, width_div) for x in self.dec_widths[k:]]
        return replace(self, res=self.res // side_div, enc_widths=tuple(w), dec_widths=tuple(d),
                       bottleneck=_check_div("bottleneck", self.bottleneck, width_div),
                       entry_width=_check_div("entry_width", self.entry_width, width_div),
                       shared_upscales=min(self.shared_upscales, len(d)))


def _cap_max_curve(start: int, end: int, points: int, slope: float) -> list[int]:
    """Widths falling from ``start`` by the factor ``1 - slope`` (floored to a multiple of 8)
    until ``end``, padded in front with ``start`` to ``points`` values."""
    keep = 1.0 - abs(slope)
    ys = [start]
    while len(ys) < points and ys[-1] != end:
        ys.append(max(end, int((ys[-1] * keep) // 8) * 8))
    return [start] * (points - len(ys)) + ys


def phaze_a_preset(res: int, shared_upscales: int, enc_min: int = 16, enc_max: int = 512, bottleneck: int = 512,
                   dec_max: int = 512, dec_min: int = 16, dec_slope: float = 0.5, **kw: Any) -> PhazeAArch:
    """The full-size :class:`PhazeAArch` of a ``dny`` preset from its settings: the encoder's
    depth follows from ``res`` (``res = 4 * 2 ** (depth - 1)``), its widths double from
    ``enc_min`` to ``enc_max``; the decoder's widths follow the "cap max" curve from ``dec_max``
    to ``dec_min``."""
    depth = int(math.log2(res / 4)) + 1
    widths = [enc_min]
    for _ in range(depth):
        widths.append(min(enc_max, widths[-1] * 2))
    upscales = int(math.log2(res / 4))
    return PhazeAArch(res=res, enc_widths=tuple(widths), bottleneck=bottleneck, entry_width=dec_max,
                      dec_widths=tuple(_cap_max_curve(dec_max, dec_min, upscales, dec_slope)),
                      shared_upscales=shared_upscales, **kw)


class _ConvAct(nn.Sequential):
    """Convolution + LeakyReLU. "Same" padding; an even kernel pads one more at the bottom/right."""

    def __init__(self, cin: int, cout: int, k: int, slope: float, padding: int | None = None) -> None:
        if padding is None and k % 2 == 0:
            layers: list[nn.Module] = [nn.ZeroPad2d((k // 2 - 1, k // 2, k // 2 - 1, k // 2)), _conv(cin, cout, k, 0)]
        else:
            layers = [_conv(cin, cout, k, padding)]
        super().__init__(*layers, nn.LeakyReLU(slope))


class _DnyUp(nn.Sequential):
    """2x bilinear upsampling, then two 3x3 convolutions with LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         _ConvAct(cin, cout, 3, 0.2), _ConvAct(cout, cout, 3, 0.2))


class _PhazeAShared(nn.Module):
    """Bottleneck vector -> 4x4 (bilinear) -> entry convolutions -> the shared upscales."""

    def __init__(self, a: PhazeAArch) -> None:
        super().__init__()
        self.bottleneck = a.bottleneck
        layers: list[nn.Module] = [_ConvAct(a.bottleneck, a.entry_width, 4, 0.2),
                                   _ConvAct(a.entry_width, a.entry_width, 3, 0.2)]
        cin = a.entry_width
        for w in a.dec_widths[: a.shared_upscales]:
            layers.append(_DnyUp(cin, w))
            cin = w
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], self.bottleneck, 1, 1)
        x = F.leaky_relu(F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False), 0.1)
        return self.body(x)


class PhazeA(_Peer):
    """FaceSwap's Phaze-A (``dny`` presets) with the trainer's interface; see :class:`PhazeAArch`.

    The encoder (convolutions + dense bottleneck) and the shared head are shared; each identity
    has its own remaining upscales and output convolution. The latent is the bottleneck vector
    (B, ``bottleneck``).
    """

    design = "phaze_a"

    def __init__(self, arch: PhazeAArch) -> None:
        super().__init__(arch)
        a = arch
        w = a.enc_widths
        layers: list[nn.Module] = [_ConvAct(3, w[0], 1, 0.2)]
        levels = len(w) - 1
        for i in range(levels):
            layers.append(_ConvAct(w[i], w[i], 3, 0.2))
            if i == levels - 1:
                layers.append(_ConvAct(w[i], w[i + 1], 4, 0.2, padding=0))
            else:
                layers += [_ConvAct(w[i], w[i + 1], 3, 0.2), nn.MaxPool2d(2)]
        layers += [nn.Flatten(), nn.Linear(w[-1], a.bottleneck)]
        self.encoder = nn.Sequential(*layers)
        self.shared = _PhazeAShared(a)
        self.shared_mask = _PhazeAShared(a) if a.mask == "branch" else None
        self.decoders = nn.ModuleList(self._decoder() for _ in range(a.num_identities))
        self.mask_decoders = (nn.ModuleList(self._decoder(1) for _ in range(a.num_identities))
                              if a.mask == "branch" else None)

    def _decoder(self, out_channels: int | None = None) -> nn.Sequential:
        a = self.arch
        cin = a.dec_widths[a.shared_upscales - 1] if a.shared_upscales else a.entry_width
        layers: list[nn.Module] = []
        for w in a.dec_widths[a.shared_upscales:]:
            layers.append(_DnyUp(cin, w))
            cin = w
        if out_channels is None:
            out_channels = 4 if a.mask == "head" else 3
        layers.append(_conv(cin, out_channels, 1))
        return nn.Sequential(*layers)

    def _encode(self, img: torch.Tensor) -> torch.Tensor:
        return self.encoder(img)

    def _decode_one(self, identity: int, latent: torch.Tensor) -> torch.Tensor:
        out = self.decoders[identity](self.shared(latent))
        if self.mask_decoders is None:
            return torch.cat([torch.sigmoid(out[:, :3]), out[:, 3:]], 1)
        mask = self.mask_decoders[identity](self.shared_mask(latent))
        return torch.cat([torch.sigmoid(out), mask], 1)


# -- DeepFaceLab SAEHD -----------------------------------------------------------------------


@dataclass(frozen=True)
class SAEHDArch:
    """DeepFaceLab's SAEHD network.

    Args:
        archi: ``df`` (shared encoder and inter, one decoder per identity) or ``liae`` (shared
            encoder, decoder and "AB" inter; identities 1.. have their own inter, identity 0
            decodes the AB code twice).
        res: image side (a multiple of 32 with ``double``, of 16 without).
        ae_dims: the dense bottleneck's width.
        e_dims: encoder width (4 stride-2 5x5 levels of 1, 2, 4, 8 times it).
        d_dims: decoder width (sub-pixel upscales to 8, 4, 2 times it, a residual block after each).
        d_mask_dims: width of the mask path (upscales to 8, 4, 2 (, 1) times it).
        pixel_norm: ``-u``: pixel-normalise the flattened encoder output.
        double: ``-d``: the dense layers work at res/32 and the output is a final 2x sub-pixel
            step of four output convolutions.
        num_identities: identities (decoders for ``df``, inters + 1 for ``liae``).
    """

    archi: Literal["df", "liae"] = "df"
    res: int = 256
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22
    pixel_norm: bool = True
    double: bool = True
    num_identities: int = 2

    def __post_init__(self) -> None:
        if self.archi not in ("df", "liae"):
            raise ValueError(f"archi must be 'df' or 'liae', got {self.archi!r}")
        step = 32 if self.double else 16
        if self.res % step or self.res < step:
            raise ValueError(f"res must be a positive multiple of {step}, got {self.res}")

    def scaled(self, side_div: int = 1, width_div: int = 1) -> "SAEHDArch":
        """Sides ÷ ``side_div`` (every level stays) and widths ÷ ``width_div``."""
        return replace(self, res=_check_div("res", self.res, side_div),
                       **{k: _check_div(k, getattr(self, k), width_div)
                          for k in ("ae_dims", "e_dims", "d_dims", "d_mask_dims")})


class _Down(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.LeakyReLU(0.1))


class _SubPixelUp(nn.Sequential):
    """3x3 convolution to 4x the channels, LeakyReLU(0.1), 2x pixel shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv(cin, cout * 4, 3), nn.LeakyReLU(0.1), nn.PixelShuffle(2))


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(ch, ch, 3), _conv(ch, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(x + y, 0.2)


class _SAEHDInter(nn.Module):
    """Dense to ``ae_dims``, dense to ``side x side x out_ch``, one sub-pixel upscale."""

    def __init__(self, in_features: int, ae_dims: int, out_ch: int, side: int) -> None:
        super().__init__()
        self.out_ch, self.side = out_ch, side
        self.dense1 = nn.Linear(in_features, ae_dims)
        self.dense2 = nn.Linear(ae_dims, side * side * out_ch)
        self.up = _SubPixelUp(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(x)).reshape(x.shape[0], self.out_ch, self.side, self.side)
        return self.up(x)


class _SAEHDDecoder(nn.Module):
    def __init__(self, in_ch: int, d: int, dm: int, double: bool) -> None:
        super().__init__()
        self.face = nn.Sequential(_SubPixelUp(in_ch, d * 8), _Residual(d * 8), _SubPixelUp(d * 8, d * 4),
                                  _Residual(d * 4), _SubPixelUp(d * 4, d * 2), _Residual(d * 2))
        # with ``double``, four output convolutions give the four pixels of each 2x2 cell
        self.out = nn.ModuleList([_conv(d * 2, 3, 1)] + ([_conv(d * 2, 3, 3) for _ in range(3)] if double else []))
        mask = [_SubPixelUp(in_ch, dm * 8), _SubPixelUp(dm * 8, dm * 4), _SubPixelUp(dm * 4, dm * 2)]
        if double:
            mask.append(_SubPixelUp(dm * 2, dm))
        self.mask = nn.Sequential(*mask, _conv(dm if double else dm * 2, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.face(z)
        if len(self.out) == 1:
            rgb = self.out[0](x)
        else:
            cells = torch.stack([conv(x) for conv in self.out], 2)  # (B, 3, 4, h, w)
            rgb = F.pixel_shuffle(cells.flatten(1, 2), 2)
        return torch.cat([torch.sigmoid(rgb), self.mask(z)], 1)


class SAEHD(_Peer):
    """DeepFaceLab's SAEHD (``df`` or ``liae``, options ``u`` and ``d``); see :class:`SAEHDArch`.

    The latent is what the identities share: for ``df`` the inter's output (B, ae_dims, s, s)
    (what SAEHD's "true face" discriminator reads, :class:`CodeDiscriminator`); for ``liae``
    the encoder's flattened output, which each identity's decode passes through the inters.
    """

    design = "saehd"

    def __init__(self, arch: SAEHDArch) -> None:
        super().__init__(arch)
        a = arch
        self.encoder = nn.Sequential(_Down(3, a.e_dims), _Down(a.e_dims, a.e_dims * 2),
                                     _Down(a.e_dims * 2, a.e_dims * 4), _Down(a.e_dims * 4, a.e_dims * 8),
                                     nn.Flatten())
        features = a.e_dims * 8 * (a.res // 16) ** 2
        side = a.res // (32 if a.double else 16)
        if a.archi == "df":
            self.inter = _SAEHDInter(features, a.ae_dims, a.ae_dims, side)
            self.decoders = nn.ModuleList(_SAEHDDecoder(a.ae_dims, a.d_dims, a.d_mask_dims, a.double)
                                          for _ in range(a.num_identities))
        else:
            self.inter_ab = _SAEHDInter(features, a.ae_dims, a.ae_dims * 2, side)
            self.inters = nn.ModuleList(_SAEHDInter(features, a.ae_dims, a.ae_dims * 2, side)
                                        for _ in range(a.num_identities - 1))
            self.decoder = _SAEHDDecoder(a.ae_dims * 4, a.d_dims, a.d_mask_dims, a.double)

    def _encode(self, img: torch.Tensor) -> torch.Tensor:
        x = self.encoder(img)
        if self.arch.pixel_norm:
            x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6)
        return self.inter(x) if self.arch.archi == "df" else x

    def _decode_one(self, identity: int, latent: torch.Tensor) -> torch.Tensor:
        if self.arch.archi == "df":
            return self.decoders[identity](latent)
        ab = self.inter_ab(latent)
        own = ab if identity == 0 else self.inters[identity - 1](latent)
        return self.decoder(torch.cat([own, ab], 1))


class CodeDiscriminator(nn.Module):
    """SAEHD's "true face" discriminator on a ``df`` latent (B, ch, side, side): ``1 + side // 8``
    stride-2 convolutions (4x4 then 3x3; widths 256, 512, 1024, 2048 at most), LeakyReLU(0.1),
    then a 1x1 convolution to one logit per cell. Not part of the ports' counts: SAEHD's default
    ``true_face_power`` is 0 (off), and it is only offered for ``df``."""

    def __init__(self, in_ch: int, side: int, ch: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_ch
        for i in range(1 + side // 8):
            cur = ch * min(2 ** i, 8)
            k = 4 if i == 0 else 3
            layers += [nn.Conv2d(prev, cur, k, stride=2, padding=k // 2), nn.LeakyReLU(0.1)]
            prev = cur
        layers.append(nn.Conv2d(prev, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.body(code)


# -- registry and counts ---------------------------------------------------------------------

_DESIGNS: dict[str, tuple[type, type]] = {"phaze_a": (PhazeA, PhazeAArch), "saehd": (SAEHD, SAEHDArch)}


BUILDER = "progressive_swap.eval.peers.build_peer"  # this function, as model/builders.py allows it


def build_peer(arch_args: Mapping[str, Any]) -> _Peer:
    """Rebuild a port from its :meth:`arch_args` (also the trainer's model factory: swap-train's
    ``module.model={_target_: progressive_swap.eval.peers.build_peer, arch_args: {...}}``)."""
    d = dict(arch_args)
    if d.pop("builder", BUILDER) != BUILDER:
        raise ValueError(f"arch_args name another builder than {BUILDER}")
    design = d.pop("design", None)
    if design not in _DESIGNS:
        raise ValueError(f"unknown peer design {design!r}; known: {sorted(_DESIGNS)}")
    model_cls, arch_cls = _DESIGNS[design]
    unknown = sorted(set(d) - {f.name for f in fields(arch_cls)})
    if unknown:
        raise ValueError(f"unknown {design} keys {unknown}")
    return model_cls(arch_cls(**d))


def _hydra_value(v: Any) -> str:
    """``v`` in Hydra's override grammar."""
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_hydra_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return v if v.replace("_", "a").replace(".", "a").isalnum() and not v[0].isdigit() else repr(v)
    return repr(v)


def train_overrides(model: _Peer) -> list[str]:
    """``swap-train`` overrides that train ``model``'s design in place of the recipe's comb: the
    module's model becomes ``build_peer(arch_args)`` (its identity count from the face sets).
    The schedule must then have one stage at ``model.res`` (a port does not grow), e.g.
    ``schedule.stages=[{res:128,images:...,batch:8,lr:5e-4,lr_end:5e-5}]``."""
    args = {k: v for k, v in model.arch_args().items() if k != "num_identities"}
    spec = f"{{_target_:{BUILDER},arch_args:{_hydra_value(args)[:-1]},num_identities:${{derived.identities}}}}}}"
    return ["~module.model", f"+module.model={spec}"]


def _phaze_a_factory(preset_res: int, shared_upscales: int) -> Callable[..., _Peer]:
    def factory(res: int | None = None, side_div: int = 1, width_div: int = 1, **kw: Any) -> _Peer:
        if res not in (None, preset_res):
            raise ValueError(f"Phaze-A dny{preset_res} is built for {preset_res} px, got res={res}")
        return PhazeA(phaze_a_preset(preset_res, shared_upscales, **kw).scaled(side_div, width_div))

    factory.__doc__ = f"FaceSwap Phaze-A ``dny{preset_res}`` (full size at side_div = width_div = 1)."
    return factory


def _saehd_factory(archi: str) -> Callable[..., _Peer]:
    def factory(res: int | None = None, side_div: int = 1, width_div: int = 1, **kw: Any) -> _Peer:
        return SAEHD(SAEHDArch(archi=archi, res=res or 256, **kw).scaled(side_div, width_div))

    factory.__doc__ = f"DeepFaceLab SAEHD ``{archi}-ud`` at its default dimensions (res 256 unless given)."
    return factory


PEERS: dict[str, Callable[..., _Peer]] = {
    "fs_dny256": _phaze_a_factory(256, 1),
    "fs_dny512": _phaze_a_factory(512, 2),
    "fs_dny1024": _phaze_a_factory(1024, 2),
    "saehd_liae_ud": _saehd_factory("liae"),
    "saehd_df_ud": _saehd_factory("df"),
}


def measure(model: _Peer, identity: int = 0, batch_size: int = 1,
            dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Forward + backward of one autoencoder pass (the encoder and ``identity``'s decoder), on a
    ``meta`` copy of ``model``: the convention of ``model/summary.py`` (the input needs no
    gradient; the loss is ``rgb.sum() + mask_logit.sum()``, so no loss FLOPs are counted).

    Returns:
        ``gflops_forward`` and ``gflops_train`` (forward + backward) per image,
        ``activation_bytes`` per image (the distinct tensors autograd saves that are neither
        weights nor views of them) and
        ``params_step`` (the weights that get a gradient in that pass).
    """
    with torch.device("meta"):
        meta = build_peer(model.arch_args())
    meta.to(dtype)
    param_ids = {id(p) for p in meta.parameters()}
    saved: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # a dense layer saves a transposed view of its weight: a weight, not an activation
        if id(t) not in param_ids and not (t._base is not None and id(t._base) in param_ids):
            saved[id(t)] = t
        return t

    img = torch.empty(batch_size, 3, meta.res, meta.res, device="meta", dtype=dtype)
    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            rgb, mask_logit = meta(img, identity, meta.res)
        fwd = counter.get_total_flops()
        (rgb.sum() + mask_logit.sum()).backward()
        total = counter.get_total_flops()
    act = sum(t.numel() * t.element_size() for t in saved.values())
    step = sum(p.numel() for p in meta.parameters() if p.grad is not None)
    return dict(gflops_forward=fwd / batch_size / 1e9, gflops_train=total / batch_size / 1e9,
                activation_bytes=act / batch_size, params_step=step)


def describe(name: str, res: int | None = None, side_div: int = 1, width_div: int = 1,
             identity: int = 0) -> dict[str, Any]:
    """Size of a registered peer (full size by default), built on the ``meta`` device.

    Returns:
        ``name``, ``arch`` (its :meth:`arch_args`), ``stages`` (``[res]``), ``params`` (every
        weight: encoder, shared parts and every identity's decoder, as the originals report it),
        ``params_step`` (what ``identity``'s pass trains), and per stage (one entry: a peer has
        one) ``train_gflops_per_image``, ``gflops_forward`` and ``activation_bytes`` (per image,
        fp32), from :func:`measure`.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
    with torch.device("meta"):
        model = PEERS[name](res=res, side_div=side_div, width_div=width_div)
    m = measure(model, identity)
    return dict(name=name, arch=model.arch_args(), stages=list(model.stages),
                params=sum(p.numel() for p in model.parameters()), params_step=m["params_step"],
                train_gflops_per_image=[m["gflops_train"]], gflops_forward=[m["gflops_forward"]],
                activation_bytes=[m["activation_bytes"]])
