"""Per-stage size report of a :class:`CombAutoencoder`: parameters, activation memory, FLOPs.

Everything is measured on a copy of the model built on the ``meta`` device (shapes only, no
storage), so a 1024-px model is summarised in about a second without allocating activations.

Example:
    >>> model = CombAutoencoder(CombArch(2, final_res=64, start_res=32, latent_res=8,
    ...                         latent_channels=64, channel_base=1024, channel_max=64))
    >>> print(format_summary(summarize(model, batch_size=16)))  # doctest: +SKIP
"""

from __future__ import annotations

import io
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from progressive_swap.model.autoencoder import CombAutoencoder
from progressive_swap.model.builders import build_model

__all__ = ["summarize", "format_summary"]


def _measure_step(
    model: CombAutoencoder, batch_size: int, stage_res: int, alpha: float, dtype: torch.dtype
) -> tuple[int, int, int]:
    """One forward + backward through the encoder and decoder 0 on meta tensors.

    Returns:
        (bytes of distinct non-parameter tensors saved for backward, forward FLOPs,
        forward + backward FLOPs), for the whole batch.
    """
    param_ids = {id(p) for p in model.parameters()}
    saved: dict[int, torch.Tensor] = {}  # keep references so ids stay unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in param_ids:
            saved[id(t)] = t
        return t

    img = torch.empty(batch_size, 3, stage_res, stage_res, device="meta", dtype=dtype)
    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            rgb, mask_logit = model(img, 0, stage_res, alpha)
        fwd_flops = counter.get_total_flops()
        (rgb.sum() + mask_logit.sum()).backward()
        total_flops = counter.get_total_flops()
    act_bytes = sum(t.numel() * t.element_size() for t in saved.values())
    return act_bytes, fwd_flops, total_flops


def summarize(
    model: CombAutoencoder, batch_size: int = 1, dtype: torch.dtype = torch.float32
) -> list[dict[str, Any]]:
    """Size of each training stage of ``model``.

    Stages after the first are measured mid-fade (``alpha = 0.5``), when both the old and the
    new paths run: the most expensive point of the stage. Activation memory is the total size
    of the distinct tensors autograd saves for backward in one training step of the encoder and
    one decoder, without activation checkpointing; FLOPs count convolutions only.

    Args:
        model: the model to describe (only its :meth:`~CombAutoencoder.arch_args` are used). Another
            network with the trainer's interface is described the same way; the encoder and
            decoder columns count the parameters named ``encoder.`` and ``decoders.0.``.
        batch_size: images per step, for ``activation_bytes``.
        dtype: activation dtype, for ``activation_bytes`` (e.g. ``torch.bfloat16``).

    Returns:
        One dict per stage with keys ``stage_res``, ``alpha``, ``params_encoder``,
        ``params_decoder`` (one decoder), ``params_step`` (encoder + one decoder: what one
        forward uses), ``params_total`` (encoder + every decoder), ``activation_bytes``
        (whole batch), ``gflops_forward`` and ``gflops_train`` (forward + backward), per image.
        Parameter counts are the union over the stage's fade.
    """
    with torch.device("meta"):
        # any other network (one with a builder, model/builders.py) is rebuilt from its arch_args
        meta = CombAutoencoder(model.arch) if isinstance(model, CombAutoencoder) else build_model(model.arch_args())
    meta.to(dtype)
    shapes = {name: p.numel() for name, p in meta.named_parameters()}
    rows = []
    for stage_res in meta.stages:
        alpha = 0.5 if stage_res > meta.start_res else 1.0
        active = meta.active_parameters(stage_res)
        enc = sum(shapes[n] for n in active if n.startswith("encoder."))
        dec = sum(shapes[n] for n in active if n.startswith("decoders.0."))
        act_bytes, fwd, total = _measure_step(meta, batch_size, stage_res, alpha, dtype)
        rows.append(
            dict(
                stage_res=stage_res,
                alpha=alpha,
                params_encoder=enc,
                params_decoder=dec,
                params_step=enc + dec,
                params_total=sum(shapes[n] for n in active),
                activation_bytes=act_bytes,
                gflops_forward=fwd / batch_size / 1e9,
                gflops_train=total / batch_size / 1e9,
            )
        )
    return rows


def format_summary(rows: list[dict[str, Any]], title: str = "model size per stage") -> str:
    """Render :func:`summarize` rows as a plain-text table (no colour codes)."""
    table = Table(title=title)
    for header in ("stage", "alpha", "encoder", "decoder", "enc+dec", "total",
                   "activations", "GFLOP fwd/img", "GFLOP train/img"):
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(
            f"{r['stage_res']}",
            f"{r['alpha']:.1f}",
            f"{r['params_encoder'] / 1e6:.2f} M",
            f"{r['params_decoder'] / 1e6:.2f} M",
            f"{r['params_step'] / 1e6:.2f} M",
            f"{r['params_total'] / 1e6:.2f} M",
            f"{r['activation_bytes'] / 2**20:.1f} MiB",
            f"{r['gflops_forward']:.2f}",
            f"{r['gflops_train']:.2f}",
        )
    buffer = io.StringIO()
    Console(file=buffer, width=140, color_system=None, force_terminal=False).print(table)
    return buffer.getvalue()
