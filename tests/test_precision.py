"""CPU precision by measurement (train/precision.py): the faster of bf16-mixed and 32-true, timed
on the run's own model, cached per CPU, software and workload."""
from __future__ import annotations

import json
import time

import pytest
from conftest import TINY
from hydra.utils import instantiate
from omegaconf import open_dict

from progressive_swap.cli.config import compose
from progressive_swap.train import batch_finder, precision


def _module():
    cfg = compose("train", ["recipe=demo", *TINY])
    with open_dict(cfg):
        cfg.derived.identities, cfg.derived.world_size = 2, 1
    return instantiate(cfg.module)


def test_pick_takes_bf16_only_when_clearly_faster():
    assert precision.pick({"32-true": 100.0, "bf16-mixed": 80.0}) == "bf16-mixed"
    assert precision.pick({"32-true": 100.0, "bf16-mixed": 97.0}) == "32-true"  # within the margin: fp32
    assert precision.pick({"32-true": 100.0, "bf16-mixed": None}) == "32-true"  # stopped early
    assert precision.pick({"32-true": 100.0, "bf16-mixed": 130.0}) == "32-true"


@pytest.mark.parametrize("slow", ["bf16-mixed", "32-true"])
def test_measure_times_real_steps_and_stops_a_clearly_slower_precision(monkeypatch, slow):
    """Steps are timed per phase and weighted by the phase's batches; an emulated (5x slower)
    precision stops after its first phase instead of being timed through."""
    calls: list[str] = []

    def fake_step(module, opt, data, prec, device):
        calls.append(prec)
        time.sleep(0.010 if prec == slow else 0.002)

    monkeypatch.setattr(batch_finder, "_train_step", fake_step)
    module = _module()
    seconds = precision.measure(module, steps=3, warmup=1)
    phases = {(p.res, p.batch, bool(p.fading)) for p in module.schedule.phases}
    fast = "32-true" if slow == "bf16-mixed" else "bf16-mixed"
    assert calls.count(fast) == 4 * len(phases)
    batches = module.schedule.total_batches
    assert 0.002 * batches <= seconds[fast] < 0.006 * batches
    if slow == "bf16-mixed":  # measured second: stopped after one phase of 4 steps
        assert seconds[slow] is None and calls.count(slow) == 4
    else:  # measured first, so timed through, and lost
        assert seconds[slow] > 3 * seconds[fast]
    assert precision.pick(seconds) == fast


def test_choose_measures_once_per_cpu_and_workload_and_survives_a_broken_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROGRESSIVE_SWAP_CACHE", str(tmp_path))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    measured = []

    def fake_measure(module, steps=3, precisions=precision.PRECISIONS):
        measured.append(1)
        return {"32-true": 10.0, "bf16-mixed": 5.0}

    monkeypatch.setattr(precision, "measure", fake_measure)
    module = _module()
    first, second = precision.choose(module), precision.choose(module)
    assert first == precision.Choice("bf16-mixed", {"32-true": 10.0, "bf16-mixed": 5.0}, cached=False)
    assert second.cached and second.precision == "bf16-mixed" and len(measured) == 1
    assert "bf16-mixed" in first.line() and "5 s" in first.line() and "cached" in second.line()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another instruction set: another answer
    precision.choose(module)
    assert len(measured) == 2
    module.schedule = instantiate(compose("train", ["recipe=demo"]).schedule, identities=2)  # another workload
    precision.choose(module)
    assert len(measured) == 3
    entries = json.loads(precision.cache_path().read_text())
    assert len(entries) == 3 and all(e["precision"] == "bf16-mixed" for e in entries.values())
    precision.cache_path().write_text("{not json")
    assert not precision.choose(module).cached and len(measured) == 4


def test_schedule_seconds_scales_the_images_to_the_measured_time_and_a_resume_keeps_them(
        blob_sets, tmp_path, monkeypatch, capsys):
    from conftest import tiny

    from progressive_swap.cli import train as train_cli
    from progressive_swap.train.checkpoint import safe_load

    monkeypatch.setenv("PROGRESSIVE_SWAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PROGRESSIVE_SWAP_CPU_PRECISION", raising=False)
    estimate = {"s": 100.0}
    monkeypatch.setattr(precision, "measure",
                        lambda module, steps=3, precisions=precision.PRECISIONS:
                        {"32-true": estimate["s"], "bf16-mixed": None})
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "schedule_seconds=50", "max_steps=3")) == 0
    err = capsys.readouterr().err
    assert "schedule scaled to 50% of its images" in err and "16 px 48 → 24" in err
    stages = safe_load(run / "last.ckpt")["progressive_swap"]["schedule"]["stages"]
    assert [(s["images"], s["fade"]) for s in stages] == [(24, 0), (16, 16)]
    estimate["s"] = 400.0  # another estimate (another machine): the resumed run keeps its stages
    (tmp_path / "cache" / "cpu_precision.json").unlink()
    assert train_cli.main(tiny(blob_sets, run, "schedule_seconds=50", "resume=auto")) == 0
    end = safe_load(run / "last.ckpt")["progressive_swap"]
    assert [(s["images"], s["fade"]) for s in end["schedule"]["stages"]] == [(24, 0), (16, 16)]
    assert end["batches_done"] == 3 + 2 + 2  # all of the halved schedule: 24/8 + 16/8 + 16/8 batches
    assert train_cli.main(tiny(blob_sets, tmp_path / "fits", "schedule_seconds=500", "max_steps=1")) == 0
    assert "schedule as written" in capsys.readouterr().err
