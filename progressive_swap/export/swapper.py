"""Batched inference for export: load a checkpoint and swap aligned faces to one identity.

A checkpoint is a training checkpoint (``last.ckpt``: weights under ``state_dict`` with the
``model.`` prefix, facts under ``ckpt["progressive_swap"]``) or a finished run's
``model.safetensors`` (facts in its JSON-string metadata). Both are read without unpickling
code (``train/checkpoint.py``). The facts used here: ``arch`` (``CombAutoencoder(CombArch(**arch))``, or
the allowed builder it names: ``model/builders.py``),
``stage_res`` and ``alpha`` (the stage the weights were trained to), ``identities`` (a name
per decoder) and ``face_type``.

Convention: crops are aligned faces, uint8 ``(B, S, S, 3)`` RGB or float ``(B, 3, S, S)`` in
[0, 1]. They are resized to ``stage_res`` for the network and its output is resized back to
``S``; the returned colour is float32 RGB in [0, 1] (sRGB, as the network was trained) and the
mask is ``sigmoid(mask_logit)`` in [0, 1].
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from progressive_swap.core.weights import finite_weights
from progressive_swap.faceset.format import CROP_SPACES
from progressive_swap.model.autoencoder import CombAutoencoder
from progressive_swap.model.builders import build_model
from progressive_swap.train.checkpoint import CKPT_KEY, check_identity_colour, safe_load

MODEL_MASKS = ("model", "source", "union")  # masks a Swapper can return (see Swapper's mask_from)


class SwapNet(Protocol):
    """What export needs from a network: ``net(img, identity, stage_res, alpha, source) -> (rgb, mask_logit)``."""

    def __call__(
        self, img: torch.Tensor, identity: int, stage_res: int, alpha: float, source: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class CheckpointInfo:
    """Facts about a trained model that export checks and records.

    Attributes:
        path: the checkpoint file.
        sha256: hex digest of the file (provenance in every exported file).
        arch: ``CombAutoencoder`` constructor arguments.
        stage_res: image side the network runs at.
        alpha: fade weight of that stage.
        identities: a name per decoder.
        face_type: crop coverage the model was trained on (None if unknown).
        crop_space: what its training crops' values meant, from its face sets' ``crop_space``:
            ``srgb`` (also for checkpoints written before it was recorded) or ``acescct``.
            Export feeds it crops in that space (``docs/plates.md``).
    """

    path: str
    sha256: str
    arch: dict[str, Any]
    stage_res: int
    alpha: float
    identities: list[str]
    face_type: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    crop_space: str = "srgb"

    def identity_index(self, name: str | int) -> int:
        """Decoder index of an identity given by name, or by index (``"1"`` or ``1``).

        Raises:
            ValueError: unknown identity; the message lists the known ones.
        """
        if isinstance(name, str) and name in self.identities:
            return self.identities.index(name)
        s = str(name).strip()
        if s.lstrip("-").isdigit() and 0 <= int(s) < len(self.identities):
            return int(s)
        known = ", ".join(f"{i}:{n}" for i, n in enumerate(self.identities))
        raise ValueError(f"unknown identity {str(name)!r}; this checkpoint knows {known}")

    def from_identity(self, name: str, identity: int) -> int | None:
        """Whose faces come in (their colour statistics normalise the input; their decoder can
        give the alpha): ``name`` as a name or index; ``none``, or nothing given with more than
        two identities, is someone the model does not know (``None``: the identities' average);
        nothing given with two identities is the one that is not swapped to."""
        name = str(name).strip()
        if name.lower() == "none":
            return None
        if name:
            return self.identity_index(name)
        return 1 - identity if len(self.identities) == 2 else None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _meta(d: dict[str, Any], path: Path) -> tuple[dict, int, float, list[str], str | None]:
    try:
        arch = dict(d["arch"])
        stage_res = int(d["stage_res"])
        alpha = float(d.get("alpha", 1.0))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} lacks the model facts export needs (arch, stage_res)") from None
    n = int(arch.get("num_identities", 2))
    names = list(d.get("identities") or [f"id{k}" for k in range(n)])
    if len(names) != n:
        raise ValueError(f"{path}: {len(names)} identity names for {n} decoders")
    return arch, stage_res, alpha, [str(x) for x in names], d.get("face_type")


def read_checkpoint(path: str | os.PathLike) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """Read a ``.ckpt`` training checkpoint or a ``.safetensors`` export.

    Returns:
        ``(info, state_dict)`` with the model's own parameter names.

    Raises:
        FileNotFoundError, ValueError: one-line messages (missing, corrupt, unsafe, not ours).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors file {path}: {str(e).splitlines()[0]}") from None
        try:
            meta = {k: json.loads(v) for k, v in raw.items()}
        except ValueError:
            raise ValueError(f"{path}: metadata is not JSON") from None
    else:
        ckpt = safe_load(path)
        if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
            raise ValueError(f"{path} is not a progressive_swap training checkpoint")
        meta = ckpt[CKPT_KEY]
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    arch, stage_res, alpha, names, ftype = _meta(meta, path)
    check_identity_colour(state.get("identity_colour"), path, names)
    finite_weights(state, Path(path))
    space = meta.get("crop_space") or "srgb"  # absent: trained before it was recorded, on sRGB crops
    if space not in CROP_SPACES:
        raise ValueError(f"{path}: unknown crop_space {space!r} (known: {', '.join(CROP_SPACES)})")
    info = CheckpointInfo(str(path), sha256_file(path), arch, stage_res, alpha, names, ftype,
                          {k: meta[k] for k in ("batches_done", "images_seen", "identity_fit") if k in meta}, space)
    return info, state


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return dev


def load_model(path: str | os.PathLike, device: str = "auto") -> tuple[CombAutoencoder, CheckpointInfo]:
    """Rebuild ``CombAutoencoder(CombArch(**arch))`` (or the network of the allowed builder its
    ``arch`` names, ``model/builders.py``) from a checkpoint, load its weights, eval mode."""
    info, state = read_checkpoint(path)
    try:
        model = build_model(info.arch)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: cannot rebuild the model from its arch: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise ValueError(f"{path}: weights do not match the architecture ({first})") from None
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ValueError(f"{path}: weights do not match the architecture ({what})")
    if info.stage_res not in model.stages:
        raise ValueError(f"{path}: stage_res {info.stage_res} is not a stage of the model {model.stages}")
    return model.to(resolve_device(device)).eval(), info


_CROP_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:  # anti-aliased reduction
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)


