"""Benchmark the phantom renderer: time per frame at 64, 256 and 1024 px.

Usage:
    python tools/bench_phantom.py [--sizes 64 256 1024] [--repeat 10] [--out FILE]
    python tools/bench_phantom.py --figure docs/phantom_swap.png   # redraw the docs figure

Render times are warm (the identity's texture is built once and cached) and are the median
over ``--repeat`` different random frames (with occluders at probability 0.3). The one-off
texture build per identity is reported separately (``texture_build_s``). Single process; the
machine's thread settings are left alone (OpenCV may use several threads). Prints JSON;
``--out`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import cv2
import numpy as np

from progressive_swap.core.io import atomic_write_json
from progressive_swap.phantom.renderer import identity_assets, render, sample_frame, sample_identity


def bench(sizes: list[int], repeat: int, seed: int = 0) -> dict:
    idn = sample_identity(seed)
    identity_assets.cache_clear()
    t = time.perf_counter()
    identity_assets(idn)
    build = time.perf_counter() - t
    frames = [sample_frame(seed * 1000 + k, occluders=0.3) for k in range(repeat)]
    out: dict = {"texture_build_s": round(build, 4), "render_ms": {}, "render_ms_min": {}}
    for size in sizes:
        render(idn, frames[0], size)  # warm-up (allocations, OpenCV threads)
        times = []
        for f in frames:
            t = time.perf_counter()
            render(idn, f, size)
            times.append(time.perf_counter() - t)
        out["render_ms"][str(size)] = round(1000 * float(np.median(times)), 2)
        out["render_ms_min"][str(size)] = round(1000 * float(np.min(times)), 2)
    return out


def figure(path: str, size: int = 256) -> None:
    """``docs/phantom_swap.png``: a frame of identity 0 and its true swap to identity 1."""
    from dataclasses import replace

    from progressive_swap.phantom.renderer import Occluder, true_swap

    frame = replace(sample_frame(4), yaw=-22.0, pitch=6.0, roll=8.0, smile=0.7, mouth_open=0.25, blink=0.0,
                    scale=0.3, cx=0.5, cy=0.42,
                    occluder=Occluder("hand", 0.42, 0.55, 0.42, -20.0, (0.85, 0.66, 0.55)))
    a = render(sample_identity(0), frame, size).image
    b = true_swap(sample_identity(1), frame, size).image
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate([a, b], 1), cv2.COLOR_RGB2BGR))
    assert ok
    with open(path, "wb") as f:
        f.write(png.tobytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--figure", help="instead of benchmarking, draw the docs figure to this PNG")
    args = p.parse_args(argv)
    if args.figure:
        figure(args.figure)
        return 0
    result = {
        "benchmark": "phantom_render",
        **bench(args.sizes, args.repeat, args.seed),
        "repeat": args.repeat,
        "machine": {
            "cpu_count": os.cpu_count(),
            "opencv_threads": cv2.getNumThreads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
        },
    }
    print(json.dumps(result, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
