"""Callbacks: preview grids, growth announcements, the final and the milestone checkpoints."""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from rich.console import Console

from progressive_swap.core.io import atomic_write_bytes, write_error
from progressive_swap.core.progress import duration, format_line, is_terminal
from progressive_swap.core.weights import save_weights
from progressive_swap.footage.colour import crop_view
from progressive_swap.train import identity_fit

_console = Console(stderr=True)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    h = tile.shape[0]
    scale = max(0.3, h / 256)
    cv2.putText(
        tile,
        text,
        (4, int(14 * scale) + 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45 * scale,
        (255, 255, 255),
        max(1, int(scale)),
        cv2.LINE_AA,
    )
    return tile


def preview_grid(model: torch.nn.Module, faces: torch.Tensor, res: int, alpha: float, min_tile: int = 96,
                 crop_space: str = "srgb") -> np.ndarray:
    """Rows of ``input | output`` pairs: every identity reconstructed, then every swap.

    Args:
        model: a :class:`CombAutoencoder`.
        faces: ``(N, n, 3, res, res)`` in [0, 1]: ``n`` faces of each of ``N`` identities.
        crop_space: what the values mean; ``acescct`` tiles are shown in their sRGB view.

    Returns:
        uint8 RGB grid ``(rows * tile, 2 * n * tile, 3)`` with rows ``0>0, 1>1, …, 0>1, 1>0, …``
        (source identity > decoder identity).
    """
    n_id, n = faces.shape[:2]
    pairs = [(j, j) for j in range(n_id)] + [(j, i) for j in range(n_id) for i in range(n_id) if i != j]
    tile = max(res, min_tile)
    rows = []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        latents = [model.encode(faces[j].to(device), res, alpha, source=j) for j in range(n_id)]
        for j, i in pairs:
            rgb, _ = model.decode(latents[j], i, res, alpha)
            row = []
            for f in range(n):
                for t in (faces[j, f], rgb[f]):
                    arr = t.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                    im = (arr * 255 + 0.5).astype(np.uint8) if crop_space == "srgb" else crop_view(arr, crop_space)
                    row.append(cv2.resize(im, (tile, tile), interpolation=cv2.INTER_NEAREST))
            rows.append(np.concatenate([_label(row[0].copy(), f"{j}>{i}")] + row[1:], axis=1))
    model.train(was_training)
    return np.concatenate(rows, axis=0)


class PreviewCallback(pl.Callback):
    """Saves a preview grid every ``every_n_steps`` optimizer steps (and at the end) as PNG next to
    the checkpoints (``previews/step_XXXXXXX.png`` and ``previews/latest.png``), and logs it to
    TensorBoard.

    Args:
        dirpath: the run directory.
        every_n_steps: how often; 0 disables previews.
        faces: faces per identity in the grid.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 100, faces: int = 4):
        self.dirpath = Path(dirpath) / "previews"
        self.every = every_n_steps
        self.faces = faces
        self._cache: dict[int, torch.Tensor] = {}
        self.last_path: Path | None = None

    def _faces(self, trainer: pl.Trainer, res: int) -> torch.Tensor:
        if res not in self._cache:
            self._cache = {res: trainer.datamodule.preview_batch(self.faces, res)}
        return self._cache[res]

    def save(self, trainer: pl.Trainer, module: pl.LightningModule) -> Path | None:
        if not trainer.is_global_zero or self.every <= 0:
            return None
        res, alpha = module.stage_res, module.alpha
        grid = preview_grid(module.model, self._faces(trainer, res), res, alpha,
                            crop_space=getattr(module, "crop_space", "srgb"))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        assert ok
        path = self.dirpath / f"step_{trainer.global_step:07d}.png"
        for target in (path, self.dirpath / "latest.png"):
            try:
                atomic_write_bytes(target, png.tobytes())
            except OSError as e:  # disk full: one line naming the file (the checkpoints are untouched)
                raise write_error(e, f"preview {target}") or e from None
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_image"):
                exp.add_image("preview", grid, trainer.global_step, dataformats="HWC")
        self.last_path = path
        return path

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (
            self.every > 0
            and trainer.global_step > 0
            and trainer.global_step % self.every == 0
            and not trainer.fit_loop._should_accumulate()
        ):
            self.save(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.save(trainer, module)


class GrowthAnnouncer(pl.Callback):
    """Prints a line when a phase starts (a new stage fading in, or going stable)."""

    def __init__(self) -> None:
        self._phase: Any = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        pos = module.schedule.at(int(batch["batch_index"][0]))
        if pos.phase != self._phase and trainer.is_global_zero:
            p = pos.phase
            what = "fading in" if p.fading else "training"
            lr = f"{p.lr:g}" + (f" → {p.lr_end:g}" if p.lr_end is not None else "")
            _console.print(
                f"[bold cyan]stage {p.res}px[/] {what}: {p.batches} batches of {p.batch}/identity, lr {lr}"
                + (f" (resumed at alpha {pos.alpha:.3f})" if p.fading and self._phase is None and pos.alpha > 0 else "")
            )
        self._phase = pos.phase


class FinalCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` after the last batch, however training ends (schedule done or
    ``max_steps``), so interval checkpoints never leave the last minutes of work unsaved.

    It saves at the end of the final batch rather than in ``on_train_end``: by then the loop
    has closed its epoch, and a checkpoint taken there would resume as "already finished".
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "last.ckpt"

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop._should_accumulate():
            return
        at_max = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if at_max or module.batches_done >= module.schedule.total_batches:
            trainer.save_checkpoint(self.path, weights_only=False)  # a full checkpoint, optimizer included


class MilestoneCheckpoint(pl.Callback):
    """Keeps a checkpoint every ``every_images`` images, forever (``images0000051200.ckpt``, named
    by the images seen when the batch that crossed the multiple ends).

    The rolling ``step*.ckpt`` files are pruned to the newest ``keep``; milestones are never
    removed, so a long run can be compared or restarted at earlier points. They are full
    checkpoints, written atomically like the others, and ``resume=auto`` considers them too.

    Args:
        dirpath: the run directory.
        every_images: images between milestones; 0 or ``None`` turns them off.
    """

    def __init__(self, dirpath: str | Path, every_images: int | None = None):
        self.dirpath = Path(dirpath)
        self.every = int(every_images or 0)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every <= 0 or trainer.fit_loop._should_accumulate():
            return
        done = module.batches_done
        before, after = module.schedule.images_seen(done - 1), module.schedule.images_seen(done)
        if after // self.every > before // self.every:  # this batch crossed a multiple of every_images
            trainer.save_checkpoint(self.dirpath / f"images{after:010d}.ckpt", weights_only=False)


class StepCheckpoint(ModelCheckpoint):
    """Lightning's periodic checkpoint, never taken between the micro-batches of one optimizer
    step: with gradient accumulation, a time-based save could otherwise land mid-step, and a
    resume from it would drop the gradient accumulated so far."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop._should_accumulate():
            return
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Lightning saves ``last.ckpt`` here when no periodic save came first (a run stopped in
        its first ``every_minutes``, by ``max_steps`` or by ``trainer.max_time``), with its one
        epoch closed; the resume reopens it (:func:`~progressive_swap.train.module.reopen_unfinished_epoch`).
        After a signal it does not: :class:`~progressive_swap.train.interrupt.InterruptCheckpoint`
        wrote that ``last.ckpt`` already, and this save would replace it."""
        if not getattr(module, "interrupted", False):
            super().on_train_end(trainer, module)


def periodic_checkpoint(
    dirpath: str | Path, every_minutes: float = 10.0, every_steps: int | None = None, keep: int = 3
) -> StepCheckpoint:
    """The rolling ``step*.ckpt`` checkpoints plus ``last.ckpt``, every ``every_minutes`` (or every
    ``every_steps`` optimizer steps when given), keeping the newest ``keep``."""
    return StepCheckpoint(
        dirpath=dirpath,
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        save_last=True,
        enable_version_counter=False,  # last.ckpt is overwritten (atomically), never versioned
        save_top_k=int(keep),
        monitor="step",
        mode="max",
        every_n_train_steps=every_steps or None,
        train_time_interval=None if every_steps else timedelta(minutes=float(every_minutes)),
    )


class FinalWeights(pl.Callback):
    """Writes ``model.safetensors`` when training ends: the network's weights (not the
    discriminator's) with the architecture, face type, identities and stage in its metadata,
    which is what ``swap-export`` reads.

    Every process takes part: under FSDP gathering the full weights is a collective, and rank 0
    writes the file.
    """

    def __init__(self, dirpath: str | Path, reference_faces: int = 16):
        self.path = Path(dirpath) / "model.safetensors"
        self.reference_faces = reference_faces

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if getattr(module, "interrupted", False):  # stopped by a signal: last.ckpt holds the work, resume finishes it
            return
        state = trainer.strategy.lightning_module_state_dict()
        if not trainer.is_global_zero:
            return
        meta = {
            "arch": module.model.arch_args(),
            "face_type": module.face_type,
            "crop_space": getattr(module, "crop_space", "srgb"),
            "identities": module.identity_names,
            "stage_res": module.stage_res,
            "alpha": module.alpha,
            "batches_done": module.batches_done,
        }
        ref = self._identity_reference(trainer, module)
        if ref is not None:
            meta["identity_fit"] = ref
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        try:
            save_weights(weights, self.path, meta)
        except (OSError, RuntimeError) as e:  # libraries may wrap the OSError in a RuntimeError
            err = write_error(e, f"{self.path} (the checkpoints are intact: export from last.ckpt)")
            if err is None:
                raise
            raise err from None


    def _identity_reference(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict | None:
        """How each decoder reconstructs every identity's own training faces (first
        ``reference_faces`` of each, unaugmented): what swap-export compares footage with
        (:mod:`progressive_swap.train.identity_fit`). Seconds at most; skipped where the
        network is sharded across processes (rank 0 alone cannot run it) or without faces."""
        if self.reference_faces <= 0 or trainer.world_size > 1 or trainer.datamodule is None \
                or not hasattr(trainer.datamodule, "preview_batch") or not module.face_type:
            return None
        try:
            faces = trainer.datamodule.preview_batch(self.reference_faces, module.stage_res)  # (N, n, 3, r, r)
            return identity_fit.reference(module.model, faces, module.stage_res, module.alpha, module.face_type)
        except (ValueError, RuntimeError) as e:  # e.g. out of memory: the weights matter more than the figures
            _console.print(f"no identity reference in {self.path.name} (swap-export cannot check who the footage "
                           f"shows): {str(e).splitlines()[0] if str(e) else type(e).__name__}", soft_wrap=True)
            return None


class LogProgress(ProgressBar):
    """Progress for logs (SLURM, ``nohup``, a redirected stderr): one plain line every
    ``interval_s`` seconds, and one at the end.

    ``stage 64px alpha 0.42  step 512/1178 (43%)  18.3 img/s  loss 0.1234  ETA 4m10s``

    The rate is measured over the last interval (images of every process), the ETA from it and
    the images the schedule still holds.
    """

    def __init__(self, interval_s: float = 30.0, stream: Any = None, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = float(interval_s)
        self.stream = stream
        self.clock = clock
        self._enabled = True
        self._last: tuple[float, int] | None = None  # (time, images) at the last line

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def line(self, trainer: pl.Trainer, module: pl.LightningModule) -> str:
        done, total = module.batches_done, module.schedule.total_batches
        pos = module.schedule.at(max(done - 1, 0))
        images = module.schedule.images_seen(done)
        now = self.clock()
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = (images - self._last[1]) / (now - self._last[0])
        self._last = (now, images)
        loss = trainer.callback_metrics.get("loss")
        left = module.schedule.images_seen(total) - images
        return format_line(
            f"stage {pos.res}px alpha {pos.alpha if pos.phase.fading else 1.0:.2f}", "step", done, total,
            rate, "img/s", extras=[f"loss {float(loss):.4f}"] if loss is not None else [],
            tail=f"ETA {duration(left / rate)}" if rate else "",
        )

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._last = (self.clock(), module.schedule.images_seen(module.batches_done))

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._enabled and trainer.is_global_zero and self._last is not None \
                and self.clock() - self._last[0] >= self.interval_s:
            self._print(self.line(trainer, module))

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            self._print(self.line(trainer, module))


def progress(interval_s: float = 30.0, stream: Any = None) -> ProgressBar:
    """The progress display: a live bar on a terminal, :class:`LogProgress` lines otherwise
    (when stderr is a file or a pipe), so a run in a log never looks stuck."""
    out = stream or sys.stderr
    if is_terminal(out):
        return RichProgressBar(leave=True)
    return LogProgress(interval_s, stream=stream)

