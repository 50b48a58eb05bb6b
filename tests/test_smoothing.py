"""Landmark smoothing against synthetic tracks with known truth and known noise."""
from __future__ import annotations

import numpy as np
import pytest

from progressive_swap.core import align
from progressive_swap.core.landmarks import MEAN_FACE
from progressive_swap.extract.smoothing import face_scale, one_euro, savgol, segments, smooth_track

FPS = 25.0


def moving_face(n: int = 200, size: float = 200.0, seed: int = 0) -> np.ndarray:
    """A rigid face wandering slowly (0.2–0.6 Hz) with one fast head move: ``(n, 68, 2)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    cx = 400 + 60 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6)) + 80 * np.clip((t - 4) / 0.3, 0, 1)
    cy = 300 + 40 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6))
    ang = 0.15 * np.sin(2 * np.pi * 0.2 * t)
    s = size * (1 + 0.1 * np.sin(2 * np.pi * 0.25 * t))
    base = MEAN_FACE - MEAN_FACE.mean(0)
    out = np.empty((n, 68, 2))
    for i in range(n):
        c, si = np.cos(ang[i]), np.sin(ang[i])
        out[i] = s[i] * base @ np.array([[c, si], [-si, c]]) + [cx[i], cy[i]]
    return out


def jitter(x: np.ndarray) -> float:
    return float(np.linalg.norm(x[2:] - 2 * x[1:-1] + x[:-2], axis=-1).mean())


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


@pytest.fixture(scope="module")
def noisy():
    truth = moving_face()
    noise = np.random.default_rng(1).normal(0, 1.5, truth.shape)
    return truth, truth + noise


def test_face_scale_matches_alignment_face_size():
    lm = moving_face(3)[1]
    assert face_scale(lm) == pytest.approx(align.face_size(align.alignment_matrix(lm, "full")), rel=1e-6)
    assert face_scale(moving_face(3)).shape == (3,)


@pytest.mark.parametrize("method", ["savgol", "one_euro"])
def test_smoothing_reduces_jitter_without_adding_error(noisy, method):
    truth, x = noisy
    y = smooth_track(x, FPS, method)
    assert y.shape == x.shape
    raw_jit, sm_jit = jitter(x), jitter(y)
    reduction = 1 - (sm_jit - jitter(truth)) / (raw_jit - jitter(truth))  # of the noise's jitter
    # The causal filter trades jitter for lag; the offline one gets both.
    assert reduction > (0.8 if method == "savgol" else 0.35), reduction
    assert rms(y, truth) < (0.7 if method == "savgol" else 1.25) * rms(x, truth)


def test_savgol_has_no_lag_on_a_ramp():
    x = np.linspace(0, 300, 60)[:, None, None] + MEAN_FACE[None] * 150
    np.testing.assert_allclose(savgol(x, FPS), x, atol=1e-9)


def test_one_euro_lag_is_bounded_on_fast_motion():
    # 6 face sizes per second: a fast pan. Lag stays below one frame.
    v = 6 * 150 / FPS
    x = (np.arange(50) * v)[:, None, None] * np.array([1.0, 0.0]) + MEAN_FACE * 150  # moving right
    y = one_euro(x, FPS)
    lag = (x[-10:, :, 0] - y[-10:, :, 0]).mean() / v
    assert 0 <= lag < 1.0


def test_one_euro_is_resolution_free(noisy):
    _, x = noisy
    y1 = one_euro(x, FPS)
    y4 = one_euro(4 * x, FPS)
    np.testing.assert_allclose(y4, 4 * y1, rtol=1e-9, atol=1e-9)


def test_one_euro_variable_frame_rate_matches_constant():
    x = moving_face(20)
    t = np.arange(20) / FPS
    np.testing.assert_allclose(one_euro(x, times=t), one_euro(x, FPS), atol=1e-9)


def test_segments_split_on_gaps_cuts_and_invalid():
    fi = [0, 1, 2, 5, 6, 7, 8, 9]
    valid = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)
    assert segments(8, fi, cuts=[1], valid=valid) == [(0, 1), (1, 3), (3, 5), (6, 8)]
    assert segments(3) == [(0, 3)]
    assert segments(0) == []
    with pytest.raises(ValueError, match="increasing"):
        segments(2, [3, 3])


@pytest.mark.parametrize("method", ["savgol", "one_euro"])
def test_no_smoothing_across_cuts_or_gaps(noisy, method):
    truth, x = noisy
    x = x.copy()
    x[100:] += 500  # a cut: another shot
    y = smooth_track(x, FPS, method, cuts=[100])
    np.testing.assert_allclose(y[:100], smooth_track(x[:100], FPS, method))
    np.testing.assert_allclose(y[100:], smooth_track(x[100:], FPS, method))
    # A missing frame (NaN) splits too and stays NaN.
    x[50] = np.nan
    y = smooth_track(x, FPS, method, cuts=[100])
    assert np.isnan(y[50]).all() and np.isfinite(np.delete(y, 50, 0)).all()
    np.testing.assert_allclose(y[51:100], smooth_track(x[51:100], FPS, method))
    # A gap in frame numbers splits as well.
    fi = np.r_[np.arange(100), np.arange(100, 200) + 7]
    y = smooth_track(x[:50], FPS, method, frame_index=fi[:50])
    np.testing.assert_allclose(y, smooth_track(x[:50], FPS, method))


def test_short_segments_and_none():
    x = moving_face(3)
    np.testing.assert_array_equal(smooth_track(x, FPS, "savgol"), x)  # too short to fit
    np.testing.assert_array_equal(smooth_track(x, FPS, "none"), x)
    with pytest.raises(ValueError, match="unknown smoothing"):
        smooth_track(x, FPS, "kalman")
    with pytest.raises(ValueError, match=r"\(T, 68, 2\)"):
        smooth_track(x[:, :10], FPS)
