"""The training module: orchestrates model, growth schedule, augmentation and losses.

It does not compute anything itself beyond wiring: the network is a pure ``nn.Module``, the
schedule is a pure function of the global batch index, augmentations and losses are plain
functions. The batch index travels with each batch (see ``train/datamodule.py``), so stage and
alpha are known exactly, also after a resume.
"""
from __future__ import annotations

import math
import time
from functools import partial
from typing import Any, Callable

import pytorch_lightning as pl
import torch

from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.model.blocks import downsample2x, upsample2x
from progressive_swap.model.builders import arch_differences
from progressive_swap.train.augment import apply_affine, random_affine, random_color_scramble, random_grid_warp
from progressive_swap.train.growth import GrowthSchedule, mix_seed
from progressive_swap.train.losses import SwapLoss

CKPT_KEY = "progressive_swap"
CKPT_VERSION = 1


def fade_target(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend a target the way the network's output is blended during a fade-in."""
    if alpha >= 1.0:
        return x
    low = upsample2x(downsample2x(x))
    return low + (x - low) * alpha


def resume_problem(state: dict[str, Any], arch: CombArch | dict[str, Any],
                   world_size: int | None = None) -> str | None:
    """Why a run cannot continue from a checkpoint's ``state[CKPT_KEY]``, or ``None``: another
    architecture (warm-start from it instead), or another number of processes (the data
    position counts global batches). ``arch``: the run's :class:`CombArch`, or its model's
    ``arch_args()`` (any network, ``model/builders.py``)."""
    diff = arch_differences(state["arch"], arch)
    if diff:
        said = ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in diff.items())
        return f"it is another architecture (checkpoint vs recipe: {said}); use warm_start= instead"
    if world_size is not None and state["schedule"]["world_size"] != world_size:
        return f"it ran on {state['schedule']['world_size']} processes, not {world_size}"
    return None


