"""bench_quality on a tiny phantom-trained checkpoint (the metric maths has its own tests)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from progressive_swap.cli import train as train_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quality_runs_on_a_tiny_phantom_checkpoint(tmp_path):
    run = tmp_path / "run"
    argv = [
        "recipe=demo", f"out={run}", "data.num_workers=0", "preview_every=0",
        "data.phantom.faces=8", "data.phantom.size=32", "data.phantom.occluders=0",
        "model.channel_base=256", "model.channel_max=16", "model.channel_min=8", "model.latent_channels=8",
        "schedule.stages=[{res:16,images:32,batch:4,lr:1e-3},{res:32,images:16,fade:16,batch:4,lr:1e-3}]",
    ]
    assert train_cli.main(argv) == 0
    out, report = tmp_path / "q.json", tmp_path / "q.png"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_quality.py"),
            str(run / "model.safetensors"),
            str(run / "last.ckpt"),
            "--frames",
            "1",
            "--video-frames",
            "3",
            "--out",
            str(out),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(out.read_text())
    assert len(results) == 2
    for q in results:
        assert q["stage_res"] == 32 and q["identities"] == ["id0", "id1"]
        for k in ("swap_psnr", "swap_ssim", "frame_psnr", "recon_psnr", "hf_energy"):
            assert math.isfinite(q[k]), k
        assert 0 < q["swap_psnr"] < 60 and -1 <= q["swap_ssim"] <= 1
        assert 10 < q["baseline_colour_transfer_psnr"] < 60 and 15 < q["baseline_blurred_truth_psnr"] < 60
        assert q["identity_gain_db"] == pytest.approx(q["swap_psnr"] - q["baseline_colour_transfer_psnr"], abs=1e-6)
        assert q["swap_recon_gap_db"] == pytest.approx(q["recon_psnr"] - q["swap_psnr"])
        assert -1 <= q["shape_score"] <= q["shape_score_truth"] <= 1
        assert q["swap_psnr_colour_matched"] == q["swap_psnr"]  # colour_norm: scored as it is
        t = q["temporal"]
        assert set(t) == {"truth", "noisy", "smoothed", "exact"} and all(v >= 0 for v in t.values())
    assert results[0]["swap_psnr"] == pytest.approx(results[1]["swap_psnr"])  # same weights, two file formats
    page = cv2.imread(str(report))
    assert page is not None and page.shape[0] > 2 * 160


def phantom_pair(frame: int, frame_px: int, crop: int):
    """Two phantom identities in one held-out frame, aligned to A's crop: A's face, B's (the true
    swap), and their visible masks."""
    from progressive_swap.core import align
    from progressive_swap.phantom import renderer as phantom

    ia, ib = phantom.sample_identity(1000), phantom.sample_identity(1001)
    f = phantom.sample_frame((0, 7919, 0, frame))
    ra, rb = phantom.render(ia, f, frame_px), phantom.render(ib, f, frame_px)
    m = align.alignment_matrix(ra.landmarks, "whole")
    src = align.warp_to_crop(ra.image, m, crop).astype(np.float32) / 255
    truth = align.warp_to_crop(rb.image, m, crop).astype(np.float32) / 255
    return src, truth, align.warp_to_crop(ra.visible_mask, m, crop), align.warp_to_crop(rb.visible_mask, m, crop)


def test_identity_scores_have_their_known_answers():
    """Recolouring the source scores a gain of 0 and A's outline; the truth scores the cap and B's
    outline; a swap half way scores in between."""
    from progressive_swap.eval.quality import PSNR_CAP, identity_scores

    src, truth, vis_a, vis_b = phantom_pair(0, 128, 64)
    recoloured = np.clip(src * 0.9 + 0.05, 0, 1)

    none = identity_scores(recoloured, vis_a, truth, recoloured, vis_a, vis_b)
    best = identity_scores(truth, vis_b, truth, recoloured, vis_a, vis_b)
    half = identity_scores((truth + recoloured) / 2, vis_b, truth, recoloured, vis_a, vis_b)
    assert none["identity_gain_db"] == 0.0
    assert best["shape_score_truth"] > 0.01  # the two phantom faces' outlines differ
    assert none["shape_transfer"] == pytest.approx(-1.0) and best["shape_transfer"] == pytest.approx(1.0)
    ref = 10 * np.log10(1 / np.average((recoloured - truth) ** 2, weights=np.repeat(vis_b[..., None], 3, -1)))
    assert best["identity_gain_db"] == pytest.approx(PSNR_CAP - ref)
    assert half["identity_gain_db"] == pytest.approx(20 * np.log10(2), abs=1e-6)  # half the error: +6.02 dB
    # a design that keeps A's colours is recoloured as the reference is: the unchanged source then
    # scores exactly the reference
    from progressive_swap.eval.quality import colour_matched

    stats_a, stats_b = np.array([[0.6, 0.5, 0.4], [0.2, 0.2, 0.2]]), np.array([[0.3, 0.2, 0.2], [0.1, 0.1, 0.1]])
    reference = np.clip((src - stats_a[0]) / stats_a[1] * stats_b[1] + stats_b[0], 0, 1)
    assert np.allclose(colour_matched(src, stats_a, stats_b), reference, atol=1e-6)


def test_feature_transfer_says_whose_features_whatever_the_blur():
    """B's features score 1 sharp or blurred, A's recoloured score -1, and the average of the two
    faces about 0, although PSNR puts the average well above recolouring A."""
    from progressive_swap.eval.quality import identity_scores

    src, truth, vis_a, vis_b = phantom_pair(1, 256, 128)
    recoloured = np.clip(src * 0.8 + 0.1, 0, 1)

    def score(x):
        return identity_scores(x, vis_b, truth, recoloured, vis_a, vis_b, src)

    assert score(truth)["feature_transfer"] == pytest.approx(1.0)
    assert score(recoloured)["feature_transfer"] == pytest.approx(-1.0, abs=1e-3)
    assert score(cv2.GaussianBlur(truth, (0, 0), 2.0))["feature_transfer"] > 0.6  # blur keeps B's features
    average = score((truth + recoloured) / 2)
    assert abs(average["feature_transfer"]) < 0.25 and average["identity_gain_db"] > 3.0


def test_identity_colour_is_the_models_own_or_measured_on_the_phantom():
    from progressive_swap.eval.quality import QualitySettings, identity_colour
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
    from progressive_swap.phantom import renderer as phantom

    idents = [phantom.sample_identity(k) for k in range(2)]
    arch = dict(
        final_res=32, start_res=16, latent_res=8, latent_channels=8, channel_base=256, channel_max=16, channel_min=8
    )
    model = CombAutoencoder(CombArch(2, **arch, colour_norm=True))
    model.set_identity_colour(torch.tensor([[0.7, 0.6, 0.5], [0.3, 0.2, 0.1]]), torch.full((2, 3), 0.1))
    np.testing.assert_allclose(
        identity_colour(model, idents, 32, "whole", QualitySettings())[:, 0, 0], [0.7, 0.3], rtol=1e-6
    )
    measured = identity_colour(CombAutoencoder(CombArch(2, **arch)), idents, 32, "whole", QualitySettings())
    assert measured.shape == (2, 2, 3) and ((measured > 0) & (measured < 1)).all()
    assert measured[0, 0].mean() > measured[1, 0].mean() + 0.2  # identity 0 is the pale one, 1 the dark one


@pytest.mark.slow
def test_bench_growth_averages_seeds_and_reuses_complete_runs(tmp_path):
    work, out = tmp_path / "work", tmp_path / "g.json"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "bench_growth.py"),
        "--low",
        "16",
        "--high",
        "32",
        "--budget",
        "64",
        "--batch",
        "4",
        "--points",
        "2",
        "--frames",
        "1",
        "--work",
        str(work),
        "--out",
        str(out),
        "data.num_workers=0",
        "data.phantom.faces=8",
        "data.phantom.occluders=0",
        "model.channel_base=256",
        "model.channel_max=16",
        "model.channel_min=8",
        "model.latent_channels=8",
        "--seeds",
        "0",
        "1",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    g = json.loads(out.read_text())
    assert set(g["per_seed"]) == {"0", "1"} and set(g["curves"]) == {"grow", "scratch", "warm"}
    for k, curve in g["curves"].items():
        a, b = g["per_seed"]["0"][k], g["per_seed"]["1"][k]
        assert len(curve) == len(a) == len(b) >= (1 if k == "warm" else 2)  # warm trains half the budget
        for p, pa, pb in zip(curve, a, b):
            assert p["swap_psnr"] == pytest.approx((pa["swap_psnr"] + pb["swap_psnr"]) / 2)
            assert p["images"] == pa["images"] == pb["images"]
    assert g["curves"]["grow"][-1]["images"] == g["curves"]["scratch"][-1]["images"] == 64
    assert g["per_seed"]["0"]["scratch"] != g["per_seed"]["1"]["scratch"]  # the seed reached training
    assert g["scratch_final_swap_psnr"] == g["curves"]["scratch"][-1]["swap_psnr"]
    stamp = (work / "seed1" / "scratch" / "model.safetensors").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # complete runs are reused
    assert r.returncode == 0 and (work / "seed1" / "scratch" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads(out.read_text())["curves"] == g["curves"]
