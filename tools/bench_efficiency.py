#!/usr/bin/env python
"""Quality per unit of compute: candidate comb designs trained on the phantom for the same
budget of *process CPU seconds*, then measured against the true swap.

    python tools/bench_efficiency.py --budget-cpu 100 --seeds 0 --frames 16 --out seed0.json &
    python tools/bench_efficiency.py --budget-cpu 100 --seeds 1 --frames 16 --out seed1.json
    python tools/bench_efficiency.py --budget-cpu 100 --merge seed0.json seed1.json --out efficiency.json

Each candidate is a full-size design (256 → 512 → 1024 px, ``FULL``) scaled down for this CPU:
every side ÷ 8 (32 → 64 → 128 px; the bottleneck stays 4×4, the smallest the comb allows, so
the scaled network has one level fewer than the full one) and every width ÷ 2
(``channel_base`` ÷ 16 since it is channels × side; ``channel_max``, ``channel_min`` and
``latent_channels`` ÷ 2), so each design keeps its *shape*: which levels are wide and which are
cheap.

Why CPU seconds and not wall time: the machine is shared, so a run's wall time depends on what
else runs. The CPU time a process is given for the same work moves far less, provided it runs
one thread: with two, PyTorch's OpenMP threads spin while they wait for each other, and on an
oversubscribed machine that spinning is billed as CPU time (a first attempt with two threads
used twice its calibrated CPU time). So every run has one thread (``OMP_NUM_THREADS=1``). Each
run first measures its candidate's CPU seconds per image at every phase (a few real training
steps on batches from the real loader: loading, augmentation, forward, losses, backward, Adam),
then sizes the schedule so that the budget is split over the phases in the same shares for every
candidate (``SHARES``), and trains with the real ``swap-train`` (phantom data, bf16 autocast and
channels-last as ``trainer=cpu`` picks them, loader in-process so its work is counted too). The
CPU seconds each run actually used are recorded next to the budget, with ``os.getloadavg()``
before and after. Candidates run
interleaved, seed by seed, each in a fresh process (its own peak RSS).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

# Full-size designs (CombArch fields). "today" is the recipes' model before issue #14.
FULL: dict[str, dict] = {
    "today": dict(channel_base=32768, channel_max=512, channel_min=32, latent_channels=256, block="conv"),
    "half": dict(channel_base=16384, channel_max=512, channel_min=32, latent_channels=256, block="conv"),
    "slim": dict(channel_base=2048, channel_max=256, channel_min=16, latent_channels=256, block="conv"),
    "slim24": dict(channel_base=2048, channel_max=256, channel_min=24, latent_channels=256, block="conv"),
    "slim_dwsep": dict(channel_base=4096, channel_max=256, channel_min=24, latent_channels=256, block="dwsep"),
}
SIDE_DIV, WIDTH_DIV = 8, 2
STAGES = (32, 64, 128)
# Share of the CPU budget per phase: 32 px; 64 px fade, stable; 128 px fade, stable (lr annealed).
SHARES = (0.35, 0.15, 0.15, 0.15, 0.20)
LR, LR_END, BATCH = 5e-4, 5e-5, 8  # 1e-3 (the demo's) made the scaled "today" diverge at 64-128 px


def scaled(full: dict) -> dict:
    """The CPU-sized version of a full-size design (see the module docstring)."""
    return dict(
        channel_base=full["channel_base"] // (SIDE_DIV * WIDTH_DIV),
        channel_max=full["channel_max"] // WIDTH_DIV,
        channel_min=full["channel_min"] // WIDTH_DIV,
        latent_channels=full["latent_channels"] // WIDTH_DIV,
        block=full["block"],
        latent_res=4,
    )


def full_size_gflops(full: dict) -> list[float]:
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
    from progressive_swap.model.summary import summarize

    with torch.device("meta"):
        model = CombAutoencoder(CombArch(2, final_res=1024, start_res=256, latent_res=16, colour_norm=True, **full))
    return [round(r["gflops_train"], 2) for r in summarize(model)]


def _overrides(name: str, seed: int, out: Path) -> list[str]:
    arch = scaled(FULL[name])
    return [
        "recipe=demo",
        *[f"model.{k}={v}" for k, v in arch.items()],
        f"data.phantom.size={STAGES[-1]}",
        "data.num_workers=0",
        "preview_every=0",
        "checkpoint.every_minutes=1000",
        f"seed={seed}",
        f"out={out}",
    ]


def _stages(images: list[int]) -> str:
    s32, f64, s64, f128, s128 = images
    return (
        f"schedule.stages=[{{res:32,images:{s32},batch:{BATCH},lr:{LR}}},"
        f"{{res:64,images:{s64},fade:{f64},batch:{BATCH},lr:{LR}}},"
        f"{{res:128,images:{s128},fade:{f128},batch:{BATCH},lr:{LR},lr_end:{LR_END}}}]"
    )


def calibrate(overrides: list[str], steps: int = 3, warmup: int = 1) -> list[float]:
    """CPU seconds per image of each phase (32; 64 mid-fade, 64; 128 mid-fade, 128), real steps on
    synthetic batches at the run's precision and memory format."""
    from hydra.utils import instantiate

    from progressive_swap.cli.config import compose
    from progressive_swap.model.autoencoder import CombAutoencoder
    from progressive_swap.train.batch_finder import autocast_for
    from progressive_swap.train.module import SwapModule

    cfg = compose("train", [*overrides, _stages([1600] * 5)])
    schedule = instantiate(cfg.schedule, identities=2, world_size=1)
    arch = instantiate(cfg.model, num_identities=2, final_res=schedule.final_res, start_res=schedule.start_res)
    model = CombAutoencoder(arch).to(memory_format=torch.channels_last)
    module = SwapModule(model, schedule, loss=instantiate(cfg.loss), geometry=dict(cfg.augment.geometry),
                        warp=float(cfg.augment.warp), channels_last=True)
    module.log = lambda *a, **k: None
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    precision = str(cfg.trainer.precision)

    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.num_workers = 0

    def batches(phase):  # the real loader from this phase's middle: its CPU time counts too
        mid = phase.first_batch + phase.batches // 2
        dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(schedule=schedule, batches_done=mid),
                                     global_rank=0)
        return iter(dm.train_dataloader())

    def cpu_step(s: int, it) -> float:
        t0 = time.process_time()
        data = next(it)
        with autocast_for(precision, torch.device("cpu")):
            loss = module.training_step(data, s)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.process_time() - t0

    out = []
    for phase in schedule.phases:
        it = batches(phase)
        for s in range(warmup):
            cpu_step(s, it)
        cpu = sorted(cpu_step(s, it) for s in range(steps))
        out.append(cpu[len(cpu) // 2] / (2 * BATCH))
    return out


def one_run(name: str, seed: int, budget: float, work: Path) -> dict:
    """Calibrate, size the schedule to the budget, train; runs in its own process."""
    from progressive_swap.cli import train as train_cli

    run_dir = work / f"seed{seed}" / name
    overrides = _overrides(name, seed, run_dir)
    per_image = calibrate(overrides)
    step = 2 * BATCH
    images = [max(step, int(share * budget / c) // step * step) for share, c in zip(SHARES, per_image)]
    load_before = os.getloadavg()
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    rc = train_cli.main([*overrides, _stages(images)])
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
    if rc != 0:
        raise SystemExit(f"training failed for {name} seed {seed}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    total = sum(images)
    return {
        "candidate": name,
        "seed": seed,
        "checkpoint": str(run_dir / "model.safetensors"),
        "cpu_s_per_image_calibrated": [round(c, 5) for c in per_image],
        "images_per_phase": images,
        "images": total,
        "train_cpu_s": round(cpu, 1),
        "train_wall_s": round(wall, 1),
        "images_per_cpu_s": round(total / cpu, 2),
        "images_per_wall_s": round(total / wall, 2),
        "peak_rss_gb": round(r1.ru_maxrss / 2**20, 3),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def summarise(runs: list[dict], names: list[str], budget: float, seeds: list[int], frames: int) -> dict:
    """Per candidate: its full-size and scaled cost, and the mean of its runs' results."""
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
    from progressive_swap.model.summary import summarize

    keys = ("swap_psnr", "hf_coherent", "recon_psnr", "source_mask_iou", "swap_mask_iou", "images", "train_cpu_s",
            "images_per_cpu_s", "images_per_wall_s", "peak_rss_gb")
    candidates = {}
    for name in names:
        arch = CombArch(2, final_res=STAGES[-1], start_res=STAGES[0], colour_norm=True, **scaled(FULL[name]))
        mine = [r for r in runs if r["candidate"] == name]
        candidates[name] = {
            "full_size_arch": FULL[name],
            "full_size_train_gflops_per_image": full_size_gflops(FULL[name]),
            "scaled_arch": scaled(FULL[name]),
            "scaled_params": sum(p.numel() for p in CombAutoencoder(arch).parameters()),
            "scaled_train_gflops_per_image": [round(r["gflops_train"], 3) for r in summarize(CombAutoencoder(arch))],
            "mean": {k: round(sum(r[k] for r in mine) / len(mine), 4) for k in keys},
        }
    return {
        "budget": f"{budget} process CPU seconds of training per run, one thread",
        "lr": [LR, LR_END],
        "shares": SHARES,
        "stages": STAGES,
        "seeds": seeds,
        "frames_per_pair": frames,
        "torch_threads_per_run": 1,
        "candidates": candidates,
        "runs": runs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-cpu", type=float, default=150.0, help="process CPU seconds of training per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--candidates", nargs="+", default=list(FULL))
    ap.add_argument("--frames", type=int, default=16, help="held-out frames per identity pair")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", nargs="+", default=None,
                    help="combine the JSON of runs made separately (e.g. one process per seed) into --out")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: NAME,SEED
    a = ap.parse_args()
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        runs = [r for p in parts for r in p["runs"]]
        seeds = sorted({r["seed"] for r in runs})
        names = [n for n in FULL if any(r["candidate"] == n for r in runs)]
        text = json.dumps(summarise(runs, names, a.budget_cpu, seeds, parts[0]["frames_per_pair"]), indent=1)
        print(text)
        if a.out:
            from progressive_swap.core.io import atomic_write_text

            atomic_write_text(a.out, text + "\n")
        return 0
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_efficiency_"))
    if a.one:
        name, seed = a.one.split(",")
        print(json.dumps(one_run(name, int(seed), a.budget_cpu, work)))
        return 0

    from progressive_swap.eval.quality import QualitySettings, evaluate

    settings = QualitySettings(frames=a.frames, video_frames=0)
    runs = []
    for seed in a.seeds:  # interleaved: every candidate once per seed before the next seed
        for name in a.candidates:
            cmd = [sys.executable, __file__, "--budget-cpu", str(a.budget_cpu), "--work", str(work), "--one",
                   f"{name},{seed}"]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            run = json.loads(out.strip().splitlines()[-1])
            q = evaluate(run["checkpoint"], settings, "cpu")
            run.update({k: q[k] for k in ("swap_psnr", "swap_ssim", "hf_energy", "hf_coherent", "recon_psnr",
                                          "source_mask_iou", "swap_mask_iou", "stage_res", "alpha")})
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    result = summarise(runs, a.candidates, a.budget_cpu, a.seeds, a.frames)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