def reopen_unfinished_epoch(checkpoint: dict[str, Any], batches_done: int, total_batches: int) -> None:
    """Mark the training epoch of ``checkpoint`` as still running when its schedule is not done.

    The whole schedule is one epoch. Until this was fixed, Lightning saved ``last.ckpt`` again at
    the end of a run stopped before its first periodic checkpoint (a signal in the first
    ``checkpoint.every_minutes``, or ``max_steps``), with the epoch closed; resumed as it was, such
    a run stopped at once and called its partial weights final."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress")
    if batches_done >= total_batches or not progress:
        return
    for part in ("total", "current"):
        p = progress.get(part, {})
        if p.get("completed", 0) >= max(p.get("started", 0), 1):
            p["processed"] = p["completed"] = p["started"] - 1


class SwapModule(pl.LightningModule):
    """Trains a :class:`CombAutoencoder` to reconstruct every identity through its own decoder.

    Args:
        model: the comb autoencoder (built for the final resolution), or any network with its
            interface (``encode``, ``decode``, ``num_identities``, ``stages``, ``encoder``,
            ``colour_norm``, ``arch_args()`` naming its builder: ``model/builders.py``).
        schedule: growth schedule (stages, fades, batch sizes, learning rates).
        loss: the reconstruction loss.
        optimizer: a partial optimizer constructor taking ``params`` and ``lr``.
        geometry: :func:`random_affine` arguments (shared by input and target).
        warp: strength of the encoder-input grid warp (0 disables it).
        input_color: strength of the encoder-input colour scramble (0 disables it).
        latent_noise: Gaussian noise added to the shared latent in training, as a fraction of the
            batch's latent deviation (0: none): what a decoder can read from the latent must
            survive it, so fine identity detail is left to the decoder.
        seed: seed of the on-device random augmentation.
        freeze_encoder_steps: optimizer steps during which the encoder stays fixed (warm starts).
        channels_last: run the network in channels-last memory format.
        identity_names: a label per decoder (from the face sets), saved for export.
        face_type: the face sets' crop coverage, saved so export aligns faces the same way.
        crop_space: what the face sets' crops' values mean (``srgb``, ``acescct``), saved so export
            feeds the network crops in the same space.
    """

    def __init__(
        self,
        model: CombAutoencoder,
        schedule: GrowthSchedule,
        loss: SwapLoss | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        geometry: dict | None = None,
        warp: float = 0.04,
        input_color: float = 0.0,
        latent_noise: float = 0.0,
        seed: int = 0,
        freeze_encoder_steps: int = 0,
        channels_last: bool = False,
        identity_names: list[str] | None = None,
        face_type: str | None = None,
        crop_space: str = "srgb",
    ):
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.loss = loss or SwapLoss()
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, betas=(0.5, 0.999))
        self.geometry = dict(geometry or {})
        self.warp = warp
        self.input_color = input_color
        self.latent_noise = latent_noise
        self.seed = seed
        self.freeze_encoder_steps = freeze_encoder_steps
        self.channels_last = channels_last
        self.identity_names = list(identity_names or [f"id{k}" for k in range(model.num_identities)])
        self.face_type = face_type
        self.crop_space = crop_space
        self.batches_done = 0  # global batches trained (the data position); saved in checkpoints
        self.stage_res = schedule.start_res
        self.alpha = 1.0
        self.nonfinite_steps = 0  # skipped steps; these three are kept up by train/guard.py
        self.rollbacks = 0
        self.lr_scale = 1.0  # multiplies the schedule's learning rate; lowered at each rollback
        self.step_problem: str | None = None  # why this batch's update is skipped (non-finite terms)
        self.step_loss: float | None = None  # this batch's loss on this rank (the guard's spike rule)
        self._t_last: float | None = None
        self.save_hyperparameters(
            {
                "arch": model.arch_args(),
                "schedule": schedule.state(),
                "geometry": self.geometry,
                "warp": warp,
                "seed": seed,
            }
        )

    # -- set-up ---------------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Every parameter is in the optimizer from the start. Parameters of stages not yet
        # reached get no gradient, and Adam creates state lazily on the first gradient, so
        # new blocks start with clean optimizer state when they fade in.
        params = list(self.parameters())  # model + discriminator, if any
        return self.optimizer_factory(params=params, lr=self.schedule.stages[0].lr, **self._fused_on_cpu(params))

    def _fused_on_cpu(self, params: list[torch.Tensor]) -> dict[str, bool]:
        """``{"fused": True}`` for Adam or AdamW with every parameter on the CPU and no choice
        made in the config (``optimizer.fused=null``): one C++ loop over all parameters instead
        of one Python call each (about 3 ms of a 100 ms demo step on 2 cores). GPUs, and runs
        that clip gradients under autocast, keep the optimizer's own default."""
        factory = self.optimizer_factory
        func, given = getattr(factory, "func", factory), getattr(factory, "keywords", {}) or {}
        chosen = any(given.get(k) is not None for k in ("fused", "foreach"))
        if func not in (torch.optim.Adam, torch.optim.AdamW) or chosen:
            return {}
        trainer = self._trainer  # None outside a Trainer
        if trainer is not None and trainer.gradient_clip_val and "mixed" in str(trainer.precision):
            return {}  # Lightning cannot clip the gradients of a fused optimizer under autocast
        if not params or any(p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64) for p in params):
            return {}
        return {"fused": True}

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # -- schedule -------------------------------------------------------------------------------

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        pos = self.schedule.at(int(batch["batch_index"][0]))
        opt = self.optimizers()
        for group in getattr(opt, "optimizer", opt).param_groups:
            group["lr"] = pos.lr * self.lr_scale
        self.step_problem = None
        frozen = self.global_step < self.freeze_encoder_steps
        for p in self.model.encoder.parameters():
            p.requires_grad_(not frozen)

    # -- training -------------------------------------------------------------------------------

    def _generator(self, batch_index: int) -> torch.Generator:
        return torch.Generator().manual_seed(mix_seed(self.seed, batch_index, self.global_rank))

    def prepare(self, batch: dict, batch_index: int) -> tuple[torch.Tensor, ...]:
        """Augment a batch on the device: a shared affine/flip, then the grid warp and the colour
        scramble on the encoder input only.

        Returns:
            ``inputs, targets, masks, regions``, identity-major: rows ``[k*B:(k+1)*B]`` are identity k.
        """
        imgs = batch["image"]  # (B, N, 3, r, r)
        b, n, _, r, _ = imgs.shape
        stacked = torch.cat([imgs, batch["mask"], batch["regions"]], dim=2)  # (B, N, 6, r, r)
        stacked = stacked.transpose(0, 1).reshape(n * b, -1, r, r)  # (N*B, 6, r, r)
        gen = self._generator(batch_index)
        if self.geometry:
            stacked = apply_affine(stacked, random_affine(n * b, r, gen, **self.geometry).to(stacked.device))
        target, mask, regions = stacked[:, :3], stacked[:, 3:4].clamp(0, 1), stacked[:, 4:6].clamp(0, 1)
        inputs = random_grid_warp(target, gen, self.warp).clamp(0, 1)
        inputs = random_color_scramble(inputs, gen, self.input_color)
        return inputs, target, mask, regions

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        g = int(batch["batch_index"][0])
        pos = self.schedule.at(g)
        res, alpha = pos.res, (pos.alpha if pos.res > self.schedule.start_res else 1.0)
        self.stage_res, self.alpha = res, alpha
        inputs, target, mask, regions = self.prepare(batch, g)
        n = self.model.num_identities
        b = inputs.shape[0] // n
        if alpha < 1.0:
            target, mask, regions = fade_target(target, alpha), fade_target(mask, alpha), fade_target(regions, alpha)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        source = torch.arange(n, device=inputs.device).repeat_interleave(b)  # identity-major rows
        latent = self.model.encode(inputs, res, alpha, source)  # (N*B, Cl, Rl, Rl)
        total = inputs.new_zeros(())
        parts_sum: dict[str, torch.Tensor] = {}
        adversary = self.loss.latent_term(latent, source) if hasattr(self.loss, "latent_term") else None
        if adversary is not None:
            total = total + adversary
            parts_sum["latent_adversary"] = adversary.detach()
        if self.latent_noise > 0:
            gen = self._generator(g + (1 << 40))  # a stream of its own: the augmentation's is unchanged
            noise = torch.randn(latent.shape, generator=gen).to(latent.device, latent.dtype)
            latent = latent + noise * (self.latent_noise * latent.detach().float().std()).to(latent.dtype)
        for k in range(n):
            rows = slice(k * b, (k + 1) * b)
            rgb, mask_logit = self.model.decode(latent[rows], k, res, alpha)
            loss_k, parts = self.loss(rgb, mask_logit, target[rows], mask[rows], regions[rows])
            total = total + loss_k
            for name, v in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + v.detach() / n
        if getattr(self.loss, "swap_critic", None) is not None:  # each face through the next decoder
            swapped = torch.cat([self.model.decode(latent[k * b:(k + 1) * b], (k + 1) % n, res, alpha)[0]
                                 for k in range(n)])
            term = self.loss.swap_term(target, source, swapped, (source + 1) % n)
            total = total + term
            parts_sum["swap_identity"] = term.detach()
        self.batches_done = g + 1

        self.log("loss", total.detach(), prog_bar=True)
        for name, v in parts_sum.items():
            self.log(f"loss/{name}", v)
        self.log("stage", float(res), prog_bar=True)
        self.log("alpha", float(alpha), prog_bar=True)
        self.log("images", float(self.schedule.images_seen(g + 1)))
        self.step_loss = float(total.detach())  # the step's one device sync, shared with the guard
        finite = math.isfinite(self.step_loss)
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)  # every rank skips together
        if not finite:
            # The update is skipped: train/guard.py drops every gradient before the optimizer step,
            # counts the step and rolls back if it repeats. The loss still goes through backward,
            # because distributed training cannot skip a step by returning None.
            self.step_problem = ", ".join(k for k, v in parts_sum.items() if not torch.isfinite(v)) or "loss"
        return total

    def on_train_batch_end(self, outputs: Any, batch: dict, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._t_last is not None:
            imgs = batch["image"].shape[0] * batch["image"].shape[1] * self.trainer.world_size
            self.log("img_s", imgs / max(now - self._t_last, 1e-9), prog_bar=True)
        self._t_last = now

    # -- checkpoints ----------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = {
            "version": CKPT_VERSION,
            "arch": self.model.arch_args(),
            "schedule": self.schedule.state(),
            "batches_done": self.batches_done,
            "images_seen": self.schedule.images_seen(self.batches_done),
            "stage_res": self.stage_res,
            "alpha": self.alpha,
            "nonfinite_steps": self.nonfinite_steps,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "identities": self.identity_names,
            "face_type": self.face_type,
            "crop_space": self.crop_space,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CKPT_KEY)
        if state is None:
            raise ValueError("checkpoint was not written by progressive_swap's trainer")
        problem = resume_problem(state, self.model.arch_args())
        if problem:
            raise ValueError(problem)
        self.batches_done = int(state["batches_done"])
        self.stage_res, self.alpha = int(state["stage_res"]), float(state["alpha"])
        reopen_unfinished_epoch(checkpoint, self.batches_done, self.schedule.total_batches)
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.rollbacks, self.lr_scale = int(state.get("rollbacks", 0)), float(state.get("lr_scale", 1.0))
