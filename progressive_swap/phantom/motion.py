"""Smooth random phantom motion over time: head turns, talking, blinks, drift.

Used to make phantom videos whose frames behave like footage: slow wandering with a few fast
head turns (for temporal-smoothing tests), blinks every few seconds, a talking mouth.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from progressive_swap.phantom.params import (
    PITCH_RANGE,
    ROLL_RANGE,
    YAW_RANGE,
    FrameParams,
    Occluder,
    sample_frame,
    sample_occluder,
)


def _wander(rng: np.random.Generator, t: np.ndarray, amp: float, fmin: float, fmax: float, k: int = 3) -> np.ndarray:
    """Sum of ``k`` sinusoids with random frequencies in ``[fmin, fmax]`` Hz; peak ≈ ``amp``."""
    out = np.zeros_like(t)
    for _ in range(k):
        out += np.sin(2 * np.pi * rng.uniform(fmin, fmax) * t + rng.uniform(0, 2 * np.pi))
    return amp * out / np.sqrt(k) / 1.2


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def sample_trajectory(
    seed: int,
    n_frames: int,
    fps: float = 24.0,
    occluders: float = 0.0,
    base: FrameParams | None = None,
) -> list[FrameParams]:
    """A smooth random sequence of frame params (deterministic in ``seed``).

    The head wanders slowly (sums of 0.05–0.5 Hz sinusoids) and makes a fast turn
    (15–30° in 0.15–0.35 s) about every three seconds; the eyes blink every 1.5–5 s (a blink
    lasts ~0.2 s); the mouth opens and closes at syllable rate (3–5 Hz) while talking; smile,
    brow raise, position and scale drift slowly. Light and background stay fixed. With
    probability ``occluders`` an occluder crosses the face during part of the clip.

    Args:
        seed: trajectory seed.
        n_frames: number of frames (≥ 1).
        fps: frame rate, Hz: all rates above are in seconds, so they hold at any fps.
        occluders: probability that an occluder appears.
        base: start from these params (light, background, placement) instead of random ones.

    Returns:
        ``n_frames`` :class:`FrameParams`.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rng = np.random.default_rng([int(seed), 0x7A])
    base = base if base is not None else sample_frame(rng)
    t = np.arange(n_frames) / float(fps)
    duration = n_frames / float(fps)

    yaw = 0.4 * base.yaw + _wander(rng, t, 14.0, 0.05, 0.4)
    # Fast turns: smooth steps, alternating direction so the head does not drift away.
    sign = rng.choice([-1.0, 1.0])
    for t0 in np.sort(rng.uniform(0, duration, rng.poisson(duration / 3.0) + (duration >= 1.0))):
        yaw += sign * rng.uniform(15, 30) * _smoothstep((t - t0) / rng.uniform(0.15, 0.35))
        sign = -sign
    pitch = 0.4 * base.pitch + _wander(rng, t, 8.0, 0.05, 0.5)
    roll = 0.4 * base.roll + _wander(rng, t, 7.0, 0.05, 0.4)

    blink = np.zeros(n_frames)
    tb = rng.uniform(0.2, 2.5)
    while tb < duration:
        close, hold, open_ = rng.uniform(0.06, 0.1), rng.uniform(0.0, 0.05), rng.uniform(0.08, 0.14)
        up = np.clip((t - tb) / close, 0, 1)
        down = np.clip((t - tb - close - hold) / open_, 0, 1)
        blink = np.maximum(blink, up * (1 - down))
        tb += close + hold + open_ + rng.uniform(1.5, 5.0)

    talking = np.clip(0.5 + _wander(rng, t, 1.0, 0.1, 0.4), 0, 1)
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3))
    mouth = np.clip(talking * syllables * rng.uniform(0.4, 0.9) + 0.1 * _wander(rng, t, 1.0, 0.2, 1.0), 0, 1)
    smile = np.clip(base.smile * 0.5 + _wander(rng, t, 0.4, 0.05, 0.3), 0, 1)
    brow = np.clip(base.brow_raise * 0.5 + _wander(rng, t, 0.4, 0.05, 0.4), 0, 1)
    cx = np.clip(base.cx + _wander(rng, t, 0.03, 0.03, 0.3), 0.3, 0.7)
    cy = np.clip(base.cy + _wander(rng, t, 0.02, 0.03, 0.3), 0.3, 0.6)
    scale = base.scale * (1 + _wander(rng, t, 0.05, 0.03, 0.2))

    occ: list[Occluder | None] = [None] * n_frames
    if rng.uniform() < occluders:
        o = sample_occluder(rng)
        t0 = rng.uniform(0, 0.6) * duration
        t1 = min(duration, t0 + rng.uniform(0.3, 0.8) * duration)
        dx, dy = rng.uniform(-0.6, 0.6, 2)
        for i, ti in enumerate(t):
            if t0 <= ti <= t1:
                f = (ti - t0) / max(t1 - t0, 1e-6) - 0.5
                occ[i] = replace(o, x=float(o.x + dx * f), y=float(o.y + dy * f))

    return [
        replace(
            base,
            yaw=float(np.clip(yaw[i], -YAW_RANGE, YAW_RANGE)),
            pitch=float(np.clip(pitch[i], -PITCH_RANGE, PITCH_RANGE)),
            roll=float(np.clip(roll[i], -ROLL_RANGE, ROLL_RANGE)),
            mouth_open=float(mouth[i]),
            smile=float(smile[i]),
            blink=float(blink[i]),
            brow_raise=float(brow[i]),
            cx=float(cx[i]),
            cy=float(cy[i]),
            scale=float(scale[i]),
            occluder=occ[i],
        )
        for i in range(n_frames)
    ]
