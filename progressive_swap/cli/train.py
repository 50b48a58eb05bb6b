"""``swap-train``: train a progressive comb autoencoder from a recipe.

    swap-train recipe=demo                       # phantom faces, CPU, a few minutes
    swap-train recipe=1024 data.faces=[A,B]      # 256 → 512 → 1024 on a GPU
    swap-train recipe=1024 --cfg job             # print the resolved config
    swap-train recipe=1024 dry_run=true          # plan and model size per stage
    swap-train recipe=demo run=r1 resume=auto    # continue a stopped run
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from progressive_swap.cli.common import UserError, run_cli
from progressive_swap.cli.config import GROUPS, available, compose, cpu_precision_by_flags
from progressive_swap.cli.schema import TrainConfig, describe
from progressive_swap.core.io import WriteError, atomic_write_text, locked_dir, os_error_in, write_error
from progressive_swap.model.summary import format_summary, summarize
from progressive_swap.train import precision as precision_choice
from progressive_swap.train import strategy
from progressive_swap.train.batch_finder import plan_for_run, time_phases
from progressive_swap.train.checkpoint import (
    CHECKPOINT_GLOBS,
    AtomicCheckpointIO,
    good_checkpoints,
    read_training_checkpoint,
    remove_stale_temps,
)
from progressive_swap.train.datamodule import check_facesets
from progressive_swap.train.interrupt import InterruptCheckpoint
from progressive_swap.train.module import CKPT_KEY, resume_problem
from progressive_swap.train.warmstart import warm_start

console = Console(stderr=True)
RUN_ENV = "PROGRESSIVE_SWAP_RUN"  # keeps the default run name equal across DDP processes


def plan_table(schedule) -> Table:
    t = Table(title="growth plan")
    for c in ("phase", "res", "kind", "batches", "batch/id", "lr", "images"):
        t.add_column(c, justify="right")
    for i, p in enumerate(schedule.phases):
        imgs = p.batches * p.batch * schedule.identities * schedule.world_size
        t.add_row(
            str(i),
            str(p.res),
            "fade-in" if p.fading else "stable",
            str(p.batches),
            str(p.batch),
            f"{p.lr:g}" + (f"→{p.lr_end:g}" if p.lr_end is not None else ""),
            f"{imgs:,}",
        )
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
    found = good_checkpoints(
        run_dir, warn=lambda msg: console.print(f"[yellow]resume=auto: {msg}[/]", highlight=False, soft_wrap=True)
    )
    return found[0][1] if found else None


def _train(argv: Sequence[str]) -> int:
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text([a for a in argv if a not in ("-h", "--help")]))
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
        if cfg.run_dir is None:  # the run directory a run would use (logs and checkpoints go there), not None
            with open_dict(cfg):
                cfg.run_dir = str(run_dir_for(cfg))
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    try:
        return train(cfg)
    except InstantiationException as e:  # a constructor refused a recipe value: its own message, one line
        key = next((ln.split(":", 1)[1].strip() for ln in str(e).splitlines() if ln.startswith("full_key:")), "")
        cause = str(e.__cause__ or e).strip().splitlines()[0]
        raise UserError(f"{key}: {cause}" if key else cause) from None


def help_text(argv: Sequence[str] = ()) -> str:
    """``--help``: the usage lines, then every key with its value in the chosen recipe and its
    meaning (from the schema, cli/schema.py), then the choices of every group."""
    cfg = compose("train", [a for a in argv if "=" in a])
    rows = [(k, OmegaConf.select(cfg, k, throw_on_missing=False), h) for k, _, h in describe(TrainConfig)]
    width = max(len(k) for k, _, _ in rows) + 2
    out = [__doc__.strip(), "", "keys (key=value; values shown for " + (" ".join(argv) or "recipe=demo") + "):"]
    for key, value, note in rows:
        if key in GROUPS or key == "guard":
            shown = "{...}"
        elif isinstance(value, (DictConfig, ListConfig)):
            shown = json.dumps(OmegaConf.to_container(value), separators=(",", ":"))
        else:
            shown = "null" if value is None else str(value)
        out.append(f"  {key.ljust(width)}{shown[:40]:<42}{note}")
    out += ["", "groups (group=choice, then group.key=value; --cfg job shows every key):"]
    out += [f"  {g.ljust(width)}{', '.join(available(g))}" for g in GROUPS]
    out += ["", "Quoting: a value with spaces, '=' or other special characters goes in quotes inside the",
            "argument, e.g.  'out=\"runs/my run\"'  or  out='\"runs/a=b\"'  (the outer quotes are the shell's)."]
    return "\n".join(out)


def _quiet_known_warnings() -> None:
    """Silence library chatter that says nothing to a user of this command."""
    warnings.filterwarnings(
        "ignore", message=r"Checkpoint directory .* exists and is not empty"
    )  # we wrote config.yaml there
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def _rgb(v) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"


def _data(cfg: DictConfig):
    """The datamodule and what the face sets say (names, face type, sizes), checked; ``None`` for
    a dry run without data (it plans for two identities)."""
    if not OmegaConf.is_missing(cfg.data, "faces"):
        datamodule = instantiate(cfg.data, _convert_="all")
        paths = datamodule.resolve_faces()
        schedule = instantiate(cfg.schedule, identities=len(paths))  # a bad schedule is named before the data
        return datamodule, check_facesets(paths, schedule.final_res, mask=datamodule.mask)
    if not cfg.dry_run:
        raise UserError("this recipe trains on your face sets: pass data.faces=[DIR_A,DIR_B] (or data=phantom)")
    return None, {"face_type": "?", "sizes": ["?", "?"], "counts": ["?", "?"], "identities": ["A", "B"]}


def train(cfg: DictConfig) -> int:
    """Instantiate everything from a composed config and fit. Bad input raises before anything is written."""
    _quiet_known_warnings()
    run_dir = run_dir_for(cfg)
    resume = find_resume(cfg, run_dir)
    if resume is not None and not cfg.out:
        run_dir = resume.parent
    datamodule, info = _data(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with open_dict(cfg):  # the derived values every group reads by interpolation
        cfg.run_dir = str(run_dir)
        cfg.derived.identities = len(info["identities"])
    if cfg.dry_run:  # no trainer: building it would need the recipe's accelerator
        devices = cfg.trainer.get("devices", 1)
        with open_dict(cfg):
            cfg.derived.world_size = (devices if isinstance(devices, int) and devices > 0 else 1) * int(
                cfg.trainer.num_nodes
            )
        return _dry_run(cfg, info, run_dir)

    measured = _cpu_plan(cfg, resume)
    interrupt = InterruptCheckpoint(run_dir)
    trainer = instantiate(
        cfg.trainer,
        max_epochs=1,
        max_steps=int(cfg.max_steps or -1),
        callbacks=[*instantiate(cfg.callbacks).values(), interrupt],
        logger=list(instantiate(cfg.logger).values()),
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with open_dict(cfg):
        cfg.derived.world_size = trainer.world_size
    module = instantiate(
        cfg.module,
        identity_names=info["identities"],
        face_type=info["face_type"],
        crop_space=info.get("crop_space", "srgb"),
        freeze_encoder_steps=int(cfg.freeze_steps) if cfg.freeze == "encoder" else 0,
    )
    if cfg.find_batch:
        resumed = read_training_checkpoint(resume)[CKPT_KEY]["schedule"] if resume is not None else None
        module.schedule = plan_for_run(
            module, trainer, max_memory_gb=cfg.max_memory_gb, report=console.print, resume_schedule=resumed
        )
    if cfg.compile:
        strategy.compile_blocks(module.model)  # looked up at call time (tests replace it)
    note = _start(cfg, module, datamodule, info, resume, run_dir)

    with contextlib.ExitStack() as stack:
        if trainer.is_global_zero:  # everything checked: from here on the run directory is written
            stack.enter_context(locked_dir(run_dir))  # one writer: a second run here stops at once
            for tmp in remove_stale_temps(run_dir):  # a process killed mid-write leaves these
                console.print(f"removed {tmp.name}, an unfinished checkpoint write")
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        for line in measured:
            console.print(line, highlight=False, soft_wrap=True)
        console.print(plan_table(module.schedule))
        if note:
            console.print(note, soft_wrap=True)
        converted = [n for n, c in zip(info["identities"], info.get("crop_spaces", [])) if c != info["crop_space"]]
        if converted:  # 8-bit sets beside a plate's ACEScct set: one model, one meaning of its values
            console.print(f"crop space {info['crop_space']}: the 8-bit sRGB pictures of {', '.join(converted)} are "
                          f"converted to {info['crop_space']} as they load", highlight=False, soft_wrap=True)
        console.print(f"run directory: [bold]{run_dir}[/]" + (f" (resuming {resume})" if resume else ""))
        interrupt.install()  # Ctrl-C or SIGTERM from here on: finish the step, save, stop
        stack.callback(interrupt.restore)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        except SystemExit:
            if interrupt.exit_code is None:  # Lightning's own exits; ours are handled below
                raise
        except (OSError, RuntimeError) as e:
            err = _write_failure(e, run_dir)
            if err is None:
                raise
            raise err from None  # exit code 3, one line
    if interrupt.exit_code is not None:
        if trainer.is_global_zero:
            at = interrupt.saved_at if interrupt.saved_at is not None else module.batches_done
            print(f"swap-train: interrupted, saved at step {at}; resume with resume=auto", file=sys.stderr)
        return interrupt.exit_code
    if trainer.is_global_zero:
        console.print(
            f"done: {module.batches_done}/{module.schedule.total_batches} batches; "
            f"checkpoints, previews and model.safetensors in {run_dir}"
        )
    return 0


def _write_failure(e: BaseException, run_dir: Path) -> OSError | None:
    """A full disk while training, as one line (``None``: ``e`` is something else).

    Our writers name their file (checkpoint, preview, ``model.safetensors``); Lightning's loggers
    do not, so a full disk there names the run directory. Lightning's clean-up after the first
    error may fail on the same full disk: the first error is the one reported.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and all(cur is not c for c in chain):
        chain.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    named = [c for c in chain if isinstance(c, WriteError)]
    if named:
        return named[-1]  # the earliest: the context chain runs from the newest error back
    err = os_error_in(e)
    if err is None or err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return None
    return write_error(err, f"the logs in {run_dir} (the checkpoints so far are intact)")


