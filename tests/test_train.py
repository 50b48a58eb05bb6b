"""swap-train: module contract, the real recipes shrunk, fit-then-resume, warm starts, bad input."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY, tiny, write_blob_faceset
from omegaconf import OmegaConf

from progressive_swap.cli import train as train_cli
from progressive_swap.cli.common import UserError
from progressive_swap.cli.config import compose
from progressive_swap.train.checkpoint import UnsafeCheckpointError, load_weights, safe_load


def weights(run: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return load_weights(run / name)


def test_every_recipe_composes_and_plain_numeric_recipe_names_work():
    for r in ("demo", "256", "512", "1024"):
        cfg = compose("train", [f"recipe={r}"])
        assert str(cfg.name) == r
    cfg = compose("train", ["recipe=1024"])
    res = [s["res"] for s in cfg.schedule.stages]
    assert res == [256, 512, 1024] and cfg.trainer.precision == "bf16-mixed"


def test_cfg_job_prints_the_resolved_config(capsys):
    assert train_cli.main(["recipe=1024", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "res: 1024" in out and "CombAutoencoder" in out
    assert "None/logs" not in out and "save_dir: checkpoints/1024/" in out  # the run directory a run would use


def test_dry_run_prints_plan_and_summary(blob_sets, tmp_path, capsys):
    assert train_cli.main(tiny(blob_sets, tmp_path / "run", "dry_run=true")) == 0
    err = capsys.readouterr().err
    assert "growth plan" in err and "fade-in" in err
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_fit_then_resume_equals_an_uninterrupted_run(blob_sets, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert train_cli.main(tiny(blob_sets, full)) == 0
    # Stop in the middle of the fade-in, then continue with resume=auto.
    assert train_cli.main(tiny(blob_sets, split, "max_steps=9")) == 0
    ck = safe_load(split / "last.ckpt")["progressive_swap"]
    assert ck["batches_done"] == 9 and ck["stage_res"] == 32 and 0 < ck["alpha"] < 1
    assert train_cli.main(tiny(blob_sets, split, "resume=auto")) == 0
    a, b = weights(full), weights(split)
    assert a.keys() == b.keys()
    for k, v in weights(full, "model.safetensors").items():
        torch.testing.assert_close(v, a[k], rtol=0, atol=0)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    end = safe_load(split / "last.ckpt")
    assert end["progressive_swap"]["batches_done"] == 14 and end["global_step"] == 14
    assert (full / "config.yaml").is_file() and (full / "model.safetensors").is_file()
    # Sanity: training moved the weights (the comparison above is not between two inits).
    init = safe_load(split / "step0000003.ckpt") if (split / "step0000003.ckpt").exists() else None
    assert init is None or any(not torch.equal(init["state_dict"][f"model.{k}"], a[k]) for k in a)


@pytest.mark.slow
def test_preview_and_logs_are_written(blob_sets, tmp_path):
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "preview_every=4", "max_steps=8", "trainer.log_every_n_steps=2")) == 0
    previews = sorted((run / "previews").glob("step_*.png"))
    assert [p.name for p in previews] == ["step_0000004.png", "step_0000008.png"]
    import cv2

    grid = cv2.imread(str(run / "previews" / "latest.png"))
    # 4 rows (0>0, 1>1, 0>1, 1>0) of 4 input|output pairs, tiles at least 96 px.
    assert grid.shape[0] == 4 * 96 and grid.shape[1] == 8 * 96
    csv = next((run / "logs" / "csv").glob("*/metrics.csv")).read_text()
    assert "loss" in csv.splitlines()[0] and len(csv.splitlines()) >= 4
    assert list((run / "logs" / "tensorboard").glob("*/events.out.tfevents.*"))


@pytest.mark.slow
def test_warm_start_across_resolution_and_identity_count(blob_sets, tmp_path, capsys):
    src = tmp_path / "src"
    assert train_cli.main(tiny(blob_sets, src, "max_steps=2")) == 0
    third = write_blob_faceset(tmp_path / "id2", 2)
    bigger = [
        "recipe=demo",
        "data=facesets",
        f"data.faces=[{blob_sets[0]},{blob_sets[1]},{third}]",
        f"out={tmp_path / 'dst'}",
        *TINY[:5],
        "schedule.stages=[{res:16,images:12,batch:2,lr:1e-3},{res:32,images:12,fade:12,batch:2,lr:1e-3}]",
        "data.num_workers=0",
        "preview_every=0",
        f"warm_start={src / 'last.ckpt'}",
        "freeze=encoder",
        "freeze_steps=100",
        "max_steps=1",
    ]
    assert train_cli.main(bigger) == 0
    err = capsys.readouterr().err
    assert "warm start from" in err and "decoders.2" in err
    assert re.search(r"^precision (bf16-mixed|32-true), measured .*: the schedule.s steps take an estimated", err, re.M)
    a, b = weights(src), weights(tmp_path / "dst")
    # The encoder was loaded and then held fixed; decoder 2 is new.
    for k in (k for k in a if k.startswith("encoder.")):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(k.startswith("decoders.2.") for k in b) and not any(k.startswith("decoders.2.") for k in a)


def test_contract_gradients_reach_every_active_parameter(blob_sets):
    from hydra.utils import instantiate

    from progressive_swap.model.autoencoder import CombAutoencoder
    from progressive_swap.train.datamodule import CombDataset
    from progressive_swap.train.module import SwapModule

    cfg = compose("train", tiny(blob_sets, "unused"))
    sched = instantiate(cfg.schedule, identities=2)
    model = CombAutoencoder(
        instantiate(cfg.model, num_identities=2, final_res=sched.final_res, start_res=sched.start_res)
    )
    module = SwapModule(model, sched, geometry=dict(cfg.augment.geometry))
    ds = CombDataset(blob_sets, mask="extended", augment=dict(cfg.data.augment))
    for phase in sched.phases:
        b = phase.first_batch + phase.batches // 2
        items = [ds[(i, phase.res, b)] for i in sched.samples(b)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        model.zero_grad(set_to_none=True)
        module._trainer = None
        loss = module.training_step(batch, 0)
        assert torch.isfinite(loss)
        loss.backward()
        pos = sched.at(b)
        active = set(model.active_parameters(pos.res, pos.alpha))
        for name, p in model.named_parameters():
            if name in active:
                assert p.grad is not None and p.grad.abs().sum() > 0, (phase, name)
            else:
                assert p.grad is None, (phase, name)


# -- bad input: one line, non-zero exit, nothing written ------------------------------------------


def _fails(argv, capsys, match):
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("swap-train: error:") and match in err[0], err


def test_unknown_recipe(capsys):
    _fails(["recipe=2048"], capsys, "unknown recipe '2048'")


def test_missing_and_empty_face_sets(blob_sets, tmp_path, capsys):
    out = tmp_path / "run"
    _fails(
        ["recipe=demo", "data=facesets", f"data.faces=[{blob_sets[0]},{tmp_path / 'nope'}]", f"out={out}"],
        capsys,
        "not found",
    )
    from progressive_swap import faceset as fs

    fs.create(tmp_path / "empty", face_type="whole", size=32).close()
    _fails(
        ["recipe=demo", "data=facesets", f"data.faces=[{blob_sets[0]},{tmp_path / 'empty'}]", f"out={out}"],
        capsys,
        "empty",
    )
    _fails(["recipe=256", f"out={out}"], capsys, "data.faces")
    assert not out.exists()


def test_mixed_face_types_and_too_small_sets(blob_sets, tmp_path, capsys):
    out = tmp_path / "run"
    full = write_blob_faceset(tmp_path / "full", 1, n=3, face_type="full")
    _fails(tiny(blob_sets[:1] + [str(full)], out), capsys, "different face types")
    _fails(
        ["recipe=demo", "data=facesets", f"data.faces=[{blob_sets[0]},{blob_sets[1]}]", f"out={out}"],
        capsys,
        "smaller than the final stage's 64 px: extract it again with size=64",
    )
    assert not out.exists()


@pytest.mark.slow
def test_resume_from_another_architecture_or_a_hostile_file(blob_sets, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "max_steps=1")) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    _fails(
        tiny(blob_sets, other, f"resume={run / 'last.ckpt'}", "model.latent_channels=16"),
        capsys,
        "another architecture",
    )
    assert not other.exists()

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Boom()}))
    _fails(tiny(blob_sets, other, f"resume={evil}"), capsys, "refusing to load")
    _fails(tiny(blob_sets, other, f"warm_start={evil}"), capsys, "refusing to load")
    assert not (tmp_path / "pwned").exists() and not other.exists()
    with pytest.raises(UnsafeCheckpointError):
        safe_load(evil)
    # An existing run is never overwritten by accident.
    _fails(tiny(blob_sets, run), capsys, "already holds a run")


@pytest.mark.slow
def test_patch_gan_option_trains_and_checkpoints_the_discriminator(blob_sets, tmp_path):
    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "loss.gan=0.1", "loss.gan_channels=8", "max_steps=2")) == 0
    sd = safe_load(run / "last.ckpt")["state_dict"]
    assert any(k.startswith("loss.discriminator.") for k in sd)


def test_periodic_checkpoints_wait_for_the_end_of_an_accumulated_step(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    from progressive_swap.train.callbacks import StepCheckpoint

    calls = []
    monkeypatch.setattr(ModelCheckpoint, "on_train_batch_end", lambda self, *a: calls.append(a))
    cb = StepCheckpoint(dirpath=tmp_path)
    for accumulating in (True, False, True):
        trainer = SimpleNamespace(fit_loop=SimpleNamespace(_should_accumulate=lambda a=accumulating: a))
        cb.on_train_batch_end(trainer, None, None, None, 0)
    assert len(calls) == 1


def test_dry_run_of_a_gpu_recipe_needs_no_data_and_no_gpu(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["recipe=1024", "dry_run=true", "dry_run_steps=0"]) == 0  # timed: test_capacity.py
    err = capsys.readouterr().err
    assert "1024" in err and "model size per stage" in err
    assert not (tmp_path / "checkpoints").exists()


def test_cpu_recipe_trains_your_face_sets_on_the_cpu_with_workers_for_this_machine(monkeypatch):
    from progressive_swap.cli import config

    cfg = compose("train", ["recipe=cpu"])
    assert cfg.trainer.accelerator == "cpu" and OmegaConf.is_missing(cfg.data, "faces")
    assert [s["res"] for s in cfg.schedule.stages] == [64, 128]
    # Workers follow the machine: one per core beyond the trainer's, capped, and as memory allows.
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert compose("train", ["recipe=cpu"]).data.num_workers == 1
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert config.loader_workers() == min(8, config.loader_workers(cap=64))
    monkeypatch.setattr(config.os, "sysconf", lambda name: 4 * 2**30 // 4096 if name == "SC_AVPHYS_PAGES" else 4096)
    assert config.loader_workers() == 2  # 4 GiB free: 2 GiB kept, 1 GiB a worker


def test_the_phantom_cache_is_keyed_by_the_crop_the_face_type_means(tmp_path, monkeypatch):
    from progressive_swap.core import landmarks
    from progressive_swap.train import datamodule

    monkeypatch.setenv("PROGRESSIVE_SWAP_CACHE", str(tmp_path))
    made = []

    def fake_generate(out, videos, **args):  # the renderer is not what is tested here
        made.append(out)
        for k in range(args["identities"]):
            (Path(out) / "faces" / f"id{k}").mkdir(parents=True)
            (Path(out) / "faces" / f"id{k}" / "faceset.json").write_text("{}")

    monkeypatch.setattr(datamodule, "generate_phantom_dataset", fake_generate)
    first = datamodule.FaceDataModule(phantom={"faces": 4, "size": 32}).resolve_faces()
    assert datamodule.FaceDataModule(phantom={"faces": 4, "size": 32}).resolve_faces() == first and len(made) == 1
    old = landmarks.FaceType("whole", (0.490, 0.46), 0.92)  # the crop before it was widened
    monkeypatch.setitem(landmarks.FACE_TYPES, "whole", old)
    assert datamodule.FaceDataModule(phantom={"faces": 4, "size": 32}).resolve_faces() != first and len(made) == 2


def test_cpu_precision_is_measured_unless_forced_and_falls_back_on_the_flags(monkeypatch):
    from progressive_swap.cli import config

    monkeypatch.delenv(config.PRECISION_ENV, raising=False)
    assert compose("train", ["recipe=demo"]).trainer.precision == "auto"  # swap-train measures it
    monkeypatch.setattr(config.torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(config.torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert config.cpu_precision_by_flags() == "32-true"
    monkeypatch.setattr(config.torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert config.cpu_precision_by_flags() == "bf16-mixed"
    monkeypatch.setenv(config.PRECISION_ENV, "32-true")
    assert compose("train", []).trainer.precision == "32-true"
    monkeypatch.setenv(config.PRECISION_ENV, "fp16")
    with pytest.raises(UserError, match="choose bf16-mixed or 32-true"):
        config.cpu_precision()


@pytest.mark.parametrize("mask", ["extended", "visible"])
def test_decoded_face_cache_changes_nothing(blob_sets, tmp_path, mask):
    from progressive_swap.phantom.dataset import generate_phantom_dataset
    from progressive_swap.train.datamodule import CombDataset

    if mask == "visible":  # a stored mask: the phantom's
        blob_sets = generate_phantom_dataset(tmp_path, faces=6, size=32, videos=0, progress=False)["faces"]
    aug = dict(brightness=0.15, contrast=0.15, hue=6, saturation=15, gamma=0.15, p=1.0)
    cached = CombDataset(blob_sets, mask=mask, augment=aug, paste_occluders=0.5)
    plain = CombDataset(blob_sets, mask=mask, augment=aug, paste_occluders=0.5, cache_mb=0)
    # Samples 0 and 1 again: their faces now come from the cache, after augmentation and
    # occluder pasting ran on them once (an in-place change there would show here).
    for sample in (0, 1, 2, 0, 1):
        for res in (16, 32):
            a, b = cached[(sample, res, 0)], plain[(sample, res, 0)]
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert cached._faces and not plain._faces


@pytest.mark.parametrize("fused", [None, False])
def test_adam_is_fused_on_the_cpu_unless_the_config_says(blob_sets, fused):
    from hydra.utils import instantiate

    from progressive_swap.model.autoencoder import CombAutoencoder
    from progressive_swap.train.module import SwapModule

    cfg = compose("train", tiny(blob_sets, "unused") + [f"optimizer.fused={'null' if fused is None else fused}"])
    sched = instantiate(cfg.schedule, identities=2)
    model = CombAutoencoder(instantiate(cfg.model, num_identities=2, final_res=sched.final_res,
                                        start_res=sched.start_res))
    opt = SwapModule(model, sched, optimizer=instantiate(cfg.optimizer)).configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["fused"] is (fused is None)
    assert opt.defaults["betas"] == (0.5, 0.999) or list(opt.defaults["betas"]) == [0.5, 0.999]


def test_gradient_clipping_under_bf16_autocast_trains(blob_sets, tmp_path):
    # Lightning cannot clip a fused optimizer's gradients under autocast: clipping keeps Adam unfused.
    out = tmp_path / "run"
    argv = tiny(blob_sets, out, "trainer.gradient_clip_val=1.0", "trainer.precision=bf16-mixed", "max_steps=4")
    assert train_cli.main(argv) == 0
    assert (out / "model.safetensors").is_file()
