"""Benchmark swap-export: frames per second at 1080p for 256, 512 and 1024 px models.

Usage:
    python tools/bench_export.py [--res 256 512 1024] [--frames 4] [--format png16]
                                 [--device cpu] [--bf16] [--threads N] [--out FILE]

Each model is a full-size comb of the recipes' model group (``--model``: ``default``, what
``recipe=1024`` trains, or ``half``, ``comb``, ``lean``) built for ``final_res = res`` with random
weights, run at ``stage_res = res``. Frames are 1920x1080 plates with one face about 540 px
wide (a phantom face, so colour and mask code run on real content), exported at crop size
``res`` through the real pipeline (``export.pipeline.Exporter``): crop, inference, un-warp,
alpha, encode and atomic write. Reported per model: end-to-end frames/s, and the seconds per
frame spent in inference vs compositing + writing. One warm-up frame is not timed.
Prints JSON; ``--out`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from progressive_swap.core import align
from progressive_swap.export.frames import FaceIn, FrameIn
from progressive_swap.export.pipeline import Exporter
from progressive_swap.export.settings import ExportSettings
from progressive_swap.export.swapper import CheckpointInfo, Swapper
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder


def design(model: str) -> dict:
    """The ``recipes/model`` group's CombArch fields (less the derived ones) for ``model``."""
    from progressive_swap.cli.config import compose

    cfg = compose("train", ["recipe=1024"] + ([] if model == "default" else [f"model={model}"]))
    derived = ("_target_", "num_identities", "final_res", "start_res")
    return {k: v for k, v in cfg.model.items() if k not in derived}


def plate_1080p(face_px: float = 540.0) -> tuple[np.ndarray, np.ndarray]:
    """A 1920x1080 plate with a phantom face of about ``face_px`` (whole crop side) and its matrix."""
    try:
        from progressive_swap.phantom.renderer import render, sample_frame, sample_identity

        r = render(sample_identity(0), sample_frame(0), 1024)
        img, lm = r.image, r.landmarks
    except ImportError:  # fall back to noise and the mean face
        from progressive_swap.core.landmarks import MEAN_FACE

        img = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), np.uint8)
        lm = MEAN_FACE * 400 + 300
    m = align.alignment_matrix(lm, "whole")
    scale = face_px / align.face_size(m)
    plate = np.zeros((1080, 1920, 3), np.uint8)
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = min(small.shape[0], 1080), min(small.shape[1], 1920)
    x0 = (1920 - w) // 2
    plate[:h, x0 : x0 + w] = small[:h, :w]
    lm_plate = lm * scale + [x0, 0]
    return plate, align.alignment_matrix(lm_plate, "whole")


class _Timed:
    """Wrap the swapper to time inference separately from compositing and writing."""

    def __init__(self, swap: Swapper) -> None:
        self.swap, self.seconds = swap, 0.0

    def __call__(self, crops: np.ndarray):
        t = time.perf_counter()
        out = self.swap(crops)
        if self.swap.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        return out


def bench(res: int, frames: int, fmt: str, device: str, bf16: bool, name: str = "default") -> dict:
    torch.manual_seed(0)
    arch = dict(num_identities=2, final_res=res, start_res=min(res, 256), **design(name))
    model = CombAutoencoder(CombArch(**arch)).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    info = CheckpointInfo("random.ckpt", "0" * 64, arch, res, 1.0, ["A", "B"], "whole")
    plate, m = plate_1080p()
    timed = _Timed(Swapper(model, 1, res, 1.0, device=device, bf16=bf16))
    settings = ExportSettings(format=fmt, crop_size=res, batch=1, color="reinhard", feather=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        def run(n: int, start: int) -> float:
            ex = Exporter(Path(tmp), timed, info, 1, settings, progress=False)
            seq = [FrameIn(start + i, (start + i) / 24, plate, [FaceIn(m, 0)]) for i in range(n)]
            t = time.perf_counter()
            ex.run(seq)
            return time.perf_counter() - t

        run(1, 10_000)  # warm-up (allocations, lazy imports)
        timed.seconds = 0.0
        total = run(frames, 0)
    infer = timed.seconds / frames
    return {
        "res": res, "model": name, "params_M": round(params / 1e6, 1), "frames": frames, "format": fmt,
        "frames_per_s": round(frames / total, 3),
        "s_per_frame": round(total / frames, 3),
        "s_inference_per_frame": round(infer, 3),
        "s_composite_write_per_frame": round(total / frames - infer, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--format", default="png16", choices=["png8", "png16", "exr"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--model", default="default", help="default (recipe=1024's), half, comb or lean")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    results = [bench(r, a.frames, a.format, a.device, a.bf16, a.model) for r in a.res]
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or platform.machine()
    report = {"tool": "bench_export", "frame": "1920x1080", "face_px": 540, "device": a.device, "device_name": dev,
              "bf16": a.bf16, "torch_threads": torch.get_num_threads(), "results": results}
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(Path(a.out), text + "\n")


if __name__ == "__main__":
    main()
