"""BiSeNet face segmenter: context path on an smp encoder, attention refinement, feature fusion.

The layout follows the public face-parsing BiSeNet (19 CelebAMask-HQ classes), so that its
released checkpoint loads *strictly* (after the one key rename in :mod:`.weights`):

* **context path** (``cp``): an encoder from segmentation-models-pytorch (``resnet18`` by
  default; any smp encoder name works) gives features at strides 8, 16 and 32. A global
  context vector (``conv_avg``) and two attention-refinement modules (``arm32``, ``arm16``)
  refine stride 32 and 16; ``conv_head32``/``conv_head16`` carry them up to stride 16 / 8.
* **spatial path**: as in the public face-parsing model, the encoder's stride-8 feature
  stands in for BiSeNet's separate spatial path (it has no weights of its own).
* **feature fusion** (``ffm``): concatenates spatial and context features at stride 8 and
  re-weights channels with a squeeze-excitation style attention.
* **heads**: ``conv_out`` (main, stride 8) and the auxiliary ``conv_out16``/``conv_out32``
  (deep supervision while training). All logits are upsampled to the input size
  (bilinear, ``align_corners=True`` like the original).

Convention: input is ``(B, 3, H, W)`` float RGB in ``[0, 1]``; the ImageNet normalisation the
checkpoints expect is applied inside (non-persistent buffers, so state dicts are unchanged).
H and W should be multiples of 32. Outputs are *logits*.

Example:
    >>> net = BiSeNet(num_classes=19).eval()
    >>> net(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 19, 64, 64])
    >>> [t.shape[1] for t in net(torch.rand(1, 3, 64, 64), aux=True)]
    [19, 19, 19]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU. Attribute names match the public checkpoint."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinement(nn.Module):
    """ARM: 3x3 conv, then channel attention from the globally pooled feature."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        att = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))  # (B, C, 1, 1)
        return feat * att


class FeatureFusion(nn.Module):
    """FFM: 1x1 conv over [spatial, context], plus a channel-attention residual."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * att + feat


class SegmentationHead(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier (no bias), as the public ``BiSeNetOutput``."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class ContextPath(nn.Module):
    """smp encoder plus global context and attention refinement at strides 32 and 16.

    Returns ``(feat8, ctx8, ctx16)``: the encoder's stride-8 feature (the spatial path) and
    the refined context at stride 8 and 16.
    """

    def __init__(self, encoder: str = "resnet18", context_channels: int = 128, in_channels: int = 3) -> None:
        super().__init__()
        # weights=None: never download; trained or imported weights are loaded afterwards.
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=None)
        c8, c16, c32 = self.encoder.out_channels[-3:]
        self.feat8_channels = c8
        self.arm16 = AttentionRefinement(c16, context_channels)
        self.arm32 = AttentionRefinement(c32, context_channels)
        self.conv_head32 = ConvBNReLU(context_channels, context_channels, 3)
        self.conv_head16 = ConvBNReLU(context_channels, context_channels, 3)
        self.conv_avg = ConvBNReLU(c32, context_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.encoder(x)[-3:]  # strides 8, 16, 32
        avg = self.conv_avg(feat32.mean((2, 3), keepdim=True))  # (B, C, 1, 1), broadcasts like the nearest upsample
        up32 = F.interpolate(self.arm32(feat32) + avg, size=feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)  # (B, C, H/16, W/16)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[2:], mode="nearest")
        up16 = self.conv_head16(up16)  # (B, C, H/8, W/8)
        return feat8, up16, up32


@dataclass(frozen=True)
class BiSeNetConfig:
    """Architecture arguments; stored in every saved model so loading rebuilds the same net.

    The defaults are the public face-parsing model's.
    """

    num_classes: int = 19
    encoder: str = "resnet18"
    context_channels: int = 128  # ARM / context-path width
    fuse_channels: int = 256  # FFM and main head width
    aux_channels: int = 64  # auxiliary heads' width


class BiSeNet(nn.Module):
    """BiSeNet segmenter returning per-class logits at input resolution.

    Args:
        num_classes: output channels (19 for CelebAMask-HQ face parsing, 1 for a binary mask).
        encoder: smp encoder name (``resnet18``, ``tu-mobilenetv3_small_100``, ...).
        context_channels: width of the context path.
        fuse_channels: width of the feature-fusion module and the main head.
        aux_channels: width of the two auxiliary heads.
    """

    def __init__(
        self,
        num_classes: int = 19,
        encoder: str = "resnet18",
        context_channels: int = 128,
        fuse_channels: int = 256,
        aux_channels: int = 64,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config = BiSeNetConfig(num_classes, encoder, context_channels, fuse_channels, aux_channels)
        self.cp = ContextPath(encoder, context_channels)
        self.ffm = FeatureFusion(self.cp.feat8_channels + context_channels, fuse_channels)
        self.conv_out = SegmentationHead(fuse_channels, fuse_channels, num_classes)
        self.conv_out16 = SegmentationHead(context_channels, aux_channels, num_classes)
        self.conv_out32 = SegmentationHead(context_channels, aux_channels, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, config: BiSeNetConfig | dict) -> "BiSeNet":
        return cls(**(asdict(config) if isinstance(config, BiSeNetConfig) else config))

    def forward(self, x: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits ``(B, num_classes, H, W)``; with ``aux`` also the two auxiliary heads' logits.

        Args:
            x: ``(B, 3, H, W)`` RGB in ``[0, 1]``; H, W multiples of 32.
            aux: return ``(main, aux16, aux32)`` (for deep supervision while training).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB, got {tuple(x.shape)}")
        size = x.shape[2:]
        feat8, ctx8, ctx16 = self.cp((x - self.mean) / self.std)
        out = self.conv_out(self.ffm(feat8, ctx8))  # (B, K, H/8, W/8)
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=True)  # noqa: E731
        if not aux:
            return up(out)
        return up(out), up(self.conv_out16(ctx8)), up(self.conv_out32(ctx16))
