"""Quality metrics against cases with known answers."""
import numpy as np
import pytest

from progressive_swap.core.metrics import flicker, high_frequency_kept, masked_psnr, masked_ssim


def _img(seed=0, n=64):
    return np.random.default_rng(seed).random((n, n, 3))


def test_identical_images_give_infinite_psnr_and_ssim_one():
    x = _img()
    assert masked_psnr(x, x) == float("inf")
    assert masked_ssim(x, x) == pytest.approx(1.0, abs=1e-9)


def test_psnr_of_a_known_error_and_mask_excludes_outside():
    x = _img()
    y = x + 0.1  # MSE 0.01 → 20 dB
    assert masked_psnr(y, x) == pytest.approx(20.0, abs=1e-9)
    m = np.zeros(x.shape[:2])
    m[:, :32] = 1
    z = x.copy()
    z[:, 32:] = 0
    assert masked_psnr(z, x, m) == float("inf")
    assert masked_ssim(_img(1), x) < 0.2


def test_a_known_frequency_filter_removes_a_known_share_of_detail():
    x = _img(2)
    cutoff = 16.0
    f = np.fft.fft2(x, axes=(0, 1))
    fy = np.fft.fftfreq(64) * 64
    r = np.sqrt(fy[:, None] ** 2 + fy[None, :] ** 2)
    half = f * np.where(r > cutoff, 0.5, 1.0)[..., None]  # halve every high frequency
    y = np.real(np.fft.ifft2(half, axes=(0, 1)))
    kept = high_frequency_kept(y, x, cutoff)
    assert kept["energy"] == pytest.approx(0.25, rel=1e-6)
    assert kept["coherent"] == pytest.approx(0.5, rel=1e-6)
    lowpass = np.real(np.fft.ifft2(f * (r <= cutoff)[..., None], axes=(0, 1)))
    assert high_frequency_kept(lowpass, x, cutoff)["energy"] == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_kept(x, x, cutoff)["coherent"] == pytest.approx(1.0)
    # Unrelated noise has energy but no coherent detail.
    noise = high_frequency_kept(_img(3), x, cutoff)
    assert noise["energy"] > 0.5 and abs(noise["coherent"]) < 0.1


def test_a_known_shift_shows_up_in_flicker():
    x = _img(4)
    still = [x] * 5
    assert flicker(still) == 0.0
    shifted = np.roll(x, 1, axis=1)
    jitter = [x, shifted, x, shifted, x]
    want = np.abs(shifted - x).mean()
    assert flicker(jitter) == pytest.approx(want)
    m = np.zeros(x.shape[:2])
    m[:, :1] = 1  # a region where the shift changes nothing... except the wrapped column
    assert flicker(jitter, [m] * 5) == pytest.approx(np.abs(shifted - x)[:, :1].mean())


def test_mask_iou_known_answers():
    from progressive_swap.core.metrics import mask_iou

    a = np.zeros((10, 10))
    b = np.zeros((10, 10))
    a[:, :6] = 0.9  # 60 pixels
    b[:, 3:] = 0.7  # 70 pixels, 30 shared
    assert mask_iou(a, b) == pytest.approx(30 / 100)
    assert mask_iou(a, a) == 1.0 and mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert mask_iou(a, b, threshold=0.8) == 0.0  # b is below the threshold everywhere
