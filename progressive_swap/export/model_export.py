"""Export a trained swap as a standalone model file: DFM (live swapping), ONNX or TorchScript (Nuke).

Each format wraps one swap, fixed at export time: faces of identity ``source`` (whose colour
statistics normalise the input, see ``docs/architecture.md``) decoded with identity
``identity``'s decoder, at the checkpoint's ``stage_res`` and fade ``alpha``. The graphs are
built only from the network's ``encode`` and ``decode`` methods, so every file computes what
:class:`~progressive_swap.export.swapper.Swapper` computes (tested against onnxruntime and a
fresh ``torch.jit.load``).

Formats (details and consumer settings in ``docs/export.md``):

* ``dfm``: an ONNX model with the contract live-swapping tools read from ``.dfm`` files.
  Input ``in_face:0`` float32 ``(N, R, R, 3)``, BGR, [0, 1]; with ``morph=True`` also
  ``morph_value:0`` float32 ``(1,)``. Outputs, in this order: ``out_face_mask:0``
  ``(N, R, R, 1)`` (the input face's own mask), ``out_celeb_face:0`` ``(N, R, R, 3)`` BGR and
  ``out_celeb_face_mask:0`` ``(N, R, R, 1)`` (the swapped face's mask), all float32 in [0, 1].
* ``onnx``: our conventions. Input ``face`` float32 ``(N, 3, R, R)`` RGB in [0, 1]; outputs
  ``rgb`` ``(N, 3, R, R)`` and ``mask`` ``(N, 1, R, R)`` (a probability), dynamic batch.
* ``torchscript``: one tensor in, one out, as a compositing package's inference node wants:
  ``(1, 3, H, W)`` RGB (sRGB) in [0, 1] of any side, resized to ``R`` inside, to ``(1, 4, H, W)``
  RGB + mask.

Every file records the model facts in its metadata (ONNX ``metadata_props``; TorchScript
``_extra_files["progressive_swap.json"]``): :func:`export_metadata`.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from progressive_swap.core.io import atomic_path, atomic_write_bytes
from progressive_swap.export.swapper import CheckpointInfo
from progressive_swap.faceset.format import software_version

FORMATS = ("dfm", "onnx", "torchscript")
EXTRA_FILE = "progressive_swap.json"  # TorchScript: the metadata's name in _extra_files
OPSET = 17
DFM_INPUT, DFM_MORPH = "in_face:0", "morph_value:0"
DFM_OUTPUTS = ("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0")
ONNX_INPUT, ONNX_OUTPUTS = "face", ("rgb", "mask")


class SwapGraph(nn.Module):
    """The swap as a plain tensor function: ``(N, 3, R, R)`` RGB in [0, 1] -> colours and masks.

    Args:
        net: the trained network (its ``encode`` and ``decode`` are called).
        identity: decoder swapped to.
        source: whose faces come in (their colour statistics and decoder), or None for someone
            the model does not know (the identities' average colours; no own mask).
        stage_res: side the network runs at.
        alpha: fade weight of that stage.
    """

    def __init__(self, net: nn.Module, identity: int, source: int | None, stage_res: int, alpha: float) -> None:
        super().__init__()
        self.net = net
        self.identity, self.source = int(identity), None if source is None else int(source)
        self.stage_res, self.alpha = int(stage_res), float(alpha)

    def forward(self, img: torch.Tensor, morph: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Swap.

        Args:
            img: (N, 3, R, R) RGB in [0, 1].
            morph: optional (1,) weight of the swap against the source's own reconstruction,
                blended in the decoders' output space (colour, mask logit); needs ``source``.

        Returns:
            ``(rgb, mask, own_mask)``: (N, 3, R, R) swapped colour, (N, 1, R, R) the swapped
            decoder's mask and (N, 1, R, R) the source decoder's mask (the swapped one's when
            ``source`` is None), all in [0, 1].
        """
        r, a = self.stage_res, self.alpha
        latent = self.net.encode(img.clamp(0, 1), r, a, self.source)
        rgb, logit = self.net.decode(latent, self.identity, r, a)
        own_logit = logit
        if self.source is not None:
            own_rgb, own_logit = self.net.decode(latent, self.source, r, a)
            if morph is not None:
                m = morph.reshape(1, 1, 1, 1).clamp(0, 1)
                rgb = own_rgb + (rgb - own_rgb) * m
                logit = own_logit + (logit - own_logit) * m
        return rgb.clamp(0, 1), torch.sigmoid(logit), torch.sigmoid(own_logit)


class OnnxSwap(nn.Module):
    """``face`` (N, 3, R, R) RGB -> ``rgb`` (N, 3, R, R), ``mask`` (N, 1, R, R): the own
    identity's mask when ``source`` is known (as ``swap-export mask=auto``), else the swapped one's."""

    def __init__(self, core: SwapGraph) -> None:
        super().__init__()
        self.core = core

    def forward(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask, own = self.core(face)
        return rgb, own if self.core.source is not None else mask


def _swap_rb(x: torch.Tensor, dim: int) -> torch.Tensor:
    """RGB <-> BGR along ``dim`` (slices and a concat: plain ONNX ops)."""
    return torch.cat([x.narrow(dim, 2, 1), x.narrow(dim, 1, 1), x.narrow(dim, 0, 1)], dim=dim)


class DfmSwap(nn.Module):
    """The DFM contract: NHWC, BGR, [0, 1] float32 in and out (see the module docstring)."""

    def __init__(self, core: SwapGraph, morph: bool) -> None:
        super().__init__()
        self.core, self.morph = core, bool(morph)

    def forward(self, in_face: torch.Tensor, morph_value: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        img = _swap_rb(in_face, 3).permute(0, 3, 1, 2)  # (N, R, R, 3) BGR -> (N, 3, R, R) RGB
        rgb, mask, own = self.core(img, morph_value if self.morph else None)
        nhwc = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
        return nhwc(own), _swap_rb(nhwc(rgb), 3), nhwc(mask)  # face mask, celeb face (BGR), celeb mask


class NukeSwap(nn.Module):
    """One image in, one out: (1, 3, H, W) RGB in [0, 1] -> (1, 4, H, W) RGB + mask.

    The crop is resized to ``R`` (area-like bilinear with antialiasing when reducing, bicubic
    when enlarging, as :class:`~progressive_swap.export.swapper.Swapper` does) and back.
    """

    def __init__(self, core: SwapGraph) -> None:
        super().__init__()
        self.core = core
        self.res = int(core.stage_res)
        self.own_mask = core.source is not None

    def _resize(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if x.shape[-2] == h and x.shape[-1] == w:
            return x
        if x.shape[-2] > h:
            return F.interpolate(x, size=[h, w], mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(x, size=[h, w], mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        img = self._resize(x[:, :3], self.res, self.res).clamp(0, 1)
        rgb, mask, own = self.core(img)
        out = torch.cat([rgb, own if self.own_mask else mask], dim=1)  # (N, 4, R, R)
        return self._resize(out, h, w).clamp(0, 1)


def export_metadata(info: CheckpointInfo, identity: int, source: int | None, fmt: str,
                    morph: bool = False) -> dict[str, str]:
    """String metadata every exported file carries (ONNX ``metadata_props``, TorchScript extra file).

    Returns:
        Keys ``resolution``, ``face_type``, ``identities`` (JSON list), ``identity``,
        ``from_identity`` (``none`` for someone unknown), ``alpha``, ``format``, ``layout``,
        ``channels``, ``value_range``, ``crop_space`` (what the network's values mean: ``srgb``, or
        ``acescct`` for a model of ACEScct face sets), ``mask``, ``software`` and ``checkpoint_sha256``.
    """
    layout = {"dfm": "NHWC", "onnx": "NCHW", "torchscript": "NCHW"}[fmt]
    mask = "source" if source is not None else "model"
    return {
        "resolution": str(info.stage_res),
        "face_type": str(info.face_type or "unknown"),
        "identities": json.dumps(list(info.identities)),
        "identity": info.identities[identity],
        "from_identity": "none" if source is None else info.identities[source],
        "alpha": repr(float(info.alpha)),
        "format": fmt,
        "layout": layout,
        "channels": "BGR" if fmt == "dfm" else ("RGB in, RGBA out" if fmt == "torchscript" else "RGB"),
        "value_range": "float32 [0, 1], " + ("ACEScct" if info.crop_space == "acescct" else "sRGB"),
        "crop_space": info.crop_space,
        "mask": mask,
        "morph_value": "true" if morph else "false",
        "software": software_version(),
        "checkpoint_sha256": info.sha256,
    }


def build_module(net: nn.Module, info: CheckpointInfo, identity: int, source: int | None,
                 fmt: str, morph: bool = False) -> nn.Module:
    """The wrapping module of one format around ``net`` (eval mode, on the CPU)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if morph and (fmt != "dfm" or source is None):
        raise ValueError("morph=true needs format=dfm and a known from_identity")
    core = SwapGraph(net.cpu().eval(), identity, source, info.stage_res, info.alpha)
    mod = {"dfm": lambda: DfmSwap(core, morph), "onnx": lambda: OnnxSwap(core), "torchscript": lambda: NukeSwap(core)}
    return mod[fmt]().eval()


def _onnx_bytes(module: nn.Module, fmt: str, res: int, morph: bool, meta: dict[str, str]) -> bytes:
    import onnx  # optional dependency (the ``export`` extra); third-party, not our own module

    if fmt == "dfm":
        args: tuple = (torch.rand(1, res, res, 3),)
        names, outs = [DFM_INPUT], list(DFM_OUTPUTS)
        if morph:
            args, names = args + (torch.ones(1),), names + [DFM_MORPH]
        axes = {DFM_INPUT: {0: "batch"}, **{o: {0: "batch"} for o in outs}}
    else:
        args, names, outs = (torch.rand(1, 3, res, res),), [ONNX_INPUT], list(ONNX_OUTPUTS)
        axes = {ONNX_INPUT: {0: "batch"}, **{o: {0: "batch"} for o in outs}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
        torch.onnx.export(module, args, buf, dynamo=False, input_names=names, output_names=outs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name = "progressive_swap"
    model.doc_string = f"face swap {meta['from_identity']} -> {meta['identity']}"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_model(net: nn.Module, info: CheckpointInfo, identity: int, source: int | None, fmt: str,
                 out: str | os.PathLike, morph: bool = False) -> dict[str, str]:
    """Write one swap of ``net`` to ``out`` in ``fmt``, atomically (temp file beside it, then rename).

    Args:
        net: the network as :func:`~progressive_swap.export.swapper.load_model` returns it.
        info: its checkpoint facts (``stage_res``, ``alpha``, identities, face type).
        identity: decoder index swapped to.
        source: whose faces come in (index), or None for someone the model does not know.
        fmt: ``dfm``, ``onnx`` or ``torchscript``.
        out: the file to write; its directory must exist.
        morph: ``dfm`` only: add the ``morph_value`` input.

    Returns:
        The metadata written into the file.
    """
    meta = export_metadata(info, identity, source, fmt, morph)
    module = build_module(net, info, identity, source, fmt, morph)
    res = info.stage_res
    if fmt in ("dfm", "onnx"):
        atomic_write_bytes(out, _onnx_bytes(module, fmt, res, morph, meta))
        return meta
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic
        core = torch.jit.trace(module.core, (torch.rand(1, 3, res, res),), check_trace=False)
        module.core = core
        scripted = torch.jit.script(module)
    with atomic_path(Path(out)) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in PyTorch; Nuke reads it
        torch.jit.save(scripted, str(tmp), _extra_files={EXTRA_FILE: json.dumps(meta, indent=1)})
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an exported file (ONNX/DFM ``metadata_props`` or TorchScript extra file)."""
    path = Path(path)
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"  # TorchScript archives are zip files
    if zipped:
        files = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        return json.loads(files[EXTRA_FILE])
    import onnx  # optional dependency (the ``export`` extra); third-party, not our own module

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
