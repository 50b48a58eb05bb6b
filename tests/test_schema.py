"""Typed options: swap-train's schema and the shared choice/bound checks (cli/schema.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
from omegaconf import OmegaConf

from progressive_swap.cli.common import UserError
from progressive_swap.cli.config import compose
from progressive_swap.cli.schema import TrainConfig, check_options, closest, describe, omegaconf_schema


@dataclass
class Toy:
    fmt: Literal["png8", "png16", "exr"] = "png16"
    mode: Optional[Literal["a", "b"]] = None
    window: int = field(default=5, metadata={"min": 1, "help": "frames"})


def test_literal_options_become_plain_types_for_omegaconf_and_are_checked_after():
    cfg = OmegaConf.merge(OmegaConf.structured(omegaconf_schema(Toy)), OmegaConf.from_dotlist(["fmt=exr", "mode=b"]))
    check_options(cfg, Toy)  # allowed values pass
    with pytest.raises(ValueError, match=r"fmt must be one of .*got 'png61' \(did you mean 'png16'"):
        check_options(OmegaConf.merge(cfg, {"fmt": "png61"}), Toy)
    with pytest.raises(ValueError, match="mode must be one of 'a', 'b', got 'c'"):
        check_options(OmegaConf.merge(cfg, {"mode": "c"}), Toy)
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        check_options(OmegaConf.merge(cfg, {"window": 0}), Toy)
    with pytest.raises(Exception):  # a type OmegaConf checks itself
        OmegaConf.merge(cfg, OmegaConf.from_dotlist(["window=many"]))


def test_describe_lists_every_key_with_default_and_choices():
    rows = {k: (d, h) for k, d, h in describe(Toy)}
    assert rows["fmt"] == ("'png16'", "[png8|png16|exr]") and rows["window"] == ("5", "frames")
    assert {k for k, _, _ in describe(TrainConfig)} >= {"seed", "freeze", "augment.warp", "checkpoint.every_minutes"}


def test_closest_suggests_near_misses_only():
    assert "'recipe'" in closest("recipie", ["recipe", "run", "resume"])
    assert closest("zzzz", ["recipe"]) == ""


@pytest.mark.parametrize("override, message", [
    ("freeze=encodr", "did you mean 'encoder'"),
    ("seed=abc", "seed must be an integer, got 'abc'"),
    ("preview_every=-1", "preview_every must be >= 0"),
    ("checkpoint.keep=x", "checkpoint.keep must be an integer"),
    ("recipie=demo", "did you mean 'recipe'"),
    ("augment.wrap=0.1", "did you mean 'augment.warp'"),
])
def test_swap_train_rejects_bad_options_when_composing_with_one_line(override, message):
    with pytest.raises(UserError, match=message) as e:
        compose("train", [override])
    assert "\n" not in str(e.value)


def test_the_recipes_fill_derived_values_from_code_not_yaml():
    cfg = compose("train", ["recipe=512"])
    assert cfg.model.final_res == 512 and cfg.model.start_res == 256
    assert cfg.schedule.identities == cfg.model.num_identities == cfg.derived.identities
    cfg.derived.identities = 3
    assert cfg.module.model.arch.num_identities == 3 and cfg.module.schedule.identities == 3


def test_swap_train_help_lists_every_key_with_its_recipe_value_and_meaning(capsys):
    from progressive_swap.cli import train as train_cli

    assert train_cli.main(["--help", "recipe=512"]) == 0
    out = capsys.readouterr().out
    cfg = compose("train", ["recipe=512"])
    keys = {k.split(".")[0] for k, _, _ in describe(TrainConfig)}
    for key in cfg:  # every top-level key of the composed config is documented in the schema
        assert key in keys, f"{key} has no entry in cli/schema.py TrainConfig"
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("preview_every "))
    assert " 500 " in row and "optimizer steps between preview grids" in row  # the 512 recipe's value
    assert all(h for _, _, h in describe(TrainConfig)), "every key needs a one-line help"
    assert "recipe" in out and "1024, 256, 512" in out