def _cpu_plan(cfg: DictConfig, resume: Path | None) -> list[str]:
    """Settle what a CPU run measures before it starts; returns a line for each, which the run
    prints with its plan once every check has passed (an error stays one line).

    ``trainer.precision=auto`` (``trainer=cpu``) becomes the faster of ``bf16-mixed`` and
    ``32-true`` on this CPU, timed on the run's own model
    (:func:`progressive_swap.train.precision.choose`, cached). Several processes (DDP, several
    nodes) must agree, so there it follows the CPU's flags (:func:`cpu_precision_by_flags`).

    ``schedule_seconds=S`` scales every stage's images down (never up) so that the schedule's
    steps, as estimated by the same measurement, fit ``S`` seconds on this CPU. A resumed run
    keeps the stages its checkpoint was trained with.
    """
    auto = str(cfg.trainer.get("precision")) == "auto"
    budget = cfg.get("schedule_seconds")
    on_cpu = str(cfg.trainer.get("accelerator", "cpu")) == "cpu"
    lines: list[str] = []
    if not auto and (budget is None or not on_cpu):
        return lines
    devices, nodes = cfg.trainer.get("devices", 1), int(cfg.trainer.get("num_nodes", 1) or 1)
    several = devices not in (1, "1") or nodes > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several or not on_cpu:
        if auto:
            chosen = cpu_precision_by_flags()
            with open_dict(cfg):
                cfg.trainer.precision = chosen
            lines.append(f"precision {chosen}: from the CPU's bfloat16 flags, since several training processes must "
                         "agree (trainer.precision= chooses)")
        if budget is not None:
            lines.append("schedule_seconds is ignored: it is measured for one training process on the CPU")
        return lines
    with open_dict(cfg):
        cfg.derived.world_size = 1
    with precision_choice.random_state_kept():  # the run draws the same whether measured or not
        choice = precision_choice.choose(
            instantiate(cfg.module), precisions=precision_choice.PRECISIONS if auto else (str(cfg.trainer.precision),))
    with open_dict(cfg):
        cfg.trainer.precision = choice.precision
    lines.append(choice.line())
    if budget is None or choice.estimate is None:
        return lines
    if resume is not None:  # the stages it started with, whatever this CPU's estimate says now
        try:
            stages = read_training_checkpoint(resume)[CKPT_KEY]["schedule"]["stages"]
        except (KeyError, TypeError, ValueError, OSError):
            return lines  # not a checkpoint of ours: the resume check says why, in one line
        with open_dict(cfg):
            cfg.schedule.stages = [{k: v for k, v in st.items() if v is not None} for st in stages]
        return lines
    if choice.estimate <= float(budget):
        lines.append(f"schedule as written: its steps fit schedule_seconds={float(budget):g} on this CPU "
                     f"(estimated {choice.estimate:.0f} s)")
        return lines
    factor = float(budget) / choice.estimate
    stages = OmegaConf.to_container(cfg.schedule.stages, resolve=True)
    scaled = precision_choice.scaled_stages(stages, factor, int(cfg.derived.identities))
    with open_dict(cfg):
        cfg.schedule.stages = scaled
    said = ", ".join(f"{st['res']} px {a['images']:,} → {st['images']:,}" for a, st in zip(stages, scaled))
    lines.append(f"schedule scaled to {factor:.0%} of its images to fit schedule_seconds={float(budget):g} on this "
                 f"CPU (steps estimated at {choice.estimate:.0f} s as written): {said}; schedule_seconds=null "
                 "trains it as written")
    return lines


