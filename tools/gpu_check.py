#!/usr/bin/env python
"""The GPU check of the 256 recipe: the default network against ``comb`` on one GPU, JSON out.

    bash tools/gpu_check.sh --out gpu_check.json            # one H100/H200: about 8 minutes + the timed steps
    bash tools/gpu_check.sh --toy --out toy.json            # the same steps at toy sizes on the CPU
    bash tools/gpu_check.sh --rates-only --out rates.json   # only the study's full-size steps, timed

First, **the study's full-size steps, timed** (``--rate-candidates``, default :data:`RATE_CANDIDATES`:
ours, the tighter latent and the peers' ports): every phase of ``tools/bench_efficiency.py`` at
full size, the step ``eval/cost.py`` estimates, timed with ``measure_step`` (bf16 autocast, the
recipe's batch per identity halved until it fits), beside the estimated H100 ms per image, and
what the images of a 50 estimated H100 s budget took on this card. It replaces the study's
estimate with measured time for each design (issue #32). ``--rates-only`` runs this part alone;
its time on a GPU has not been measured (no GPU was lent while it was written), so run it as its
own call.

Then, for each design (``default``: what ``recipe=256``'s model group resolves to; ``comb``: the former
design), in this order:

1. **Throughput.** The batch finder's largest batch per identity (real bf16 steps until the card
   runs out of memory), then timed training steps at that batch: images/s, MFU against the card's
   dense bf16 peak (model FLOPs from ``FlopCounterMode``), peak allocated memory.
2. **Smoke tests** of ``trainer=fsdp`` (one device, a few steps) and ``compile=true``, each the
   real ``swap-train`` in its own process: exit code and the last line it printed.
3. **Quality at equal time.** ``swap-train recipe=256 data=phantom`` at 256 px for the same
   wall-clock minutes (``--minutes``, Lightning's ``max_time``) at the found batch, then swap PSNR,
   ``hf_coherent`` and recon PSNR against the phantom's true swap (``eval/quality.py``).

``--toy`` shrinks everything so the CPU runs it in well under a minute (32 px, the designs scaled
as in ``tools/bench_efficiency.py``, a fixed batch, a few seconds of training; FSDP and compile
are reported as skipped): it is what the tests run, so the script cannot rot unnoticed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import bench_efficiency  # noqa: E402
import bench_train  # noqa: E402

DESIGNS = ("default", "comb")


def _model_overrides(name: str, toy: bool) -> list[str]:
    full = bench_efficiency.design(name)
    arch = bench_efficiency.scaled(full) if toy else dict(full)
    train = arch.pop("train", {})  # a lever's swap-train overrides (bench_efficiency.FULL)
    return [f"model.{k}={v}" for k, v in arch.items()] + [f"{k}={v}" for k, v in train.items()]


def _base(name: str, toy: bool, res: int, batch: int, lr: float) -> list[str]:
    stages = f"schedule.stages=[{{res:{res},images:100000000,batch:{batch},lr:{lr}}}]"
    common = ["data=phantom", f"data.phantom.size={res}", stages, "preview_every=0", "checkpoint.every_minutes=1000"]
    if toy:
        return ["recipe=demo", *_model_overrides(name, toy), *common, "data.phantom.faces=64",
                "data.num_workers=0", "trainer.precision=32-true", "schedule_seconds=null"]
    return ["recipe=256", *_model_overrides(name, toy), *common]


def _swap_train(args: list[str], timeout: float) -> dict:
    """The real command in its own process: exit code, seconds, and its last output line."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "progressive_swap.cli.train", *args], capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        return {"rc": r.returncode, "s": round(time.perf_counter() - t0, 1), "last_line": lines[-1] if lines else ""}
    except subprocess.TimeoutExpired:
        return {"rc": None, "s": round(time.perf_counter() - t0, 1), "last_line": f"timed out after {timeout:.0f} s"}


def throughput(name: str, toy: bool, device: torch.device, res: int, steps: int) -> dict:
    from hydra.utils import instantiate

    from progressive_swap.cli.config import compose
    from progressive_swap.train.batch_finder import search_on_device

    cfg = compose("train", _base(name, toy, res, 2, 1e-4))
    batch = 2
    if device.type == "cuda":
        module = bench_train._module(cfg)
        schedule = search_on_device(
            lambda m: m, module, module.schedule, device, precision="bf16-mixed", limit=512,
        )
        batch = int(schedule.stages[0].batch)
        del module
    cfg = compose("train", _base(name, toy, res, batch, 1e-4))
    precision = "bf16" if device.type == "cuda" else "fp32"
    (row,) = bench_train.bench_steps(cfg, device, "single", precision, False, steps, 1, batch,
                                     channels_last=device.type == "cpu")
    arch = instantiate(cfg.model, num_identities=2, final_res=res, start_res=res)
    from progressive_swap.model.autoencoder import CombAutoencoder

    with torch.device("meta"):
        params = sum(p.numel() for p in CombAutoencoder(arch).parameters())
    return {**row, "batch_found_by_finder": device.type == "cuda", "params": params}


# The study's candidates whose full-size steps are timed (``--rate-candidates``): ours, the levers
# that change the network, and the peers' ports.
RATE_CANDIDATES = ("half", "half_lat64", "lean", "comb", "fs_dny1024", "saehd_df_ud", "saehd_liae_ud")


