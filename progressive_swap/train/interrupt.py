"""Stopping a run on SIGINT or SIGTERM without losing a step.

The first signal is only noted: the optimizer step in flight finishes (never between the
micro-batches of one accumulated step), ``last.ckpt`` is written atomically, and the trainer
stops. ``swap-train`` then prints one line and exits ``128 + signal`` (130 for Ctrl-C, 143 for
SIGTERM). A second signal ends the process at once with the same code; every checkpoint file is
written to a temporary name and renamed, so what is on disk stays whole, and the next run
removes the temporary file the abort may leave.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptCheckpoint(pl.Callback):
    """Turns SIGINT and SIGTERM into "finish this step, save ``last.ckpt``, stop".

    Args:
        dirpath: the run directory (``last.ckpt`` is written there).

    Attributes:
        signum: the signal received, or ``None``.
        saved_at: ``batches_done`` of the checkpoint written on the interrupt, or ``None``.
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "last.ckpt"
        self.signum: int | None = None
        self.saved_at: int | None = None
        self._old: dict[int, Any] = {}

    # The handlers go in as early as possible (before fit) and again at the start of training,
    # because Lightning installs its own SIGTERM handler in between, and that one ends the run
    # with exit 0 and no checkpoint.
    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in SIGNALS:
            old = signal.signal(s, self._handle)
            self._old.setdefault(s, old)

    def restore(self) -> None:
        for s, old in self._old.items():  # kept: Lightning's teardown may put ours back after this
            signal.signal(s, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: stop now (files on disk are whole)
            print(f"\nsignal {signum} again: stopping now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: finishing this step and saving last.ckpt (send it again to stop at once)",
              file=sys.stderr, flush=True)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.install()
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and self.signum is not None:
            connector.received_sigterm = False  # ours to handle: Lightning would exit 0 without saving

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.signum is None or self.saved_at is not None or trainer.fit_loop._should_accumulate():
            return
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None:
            connector.received_sigterm = False
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_at = int(module.batches_done)
        module.interrupted = True  # FinalWeights: these are not the final weights
        trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.signum is not None and self.saved_at is None:  # the signal came after the last step
            self.saved_at = int(module.batches_done)

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        self.restore()

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + int(self.signum)
