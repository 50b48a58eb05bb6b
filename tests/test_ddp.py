"""DDP on the CPU: 2 processes (gloo) through the real command, then a resume."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from progressive_swap.train.checkpoint import load_weights, safe_load

SCHEDULE = "schedule.stages=[{res:16,images:64,batch:2,lr:1e-3},{res:32,images:32,fade:32,batch:2,lr:1e-3}]"


def ddp_args(blob_sets, out: Path, *extra: str) -> list[str]:
    """A tiny demo run with DDP over 2 CPU processes (gloo); ``extra`` overrides come last."""
    return [
        "recipe=demo", "data=facesets", f"data.faces=[{blob_sets[0]},{blob_sets[1]}]", f"out={out}",
        "model.channel_base=256", "model.channel_max=16", "model.channel_min=8", "model.latent_channels=8",
        SCHEDULE, "data.num_workers=0", "preview_every=0", "checkpoint.every_steps=2",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", *extra,
    ]


def swap_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("swap-train")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_ddp_fit_and_resume_on_cpu(blob_sets, tmp_path):
    base = ddp_args(blob_sets, tmp_path / "run")
    r = swap_train(*base, "max_steps=5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = safe_load(tmp_path / "run" / "last.ckpt")
    assert ck["progressive_swap"]["schedule"]["world_size"] == 2
    assert ck["progressive_swap"]["batches_done"] == 5
    r = swap_train(*base, "resume=auto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = safe_load(tmp_path / "run" / "last.ckpt")
    # 64 images at 16 px: 2 faces × 2 identities × 2 processes = 8 per batch → 8 batches; then 4 + 4.
    assert ck["progressive_swap"]["batches_done"] == 16 == ck["global_step"]
    assert not list((tmp_path / "run").glob("last-v*.ckpt"))
    w = load_weights(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())


@pytest.mark.slow
def test_ddp_nan_steps_roll_back_every_process_to_the_same_checkpoint(blob_sets, tmp_path):
    run = tmp_path / "run"
    base = ddp_args(blob_sets, run, "guard.inject_nan_at=[5,6,7]")
    r = swap_train(*base, cwd=tmp_path)  # a process left behind would hang at the next all-reduce
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rolled back to step0000004.ckpt (batch 4)" in r.stderr
    end = safe_load(run / "last.ckpt")
    state = end["progressive_swap"]
    assert (
        state["batches_done"] == 16
        and state["nonfinite_steps"] == 3
        and state["rollbacks"] == 1
        and state["lr_scale"] == 0.5
    )
    assert all(torch.isfinite(v).all() for v in end["state_dict"].values())
    events = (run / "logs" / "nonfinite.jsonl").read_text().splitlines()
    assert len(events) == 4 and '"to": "step0000004.ckpt"' in events[-1]  # rank 0 alone writes the log


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two_nodes(args: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """The documented multi-node launch: two torchrun "nodes" of one CPU process each, meeting
    through a c10d rendezvous on 127.0.0.1 (gloo), both running ``python -m progressive_swap.cli.train``."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes",
           "-m", "progressive_swap.cli.train", *args]
    nodes = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = []
    for p in nodes:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in nodes:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return done


@pytest.mark.slow
def test_demo_recipe_on_two_torchrun_nodes_stops_and_resumes(blob_sets, tmp_path):
    base = ddp_args(blob_sets, tmp_path / "run", "trainer.devices=1", "trainer.num_nodes=2")
    first = torchrun_two_nodes([*base, "max_steps=5"], tmp_path)
    assert [r.returncode for r in first] == [0, 0], first[0].stderr[-2000:] + first[1].stderr[-2000:]
    ck = safe_load(tmp_path / "run" / "last.ckpt")
    assert ck["progressive_swap"]["schedule"]["world_size"] == 2 and ck["progressive_swap"]["batches_done"] == 5
    second = torchrun_two_nodes([*base, "resume=auto"], tmp_path)
    assert [r.returncode for r in second] == [0, 0], second[0].stderr[-2000:] + second[1].stderr[-2000:]
    ck = safe_load(tmp_path / "run" / "last.ckpt")
    assert ck["progressive_swap"]["batches_done"] == 16 == ck["global_step"]
    assert any("resuming" in r.stdout + r.stderr for r in second)
