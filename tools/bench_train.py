#!/usr/bin/env python
"""Training throughput and peak memory per stage of a recipe.

Runs real training steps (augmentation, forward, losses, backward, optimizer) of the recipe's
model on synthetic batches, at every stage mid-fade (the most expensive point), on CPU or CUDA.

    python tools/bench_train.py recipe=demo
    python tools/bench_train.py recipe=1024 --device cuda --precision bf16 --steps 20 --out bench.json

Prints JSON: per stage, images/s, seconds per step, batch size and peak memory in GB.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from contextlib import nullcontext

import torch


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)


def fake_batch(n_id: int, batch: int, res: int, batch_index: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch_index)
    mask = torch.zeros(batch, n_id, 1, res, res)
    mask[..., res // 6 : -res // 6, res // 6 : -res // 6] = 1
    return {
        "image": torch.rand(batch, n_id, 3, res, res, generator=g).to(device),
        "mask": mask.to(device),
        "regions": torch.zeros(batch, n_id, 2, res, res, device=device),
        "batch_index": torch.full((batch,), batch_index),
    }


def bench(argv: list[str], device: str, precision: str, steps: int, warmup: int, batch: int | None) -> dict:
    from hydra.utils import instantiate

    from progressive_swap.cli.config import compose
    from progressive_swap.train.module import SwapModule

    cfg = compose("train", argv)
    n_id = 2
    dev = torch.device(device)
    schedule = instantiate(cfg.schedule, identities=n_id)
    model = instantiate(cfg.model, num_identities=n_id, final_res=schedule.final_res, start_res=schedule.start_res).to(dev)
    module = SwapModule(model, schedule, loss=instantiate(cfg.loss), geometry=dict(cfg.augment.geometry), warp=float(cfg.augment.warp))
    module.log = lambda *a, **k: None  # no trainer here
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    rows = []
    for i, stage in enumerate(schedule.stages):
        phase = next(p for p in schedule.phases if p.stage == i and (p.fading or i == 0))
        b_index = phase.first_batch + phase.batches // 2
        bs = batch or stage.batch
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        times = []
        for s in range(warmup + steps):
            data = fake_batch(n_id, bs, stage.res, b_index, dev)
            t0 = time.perf_counter()
            with autocast:
                loss = module.training_step(data, s)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if s >= warmup:
                times.append(time.perf_counter() - t0)
        step_s = sorted(times)[len(times) // 2]
        imgs = bs * n_id
        rows.append({
            "res": stage.res,
            "alpha": round(schedule.at(b_index).alpha, 3),
            "batch_per_identity": bs,
            "images_per_step": imgs,
            "step_s": round(step_s, 4),
            "images_per_s": round(imgs / step_s, 2),
            "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if dev.type == "cuda" else round(_rss_gb(), 3),
            "peak_kind": "cuda_allocated" if dev.type == "cuda" else "process_max_rss",
        })
    return {
        "recipe_overrides": argv,
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "precision": precision,
        "params_total": sum(p.numel() for p in model.parameters()),
        "stages": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", default=["recipe=demo"], help="recipe overrides, e.g. recipe=1024")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="batch per identity (default: the schedule's)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    result = bench(a.overrides or ["recipe=demo"], a.device, a.precision, a.steps, a.warmup, a.batch)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        from progressive_swap.io import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
