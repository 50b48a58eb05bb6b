"""Temporal smoothing of landmark tracks: a causal One Euro filter and a zero-phase offline one.

Detectors jitter by a pixel or two from frame to frame; crops made from raw landmarks then
shimmer, and the swapped face swims in the composite. Both smoothers work on ``(T, 68, 2)``
tracks (one face over ``T`` frames) and restart at every *segment* boundary: shot cuts and
gaps in the track (a frame without the face) must never be smoothed across.

* :func:`savgol` (offline, default for video): a Savitzky–Golay filter (``scipy.signal``)
  applied along time. It is zero-phase, so it has no lag, and it preserves the local
  polynomial motion of fast head turns much better than a moving average. Being linear, it is
  resolution-free by construction; its window is given in seconds, so it is fps-free too.
* :func:`one_euro` (causal, for streaming): Casiez et al.'s One Euro filter. Its adaptive
  cutoff ``min_cutoff + beta * speed`` uses the face's speed in **face sizes per second**
  (speed divided by :func:`face_scale`), so the same ``beta`` works for a 100 px and a
  2000 px face. A causal filter must trade jitter for lag: at the defaults it halves the
  jitter with ~0.3 frame lag on fast turns; use it only where the whole track is not
  available.

Convention: landmarks are frame pixels (x right, y down, pixel centres at integers); NaN rows
mark frames where the face is missing (they split segments and stay NaN).

Numbers (``tools/bench_smoothing.py``, phantom tracks, σ = 1.5 px noise on a 256 px face):
see ``docs/extract.md``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.signal import savgol_filter

from progressive_swap.core.landmarks import STABLE_POINTS, template_uv

METHODS = ("savgol", "one_euro", "none")

_STABLE = list(STABLE_POINTS)
_TEMPLATE = template_uv("full")[_STABLE]
_TEMPLATE_RMS = float(np.sqrt(((_TEMPLATE - _TEMPLATE.mean(0)) ** 2).sum(1).mean()))


def face_scale(landmarks: np.ndarray) -> np.ndarray:
    """Face size in pixels, ``(...,)`` for ``(..., 68, 2)`` landmarks.

    The RMS spread of the stable points (brows, eyes, nose) divided by the same spread in the
    ``full`` crop template: i.e. the side of the ``full`` aligned crop in frame pixels, the
    same quantity as ``core.align.face_size(core.align.alignment_matrix(lm, "full"))``, vectorised
    and without a fit. Rotation-invariant; NaN where landmarks are NaN.
    """
    p = np.asarray(landmarks, np.float64)[..., _STABLE, :]
    spread = np.sqrt(((p - p.mean(-2, keepdims=True)) ** 2).sum(-1).mean(-1))
    return spread / _TEMPLATE_RMS


def segments(
    n: int,
    frame_index: Sequence[int] | np.ndarray | None = None,
    cuts: Sequence[int] = (),
    valid: np.ndarray | None = None,
    max_gap: int = 1,
) -> list[tuple[int, int]]:
    """Split ``n`` track samples into contiguous runs to smooth separately.

    Args:
        n: number of samples.
        frame_index: ``(n,)`` increasing frame numbers of the samples; a jump larger than
            ``max_gap`` starts a new segment. None: samples are consecutive frames.
        cuts: frame numbers where a new shot starts (a segment starts at the first sample whose
            frame number is ``>=`` the cut).
        valid: ``(n,)`` bool; invalid samples (e.g. NaN landmarks) are left out and split.
        max_gap: largest frame-number step inside one segment (1 = no missing frame).

    Returns:
        ``[(start, stop), ...]`` half-open sample ranges, in order, each non-empty.
    """
    fi = np.arange(n) if frame_index is None else np.asarray(frame_index, np.int64)
    if fi.shape != (n,):
        raise ValueError(f"frame_index must have shape ({n},), got {fi.shape}")
    if n > 1 and np.any(np.diff(fi) <= 0):
        raise ValueError("frame_index must be strictly increasing")
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    start = np.zeros(n, bool)
    if n:
        start[0] = True
        start[1:] = np.diff(fi) > max_gap
        for c in cuts:
            k = int(np.searchsorted(fi, c, side="left"))
            if k < n:
                start[k] = True
        start[1:] |= ~ok[:-1]  # a sample after an invalid one starts anew
    out: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if not ok[i]:
            i += 1
            continue
        j = i + 1
        while j < n and ok[j] and not start[j]:
            j += 1
        out.append((i, j))
        i = j
    return out


def _check(track: np.ndarray) -> np.ndarray:
    x = np.asarray(track, np.float64)
    if x.ndim != 3 or x.shape[1:] != (68, 2):
        raise ValueError(f"landmark track must be (T, 68, 2), got {x.shape}")
    return x


def savgol(track: np.ndarray, fps: float, window: float = 0.3, polyorder: int = 2) -> np.ndarray:
    """Zero-phase Savitzky–Golay smoothing of one contiguous segment.

    Args:
        track: ``(T, 68, 2)`` frame pixels, no NaN, consecutive frames.
        fps: frame rate (Hz).
        window: window length in seconds (rounded to an odd number of frames, at least
            ``polyorder + 2``). Shorter segments get a shorter window; segments of fewer than
            ``polyorder + 2`` frames are returned unchanged.
        polyorder: degree of the local polynomial.

    Returns:
        ``(T, 68, 2)`` float64.
    """
    x = _check(track)
    t = len(x)
    w = int(round(window * fps)) | 1
    w = max(w, polyorder + 2 + (polyorder % 2 == 0))
    w = min(w, t if t % 2 else t - 1)
    if w <= polyorder + 1:
        return x.copy()
    # mode="interp" fits the polynomial to the first/last window at the ends: no padding bias.
    return savgol_filter(x, w, polyorder, axis=0, mode="interp")


def one_euro(
    track: np.ndarray,
    fps: float | None = None,
    times: np.ndarray | None = None,
    min_cutoff: float = 1.0,
    beta: float = 20.0,
    d_cutoff: float = 3.0,
    shared: bool = False,
) -> np.ndarray:
    """Causal One Euro filter of one contiguous segment.

    Args:
        track: ``(T, 68, 2)`` frame pixels, no NaN.
        fps: frame rate (Hz), used when ``times`` is None.
        times: ``(T,)`` seconds (variable frame rate); NaN steps fall back to ``1 / fps``.
        min_cutoff: cutoff (Hz) when the face is still: lower = smoother, more lag when slow.
        beta: cutoff increase (Hz) per face size per second of speed: higher = less lag on
            fast motion, more jitter. Resolution-free because speed is divided by the face
            size (:func:`face_scale`).
        d_cutoff: cutoff (Hz) of the speed estimate.
        shared: one cutoff per frame from the mean speed of all points (the face is filtered
            as a whole) instead of one per point. Per point (default) lets a talking mouth
            through while the still brows are smoothed hard.

    Returns:
        ``(T, 68, 2)`` float64; sample 0 is unchanged.
    """
    x = _check(track)
    t = len(x)
    if fps is None and times is None:
        raise ValueError("one_euro needs fps or times")
    default_dt = 1.0 / float(fps) if fps else None
    if times is not None:
        dts = np.diff(np.asarray(times, np.float64), prepend=np.nan)
        if default_dt is not None:
            dts = np.where(np.isfinite(dts) & (dts > 0), dts, default_dt)
        elif not np.all(np.isfinite(dts[1:]) & (dts[1:] > 0)):
            raise ValueError("times must increase (or pass fps as a fallback)")
    else:
        dts = np.full(t, default_dt)
    scale = face_scale(x)

    def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out = np.empty_like(x)
    if t == 0:
        return out
    out[0] = prev = x[0]
    dprev = np.zeros_like(x[0])
    for i in range(1, t):
        dt = dts[i]
        dx = (x[i] - prev) / dt
        a_d = alpha(d_cutoff, dt)
        dprev = a_d * dx + (1.0 - a_d) * dprev
        speed = np.linalg.norm(dprev, axis=1) / max(scale[i], 1e-6)  # (68,) face sizes / s
        if shared:
            speed = np.full_like(speed, speed.mean())
        a = alpha(min_cutoff + beta * speed, dt)[:, None]
        prev = a * x[i] + (1.0 - a) * prev
        out[i] = prev
    return out


def smooth_track(
    track: np.ndarray,
    fps: float,
    method: str = "savgol",
    frame_index: Sequence[int] | np.ndarray | None = None,
    times: np.ndarray | None = None,
    cuts: Sequence[int] = (),
    max_gap: int = 1,
    **params: float,
) -> np.ndarray:
    """Smooth a whole face track, restarting at cuts and gaps.

    Args:
        track: ``(T, 68, 2)`` frame pixels; rows with NaN are missing frames (kept NaN).
        fps: frame rate (Hz) of the footage.
        method: ``savgol`` (offline, zero lag), ``one_euro`` (causal) or ``none``.
        frame_index: ``(T,)`` increasing frame numbers (gaps split segments); default 0..T-1.
        times: ``(T,)`` seconds, for ``one_euro`` on variable frame-rate footage.
        cuts: frame numbers where a new shot starts.
        max_gap: largest frame step smoothed across (1 = none).
        **params: passed to :func:`savgol` or :func:`one_euro`.

    Returns:
        ``(T, 68, 2)`` float64.

    Example:
        >>> tr = np.random.default_rng(0).normal(100, 1, (50, 68, 2))
        >>> smooth_track(tr, fps=25).shape
        (50, 68, 2)
    """
    x = _check(track)
    if method not in METHODS:
        raise ValueError(f"unknown smoothing method {method!r}; choose one of {', '.join(METHODS)}")
    out = x.copy()
    if method == "none":
        return out
    valid = np.isfinite(x).all(axis=(1, 2))
    for a, b in segments(len(x), frame_index, cuts, valid, max_gap):
        if method == "savgol":
            out[a:b] = savgol(x[a:b], fps, **params)
        else:
            tt = None if times is None else np.asarray(times, np.float64)[a:b]
            out[a:b] = one_euro(x[a:b], fps, tt, **params)
    return out
