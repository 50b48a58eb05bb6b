"""The non-finite guard: a NaN or Inf never reaches the weights, and a run that keeps producing
them rolls back to its newest good checkpoint with a lower learning rate.

* A non-finite **loss** skips the step: :meth:`SwapModule.training_step` names the loss terms
  that were non-finite in ``module.step_problem`` (agreed by every process), and this guard
  drops every gradient in ``on_before_optimizer_step``, so the optimizer leaves all parameters
  (and their Adam moments) as they were. The loss still runs backward: distributed training
  cannot skip a step by returning ``None``, and its gradient all-reduce must happen on every
  process.
* A finite loss with non-finite **gradients** also skips the step, the same way.
* ``max_bad_steps`` skipped steps within ``window`` batches trigger a **rollback**: model and
  optimizer state are loaded in-process from the newest good checkpoint of the run directory
  (readable, all weights finite, written before the first bad step of the streak) and the
  learning rate is multiplied by ``lr_factor``. The factor is kept in the module (``lr_scale``,
  saved in every checkpoint), so a resumed run keeps it. The data position goes on: the
  batches after the rollback are new ones.
* After ``max_rollbacks`` rollbacks the run stops with :class:`TrainingDiverged`.
* A finite loss can diverge too: a loss above ``spike_factor`` times the median of the last
  ``spike_window`` accepted losses is a **spike**, skipped and counted like a non-finite step
  (once at least ``min(50, spike_window)`` losses are known; any process's spike skips every
  process). A learning rate too high for the data, in bf16, took a demo run from 0.5 to 9,165
  without a single non-finite value; this catches that.

Under ``precision=16-mixed`` Lightning's GradScaler already skips steps with inf/NaN gradients
and lowers its scale: that is normal operation, so the guard leaves those gradients to the
scaler and does not count them. A non-finite *loss* is counted under every precision; the
spike rule is off there (the scaler needs the gradients of every step it is given).

Every event is printed as one line and appended to ``logs/nonfinite.jsonl`` in the run
directory; the counts ``nonfinite`` and ``rollbacks`` show in the progress bar once non-zero.
"""
from __future__ import annotations

import collections
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytorch_lightning as pl
import torch
from rich.console import Console

from progressive_swap.train.checkpoint import good_checkpoints, read_training_checkpoint

_console = Console(stderr=True)


class TrainingDiverged(ValueError):
    """The run kept producing non-finite steps after ``max_rollbacks`` rollbacks."""


def grads_finite(params: Iterable[torch.Tensor]) -> bool:
    """Whether every existing gradient is finite (one device sync, however many tensors)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    peaks = torch._foreach_norm(grads, float("inf"))  # max |g| per tensor; NaN propagates, never overflows
    return bool(torch.stack([t.float() for t in peaks]).isfinite().all())


def state_finite(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of a state dict is finite."""
    return all(torch.isfinite(v).all() for v in state_dict.values() if torch.is_tensor(v) and v.is_floating_point())