class Swapper:
    """Swap batches of aligned faces to one identity.

    Args:
        net: a :class:`CombAutoencoder` (or anything with its call signature).
        identity: decoder index every face is decoded with.
        stage_res: side the network runs at.
        alpha: fade weight of that stage.
        device: where the network lives (inputs are moved there).
        bf16: run under bfloat16 autocast (about 2x faster on CPUs with bfloat16 in hardware, and on GPUs).
        source: whose faces the crops show (an identity index): models trained with
            ``colour_norm`` read faces relative to that identity's colours, and ``mask_from``
            can take the alpha from its decoder. None means someone the model does not know.
        mask_from: which decoder's mask is returned: ``model`` (the decoder swapped to),
            ``source`` (the crops' own identity's decoder, which reconstructs what it was
            trained on: the most reliable outline and occluders; needs ``source`` and a
            :class:`CombAutoencoder`) or ``union`` (the larger of the two, pixel by pixel).

    Example:
        >>> rgb, mask = Swapper(model, 1, 256, 1.0, source=0)(crops_uint8)    # doctest: +SKIP
        >>> rgb.shape, mask.shape                                   # (B, S, S, 3), (B, S, S)
    """

    def __init__(self, net: SwapNet, identity: int, stage_res: int, alpha: float = 1.0,
                 device: torch.device | str = "cpu", bf16: bool = False, source: int | None = None,
                 mask_from: str = "model") -> None:
        self.net, self.identity, self.stage_res, self.alpha = net, int(identity), int(stage_res), float(alpha)
        self.source = None if source is None else int(source)
        if mask_from not in MODEL_MASKS:
            raise ValueError(f"unknown mask_from {mask_from!r}; choose one of {', '.join(MODEL_MASKS)}")
        if mask_from != "model" and (self.source is None or not hasattr(net, "decode")):
            raise ValueError(f"mask={mask_from} takes the mask of the footage's own identity: name it (from_identity=)")
        self.mask_from = mask_from
        self.device = torch.device(device)
        self.bf16 = bool(bf16)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Swap aligned crops.

        Args:
            crops: ``(B, S, S, 3)`` RGB: uint8, uint16 (16-bit crops) or float32 in [0, 1] (crops of a
                float plate in its working space, ``export/plate_layers.py``).

        Returns:
            ``(rgb, mask)``: float32 ``(B, S, S, 3)`` and ``(B, S, S)``, both in [0, 1].
        """
        x = np.asarray(crops)
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2] or x.dtype not in _CROP_SCALE:
            raise ValueError(f"crops must be uint8, uint16 or float32 (B, S, S, 3), got {x.dtype} {x.shape}")
        s = x.shape[1]
        scale = _CROP_SCALE[x.dtype]
        img = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(0, 3, 1, 2).float()  # (B, 3, S, S)
        img = img.div_(scale) if scale != 1.0 else img
        img = _resize(img, self.stage_res).clamp_(0, 1)  # (B, 3, r, r)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.mask_from == "model":
                # (B, 3, r, r), (B, 1, r, r)
                rgb, logit = self.net(img, self.identity, self.stage_res, self.alpha, self.source)
            else:  # one encoding, two decoders
                latent = self.net.encode(img, self.stage_res, self.alpha, self.source)
                rgb, logit = self.net.decode(latent, self.identity, self.stage_res, self.alpha)
                _, own = self.net.decode(latent, self.source, self.stage_res, self.alpha)  # (B, 1, r, r)
                logit = own if self.mask_from == "source" else torch.maximum(logit, own)
        out = torch.cat([rgb.float(), torch.sigmoid(logit.float())], dim=1)  # (B, 4, r, r)
        out = _resize(out, s).clamp_(0, 1)  # (B, 4, S, S)
        out = out.permute(0, 2, 3, 1).cpu().numpy()
        return np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3])
