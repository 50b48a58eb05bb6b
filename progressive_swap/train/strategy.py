"""How training is laid out over devices and memory: the strategies behind ``trainer=fsdp`` and
``trainer=model_parallel``, and per-block ``torch.compile``.

The recipes build these through ``_target_`` (``recipes/trainer/fsdp.yaml``,
``recipes/trainer/model_parallel.yaml``); ``trainer=ddp`` needs nothing from here (Lightning's
``ddp_find_unused_parameters_true``: outer blocks are unused before their stage). The unit of
everything here is the block: :class:`EncoderBlock` and :class:`DecoderBlock` hold almost all
parameters and activations, so FSDP shards per block, activations are recomputed per block and
``torch.compile`` compiles per block.

Decoders on separate GPUs. Lightning's ``ModelParallelStrategy`` is built for DTensor tensor
parallelism and FSDP2 inside ``configure_model``; placing whole decoders on their own devices
is simpler than that. :class:`DecoderParallelStrategy` is a one-process
``SingleDeviceStrategy`` on the first device (batch, encoder, losses) that moves decoder ``i``
to ``devices[i % len(devices)]``; :meth:`CombAutoencoder.decode` already moves the latent to
the decoder's device and the result back, so the module needs no change.

Example:
    >>> placement_map(3, ["cuda:0", "cuda:1"])  # doctest: +NORMALIZE_WHITESPACE
    {'encoder': device(type='cuda', index=0), 'decoders.0': device(type='cuda', index=0),
     'decoders.1': device(type='cuda', index=1), 'decoders.2': device(type='cuda', index=0)}
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from pytorch_lightning.strategies import FSDPStrategy, SingleDeviceStrategy
from torch import nn

from progressive_swap.model.blocks import DecoderBlock, EncoderBlock

__all__ = ["BLOCKS", "fsdp_strategy", "placement_map", "place_model", "DecoderParallelStrategy", "compile_blocks"]

BLOCKS: tuple[type[nn.Module], ...] = (EncoderBlock, DecoderBlock)


def block_policy():
    """FSDP's ``ModuleWrapPolicy`` over :data:`BLOCKS`: one FSDP unit (or one checkpoint) per block."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy(set(BLOCKS))


def fsdp_strategy(
    cpu_offload: bool = False,
    activation_checkpointing: bool = True,
    sharding_strategy: str = "FULL_SHARD",
    state_dict_type: str = "full",
    **kwargs: Any,
) -> FSDPStrategy:
    """Lightning's FSDP, wrapping every encoder and decoder block as its own unit.

    Mixed precision comes from ``trainer.precision`` (``bf16-mixed``: bf16 compute, fp32 master
    weights and gradient reduction). ``use_orig_params=True`` keeps per-parameter gradients, so
    parameters of stages not yet reached keep ``grad=None`` and Adam creates their state only
    when they fade in, as without FSDP.

    Args:
        cpu_offload: keep sharded parameters and gradients in host memory between uses.
        activation_checkpointing: recompute each block's activations in backward. Leave
            ``activation_checkpointing`` (the top-level key, for non-FSDP runs) off with it.
        sharding_strategy: ``FULL_SHARD``, ``SHARD_GRAD_OP``, ``HYBRID_SHARD`` or ``NO_SHARD``.
        state_dict_type: ``full`` writes ordinary checkpoints that ``resume=``, ``warm_start=``
            and export read; ``sharded`` writes one file per rank (faster, resume only).
        **kwargs: passed to :class:`FSDPStrategy` (and on to FSDP).
    """
    kwargs.setdefault("use_orig_params", True)
    return FSDPStrategy(
        auto_wrap_policy=block_policy(),
        activation_checkpointing_policy=block_policy() if activation_checkpointing else None,
        cpu_offload=cpu_offload,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        **kwargs,
    )


def _devices(devices: Sequence[str | int | torch.device] | None) -> list[torch.device]:
    if devices is None:
        if not torch.cuda.is_available():
            raise ValueError("trainer=model_parallel needs CUDA devices (or an explicit trainer.strategy.devices list)")
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    out = [torch.device("cuda", d) if isinstance(d, int) else torch.device(d) for d in devices]
    if not out:
        raise ValueError("trainer.strategy.devices is empty")
    return out


