#!/usr/bin/env python
"""Training throughput, peak memory and MFU per stage, for every option that runs here; and the
input pipeline's throughput against it.

Steps are real training steps (augmentation, forward, losses, backward, Adam) of the recipe's
model on synthetic batches, at every stage mid-fade (both paths run: the most expensive point).
Combinations: stage × strategy × precision × activation checkpointing × memory format
(``contiguous`` or ``channels_last``), where strategies are
``single`` (one device) and, with 2+ GPUs, ``model_parallel`` (decoders spread over the GPUs).
DDP and FSDP need one process per GPU and are measured with ``swap-train`` (``img_s`` in the
logs), not here.

MFU = model FLOPs per step / step time / the device's peak. Model FLOPs are the analytic
forward + backward count of :func:`progressive_swap.model.summary.summarize` (convolutions;
checkpointing's recomputation is not counted, as usual for MFU). CPUs have no entry in the peak
table, so their MFU is null.

The loader part times the real ``FaceDataModule`` of the recipe (phantom faces by default) at
each stage's resolution with N workers, in images/s, to compare with the step's images/s (on a
GPU the loader should deliver at least twice what the step consumes).

    python tools/bench_train.py recipe=demo --md bench.md --out bench.json
    python tools/bench_train.py --count-flops recipe=1024 --batch 8 --out cost_1024.json

``--count-flops`` prints the cost of the recipe's model per stage instead: train GFLOP per image
counted by ``FlopCounterMode`` over one real fp32 training step at batch 1 per identity
(augmentation, forward, losses, backward; mid-fade where the stage fades), beside the model-only
count of the dry run's table (``summarize``: encoder and one decoder, convolutions only),
parameters (total, and per image: the encoder and one decoder), and, each stage in a fresh
process, the fp32 CPU step time (wall, and the process's CPU seconds, which a shared machine
disturbs less; run with ``OMP_NUM_THREADS=1`` there) and peak RSS at ``--batch`` per identity
(default 8).
    python tools/bench_train.py recipe=1024 data=phantom data.phantom.size=1024 --workers 4 8 --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

# Dense peak FLOP/s (no sparsity) by device-name substring, first match wins. "tf32" applies to
# fp32 convolutions when cuDNN may use TF32 (PyTorch's default for convolutions).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    ("H100", {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12}),  # SXM
    ("H200", {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("GH200", {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("A100", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("RTX 4090", {"bf16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    ("A10", {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
]


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak FLOP/s for ``precision`` (``fp32`` or ``bf16``); None if unknown (CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS:
        if key in name:
            if precision == "fp32" and torch.backends.cudnn.allow_tf32:
                return peaks["tf32"]
            return peaks[precision]
    return None


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def strategies_here(dev: torch.device) -> list[str]:
    return ["single"] + (["model_parallel"] if dev.type == "cuda" and torch.cuda.device_count() >= 2 else [])


def bench_steps(cfg, dev: torch.device, strategy: str, precision: str, checkpointing: bool, steps: int, warmup: int,
                batch: int | None, channels_last: bool = False) -> list[dict]:
    from hydra.utils import instantiate

    from progressive_swap.model.autoencoder import CombAutoencoder
    from progressive_swap.model.summary import summarize
    from progressive_swap.train.batch_finder import autocast_for, fake_batch
    from progressive_swap.train.module import SwapModule
    from progressive_swap.train.strategy import place_model, placement_map

    n_id = 2
    schedule = instantiate(cfg.schedule, identities=n_id)
    arch = instantiate(cfg.model, num_identities=n_id, final_res=schedule.final_res, start_res=schedule.start_res)
    model = CombAutoencoder(arch, checkpoint_blocks=checkpointing).to(dev)
    if strategy == "model_parallel":
        place_model(model, placement_map(n_id, list(range(torch.cuda.device_count()))))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    module = SwapModule(
        model,
        schedule,
        loss=instantiate(cfg.loss),
        geometry=dict(cfg.augment.geometry),
        warp=float(cfg.augment.warp),
        channels_last=channels_last,
    )
    module.log = lambda *a, **k: None  # no trainer here
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    flops = {r["stage_res"]: r["gflops_train"] * 1e9 for r in summarize(model, batch_size=1)}  # per image
    peak = peak_flops(dev, precision)
    rows = []
    for i, stage in enumerate(schedule.stages):
        phase = next(p for p in schedule.phases if p.stage == i and (p.fading or i == 0))
        b_index = phase.first_batch + phase.batches // 2
        bs = batch or stage.batch
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(dev)
        times = []
        for s in range(warmup + steps):
            data = fake_batch(n_id, bs, stage.res, b_index, dev)
            t0 = time.perf_counter()
            with autocast_for("bf16-mixed" if precision == "bf16" else "32-true", dev):
                loss = module.training_step(data, s)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(dev)
            if s >= warmup:
                times.append(time.perf_counter() - t0)
        step_s = sorted(times)[len(times) // 2]
        imgs = bs * n_id
        achieved = flops[stage.res] * imgs / step_s
        rows.append(
            {
                "res": stage.res,
                "alpha": round(schedule.at(b_index).alpha, 3),
                "strategy": strategy,
                "precision": precision,
                "checkpointing": checkpointing,
                "memory_format": "channels_last" if channels_last else "contiguous",
                "batch_per_identity": bs,
                "images_per_step": imgs,
                "step_s": round(step_s, 4),
                "images_per_s": round(imgs / step_s, 2),
                "tflops_per_s": round(achieved / 1e12, 4),
                "mfu": round(achieved / peak, 4) if peak else None,
                "peak_gb": round(
                    max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / 2**30, 3
                )
                if dev.type == "cuda"
                else round(_rss_gb(), 3),
                "peak_kind": "cuda_allocated_max_over_devices" if dev.type == "cuda" else "process_max_rss",
            }
        )
    return rows


def _module(cfg, n_id: int = 2):
    from hydra.utils import instantiate

    from progressive_swap.model.autoencoder import CombAutoencoder
    from progressive_swap.train.module import SwapModule

    schedule = instantiate(cfg.schedule, identities=n_id, world_size=1)
    arch = instantiate(cfg.model, num_identities=n_id, final_res=schedule.final_res, start_res=schedule.start_res)
    module = SwapModule(CombAutoencoder(arch), schedule, loss=instantiate(cfg.loss),
                        geometry=dict(cfg.augment.geometry), warp=float(cfg.augment.warp))
    module.log = lambda *a, **k: None  # no trainer here
    return module


def _stage_point(schedule, i: int) -> int:
    """A batch index in stage ``i``: mid-fade where the stage fades, else mid-stage."""
    phase = next(p for p in schedule.phases if p.stage == i and (p.fading or i == 0))
    return phase.first_batch + phase.batches // 2


def count_stage(cfg, i: int, batch: int, steps: int, warmup: int) -> dict:
    """One stage's FLOPs (real step, batch 1 per identity), then fp32 step time and peak RSS at ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    from progressive_swap.train.batch_finder import fake_batch

    n_id = 2
    module = _module(cfg, n_id)
    model, schedule = module.model, module.schedule
    b_index = _stage_point(schedule, i)
    res = schedule.stages[i].res
    with FlopCounterMode(display=False) as counter:
        module.training_step(fake_batch(n_id, 1, res, b_index), 0).backward()
    flops = counter.get_total_flops() / n_id
    model.zero_grad(set_to_none=True)
    row = {
        "stage_res": res,
        "alpha": round(schedule.at(b_index).alpha, 3) if i else 1.0,
        "train_gflops_per_image": round(flops / 1e9, 3),
    }
    if not steps:
        return row
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    times, cpu = [], []
    for s in range(warmup + steps):
        data = fake_batch(n_id, batch, res, b_index)
        t0, c0 = time.perf_counter(), time.process_time()
        module.training_step(data, s).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if s >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    step_s = sorted(times)[len(times) // 2]
    return {
        **row,
        "fp32_cpu_step_s": round(step_s, 3),
        "fp32_process_cpu_s_per_step": round(sorted(cpu)[len(cpu) // 2], 3),
        "threads": torch.get_num_threads(),
        "fp32_cpu_images_per_s": round(batch * n_id / step_s, 2),
        "batch_per_identity": batch,
        "peak_rss_gb": round(_rss_gb(), 3),
    }


def count_flops(overrides: list[str], batch: int, steps: int, warmup: int, timing: bool = True) -> dict:
    """The ``--count-flops`` report: per stage, FLOPs, parameters, fp32 step time and peak RSS."""
    from progressive_swap.cli.config import compose
    from progressive_swap.model.summary import summarize

    cfg = compose("train", overrides)
    module = _module(cfg)
    model = module.model
    summary = {r["stage_res"]: r for r in summarize(model, batch_size=1)}
    stages = []
    for i, stage in enumerate(module.schedule.stages):
        row = summary[stage.res]
        need_gb = row["activation_bytes"] * batch * 2 / 2**30  # activations of the batch (2 identities)
        free_gb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        if timing and need_gb > 0.8 * free_gb:  # would push the machine into the OOM killer: others' jobs too
            measured = count_stage(cfg, i, batch, 0, 0)
            measured.update(fp32_cpu_step_s=None, fp32_cpu_images_per_s=None, peak_rss_gb=None,
                            batch_per_identity=batch,
                            timing_error=f"not run: needs ~{need_gb:.1f} GB of activations, {free_gb:.1f} GB free")
        elif timing:  # a fresh process per stage: its peak RSS is its own
            cmd = [sys.executable, __file__, *overrides, "--batch", str(batch), "--steps", str(steps),
                   "--warmup", str(warmup), "--combo", f"count,{i}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                measured = json.loads(proc.stdout.strip().splitlines()[-1])
            else:  # e.g. killed for memory: keep the counts, say why the timing is missing
                measured = count_stage(cfg, i, batch, 0, 0)
                why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
                measured.update(fp32_cpu_step_s=None, fp32_cpu_images_per_s=None, peak_rss_gb=None,
                                batch_per_identity=batch, timing_error=why)
        else:
            measured = count_stage(cfg, i, batch, 0, 0)
            for k in ("fp32_cpu_step_s", "fp32_cpu_images_per_s", "peak_rss_gb"):
                measured[k] = None
        stages.append({
            **measured,
            "model_gflops_per_image": round(row["gflops_train"], 3),
            "params_total": row["params_total"],
            "params_per_image": row["params_step"],
            "params_encoder": row["params_encoder"],
            "params_decoder": row["params_decoder"],
            "activation_mib_per_image": round(row["activation_bytes"] / 2**20, 1),
        })
    first, last = stages[0]["train_gflops_per_image"], stages[-1]["train_gflops_per_image"]
    return {
        "recipe_overrides": overrides,
        "arch": model.arch_args(),
        "params": sum(p.numel() for p in model.parameters()),
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "first_stage_share_of_last": round(first / last, 4),
        "stages": stages,
    }


def bench_loader(cfg, workers: list[int], batches: int) -> list[dict]:
    """Images/s of the recipe's real ``FaceDataModule`` at every stage, for each worker count."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all")
    n_id = len(dm.resolve_faces())
    schedule = instantiate(cfg.schedule, identities=n_id)
    rows = []
    for i, stage in enumerate(schedule.stages):
        phase = next(p for p in schedule.phases if p.stage == i and (p.fading or i == 0))
        for n in workers:
            dm.num_workers = n
            # The datamodule reads its start position from the trainer's module; a stub is enough.
            dm.trainer = SimpleNamespace(
                lightning_module=SimpleNamespace(schedule=schedule, batches_done=phase.first_batch), global_rank=0
            )
            it = iter(dm.train_dataloader())
            next(it)  # worker start-up and the first batch are not throughput
            t0 = time.perf_counter()
            got = 0
            for _ in range(min(batches, phase.batches - 1)):
                got += next(it)["image"].shape[0] * n_id
            dt = time.perf_counter() - t0
            del it
            rows.append({"res": stage.res, "workers": n, "images": got, "images_per_s": round(got / dt, 1)})
    return rows


def _loader_in_subprocesses(overrides: list[str], workers: list[int], batches: int) -> list[dict]:
    # Forking loader workers from a process that has just generated the phantom can deadlock
    # (threads held at fork), so data preparation and timing each get a fresh process.
    base = [sys.executable, __file__, *overrides, "--workers", *map(str, workers), "--loader-batches", str(batches)]
    subprocess.run([*base, "--combo", "prepare"], check=True, capture_output=True)
    out = subprocess.run([*base, "--combo", "loader"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    lines = [
        f"device: {result['device']}",
        "",
        "| stage | strategy | precision | checkpointing | memory | batch/id | images/s | step s | peak GB "
        "| TFLOP/s | MFU |",
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["steps"]:
        mfu = "null" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(
            f"| {r['res']} | {r['strategy']} | {r['precision']} | {'on' if r['checkpointing'] else 'off'} "
            f"| {r.get('memory_format', 'contiguous')} | {r['batch_per_identity']} "
            f"| {r['images_per_s']:.1f} | {r['step_s']:.3f} | {r['peak_gb']:.2f} | {r['tflops_per_s']:.3f} | {mfu} |"
        )
    if result.get("loader"):
        best = {}
        for r in result["steps"]:
            best[r["res"]] = max(best.get(r["res"], 0.0), r["images_per_s"])
        lines += [
            "",
            "| stage | loader workers | loader images/s | fastest step images/s | loader / step |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in result["loader"]:
            lines.append(
                f"| {r['res']} | {r['workers']} | {r['images_per_s']:.1f} | {best[r['res']]:.1f} "
                f"| {r['images_per_s'] / best[r['res']]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", default=["recipe=demo"], help="recipe overrides, e.g. recipe=1024")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    ap.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"])
    ap.add_argument("--strategy", nargs="+", default=None, help="single, model_parallel (default: all that run here)")
    ap.add_argument(
        "--memory", nargs="+", choices=["contiguous", "channels_last"], default=["contiguous", "channels_last"]
    )
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="batch per identity (default: the schedule's)")
    ap.add_argument(
        "--workers", type=int, nargs="*", default=[0, 2], help="loader worker counts to time (none: skip the loader)"
    )
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--md", default=None, help="also write Markdown tables here")
    ap.add_argument("--count-flops", action="store_true",
                    help="print train GFLOP/img, parameters, fp32 step time and peak RSS per stage (JSON)")
    ap.add_argument("--no-timing", action="store_true", help="with --count-flops: FLOPs and parameters only")
    ap.add_argument("--combo", default=None, help=argparse.SUPPRESS)  # internal: one combination, JSON rows on stdout
    a = ap.parse_args()

    from progressive_swap.cli.config import compose

    overrides = a.overrides or ["recipe=demo"]
    if a.count_flops:
        result = count_flops(overrides, a.batch or 8, a.steps, a.warmup, timing=not a.no_timing)
        text = json.dumps(result, indent=1)
        print(text)
        if a.out:
            from progressive_swap.core.io import atomic_write_text

            atomic_write_text(a.out, text + "\n")
        return 0
    cfg = compose("train", overrides)
    if a.combo and a.combo.startswith("count,"):
        print(json.dumps(count_stage(cfg, int(a.combo.split(",")[1]), a.batch or 8, a.steps, a.warmup)))
        return 0
    dev = torch.device(a.device)
    if a.combo == "prepare":  # generate the phantom here, so the loader's workers never fork a generator process
        from hydra.utils import instantiate

        instantiate(cfg.data, _convert_="all").resolve_faces()
        return 0
    if a.combo == "loader":
        print(json.dumps(bench_loader(cfg, a.workers, a.loader_batches)))
        return 0
    if a.combo:
        strategy, precision, ckpt, memory = a.combo.split(",")
        print(
            json.dumps(
                bench_steps(
                    cfg, dev, strategy, precision, ckpt == "on", a.steps, a.warmup, a.batch, memory == "channels_last"
                )
            )
        )
        return 0
    steps = []
    for strategy in a.strategy or strategies_here(dev):
        for precision in a.precision:
            for ckpt in a.checkpointing:
                for memory in a.memory:
                    # A fresh process per combination: peak memory (max RSS on CPU) is its own.
                    cmd = [
                        sys.executable,
                        __file__,
                        *overrides,
                        "--device",
                        a.device,
                        "--steps",
                        str(a.steps),
                        "--warmup",
                        str(a.warmup),
                        "--combo",
                        f"{strategy},{precision},{ckpt},{memory}",
                    ] + (["--batch", str(a.batch)] if a.batch else [])
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    steps += json.loads(out.strip().splitlines()[-1])
                    print(f"{strategy} {precision} checkpointing {ckpt} {memory}: done", file=sys.stderr)
    result = {
        "recipe_overrides": overrides,
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "steps": sorted(
            steps, key=lambda r: (r["res"], r["strategy"], r["precision"], r["checkpointing"], r["memory_format"])
        ),
        "loader": _loader_in_subprocesses(overrides, a.workers, a.loader_batches) if a.workers else [],
    }
    text = json.dumps(result, indent=1)
    print(text)
    from progressive_swap.core.io import atomic_write_text

    if a.out:
        atomic_write_text(a.out, text + "\n")
    if a.md:
        atomic_write_text(a.md, markdown(result))
    print(markdown(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
