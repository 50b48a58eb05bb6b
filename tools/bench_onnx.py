"""Benchmark the exported ONNX swap on the CPU: ONNX Runtime vs PyTorch, faces per second.

Usage:
    python tools/bench_onnx.py [--recipes demo 256] [--batch 1 8] [--seconds 3] [--out FILE]

For each recipe the network is built from the recipe's own model and schedule files
(``recipes/model/<model>.yaml`` architecture numbers; final and start resolution from
``recipes/schedule/<recipe>.yaml``) with random weights, and run at its final resolution with
alpha 1: the ``demo`` comb at 64 px and the full-size comb of the ``256`` recipe at 256 px.
The swap is exported with ``swap-export-model``'s code (``format=onnx``: colour normalisation
and mask inside the graph) and timed in ONNX Runtime's CPU provider; the same wrapped module is
timed in PyTorch fp32 (``torch.inference_mode``; ``--bf16``: also under bfloat16 autocast). Each figure is
faces per second after two warm-up runs, over at least ``--seconds`` of runs. Prints JSON;
``--out`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from progressive_swap.cli.config import compose
from progressive_swap.export import model_export as ME
from progressive_swap.export.swapper import CheckpointInfo
from progressive_swap.model import autoencoder as AE

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ("demo", "256", "512", "1024")


def recipe_arch(recipe: str) -> dict:
    """The architecture a recipe trains (two identities), as plain values."""
    return instantiate(compose("train", [f"recipe={recipe}"]).model).as_dict()


def build(arch: dict) -> torch.nn.Module:
    """The trainer's network for an architecture."""
    return AE.CombAutoencoder(AE.CombArch(**arch))


def rate(fn, batch: int, seconds: float) -> float:
    """Faces per second of ``fn()`` (which swaps ``batch`` faces)."""
    for _ in range(2):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 3:
            return n * batch / dt


def cpu_info() -> dict:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.SubprocessError):
        pass
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags}


def bench(recipe: str, batches: list[int], seconds: float, bf16: bool = False) -> dict:
    import onnxruntime as ort

    torch.manual_seed(0)
    arch = recipe_arch(recipe)
    net = build(arch).eval()
    res = arch["final_res"]
    info = CheckpointInfo("random", "0" * 64, arch, res, 1.0, ["A", "B"], "whole")
    params = sum(p.numel() for p in net.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "swap.onnx"
        ME.export_model(net, info, 1, 0, "onnx", path)
        size_mb = path.stat().st_size / 2**20
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = ME.build_module(net, info, 1, 0, "onnx")
    rows = []
    for b in batches:
        x = np.random.default_rng(0).random((b, 3, res, res), dtype=np.float32)
        xt = torch.from_numpy(x)

        def torch_fp32():
            with torch.inference_mode():
                module(xt)

        def torch_bf16():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                module(xt)

        with torch.inference_mode():
            want = module(xt)[0].numpy()
        got = sess.run(["rgb"], {"face": x})[0]
        rows.append({
            "batch": b,
            "onnxruntime_fps": round(rate(lambda: sess.run(None, {"face": x}), b, seconds), 2),
            "torch_fp32_fps": round(rate(torch_fp32, b, seconds), 2),
            **({"torch_bf16_fps": round(rate(torch_bf16, b, seconds), 2)} if bf16 else {}),
            "max_abs_diff_onnx_vs_torch": float(np.abs(got - want).max()),
        })
    return {"recipe": recipe, "res": res, "params": params, "onnx_mb": round(size_mb, 1),
            "arch": arch, "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["demo", "256"], choices=RECIPES)
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--bf16", action="store_true", help="also time PyTorch under bfloat16 autocast (slow here)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    import onnxruntime as ort

    report = {"cpu": cpu_info(), "load_average_1min": round(os.getloadavg()[0], 2),
              "torch": torch.__version__, "onnxruntime": ort.__version__,
              "torch_threads": torch.get_num_threads(),
              "models": [bench(r, a.batch, a.seconds, a.bf16) for r in a.recipes]}
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