def placement_map(num_decoders: int, devices: Sequence[str | int | torch.device]) -> dict[str, torch.device]:
    """Where each part of a comb goes: the encoder on ``devices[0]``, decoder ``i`` on
    ``devices[i % len(devices)]`` (so with as many devices as identities, one decoder each).

    Args:
        num_decoders: identities of the model.
        devices: torch devices, or ints for CUDA indices.

    Returns:
        ``{"encoder": device, "decoders.0": device, ...}`` (names as in ``named_modules()``).
    """
    devs = _devices(devices)
    out = {"encoder": devs[0]}
    out.update({f"decoders.{i}": devs[i % len(devs)] for i in range(num_decoders)})
    return out


def place_model(model: nn.Module, placement: Mapping[str, torch.device]) -> None:
    """Move the submodules named in ``placement`` to their devices (in place), and route each
    moved decoder: its input is moved to its device and its output back to the input's device.

    The network never moves tensors itself; this routing is what lets a comb run with decoders
    on several devices. Only an explicit placement routes: under FSDP with CPU offload a
    decoder's parameters rest on the CPU between steps while it computes on the GPU.
    """
    modules = dict(model.named_modules())
    for name, device in placement.items():
        modules[name].to(device)
        if name.startswith("decoders."):
            route_to(modules[name], torch.device(device))


def route_to(module: nn.Module, device: torch.device) -> None:
    """Run ``module`` on ``device``: move its first input there and its output back.

    Replaces an earlier routing of the same module. The hooks run before any other forward
    hook of the module, so those see the moved tensors.
    """
    for handle in getattr(module, "_route_handles", ()):
        handle.remove()
    origin: list[torch.device] = []

    def to_device(mod: nn.Module, args: tuple) -> tuple:
        origin[:] = [args[0].device]
        return (args[0].to(device), *args[1:])

    def back(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out.to(origin[0])

    module._route_handles = (module.register_forward_pre_hook(to_device, prepend=True),
                             module.register_forward_hook(back))
    module._route_device = device


def routed_devices(model: nn.Module) -> dict[int, torch.device]:
    """``{decoder index: device}`` for the decoders that :func:`place_model` routed."""
    return {i: d._route_device for i, d in enumerate(model.decoders) if hasattr(d, "_route_device")}


class DecoderParallelStrategy(SingleDeviceStrategy):
    """One process, several devices: encoder, batch and losses on the first device, decoder ``i``
    on ``devices[i % len(devices)]``.

    Decoders run one after another (as in a single-device step); the gain is memory: each
    device holds one decoder's parameters, gradients, optimizer state and activations, so a
    larger batch fits. Combine with ``trainer.precision=bf16-mixed`` (autocast covers all CUDA
    devices) and ``activation_checkpointing=true``.

    Args:
        devices: devices to use, first one the root (ints are CUDA indices); ``None``: every
            visible CUDA device.
        **kwargs: passed to :class:`SingleDeviceStrategy` (not ``device``).
    """

    strategy_name = "decoder_parallel"

    def __init__(self, devices: Sequence[str | int | torch.device] | None = None, **kwargs: Any) -> None:
        self.devices = _devices(devices)
        super().__init__(device=self.devices[0], **kwargs)

    def model_to_device(self) -> None:
        assert self.model is not None
        self.model.to(self.root_device)  # buffers and anything outside the comb
        comb = self.lightning_module.model
        place_model(comb, placement_map(comb.num_identities, self.devices))

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        # The base class moves all optimizer state to the root device afterwards; torch's
        # load_state_dict already puts each state on its parameter's device, which is what we need.
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"]):
            optimizer.load_state_dict(state)


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> int:
    """``torch.compile`` every encoder/decoder block in place (``nn.Module.compile``).

    Per block, not per model: the fade ``alpha`` is a Python float, and a whole-model graph
    would be recompiled for each new value during a fade. Blocks take only a tensor, so they
    compile once per input shape (stage and batch size). Parameter names, checkpoints and
    ``state_dict`` are unchanged.

    Args:
        model: any module containing :data:`BLOCKS`.
        **compile_kwargs: passed to ``torch.compile`` (e.g. ``backend="eager"`` in tests).

    Returns:
        The number of blocks compiled.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, BLOCKS):
            m.compile(**compile_kwargs)
            n += 1
    return n
