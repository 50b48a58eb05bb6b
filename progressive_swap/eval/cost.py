"""What a training step costs a design at full size: FLOPs, and GPU time from a per-operation roofline.

Users pay for a network in GPU hours at full size, so designs are compared there, not in the CPU
seconds of a scaled copy (where fixed per-step work dominates). Everything here runs on the
``meta`` device: shapes only, no storage, so a 1024 px step of any design is costed in seconds.

The step is the trainer's: every identity's images through the shared encoder, each identity's
rows through its own decoder, a loss on the colour and the mask, and backward. Per image it gives

* ``train_flops``: forward + backward FLOPs, counted by :class:`~torch.utils.flop_counter.FlopCounterMode`
  (convolutions and matrix products);
* ``gpu_seconds[gpu]``: an estimated time on a GPU (:data:`GPUS`). Each operation of the step
  (as PyTorch runs it eagerly, one kernel per operation) takes the larger of its FLOPs over the
  GPU's bf16 peak and the bytes it reads and writes over its memory bandwidth; the optimizer adds
  its per-step traffic over the parameters. The sum, over the images of a step, is the estimate.

What the estimate leaves out, so read its ratios between designs, not its seconds:
* peaks are the spec sheets' (no kernel reaches them; small kernels fall further short, and
  launch latency, about 5 µs a kernel, is not counted);
* activations move as bf16 (2 bytes) and every operation reads its inputs and writes its outputs
  once (no fusion, no cache reuse); views cost nothing;
* the loss is masked L1 and mask BCE only (the SSIM term's filters are left out, the same for
  every design); data loading and augmentation run on the CPU beside the GPU and are left out;
* the optimizer is Adam in float32 with a bf16 copy of each weight per step: 34 bytes per
  trained parameter per step (weights, gradients and two moments read and written, the cast).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

__all__ = ["GPUS", "Gpu", "OPTIMIZER_BYTES_PER_PARAM", "measure_step", "step_cost"]


@dataclass(frozen=True)
class Gpu:
    """A GPU's peaks, as its maker's spec sheet gives them."""

    name: str
    bf16_flops: float  # dense bf16 tensor-core FLOP/s (FP32 accumulate)
    bandwidth: float  # memory bytes/s
    source: str


GPUS: dict[str, Gpu] = {
    "h100": Gpu("NVIDIA H100 SXM5 80 GB", 989.4e12, 3.35e12,
                "NVIDIA H100 Tensor Core GPU datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity, "
                "989.4 dense; HBM3 3.35 TB/s"),
    "rtx4090": Gpu("NVIDIA GeForce RTX 4090 24 GB", 165.2e12, 1.008e12,
                   "NVIDIA Ada Lovelace architecture whitepaper: peak BF16 Tensor TFLOPS with FP32 accumulate "
                   "165.2 dense (330.4 with sparsity); GDDR6X 1,008 GB/s"),
}
OPTIMIZER_BYTES_PER_PARAM = 34  # fp32 weight r/w 8, grad r 4, two moments r/w 16, bf16 cast r 4 + w 2


class _OpLog(TorchDispatchMode):
    """Every operation's FLOPs (the flop counter's own formulas) and the bytes of the distinct
    tensors it reads and writes; views are free."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[float, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "is_view", False):
            return out
        packet = func.overloadpacket
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        tensors = {id(t): t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)}
        self.ops.append((float(flops), sum(t.numel() * t.element_size() for t in tensors.values())))
        return out


