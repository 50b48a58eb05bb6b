"""Files written before the package's layout changed (v0.1, commit d2f704c) still load.

The fixtures in ``tests/fixtures/legacy_0_1`` were written by that code: two 6-face blob face
sets, and a tiny run's ``last.ckpt`` and ``model.safetensors`` trained on them.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from progressive_swap import faceset
from progressive_swap.core.weights import load_weights, safe_load
from progressive_swap.export.swapper import load_model
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.train.module import CKPT_KEY, resume_problem
from progressive_swap.train.warmstart import warm_start

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"


@pytest.mark.parametrize("name", ["id0", "id1"])
def test_a_face_set_written_before_the_move_opens_and_validates(name):
    fs = faceset.open(LEGACY / name)
    assert len(fs) == 6 and fs.size == 32
    assert fs.validate(deep=True) == []
    assert fs.image(5).shape == (32, 32, 3)


def test_a_checkpoint_written_before_the_move_loads_for_export_both_ways():
    from_ckpt, info = load_model(LEGACY / "last.ckpt", device="cpu")
    from_weights, _ = load_model(LEGACY / "model.safetensors", device="cpu")
    assert isinstance(from_ckpt.arch, CombArch) and from_ckpt.arch == from_weights.arch
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = from_ckpt(x, 1, 32, source=0), from_weights(x, 1, 32, source=0)
    for u, v in zip(a, b):
        assert torch.isfinite(u).all()
        torch.testing.assert_close(u, v)


def test_a_checkpoint_written_before_the_move_warm_starts_and_resumes_the_same_architecture():
    state = safe_load(LEGACY / "last.ckpt")[CKPT_KEY]
    arch = CombArch.from_dict(state["arch"])
    model = CombAutoencoder(arch)
    result = warm_start(model, LEGACY / "last.ckpt")
    assert not result["skipped"] and not result["new"]
    assert set(result["loaded"]) == set(load_weights(LEGACY / "model.safetensors"))
    assert resume_problem(state, arch, world_size=1) is None
    other = CombArch(**{**arch.as_dict(), "latent_channels": arch.latent_channels * 2})
    assert "another architecture" in resume_problem(state, other)


def test_the_legacy_run_config_names_the_same_architecture():
    cfg = OmegaConf.load(LEGACY / "config.yaml")
    arch = CombArch.from_dict(safe_load(LEGACY / "last.ckpt")[CKPT_KEY]["arch"])
    assert cfg.model.latent_channels == arch.latent_channels and cfg.model.channel_base == arch.channel_base
