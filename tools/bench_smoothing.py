"""Landmark smoothing benchmark on phantom trajectories with known truth.

Truth landmarks come from the phantom's motion model (``sample_trajectory``: slow wandering,
fast head turns, blinks, talking) projected exactly as ``phantom.render`` does; noise is
Gaussian, σ px per coordinate for a 256 px face (scaled with the face's size). For each
smoother it reports, averaged over clips and noise draws:

* ``error_px``: RMS landmark error vs truth (px, rescaled to a 256 px face);
* ``jitter``: mean size-normalised acceleration ``|x[t+1] - 2 x[t] + x[t-1]| / face_size``
  (×1000), and ``jitter_reduction`` = 1 - smoothed / raw;
* ``lag_frames``: least-squares delay on fast frames (the 10 % fastest): the ``τ`` minimising
  ``|e + τ v|`` where ``e`` = smoothed - truth and ``v`` = truth velocity (px/frame).

Usage:
    python tools/bench_smoothing.py [--clips 6] [--frames 240] [--fps 24] [--sigma 1 2] [--out FILE]

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progressive_swap.extract.smoothing import face_scale, smooth_track  # noqa: E402
from progressive_swap.phantom import mesh as pm  # noqa: E402
from progressive_swap.phantom.renderer import sample_identity, sample_trajectory  # noqa: E402

FACE_PX = 256.0  # noise σ is quoted for a face (``full`` crop side) of this size


def truth_track(seed: int, n: int, fps: float, size: int) -> np.ndarray:
    """``(n, 68, 2)`` exact phantom landmarks in a ``size`` px frame (as ``render`` gives them)."""
    idn = sample_identity(seed)
    ref = pm.reference_vertices(idn)
    depth = pm.reference_depth(idn, ref)
    out = []
    for f in sample_trajectory(seed, n, fps):
        v3 = pm.posed_vertices(idn, f, ref, depth)
        out.append(pm.project(v3[:68], f, size)[0])
    return np.stack(out)


def metrics(est: np.ndarray, truth: np.ndarray, px_scale: np.ndarray) -> dict[str, float]:
    """Error, jitter and lag of ``est`` against ``truth`` (both ``(T, 68, 2)``)."""
    s = px_scale[:, None, None]
    err = np.sqrt((((est - truth) / s * FACE_PX) ** 2).sum(-1).mean())
    acc = np.linalg.norm(est[2:] - 2 * est[1:-1] + est[:-2], axis=-1).mean(-1) / px_scale[1:-1]
    v = (truth[2:] - truth[:-2]) / 2.0  # px/frame
    e = (est - truth)[1:-1]
    speed = np.linalg.norm(v, axis=-1).mean(-1) / px_scale[1:-1]
    fast = speed >= np.quantile(speed, 0.9)
    lag = -float((e[fast] * v[fast]).sum() / max((v[fast] ** 2).sum(), 1e-12))
    return {"error_px": float(err), "jitter": float(acc.mean() * 1000), "lag_frames": lag}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--frame-size", type=int, default=720)
    ap.add_argument("--sigma", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)

    methods = {
        "raw": ("none", {}),
        "savgol": ("savgol", {}),
        "one_euro": ("one_euro", {}),
    }
    t0 = time.perf_counter()
    truths = [truth_track(1000 + c, a.frames, a.fps, a.frame_size) for c in range(a.clips)]
    results: dict[str, dict] = {}
    timing: dict[str, float] = {}
    for sigma in a.sigma:
        acc: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
        truth_jitter = []
        for c, truth in enumerate(truths):
            px_scale = face_scale(truth)
            truth_jitter.append(metrics(truth, truth, px_scale)["jitter"])
            for d in range(a.draws):
                rng = np.random.default_rng([c, d, int(sigma * 1000)])
                noisy = truth + rng.normal(0, 1, truth.shape) * (sigma * px_scale / FACE_PX)[:, None, None]
                for name, (method, params) in methods.items():
                    ts = time.perf_counter()
                    est = smooth_track(noisy, a.fps, method, **params)
                    timing[name] = timing.get(name, 0.0) + time.perf_counter() - ts
                    acc[name].append(metrics(est, truth, px_scale))
        row: dict[str, dict] = {}
        raw_jitter = float(np.mean([m["jitter"] for m in acc["raw"]]))
        for name, ms in acc.items():
            r = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
            r["jitter_reduction"] = 1.0 - r["jitter"] / raw_jitter
            row[name] = {k: round(v, 4) for k, v in r.items()}
        row["truth"] = {"jitter": round(float(np.mean(truth_jitter)), 4)}
        results[f"sigma_{sigma:g}px"] = row
    n_tracks = a.clips * a.draws * len(a.sigma)
    out = {
        "clips": a.clips, "frames": a.frames, "fps": a.fps, "frame_size": a.frame_size,
        "face_px_mean": round(float(np.mean([face_scale(t).mean() for t in truths])), 1),
        "noise": f"gaussian, sigma px per coordinate at a {FACE_PX:g} px face",
        "results": results,
        "ms_per_1000_frames": {k: round(1000 * v / n_tracks / a.frames * 1000, 2) for k, v in timing.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    from progressive_swap.core.io import print_json

    print_json(out, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