def _dry_run(cfg: DictConfig, info: dict, run_dir: Path) -> int:
    module = instantiate(cfg.module)
    console.print(plan_table(module.schedule))
    console.print(
        format_summary(summarize(module.model, batch_size=module.schedule.stages[-1].batch * len(info["identities"])))
    )
    if cfg.dry_run_steps > 0:
        console.print(_time_estimate(cfg, module))
    console.print(
        f"face sets {info['identities']}: {info['counts']} faces, {info['face_type']}, crops {info['sizes']} px; "
        f"run dir would be {run_dir}"
    )
    return 0


def _time_estimate(cfg: DictConfig, module) -> Table:
    """Estimated training time per stage from ``dry_run_steps`` timed steps per phase, on the
    device the run would use (the first GPU for a GPU trainer when there is one, else the CPU)."""
    wants_gpu = str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
    device = torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")
    precision = str(cfg.trainer.precision)
    if device.type == "cpu" and precision == "auto":
        precision = precision_choice.choose(module).precision
    elif device.type == "cpu" and wants_gpu:
        precision = cpu_precision_by_flags()
    if device.type == "cpu" and bool(cfg.channels_last):
        module.model.to(memory_format=torch.channels_last)
    rows = time_phases(module, device, precision, steps=int(cfg.dry_run_steps))
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"this CPU ({torch.get_num_threads()} threads)")
    note = "" if device.type == "cuda" or not wants_gpu else "; no CUDA device here, so the GPU's time is not known"
    table = Table(title=f"estimated training time, {precision} on {where}{note} (steps only: loader and "
                        "previews not counted)")
    for header in ("stage", "phase", "batches", "s/step", "time"):
        table.add_column(header, justify="right")
    total = 0.0
    for r in rows:
        total += r["estimated_s"]
        table.add_row(f"{r['res']} px", "fade-in" if r["fading"] else "stable", f"{r['batches']:,}",
                      f"{r['s_per_step']:.3f}", _duration(r["estimated_s"]))
    table.add_row("all", "", "", "", _duration(total))
    return table


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return (f"{d}d " if d else "") + (f"{h}h{m:02d}m" if d or h else f"{m}m{s:02d}s")