def rates(names: list[str], device: torch.device, toy: bool, steps: int, budget: float = 50.0) -> dict:
    """Each candidate's training step at every phase of the study, timed on ``device``
    (``eval/cost.py`` ``measure_step``: the same step the estimate costs) beside the estimate.

    Full size on a GPU (bf16 autocast; the recipe's batch per identity, halved until it fits);
    ``toy``: the scaled model at the scaled sides on the CPU in float32, batch 2, for the tests.
    ``images_for_budget``: what ``budget`` estimated H100 seconds buy in the study (the design's shares),
    and ``measured_s``: what those images took here, so ``measured_s / budget`` says how far the
    estimate is from this card for that design.
    """
    from progressive_swap.eval.cost import measure_step

    be = bench_efficiency
    out = {}
    for name in names:
        full = be.design(name)
        est = be.full_size_cost(full)
        phases, batches = be.full_size_phases(full)
        if toy:
            model = be.scaled_model(full)
            side = be.SIDE_DIV
            batches = (2,) * len(batches)
        else:
            model = be.full_model(full, device=device)
            side = 1
        model.to(memory_format=torch.channels_last).train()
        rows = []
        for (res, alpha), batch, e in zip(phases, batches, est):
            m = measure_step(model, res // side, alpha, batch, steps=steps, warmup=1 if toy else 2,
                             bf16=device.type == "cuda")
            ms = m.pop("seconds_per_image") * 1e3
            rows.append({**m, "measured_ms_per_image": round(ms, 4), "estimated_h100_ms_per_image": e["h100_ms"],
                         "measured_over_estimate": None if toy else round(ms / e["h100_ms"], 3)})
        images = be.images_for(budget, [e["h100_ms"] / 1e3 for e in est], be.shares_of(full))
        measured = sum(n * r["measured_ms_per_image"] / 1e3 for n, r in zip(images, rows))
        out[name] = {"phases": rows, "images_for_budget": images, "budget_est_h100_s": budget,
                     "measured_s": round(measured, 3)}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps({"rate": name, "measured_s": out[name]["measured_s"]}), file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="toy sizes on the CPU (what the tests run)")
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per design (default 2; toy 0.1)")
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS))
    ap.add_argument("--rate-candidates", nargs="*", default=list(RATE_CANDIDATES),
                    help="study candidates whose full-size training steps are timed at every phase (none: skip)")
    ap.add_argument("--rates-only", action="store_true", help="only the timed steps (a few minutes on a GPU)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not a.toy else "cpu")
    if device.type != "cuda" and not a.toy:
        raise SystemExit("gpu_check: no CUDA device here; --toy runs the same steps at toy sizes on the CPU")
    res = 32 if a.toy else 256
    minutes = a.minutes if a.minutes is not None else (0.1 if a.toy else 2.0)
    work = Path(a.work or tempfile.mkdtemp(prefix="gpu_check_"))
    from progressive_swap.core.weights import safe_load
    from progressive_swap.eval.quality import QualitySettings, evaluate

    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "toy": a.toy, "res": res, "minutes_per_design": minutes, "designs": {}}
    smoke_timeout = 120 if a.toy else 240
    if a.rate_candidates:
        result["rates"] = rates(a.rate_candidates, device, a.toy, steps=1 if a.toy else 5)
    if a.rates_only:
        from progressive_swap.core.io import print_json

        print_json(result, a.out)
        return 0
    for name in a.designs:
        t0 = time.perf_counter()
        tp = throughput(name, a.toy, device, res, steps=2 if a.toy else 10)
        batch = tp["batch_per_identity"]
        lr = 5e-4 if a.toy else 2.5e-4
        base = _base(name, a.toy, res, batch, lr)
        smoke = {}
        if device.type == "cuda":
            smoke["fsdp"] = _swap_train([*base, "trainer=fsdp", "trainer.devices=1", "max_steps=3",
                                         f"out={work / name / 'fsdp'}"], smoke_timeout)
            smoke["compile"] = _swap_train([*base, "compile=true", "max_steps=3", f"out={work / name / 'compile'}"],
                                           smoke_timeout)
        else:
            smoke = {k: {"rc": None, "last_line": "skipped: needs a GPU"} for k in ("fsdp", "compile")}
        run = work / name / "train"
        h, rest = divmod(int(round(minutes * 60)), 3600)
        limit = f"00:{h:02d}:{rest // 60:02d}:{rest % 60:02d}"
        trained = _swap_train([*base, f"+trainer.max_time={limit}", f"out={run}"], minutes * 60 + 300)
        quality = {}
        if trained["rc"] == 0 and (run / "model.safetensors").exists():
            q = evaluate(str(run / "model.safetensors"), QualitySettings(frames=4 if a.toy else 16, video_frames=0),
                         str(device))
            quality = {k: None if q[k] is None else round(q[k], 4) for k in ("swap_psnr", "hf_coherent", "recon_psnr")}
            if (run / "last.ckpt").exists():
                state = safe_load(run / "last.ckpt")
                quality["images_trained"] = int(state["progressive_swap"]["batches_done"]) * batch * 2
        result["designs"][name] = {"throughput": tp, "smoke": smoke, "train": trained, "quality": quality,
                                   "check_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps({name: result["designs"][name]}), file=sys.stderr, flush=True)
    result["ok"] = all(d["train"]["rc"] == 0 and d["quality"] and all(s["rc"] in (0, None) for s in d["smoke"].values())
                       for d in result["designs"].values())
    from progressive_swap.core.io import print_json

    print_json(result, a.out)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
