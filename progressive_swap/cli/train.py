"""``swap-train``: train a progressive comb autoencoder from a recipe.

    swap-train recipe=demo                       # phantom faces, CPU, a few minutes
    swap-train recipe=1024 data.faces=[A,B]      # 256 → 512 → 1024 on a GPU
    swap-train recipe=1024 --cfg job             # print the resolved config
    swap-train recipe=1024 dry_run=true          # plan and model size per stage
    swap-train recipe=demo run=r1 resume=auto    # continue a stopped run
"""
from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from progressive_swap.cli.common import UserError, run_cli
from progressive_swap.cli.config import compose
from progressive_swap.train.checkpoint import CHECKPOINT_GLOBS, good_checkpoints
from progressive_swap.train.datamodule import check_facesets
from progressive_swap.model.summary import format_summary, summarize
from progressive_swap.train.callbacks import FinalCheckpoint, GrowthAnnouncer, MilestoneCheckpoint, PreviewCallback, StepCheckpoint
from progressive_swap.train.checkpoint import AtomicCheckpointIO, read_training_checkpoint, remove_stale_temps, save_weights
from progressive_swap.train.module import CKPT_KEY, SwapModule
from progressive_swap.train.warmstart import warm_start
from progressive_swap.train.batch_finder import plan_for_run
from progressive_swap.train import strategy
from progressive_swap.core.io import atomic_write_text, check_writable_dir

console = Console(stderr=True)
RUN_ENV = "PROGRESSIVE_SWAP_RUN"  # keeps the default run name equal across DDP processes


def plan_table(schedule) -> Table:
    t = Table(title="growth plan")
    for c in ("phase", "res", "kind", "batches", "batch/id", "lr", "images"):
        t.add_column(c, justify="right")
    for i, p in enumerate(schedule.phases):
        imgs = p.batches * p.batch * schedule.identities * schedule.world_size
        t.add_row(str(i), str(p.res), "fade-in" if p.fading else "stable", str(p.batches), str(p.batch), f"{p.lr:g}" + (f"→{p.lr_end:g}" if p.lr_end is not None else ""), f"{imgs:,}")
    return t