def _start(cfg: DictConfig, module, datamodule, info: dict, resume: Path | None, run_dir: Path) -> str | None:
    """Where the weights start: a checked resume, a warm start, or fresh with the face sets'
    colour statistics (returns the line that reports them)."""
    if resume is not None:
        problem = resume_problem(
            read_training_checkpoint(resume)[CKPT_KEY], module.model.arch_args(), module.schedule.world_size
        )
        if problem:
            raise UserError(f"cannot resume from {resume}: {problem}")
        return None
    if cfg.resume == "auto":
        console.print(f"resume=auto: no checkpoint in {run_dir}, starting fresh")
    if any(run_dir.glob("*.ckpt")):
        raise UserError(f"{run_dir} already holds a run; pass resume=auto to continue it, or choose another run=/out=")
    if cfg.warm_start:
        warm_start(module.model, cfg.warm_start, console)
    if module.model.colour_norm:  # a resumed run restores them from its checkpoint
        mean, std = datamodule.colour_stats()
        module.model.set_identity_colour(mean, std)
        return "identity colour (RGB mean ± std inside the face): " + ";  ".join(
            f"{name} {_rgb(m)} ± {_rgb(d)}" for name, m, d in zip(info["identities"], mean, std)
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _train(sys.argv[1:] if argv is None else argv), "swap-train")


if __name__ == "__main__":
    sys.exit(main())
