#!/usr/bin/env python
"""Does growing pay? Swap PSNR against images seen, for the same image budget:

    (a) grow: low → high with fade-in
    (b) scratch: high from scratch
    (c) warm: low, then high warm-started from the low checkpoint, no fade-in

    python tools/bench_growth.py --low 32 --high 64 --budget 12800 --points 8 --frames 24 --seeds 0 1 --out growth.json
    python tools/bench_growth.py --low 256 --high 512 --budget 2000000 --recipe 512 --device cuda data=phantom  # GPU

Trains on phantom data with ``swap-train`` (the demo recipe by default; extra overrides go
before ``--seeds`` or after ``--``), evaluates every kept checkpoint with
:mod:`progressive_swap.eval.quality`, and prints JSON with the three curves and whether (a) reaches
(b)'s final swap PSNR within half of the images. With several ``--seeds``
the curves are averaged point by point before the goal is judged (one run's swap PSNR wanders
by a few tenths of a dB between checkpoints). Runs go to ``--work`` (``seed<N>/<strategy>``) and
continue with ``resume=auto``: rerunning the same command after an interruption finishes the
missing runs and reuses the complete ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from progressive_swap.cli import train as train_cli
from progressive_swap.eval.quality import QualitySettings, evaluate
from progressive_swap.train.checkpoint import safe_load
from progressive_swap.train.growth import GrowthSchedule


def _run(argv: list[str]) -> None:
    if train_cli.main(argv) != 0:
        raise SystemExit(f"training failed: {' '.join(argv)}")


def _curve(run: Path, offset_images: int, settings: QualitySettings, device: str) -> list[dict]:
    points = []
    for ck in sorted(run.glob("step*.ckpt")):
        state = safe_load(ck)["progressive_swap"]
        sched = GrowthSchedule(**state["schedule"])
        b = state["batches_done"]
        images = offset_images + sched.images_seen(b)
        q = evaluate(str(ck), settings, device)
        points.append(
            {
                "images": images,
                "stage_res": q["stage_res"],
                "alpha": q["alpha"],
                "swap_psnr": q["swap_psnr"],
                "recon_psnr": q["recon_psnr"],
            }
        )
    return points


def _mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Point-by-point mean of the same strategy's curves from several seeds (same checkpoints)."""
    out = []
    for points in zip(*curves):
        p = dict(points[0])
        for k in ("swap_psnr", "recon_psnr"):
            p[k] = sum(q[k] for q in points) / len(points)
        out.append(p)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", type=int, default=32)
    ap.add_argument("--high", type=int, default=64)
    ap.add_argument("--budget", type=int, default=8000, help="images per strategy")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--points", type=int, default=6, help="checkpoints evaluated per run")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--device", default="cpu", help="where checkpoints are evaluated (training follows the recipe)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds; curves are averaged over them")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*", help="extra swap-train overrides")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_growth_"))
    per_batch = a.batch * 2
    every = max(1, a.budget // per_batch // a.points)
    st = lambda res, images, fade=0: f"{{res:{res},images:{images},fade:{fade},batch:{a.batch},lr:{a.lr}}}"  # noqa: E731
    half, quarter = a.budget // 2, a.budget // 4
    s = QualitySettings(frames=a.frames, video_frames=0)
    per_seed = {}
    for seed in a.seeds:
        wd = work / f"seed{seed}"
        common = [
            f"recipe={a.recipe}",
            "preview_every=0",
            f"checkpoint.every_steps={every}",
            "checkpoint.keep=1000",
            f"data.phantom.size={a.high}",
            f"seed={seed}",
            "resume=auto",
            *a.overrides,
        ]
        runs = {
            "grow": [f"schedule.stages=[{st(a.low, half)},{st(a.high, quarter, quarter)}]"],
            "scratch": [f"schedule.stages=[{st(a.high, a.budget)}]"],
            "low": [f"schedule.stages=[{st(a.low, half)}]"],
            "warm": [f"schedule.stages=[{st(a.high, half)}]", f"warm_start={wd / 'low' / 'last.ckpt'}"],
        }
        for name, args in runs.items():
            if not (wd / name / "model.safetensors").is_file():  # complete runs are reused
                _run([*common, f"out={wd / name}", *args])
        per_seed[seed] = {
            "grow": _curve(wd / "grow", 0, s, a.device),
            "scratch": _curve(wd / "scratch", 0, s, a.device),
            "warm": _curve(wd / "warm", half, s, a.device),
        }
    curves = {k: _mean_curve([c[k] for c in per_seed.values()]) for k in ("grow", "scratch", "warm")}
    final_scratch = curves["scratch"][-1]["swap_psnr"]
    reached = [p["images"] for p in curves["grow"] if p["stage_res"] == a.high and p["swap_psnr"] >= final_scratch]
    result = {
        "low": a.low,
        "high": a.high,
        "budget_images": a.budget,
        "seeds": a.seeds,
        "curves": curves,
        "scratch_final_swap_psnr": final_scratch,
        "grow_images_to_reach_scratch_final": reached[0] if reached else None,
        "goal_met": bool(reached and reached[0] <= a.budget / 2),
        "per_seed": {str(k): v for k, v in per_seed.items()},
    }
    from progressive_swap.core.io import print_json

    print_json(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