def run_dir_for(cfg: DictConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    run = cfg.run or os.environ.get(RUN_ENV) or time.strftime("%Y%m%d-%H%M%S")
    os.environ[RUN_ENV] = str(run)
    return Path("checkpoints") / str(cfg.name) / str(run)


def find_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: an explicit path, or with ``auto`` the run's newest good one.

    ``auto`` scans ``last.ckpt``, ``step*.ckpt``, ``images*.ckpt`` and ``hpc_ckpt_*.ckpt`` and takes the one furthest
    along (by ``batches_done``), skipping unreadable files with a warning line; if checkpoints
    exist but none is readable it raises rather than start over.
    """
    if not cfg.resume:
        return None
    if str(cfg.resume) != "auto":
        return Path(cfg.resume)
    if not cfg.out and not cfg.run:  # no run named: the newest run of this recipe
        runs = [p for g in CHECKPOINT_GLOBS for p in (Path("checkpoints") / str(cfg.name)).glob(f"*/{g}")]
        if runs and not any(run_dir.glob("*.ckpt")):
            run_dir = max(runs, key=lambda p: p.stat().st_mtime).parent
    found = good_checkpoints(run_dir, warn=lambda msg: console.print(f"[yellow]resume=auto: {msg}[/]", highlight=False, soft_wrap=True))
    return found[0][1] if found else None


def _train(argv: Sequence[str]) -> int:
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    print_cfg = False
    if "--cfg" in argv:
        i = argv.index("--cfg")
        if i + 1 >= len(argv) or argv[i + 1] not in ("job", "all"):
            raise UserError("--cfg takes 'job'")
        print_cfg = True
        del argv[i : i + 2]
    cfg = compose("train", argv)
    if print_cfg:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    from hydra.errors import InstantiationException

    try:
        return train(cfg)
    except InstantiationException as e:  # a constructor refused a recipe value: its own message, one line
        key = next((ln.split(":", 1)[1].strip() for ln in str(e).splitlines() if ln.startswith("full_key:")), "")
        cause = str(e.__cause__ or e).strip().splitlines()[0]
        raise UserError(f"{key}: {cause}" if key else cause) from None


def _quiet_known_warnings() -> None:
    """Silence library chatter that says nothing to a user of this command."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # we wrote config.yaml there
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def _rgb(v) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"


def train(cfg: DictConfig) -> int:
    """Build everything from a composed config and fit. Bad input raises before anything is written."""
    _quiet_known_warnings()
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import RichProgressBar
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger


    if cfg.freeze not in (None, "encoder"):
        raise UserError(f"freeze must be null or 'encoder', got {cfg.freeze!r}")
    for key in ("seed", "freeze_steps", "preview_every", "preview_faces"):  # the recipes are untyped: check before any work
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
            raise UserError(f"{key} must be an integer, got {cfg[key]!r}")
    run_dir = run_dir_for(cfg)
    resume = find_resume(cfg, run_dir)
    if resume is not None and not cfg.out:
        run_dir = resume.parent

    # Data first: the identity count and face type come from it.
    if OmegaConf.is_missing(cfg.data, "faces"):
        if not cfg.dry_run:
            raise UserError("this recipe trains on your face sets: pass data.faces=[DIR_A,DIR_B] (or data=phantom)")
        # A dry run without data: plan for two identities, so sizes can be checked before extracting.
        datamodule, paths = None, ["A", "B"]
        info = {"face_type": "?", "sizes": ["?", "?"], "counts": ["?", "?"], "identities": paths}
    else:
        datamodule = instantiate(cfg.data, _convert_="all")
        paths = datamodule.resolve_faces()
        sched_probe = instantiate(cfg.schedule, identities=len(paths))
        info = check_facesets(paths, sched_probe.final_res)

    trainer_kwargs = dict(cfg.trainer)
    trainer_kwargs.pop("_target_")
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    if cfg.dry_run:
        # No trainer: building it would need the recipe's accelerator. Plan for devices × nodes.
        devices = cfg.trainer.get("devices", 1)
        world = (devices if isinstance(devices, int) and devices > 0 else 1) * int(cfg.trainer.get("num_nodes", 1))
        schedule = instantiate(cfg.schedule, identities=len(paths), world_size=world)
        model = instantiate(cfg.model, num_identities=len(paths), final_res=schedule.final_res, start_res=schedule.start_res)
        console.print(plan_table(schedule))
        console.print(format_summary(summarize(model, batch_size=schedule.stages[-1].batch * len(paths))))
        console.print(f"face sets {info['identities']}: {info['counts']} faces, {info['face_type']}, crops {info['sizes']} px; run dir would be {run_dir}")
        return 0

    # The trainer is built before the schedule: the world size comes from it.
    ckpt_cb = StepCheckpoint(
        dirpath=run_dir,
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        save_last=True,
        enable_version_counter=False,  # last.ckpt is overwritten (atomically), never versioned
        save_top_k=int(cfg.checkpoint.keep),
        monitor="step",
        mode="max",
        every_n_train_steps=cfg.checkpoint.every_steps or None,
        train_time_interval=None if cfg.checkpoint.every_steps else timedelta(minutes=float(cfg.checkpoint.every_minutes)),
    )
    preview = PreviewCallback(run_dir, every_n_steps=int(cfg.preview_every), faces=int(cfg.preview_faces))
    trainer = instantiate(
        cfg.trainer,
        max_epochs=1,
        max_steps=int(cfg.max_steps) if cfg.max_steps else -1,
        callbacks=[ckpt_cb, preview, instantiate(cfg.guard, dirpath=run_dir), FinalCheckpoint(run_dir),
                   MilestoneCheckpoint(run_dir, cfg.checkpoint.every_images), GrowthAnnouncer(), RichProgressBar(leave=True)],
        logger=[TensorBoardLogger(run_dir / "logs", name="tensorboard"), CSVLogger(run_dir / "logs", name="csv")],  # a version per (re)start
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    schedule = instantiate(cfg.schedule, identities=len(paths), world_size=trainer.world_size)
    model = instantiate(cfg.model, num_identities=len(paths), final_res=schedule.final_res, start_res=schedule.start_res,
                        checkpoint_blocks=bool(cfg.activation_checkpointing))
    if cfg.find_batch:
        schedule = plan_for_run(
            schedule, model, trainer=trainer, max_memory_gb=cfg.max_memory_gb, report=console.print,
            module_factory=lambda m: SwapModule(m, schedule, loss=instantiate(cfg.loss), geometry=OmegaConf.to_container(cfg.augment.geometry),
                                                warp=float(cfg.augment.warp), input_color=float(cfg.augment.input_color),
                                                channels_last=bool(cfg.channels_last)),
            resume_schedule=read_training_checkpoint(resume)[CKPT_KEY]["schedule"] if resume is not None else None,
        )
    if cfg.compile:
        strategy.compile_blocks(model)  # looked up at call time (tests replace it)

    if resume is not None:
        ckpt = read_training_checkpoint(resume)
        if ckpt[CKPT_KEY]["arch"] != model.arch_args():
            theirs, ours = ckpt[CKPT_KEY]["arch"], model.arch_args()
            diff = ", ".join(f"{k}: {theirs.get(k)} vs {v}" for k, v in ours.items() if theirs.get(k) != v)
            raise UserError(f"cannot resume from {resume}: it is another architecture ({diff}); use warm_start= instead")
        if ckpt[CKPT_KEY]["schedule"]["world_size"] != schedule.world_size:
            raise UserError(f"cannot resume {resume} on {schedule.world_size} processes: it ran on {ckpt[CKPT_KEY]['schedule']['world_size']}")
        del ckpt
    elif cfg.resume == "auto":
        console.print(f"resume=auto: no checkpoint in {run_dir}, starting fresh")
    if resume is None and any(run_dir.glob("*.ckpt")):
        raise UserError(f"{run_dir} already holds a run; pass resume=auto to continue it, or choose another run=/out=")
    if cfg.warm_start and resume is None:
        warm_start(model, cfg.warm_start, console)
    colour_note = None
    if model.colour_norm and resume is None:  # a resumed run restores them from its checkpoint
        mean, std = datamodule.colour_stats()
        model.set_identity_colour(mean, std)
        colour_note = "identity colour (RGB mean ± std inside the face): " + ";  ".join(
            f"{name} {_rgb(m)} ± {_rgb(d)}" for name, m, d in zip(info["identities"], mean, std))

    module = SwapModule(
        model=model,
        schedule=schedule,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        geometry=OmegaConf.to_container(cfg.augment.geometry),
        warp=float(cfg.augment.warp),
        input_color=float(cfg.augment.input_color),
        seed=int(cfg.seed),
        freeze_encoder_steps=int(cfg.freeze_steps) if cfg.freeze == "encoder" else 0,
        channels_last=bool(cfg.channels_last),
        identity_names=info["identities"],
        face_type=info["face_type"],
    )

    # Everything checked: from here on the run directory is written.
    if trainer.is_global_zero:
        check_writable_dir(run_dir)
        for tmp in remove_stale_temps(run_dir):  # a process killed mid-write leaves these
            console.print(f"removed {tmp.name}, an unfinished checkpoint write")
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    console.print(plan_table(schedule))
    if colour_note:
        console.print(colour_note, soft_wrap=True)
    console.print(f"run directory: [bold]{run_dir}[/]" + (f" (resuming {resume})" if resume else ""))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)

    # Every process asks: under FSDP gathering the full weights is a collective (rank 0 gets them).
    state = trainer.strategy.lightning_module_state_dict()
    if trainer.is_global_zero:
        meta = {"arch": model.arch_args(), "face_type": info["face_type"], "identities": info["identities"],
                "stage_res": module.stage_res, "alpha": module.alpha, "batches_done": module.batches_done}
        weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}  # not the discriminator
        save_weights(weights, run_dir / "model.safetensors", meta)
        console.print(f"done: {module.batches_done}/{schedule.total_batches} batches; checkpoints and previews in {run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _train(sys.argv[1:] if argv is None else argv), "swap-train")


if __name__ == "__main__":
    sys.exit(main())
