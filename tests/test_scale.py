"""Scaling options: FSDP and decoder-parallel strategies, accumulation, compile, the batch finder.

On CPU these build the strategies and check their wiring; the real FSDP, bf16 and multi-GPU
runs are the ``gpu``-marked tests at the end (run them with the device tool).
"""
from __future__ import annotations

import subprocess
import sys
import time
import types

import pytest
import torch
from conftest import tiny
from hydra.utils import instantiate

from progressive_swap.cli import train as train_cli
from progressive_swap.cli.config import compose
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.model.blocks import DecoderBlock, EncoderBlock
from progressive_swap.train import batch_finder as bf
from progressive_swap.train import strategy as st
from progressive_swap.train.checkpoint import load_weights, safe_load
from progressive_swap.train.growth import GrowthSchedule


def comb(**kw) -> CombAutoencoder:
    args = dict(num_identities=3, final_res=64, start_res=16, latent_res=8, latent_channels=8, channel_base=256,
                channel_max=16, channel_min=8)
    return CombAutoencoder(CombArch(**{**args, **kw}))


# -- FSDP ---------------------------------------------------------------------------------------


def test_fsdp_recipe_builds_the_strategy_with_a_policy_covering_every_block():
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp import CPUOffload

    cfg = compose("train", ["recipe=1024", "trainer=fsdp", "trainer.strategy.cpu_offload=true"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == -1
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.cpu_offload == CPUOffload(offload_params=True)
    assert strategy.kwargs["use_orig_params"] is True
    assert str(strategy.sharding_strategy).endswith("FULL_SHARD")
    assert strategy._state_dict_type == "full"

    # Every encoder and decoder block is its own FSDP unit and its own checkpoint, nothing else.
    model = CombAutoencoder(instantiate(cfg.model, num_identities=3, final_res=1024, start_res=256))
    blocks = {m for m in model.modules() if isinstance(m, (EncoderBlock, DecoderBlock))}
    assert len(blocks) == (1 + 3) * (1 + len(model.encoder.block_resolutions()))  # neck/stem + b32..b1024, per stack
    for policy in (strategy.kwargs["auto_wrap_policy"], strategy._activation_checkpointing_kwargs["auto_wrap_policy"]):
        wrapped = set(policy._run_policy(model, ignored_modules=set(), root_kwargs={}))
        assert blocks <= wrapped and wrapped - blocks <= {model}, "policy must wrap exactly the blocks (and the root)"
    # The blocks hold nearly all parameters, so per-block sharding shards nearly everything.
    in_blocks = sum(p.numel() for b in blocks for p in b.parameters())
    assert in_blocks / sum(p.numel() for p in model.parameters()) > 0.99

    off = st.fsdp_strategy(activation_checkpointing=False, sharding_strategy="SHARD_GRAD_OP")
    assert not off._activation_checkpointing_kwargs and str(off.sharding_strategy).endswith("SHARD_GRAD_OP")


def test_fsdp_on_cpu_fails_before_writing(blob_sets, tmp_path):
    # Lightning refuses FSDP without CUDA while the trainer is built, before the run directory exists.
    # (Hydra wraps the message in an InstantiationException, so this is a traceback, not one line.)
    with pytest.raises(Exception, match="requires a GPU accelerator"):
        train_cli.train(
            compose(
                "train",
                tiny(blob_sets, tmp_path / "run", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1"),
            )
        )
    assert not (tmp_path / "run").exists()


# -- decoders on separate devices --------------------------------------------------------------


def test_placement_map_spreads_decoders_round_robin():
    p = st.placement_map(3, [0, 1])
    assert p == {
        "encoder": torch.device("cuda:0"),
        "decoders.0": torch.device("cuda:0"),
        "decoders.1": torch.device("cuda:1"),
        "decoders.2": torch.device("cuda:0"),
    }
    p = st.placement_map(4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"])
    assert [p[f"decoders.{i}"].index for i in range(4)] == [0, 1, 2, 3]
    assert set(st.placement_map(2, ["cpu"]).values()) == {torch.device("cpu")}
    with pytest.raises(ValueError, match="empty"):
        st.placement_map(2, [])


def test_place_model_moves_each_decoder_and_decode_follows(monkeypatch):
    model = comb(num_identities=2)
    # "meta" stands in for a second GPU: placement must move decoder 1 and nothing else.
    st.place_model(
        model, {"encoder": torch.device("cpu"), "decoders.0": torch.device("cpu"), "decoders.1": torch.device("meta")}
    )
    assert all(p.device.type == "cpu" for p in model.encoder.parameters())
    assert all(p.device.type == "cpu" for p in model.decoders[0].parameters())
    assert all(p.device.type == "meta" for p in model.decoders[1].parameters())
    rgb, mask = model(torch.rand(2, 3, 16, 16), 0, 16)
    assert rgb.device.type == "cpu"
    assert st.routed_devices(model) == {0: torch.device("cpu"), 1: torch.device("meta")}


def test_decode_moves_latents_only_to_placed_decoders():
    """Parameters elsewhere (as under FSDP's CPU offload) do not move the computation; placement does."""

    class Seen(Exception):
        pass

    def stop(module, args):
        raise Seen(args[0].device)

    model = comb(num_identities=2)
    model.decoders[1].register_forward_pre_hook(stop)
    model.decoders[1].to("meta")  # parameters away, nothing placed: the latent stays where it is
    with pytest.raises(Seen, match="cpu"):
        model(torch.rand(2, 3, 16, 16), 1, 16)
    st.place_model(model, {"decoders.1": torch.device("meta")})
    with pytest.raises(Seen, match="meta"):
        model(torch.rand(2, 3, 16, 16), 1, 16)


def test_model_parallel_recipe_builds(monkeypatch):
    cfg = compose("train", ["recipe=1024", "trainer=model_parallel", "trainer.strategy.devices=[0,1]"])
    assert cfg.trainer.devices == 1 and cfg.trainer.accelerator == "gpu"
    s = instantiate(cfg.trainer.strategy)
    assert isinstance(s, st.DecoderParallelStrategy)
    assert s.root_device == torch.device("cuda:0") and s.devices == [torch.device("cuda:0"), torch.device("cuda:1")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(Exception, match="needs CUDA"):  # Hydra wraps the ValueError
        instantiate(compose("train", ["trainer=model_parallel"]).trainer.strategy)


@pytest.mark.slow
def test_model_parallel_strategy_fits_and_resumes_on_cpu_devices(blob_sets, tmp_path):
    """The strategy's hooks (placement, optimizer-state restore) in a real fit + resume, on CPU."""
    mp = [
        "trainer=model_parallel",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.strategy.devices=[cpu,cpu]",
    ]
    full, split = tmp_path / "full", tmp_path / "split"
    assert train_cli.main(tiny(blob_sets, full, *mp)) == 0
    assert train_cli.main(tiny(blob_sets, split, *mp, "max_steps=9")) == 0
    assert train_cli.main(tiny(blob_sets, split, *mp, "resume=auto")) == 0
    a, b = load_weights(full / "last.ckpt"), load_weights(split / "last.ckpt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


# -- gradient accumulation: the data position counts batches, not optimizer steps ---------------


@pytest.mark.slow
def test_accumulation_fit_then_resume_equals_an_uninterrupted_run(blob_sets, tmp_path):
    acc = ["trainer.accumulate_grad_batches=2"]
    full, split = tmp_path / "full", tmp_path / "split"
    assert train_cli.main(tiny(blob_sets, full, *acc)) == 0
    end = safe_load(full / "last.ckpt")
    assert end["progressive_swap"]["batches_done"] == 14 and end["global_step"] == 7  # 14 batches, 7 steps
    # 4 optimizer steps = 8 batches: stopped in the middle of the fade-in.
    assert train_cli.main(tiny(blob_sets, split, *acc, "max_steps=4")) == 0
    mid = safe_load(split / "last.ckpt")
    assert mid["progressive_swap"]["batches_done"] == 8 and mid["global_step"] == 4
    assert 0 < mid["progressive_swap"]["alpha"] < 1
    assert train_cli.main(tiny(blob_sets, split, *acc, "resume=auto")) == 0
    end2 = safe_load(split / "last.ckpt")
    assert end2["progressive_swap"]["batches_done"] == 14 and end2["global_step"] == 7
    a, b = load_weights(full / "last.ckpt"), load_weights(split / "last.ckpt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


# -- activation checkpointing and compile --------------------------------------------------------


def test_activation_checkpointing_and_compile_keys_reach_the_model(blob_sets, tmp_path, monkeypatch):
    seen = {}

    real = st.compile_blocks

    def fake_compile(model, **kw):  # inductor would take minutes on a 2-core CPU
        seen["checkpoint_blocks"] = model.checkpoint_blocks
        return real(model, backend="eager")

    monkeypatch.setattr(st, "compile_blocks", fake_compile)
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "activation_checkpointing=true", "compile=true", "max_steps=2")) == 0
    assert seen == {"checkpoint_blocks": True}
    assert safe_load(run / "last.ckpt")["global_step"] == 2


def test_compiled_blocks_keep_names_and_values():
    torch.manual_seed(0)
    model = comb(num_identities=2)
    ref = comb(num_identities=2)
    ref.load_state_dict(model.state_dict())
    keys = list(model.state_dict())
    assert st.compile_blocks(model, backend="eager") == (1 + 2) * (1 + 3)  # 3 stacks of neck/stem + b16..b64
    assert list(model.state_dict()) == keys
    x = torch.rand(2, 3, 32, 32)
    model.checkpoint_blocks = True  # compiled blocks inside activation checkpointing
    for alpha in (0.25, 0.5):  # a new alpha must not need a new graph: blocks never see it
        out, ref_out = model(x, 1, 32, alpha), ref(x, 1, 32, alpha)
        torch.testing.assert_close(out[0], ref_out[0])
        out[0].sum().backward()
    assert model.decoders[1].blocks["b32"].conv1.weight.grad is not None


# -- the batch finder -----------------------------------------------------------------------------


@pytest.mark.parametrize("start", [1, 4, 16, 64])
def test_largest_batch_finds_the_threshold_in_few_tries(start):
    for threshold in range(0, 70):
        calls = []

        def fits(b):
            calls.append(b)
            return b <= threshold

        assert bf.largest_batch(fits, start=start, limit=64) == min(threshold, 64)
        assert len(calls) <= 2 * 7 + 1 and all(1 <= b <= 64 for b in calls)


def test_fits_in_memory_turns_an_oom_into_false():
    freed = []

    def step(batch):
        if batch > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

    fits = bf.fits_in_memory(step, free=lambda: freed.append(1))
    assert fits(5) and not fits(6) and len(freed) == 2

    def broken(batch):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        bf.fits_in_memory(broken, free=lambda: None)(1)


def test_find_batches_rewrites_batches_and_keeps_images_per_stage():
    sched = GrowthSchedule(
        [
            dict(res=16, images=4000, batch=8),
            dict(res=32, images=3000, fade=1000, batch=4),
            dict(res=64, images=2000, fade=1000, batch=2),
        ],
        identities=2,
    )
    budget = 16 * 16 * 100  # a fake device: fits while batch × res² <= budget
    points = []

    def fits_for_stage(res, alpha):
        points.append((res, alpha))
        return lambda b: b * res * res <= budget

    lines = []
    new = bf.find_batches(sched, fits_for_stage, limit=512, report=lines.append)
    assert points == [(16, 1.0), (32, 0.5), (64, 0.5)]  # mid-fade after the first stage
    assert [s.batch for s in new.stages] == [100, 25, 6] and len(lines) == 3
    for a, b in zip(sched.stages, new.stages):
        assert (a.res, a.images, a.fade, a.lr) == (b.res, b.images, b.fade, b.lr)
    def per_stage(s):
        return {r: sum(p.batches * p.batch * 2 for p in s.phases if p.res == r) for r in (16, 32, 64)}

    for r, n in per_stage(new).items():  # whole batches: at most one batch more than asked
        assert (
            per_stage(sched)[r] - 16 <= n and n - next(x.images + x.fade for x in sched.stages if x.res == r) < 2 * 100
        )
    with pytest.raises(RuntimeError, match="not even a batch of 1"):
        bf.find_batches(sched, lambda res, alpha: lambda b: res < 64)


def test_find_batch_on_cpu_fails_with_one_line_and_resume_keeps_batches(blob_sets, tmp_path, capsys):
    assert train_cli.main(tiny(blob_sets, tmp_path / "run", "find_batch=true")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA" in err[0], err
    sched = GrowthSchedule([dict(res=16, images=64, batch=4), dict(res=32, images=64, fade=32, batch=4)])
    kept = bf.plan_for_run(
        types.SimpleNamespace(schedule=sched), trainer=None, resume_schedule={"stages": [{"batch": 3}, {"batch": 2}]}
    )
    assert [s.batch for s in kept.stages] == [3, 2]


# -- launching ------------------------------------------------------------------------------------


def test_module_entry_point_runs():
    r = subprocess.run(
        [sys.executable, "-m", "progressive_swap.cli.train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "swap-train" in r.stdout


# -- GPU (deselected by default; run with the device tool) -----------------------------------------


def _gpu(n: int = 1):
    if torch.cuda.device_count() < n:
        pytest.skip(f"needs {n} CUDA device(s)")


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_fsdp_fit_and_resume(blob_sets, tmp_path):
    _gpu()
    fsdp = ["trainer=fsdp", "trainer.devices=1"]
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, *fsdp, "max_steps=9")) == 0
    assert train_cli.main(tiny(blob_sets, run, *fsdp, "resume=auto")) == 0
    ck = safe_load(run / "last.ckpt")
    assert ck["progressive_swap"]["batches_done"] == 14
    w = load_weights(run / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values()) and "decoders.1.blocks.b32.conv1.weight" in w


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_bf16_fit_with_checkpointing_and_compile(blob_sets, tmp_path):
    _gpu()
    run = tmp_path / "run"
    assert (
        train_cli.main(
            tiny(blob_sets, run, "trainer=gpu", "activation_checkpointing=true", "compile=true", "channels_last=true")
        )
        == 0
    )
    assert all(torch.isfinite(v).all() for v in load_weights(run / "model.safetensors").values())


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_model_parallel_puts_decoders_on_their_devices(blob_sets, tmp_path):
    _gpu(2)
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "trainer=model_parallel", "max_steps=5")) == 0
    assert train_cli.main(tiny(blob_sets, run, "trainer=model_parallel", "resume=auto")) == 0
    assert safe_load(run / "last.ckpt")["progressive_swap"]["batches_done"] == 14


@pytest.mark.gpu
def test_gpu_batch_finder_under_a_memory_cap():
    _gpu()
    from progressive_swap.train.module import SwapModule

    model = CombAutoencoder(
        CombArch(2, final_res=256, start_res=64, latent_res=8, latent_channels=64, channel_base=8192, channel_max=128)
    )
    sched = GrowthSchedule(
        [
            dict(res=64, images=1000, batch=4),
            dict(res=128, images=1000, fade=500, batch=4),
            dict(res=256, images=1000, fade=500, batch=4),
        ]
    )
    t0 = time.perf_counter()
    found = bf.search_on_device(
        lambda m: SwapModule(m, sched), model, sched, torch.device("cuda"), "bf16-mixed", max_memory_gb=2, limit=256
    )
    batches = [s.batch for s in found.stages]
    assert batches[0] >= batches[1] >= batches[2] >= 1 and time.perf_counter() - t0 < 300
    torch.cuda.set_per_process_memory_fraction(1.0)