def step_cost(model: torch.nn.Module, res: int, alpha: float, batch_per_identity: int,
              swap_decodes: bool = False) -> dict[str, Any]:
    """Cost per image of one training step of ``model`` (built on the meta device, bf16) at
    ``(res, alpha)`` with ``batch_per_identity`` images of each identity; ``swap_decodes``: each
    identity's rows also go through the next identity's decoder (``loss.swap_identity``; its
    small critic is left out).

    ``model`` has the trainer's interface: ``encode(img, res, alpha, source)`` and
    ``decode(latent, identity, res, alpha) -> (rgb, mask_logit)``, ``num_identities``.

    Returns:
        ``train_gflops`` (FlopCounterMode), ``bytes`` moved by the step's operations per image,
        ``trained_params`` (parameters that got a gradient) and ``gpu_seconds`` per GPU of
        :data:`GPUS`, all per image.
    """
    n, b = model.num_identities, batch_per_identity
    dtype = next(model.parameters()).dtype
    for p in model.parameters():
        p.grad = None
    img = torch.empty(n * b, 3, res, res, device="meta", dtype=dtype)
    source = torch.arange(n, device="meta").repeat_interleave(b)
    log = _OpLog()
    with FlopCounterMode(display=False) as counter, log:
        _step_loss(model, img, source, res, alpha, b, swap_decodes).backward()
    images = n * b
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    gpu_seconds = {}
    for key, gpu in GPUS.items():
        ops = sum(max(f / gpu.bf16_flops, nbytes / gpu.bandwidth) for f, nbytes in log.ops)
        gpu_seconds[key] = (ops + trained * OPTIMIZER_BYTES_PER_PARAM / gpu.bandwidth) / images
    for p in model.parameters():
        p.grad = None
    return {
        "res": res,
        "alpha": alpha,
        "batch_per_identity": b,
        "train_gflops": counter.get_total_flops() / images / 1e9,
        "bytes": sum(nbytes for _, nbytes in log.ops) / images,
        "trained_params": trained,
        "gpu_seconds": gpu_seconds,
    }


def _step_loss(model: torch.nn.Module, img: torch.Tensor, source: torch.Tensor, res: int, alpha: float,
               b: int, swap_decodes: bool = False) -> torch.Tensor:
    """The step :func:`step_cost` counts: all images through the encoder, each identity's rows
    through its decoder, L1 on the colour and BCE on the mask (and, with ``swap_decodes``, through
    the next identity's decoder too, its colour into the loss)."""
    latent = model.encode(img, res, alpha, source)
    loss = img.new_zeros((), dtype=torch.float32)
    for k in range(model.num_identities):
        rgb, mask_logit = model.decode(latent[k * b:(k + 1) * b], k, res, alpha)
        target = img[k * b:(k + 1) * b].float()
        loss = loss + (rgb.float() - target).abs().mean()
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(mask_logit.float(), target[:, :1])
        if swap_decodes:
            swapped, _ = model.decode(latent[k * b:(k + 1) * b], (k + 1) % model.num_identities, res, alpha)
            loss = loss + swapped.float().mean()
    return loss


def measure_step(model: torch.nn.Module, res: int, alpha: float, batch_per_identity: int, steps: int = 5,
                 warmup: int = 2, bf16: bool = True) -> dict[str, Any]:
    """Seconds per image of :func:`step_cost`'s step, measured on ``model``'s device: float32
    weights, bfloat16 autocast when ``bf16``, channels-last inputs, and Adam's update, as the
    trainer runs it (no data loading, no SSIM). The median of ``steps`` timed steps after
    ``warmup``; on CUDA each step is synchronised and ``peak_gb`` is the allocator's peak.

    A batch that does not fit is halved until one does (``batch_per_identity`` in the result is
    the one measured, ``oom_at`` the first that did not fit); none fitting raises the error.
    """
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    n, b, oom_at = model.num_identities, batch_per_identity, None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    while True:
        try:
            img = torch.rand(n * b, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
            source = torch.arange(n, device=device).repeat_interleave(b)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for i in range(warmup + steps):
                sync()
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = _step_loss(model, img, source, res, alpha, b)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            break
        except torch.cuda.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            img = loss = None
            torch.cuda.empty_cache()
            oom_at = oom_at or b
            if b == 1:
                raise
            b //= 2
    times.sort()
    return {"res": res, "alpha": alpha, "batch_per_identity": b, "oom_at": oom_at,
            "seconds_per_image": times[len(times) // 2] / (n * b),
            "peak_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None}
