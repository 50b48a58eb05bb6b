"""Issue #14: the 256/512/1024 recipes' cost per training image, and warm starts across the change."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from progressive_swap.cli.config import compose
from progressive_swap.core.weights import safe_load
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.model.summary import summarize
from progressive_swap.train.module import CKPT_KEY
from progressive_swap.train.warmstart import warm_start

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"
# FaceSwap Phaze-A presets dny256 / dny512 / dny1024: train GFLOP per image (fp32, FlopCounterMode).
PEER = {256: 32.0, 512: 129.0, 1024: 518.0}


def recipe_costs(recipe: str, model: str | None = None) -> dict[int, float]:
    cfg = compose("train", [f"recipe={recipe}"] + ([f"model={model}"] if model else []))
    schedule = instantiate(cfg.schedule, identities=2, world_size=1)
    arch = instantiate(cfg.model, num_identities=2, final_res=schedule.final_res, start_res=schedule.start_res)
    with torch.device("meta"):
        net = CombAutoencoder(arch)
    return {r["stage_res"]: r["gflops_train"] for r in summarize(net)}


@pytest.mark.parametrize("recipe", ["256", "512", "1024"])
def test_model_lean_costs_at_most_half_the_peers_preset_at_every_stage(recipe):
    """model=lean, the default of issue #14 and the fast option since issue #27, keeps the cost goals."""
    costs = recipe_costs(recipe, model="lean")
    assert list(costs) == [256, 512, 1024][: len(costs)]
    for res, gflops in costs.items():
        assert gflops <= 0.5 * PEER[res], f"recipe {recipe}, {res} px: {gflops:.1f} GFLOP/img"
    if recipe == "1024":
        assert costs[256] <= 0.15 * costs[1024], costs
        assert costs[256] < costs[512] < costs[1024]


def test_the_default_costs_what_docs_efficiency_says_and_a_third_of_comb():
    """Issue #27 chose model=half at the largest budget: it gives up the cost goal (docs/efficiency.md)."""
    costs, comb = recipe_costs("1024"), recipe_costs("1024", model="comb")
    assert [round(costs[r]) for r in (256, 512, 1024)] == [335, 424, 657], costs
    assert all(costs[r] < 0.4 * comb[r] for r in costs)
    assert costs[256] > 0.5 * PEER[256]  # the goal it does not meet


def test_the_former_design_is_what_the_issue_measured():
    """model=comb is kept for old runs: the goal tests above would fail on it."""
    costs = recipe_costs("1024", model="comb")
    assert costs[256] == pytest.approx(1010.2, rel=0.01) and costs[1024] == pytest.approx(1720.3, rel=0.01)
    assert costs[256] > 0.5 * PEER[256]


def test_a_v0_1_checkpoint_warm_starts_a_new_design_and_says_what_matched():
    old = CombArch.from_dict(safe_load(LEGACY / "last.ckpt")[CKPT_KEY]["arch"])
    assert old.block == "conv"  # written before the field existed
    # Same channel schedule, separable blocks: the 1x1 adapters, the dense 1x1 skips and the
    # colour statistics carry over; the 3x3 convolutions are new.
    sep = CombAutoencoder(CombArch(**{**old.as_dict(), "block": "dwsep"}))
    result = warm_start(sep, LEGACY / "last.ckpt")
    assert any(".from_rgb." in n for n in result["loaded"]) and any(".to_rgb." in n for n in result["loaded"])
    assert any(n.endswith("conv1.weight") for n in result["skipped"])
    assert any("depthwise" in n for n in result["new"])
    # The 256 recipe's model shares no weight with the tiny v0.1 run, only the identities'
    # colour statistics; the table says so (and a file with nothing at all in common is refused).
    cfg = compose("train", ["recipe=256"])
    lean = CombAutoencoder(instantiate(cfg.model, num_identities=2, final_res=256, start_res=256))
    result = warm_start(lean, LEGACY / "last.ckpt")
    assert result["loaded"] == ["identity_colour"] and len(result["new"]) > 50
    three = CombAutoencoder(instantiate(cfg.model, num_identities=3, final_res=256, start_res=256))
    with pytest.raises(ValueError, match="no parameter .* matches"):
        warm_start(three, LEGACY / "last.ckpt")