class NonFiniteGuard(pl.Callback):
    """Skips non-finite steps; rolls back and lowers the learning rate when they repeat.

    Args:
        dirpath: the run directory (passed by code): where rollback checkpoints are found and
            the event log is written. ``None``: no rollback, only the learning rate is lowered.
        max_bad_steps: skipped steps within ``window`` batches that trigger a rollback.
        window: batches the count looks back over; 0 means ``max_bad_steps`` (that many in a row).
        lr_factor: learning-rate multiplier applied at each rollback (kept across resumes).
        max_rollbacks: rollbacks allowed before the run stops with :class:`TrainingDiverged`.
        inject_nan_at: test hook: global batch indices whose input images are replaced by NaN.
        spike_factor: a finite loss above this many times the median of recent accepted losses
            is skipped like a non-finite one; 0 turns the rule off.
        spike_window: accepted losses the median is taken over.
        inject_spike_at: test hook: global batch indices whose loss is reported ×10⁴ to the rule.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        max_bad_steps: int = 3,
        window: int = 0,
        lr_factor: float = 0.5,
        max_rollbacks: int = 5,
        inject_nan_at: Sequence[int] = (),
        spike_factor: float = 10.0,
        spike_window: int = 200,
        inject_spike_at: Sequence[int] = (),
    ):
        if max_bad_steps < 1 or not 0 < lr_factor <= 1 or max_rollbacks < 0 or window < 0:
            raise ValueError(
                f"guard: need max_bad_steps >= 1, 0 < lr_factor <= 1, max_rollbacks >= 0, window >= 0; got "
                f"{max_bad_steps}, {lr_factor}, {max_rollbacks}, {window}"
            )
        if spike_factor < 0 or (spike_factor and not 1 < spike_factor) or spike_window < 1:
            raise ValueError(
                f"guard: need spike_factor 0 or > 1 and spike_window >= 1; got {spike_factor}, {spike_window}"
            )
        self.spike_factor, self.spike_window = float(spike_factor), int(spike_window)
        self.inject_spike_at = {int(b) for b in inject_spike_at}
        self._losses: collections.deque[float] = collections.deque(maxlen=self.spike_window)  # accepted losses
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.max_bad_steps = int(max_bad_steps)
        self.lr_factor = float(lr_factor)
        self.max_rollbacks = int(max_rollbacks)
        self.inject_nan_at = {int(b) for b in inject_nan_at}
        self._recent: collections.deque[int | None] = collections.deque(
            maxlen=max(int(window), self.max_bad_steps)
        )  # bad batch indices
        self.events: list[dict[str, Any]] = []

    # -- detection ------------------------------------------------------------------------------

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.inject_nan_at and int(batch["batch_index"][0]) in self.inject_nan_at:
            batch["image"] = torch.full_like(batch["image"], float("nan"))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:  # GradScaler skips inf steps itself
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if module.step_problem is None and self.spike_factor:
            loss = self._step_loss(module)
            ratio = self._spike_ratio(loss)
            # any rank's spike skips every rank
            if trainer.strategy.reduce_boolean_decision(ratio is not None, all=False):
                module.step_problem = f"loss spike ({ratio:.0f}× the recent median)" if ratio else "loss spike"
            elif math.isfinite(loss):
                self._losses.append(loss)
        if module.step_problem is None:  # a finite loss: check what backward made of it
            if trainer.strategy.reduce_boolean_decision(grads_finite(params), all=True):  # every rank skips together
                return
            module.step_problem = "gradients"
        for p in params:
            p.grad = None  # the optimizer leaves parameters without a gradient untouched

    def _step_loss(self, module: pl.LightningModule) -> float:
        loss = float(module.step_loss) if getattr(module, "step_loss", None) is not None else math.nan
        if self.inject_spike_at and module.batches_done - 1 in self.inject_spike_at:
            loss *= 1e4
        return loss

    def _spike_ratio(self, loss: float) -> float | None:
        """``loss`` over the median of recent accepted losses when above ``spike_factor``, else None."""
        if len(self._losses) < min(50, self.spike_window) or not math.isfinite(loss):
            return None
        median = statistics.median(self._losses)
        if median <= 0 or loss <= self.spike_factor * median:
            return None
        return loss / median

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        problem, g = module.step_problem, int(batch["batch_index"][0])
        self._recent.append(g if problem is not None else None)
        if problem is not None:
            module.nonfinite_steps += 1
            bad = sum(b is not None for b in self._recent)
            self._event(
                trainer,
                {
                    "event": "spike" if problem.startswith("loss spike") else "nonfinite",
                    "batch": g,
                    "stage": module.stage_res,
                    "alpha": round(float(module.alpha), 4),
                    "what": problem,
                    "bad_in_window": bad,
                },
                f"{'' if problem.startswith('loss spike') else 'non-finite '}{problem} at batch {g} "
                f"(stage {module.stage_res}px, "
                f"alpha {module.alpha:.3f}): step skipped ({bad}/{self.max_bad_steps})",
            )
            if bad >= self.max_bad_steps:
                self._rollback(trainer, module)
        if module.nonfinite_steps:
            module.log("nonfinite", float(module.nonfinite_steps), prog_bar=True)
        if module.rollbacks:
            module.log("rollbacks", float(module.rollbacks), prog_bar=True)

    # -- recovery -------------------------------------------------------------------------------

    def _rollback(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        first_bad = min(b for b in self._recent if b is not None)  # roll back to before the streak began
        self._recent.clear()
        if module.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged: skipped steps (non-finite or spiking loss) kept coming after "
                f"{module.rollbacks} rollbacks (learning rate now x{module.lr_scale:g}); lower the learning rate "
                "or check the data"
            )
        module.rollbacks += 1
        source = self._restore(trainer, module, first_bad)
        module.lr_scale *= self.lr_factor
        where = (
            f"rolled back to {source[1].name} (batch {source[0]})" if source else "no good checkpoint yet, weights kept"
        )
        self._event(
            trainer,
            {
                "event": "rollback",
                "batch": module.batches_done - 1,
                "to": source[1].name if source else None,
                "to_batch": source[0] if source else None,
                "lr_scale": module.lr_scale,
                "rollbacks": module.rollbacks,
            },
            f"{self.max_bad_steps} skipped steps: {where}; learning rate x{module.lr_scale:g}",
        )

    def _restore(self, trainer: pl.Trainer, module: pl.LightningModule, before: int) -> tuple[int, Path] | None:
        """Load model and optimizer state from the newest good checkpoint written at or before
        batch ``before``; returns its ``(batches_done, path)``, or None if there is none.

        Rank 0 chooses and every process loads the file it chose: processes that looked at the
        directory separately could disagree while a checkpoint is being written."""
        if self.dirpath is None:
            return None
        chosen, ckpt = self._newest_good(trainer, before) if trainer.is_global_zero else (None, None)
        chosen = trainer.strategy.broadcast(chosen, src=0)
        if chosen is None:
            return None
        batches, path = chosen[0], Path(chosen[1])
        ckpt = ckpt if ckpt is not None else read_training_checkpoint(path)
        module.load_state_dict(ckpt["state_dict"])
        for opt, state in zip(trainer.optimizers, ckpt.get("optimizer_states", [])):
            opt.load_state_dict(state)
        return batches, path

    def _newest_good(self, trainer: pl.Trainer, before: int) -> tuple[tuple[int, str] | None, dict | None]:
        """``((batches_done, path), checkpoint)`` of the newest readable, finite checkpoint at or
        before batch ``before``, or ``(None, None)``."""
        warn = lambda msg: self._event(trainer, {"event": "skipped_checkpoint", "why": msg}, msg)  # noqa: E731
        for batches, path in good_checkpoints(self.dirpath, warn=warn, max_batches=before):
            try:
                ckpt = read_training_checkpoint(path)
            except ValueError as e:
                warn(str(e))
                continue
            if not state_finite(ckpt["state_dict"]):
                warn(f"skipping {path}: it holds non-finite weights")
                continue
            return (batches, str(path)), ckpt
        return None, None

    # -- reporting ------------------------------------------------------------------------------

    def _event(self, trainer: pl.Trainer, event: dict[str, Any], line: str) -> None:
        event = {"step": trainer.global_step, **event}
        self.events.append(event)
        if not trainer.is_global_zero:
            return
        _console.print(f"[bold yellow]guard:[/] {line}", highlight=False, soft_wrap=True)  # one grep-able line
        if self.dirpath is not None:
            log = self.dirpath / "logs" / "nonfinite.jsonl"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in event.items()}
                    )
                    + "\n"
                )
