"""Training that survives kill -9, NaN/Inf, full disks and hostile weight files."""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import import_tool, tiny
from lightning_fabric.loggers import csv_logs

from progressive_swap.cli import train as train_cli
from progressive_swap.core.io import TEMP_PREFIX
from progressive_swap.train import callbacks as callbacks_mod
from progressive_swap.train import checkpoint as ckpt_mod
from progressive_swap.train.checkpoint import (
    AtomicCheckpointIO,
    UnsafeCheckpointError,
    good_checkpoints,
    load_weights,
    remove_stale_temps,
    safe_load,
    save_weights,
)
from progressive_swap.train.guard import NonFiniteGuard, TrainingDiverged, grads_finite

REPO = Path(__file__).resolve().parents[1]


def _fake_ckpt(path: Path, batches: int) -> Path:
    torch.save(
        {
            "state_dict": {"model.w": torch.full((2,), float(batches))},
            "global_step": batches,
            "progressive_swap": {"batches_done": batches},
        },
        path,
    )
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("swap-train:")]
    assert len(err) == 1, err
    return err[0]


# -- crash-safe checkpoint files (fast, no training) ---------------------------------------------


def test_good_checkpoints_newest_by_position_and_skips_damaged_files(tmp_path):
    _fake_ckpt(tmp_path / "last.ckpt", 6)
    _fake_ckpt(tmp_path / "step0000006.ckpt", 6)
    _fake_ckpt(tmp_path / "step0000009.ckpt", 9)  # killed after this, before last.ckpt was rewritten
    _fake_ckpt(tmp_path / "images0000000040.ckpt", 4)
    _truncate(_fake_ckpt(tmp_path / "step0000012.ckpt", 12))
    warned = []
    found = good_checkpoints(tmp_path, warn=warned.append)
    assert [(b, p.name) for b, p in found] == [
        (9, "step0000009.ckpt"),
        (6, "last.ckpt"),
        (6, "step0000006.ckpt"),
        (4, "images0000000040.ckpt"),
    ]
    assert len(warned) == 1 and "step0000012.ckpt" in warned[0]
    assert [p.name for _, p in good_checkpoints(tmp_path, warn=lambda m: None, max_batches=7)][0] == "last.ckpt"
    for p in tmp_path.glob("*.ckpt"):  # nothing readable left: an error, never a silent fresh start
        _truncate(p)
    with pytest.raises(ValueError, match="no readable checkpoint"):
        good_checkpoints(tmp_path, warn=lambda m: None)
    assert good_checkpoints(tmp_path / "empty", warn=lambda m: None) == []


def test_checkpoint_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"progressive_swap": {"batches_done": 3}, "state_dict": {}}, path)

    def disk_full(obj, f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", disk_full)
    with pytest.raises(OSError, match="previous checkpoints are intact") as e:
        io.save_checkpoint({"progressive_swap": {"batches_done": 6}, "state_dict": {}}, path)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert safe_load(path)["progressive_swap"]["batches_done"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temp file is gone
    (tmp_path / f"{TEMP_PREFIX}last.ckpt.abc123.tmp").write_bytes(b"half")  # what SIGKILL mid-write leaves
    assert [p.name for p in remove_stale_temps(tmp_path)] == [f"{TEMP_PREFIX}last.ckpt.abc123.tmp"]
    io.remove_checkpoint(path)
    io.remove_checkpoint(path)  # already gone: fine
    assert not path.exists()


# -- the non-finite guard -------------------------------------------------------------------------


def _stub_trainer(scaler=None):
    strategy = SimpleNamespace(reduce_boolean_decision=lambda x, all=True: x)
    return SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler), strategy=strategy)


def test_guard_drops_nonfinite_gradients_but_leaves_grad_scaler_steps_alone():
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.ones(1, 3)).sum().backward()
    assert grads_finite(lin.parameters())
    module = SimpleNamespace(step_problem=None)
    guard = NonFiniteGuard()
    guard.on_before_optimizer_step(_stub_trainer(), module, opt)
    assert module.step_problem is None and lin.weight.grad is not None

    lin.weight.grad[0, 0] = float("inf")
    guard.on_before_optimizer_step(_stub_trainer(scaler=object()), module, opt)  # fp16: the scaler skips it
    assert module.step_problem is None and lin.weight.grad is not None
    guard.on_before_optimizer_step(_stub_trainer(), module, opt)
    assert module.step_problem == "gradients" and lin.weight.grad is None and lin.bias.grad is None
    before = lin.weight.detach().clone()
    opt.step()  # no gradients: nothing moves
    assert torch.equal(before, lin.weight)
    with pytest.raises(ValueError, match="lr_factor"):
        NonFiniteGuard(lr_factor=0)


@pytest.mark.slow
def test_nan_steps_roll_back_lower_the_lr_and_training_finishes_finite(blob_sets, tmp_path, capsys):
    run = tmp_path / "run"
    # Batches 7, 8, 9 (in the fade-in) get NaN inputs; checkpoints every 3 steps; a milestone every 40 images.
    assert train_cli.main(tiny(blob_sets, run, "guard.inject_nan_at=[7,8,9]", "checkpoint.every_images=40")) == 0
    err = capsys.readouterr().err
    assert len(re.findall(r"guard: non-finite l1, ssim, mask at batch [789] \(stage 32px, alpha 0\.\d+\)", err)) == 3
    assert re.search(r"rolled back to step0000006\.ckpt \(batch 6\); learning rate x0\.5", err)
    end = safe_load(run / "last.ckpt")
    state = end["progressive_swap"]
    assert (
        state["batches_done"] == 14
        and state["nonfinite_steps"] == 3
        and state["rollbacks"] == 1
        and state["lr_scale"] == 0.5
    )
    assert end["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5)  # the schedule's lr, halved
    assert all(torch.isfinite(v).all() for v in end["state_dict"].values())
    events = (run / "logs" / "nonfinite.jsonl").read_text().splitlines()
    assert len(events) == 4 and '"event": "rollback"' in events[-1] and '"to": "step0000006.ckpt"' in events[-1]
    # Milestones (every 40 images = 5 batches of 8) are kept; rolling step files are pruned to keep=3.
    assert sorted(p.name for p in run.glob("images*.ckpt")) == ["images0000000040.ckpt", "images0000000080.ckpt"]
    assert len(list(run.glob("step*.ckpt"))) == 3


def test_guard_stops_a_run_that_keeps_diverging():
    guard = NonFiniteGuard(max_bad_steps=1, max_rollbacks=1)
    module = SimpleNamespace(
        step_problem="l1",
        nonfinite_steps=0,
        rollbacks=0,
        lr_scale=1.0,
        stage_res=16,
        alpha=1.0,
        batches_done=1,
        log=lambda *a, **k: None,
    )
    trainer = SimpleNamespace(global_step=1, is_global_zero=False, optimizers=[])
    batch = {"batch_index": torch.tensor([0])}
    guard.on_train_batch_end(trainer, module, None, batch, 0)
    assert module.rollbacks == 1 and module.lr_scale == 0.5
    with pytest.raises(TrainingDiverged, match="diverged"):
        guard.on_train_batch_end(trainer, module, None, batch, 0)


def test_a_finite_loss_spike_is_skipped_like_a_nonfinite_one():
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters())
    guard = NonFiniteGuard(spike_factor=10, spike_window=60)
    rng = np.random.default_rng(0)

    def step(loss: float) -> SimpleNamespace:
        lin.zero_grad()
        lin(torch.ones(1, 3)).sum().backward()
        module = SimpleNamespace(step_problem=None, step_loss=torch.tensor(loss), batches_done=1)
        guard.on_before_optimizer_step(_stub_trainer(), module, opt)
        return module

    assert step(1e6).step_problem is None  # no history yet: nothing to compare with
    guard._losses.clear()
    for _ in range(49):
        assert step(0.5 + 0.05 * rng.standard_normal()).step_problem is None
    assert step(50.0).step_problem is None  # 49 losses known: still too few to judge
    guard._losses.pop()
    assert step(0.5).step_problem is None  # the 50th
    m = step(6.0)  # 12x the median
    assert m.step_problem.startswith("loss spike (12") and lin.weight.grad is None and lin.bias.grad is None
    assert step(4.0).step_problem is None and lin.weight.grad is not None  # 8x: a bad batch, not a spike
    assert step(float("nan")).step_problem is None  # non-finite losses are the module's to report
    assert NonFiniteGuard(spike_factor=0).spike_factor == 0
    with pytest.raises(ValueError, match="spike_factor"):
        NonFiniteGuard(spike_factor=0.5)


@pytest.mark.slow
def test_loss_spikes_roll_back_and_training_finishes(blob_sets, tmp_path, capsys):
    run = tmp_path / "run"
    extra = ("guard.inject_spike_at=[8,9,10]", "guard.spike_window=5")
    assert train_cli.main(tiny(blob_sets, run, *extra)) == 0
    err = capsys.readouterr().err
    # Only the three injected batches are spikes (the rule saw 5+ ordinary losses first).
    assert len(re.findall(r"guard: loss spike \(\d+× the recent median\) at batch (?:8|9|10) ", err)) == 3
    assert len(re.findall(r"loss spike", err)) == 3
    assert re.search(r"3 skipped steps: rolled back to step0000006\.ckpt \(batch 6\); learning rate x0\.5", err)
    state = safe_load(run / "last.ckpt")["progressive_swap"]
    assert state["batches_done"] == 14 and state["rollbacks"] == 1 and state["lr_scale"] == 0.5
    events = (run / "logs" / "nonfinite.jsonl").read_text().splitlines()
    assert [json.loads(e)["event"] for e in events] == ["spike", "spike", "spike", "rollback"]


# -- resume=auto, damaged checkpoints, full disk (one short base run, copied per test) -------------


pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed")  # runs copied to a new directory


@pytest.fixture(scope="module")
def six_steps(blob_sets, tmp_path_factory):
    """A run stopped after 6 steps: step0000003.ckpt, step0000006.ckpt, last.ckpt (6)."""
    run = tmp_path_factory.mktemp("robust") / "base"
    assert train_cli.main(tiny(blob_sets, run, "max_steps=6")) == 0
    return run


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class SignalAt(pl.Callback):
    """Sends this process SIGTERM as batch ``batch`` ends, before the interrupt callback runs."""

    def __init__(self, batch: int):
        self.batch = batch

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.batches_done == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_stopped_before_its_first_periodic_checkpoint_resumes_to_the_end(blob_sets, tmp_path):
    """A stop before any periodic checkpoint (a run's first 10 minutes): after a signal
    ``last.ckpt`` keeps the open epoch; after max_steps (``debug=fast``) Lightning leaves it
    closed, as earlier builds did after a signal too; either way ``resume=auto`` trains the rest."""
    run = tmp_path / "run"
    args = tiny(blob_sets, run, "checkpoint.every_steps=null")  # the 10-minute clock: nothing due
    stop = ["+callbacks.stop._target_=test_robust.SignalAt", "+callbacks.stop.batch=3"]
    assert train_cli.main([*args, *stop]) == 143
    ck = safe_load(run / "last.ckpt")
    assert ck["progressive_swap"]["batches_done"] == 3
    assert ck["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 0
    assert not (run / "model.safetensors").exists()
    for p in ("total", "current"):  # the epoch closed, as Lightning's end-of-training save left it
        ck["loops"]["fit_loop"]["epoch_progress"][p].update(processed=1, completed=1)
    torch.save(ck, run / "last.ckpt")
    assert train_cli.main([*args, "resume=auto", "max_steps=6"]) == 0
    assert safe_load(run / "last.ckpt")["progressive_swap"]["batches_done"] == 6
    assert train_cli.main([*args, "resume=auto"]) == 0
    assert safe_load(run / "last.ckpt")["progressive_swap"]["batches_done"] == 14  # 6 + 4 + 4 batches of 8
    assert (run / "model.safetensors").exists()


@pytest.mark.slow
def test_resume_auto_skips_damaged_checkpoints(blob_sets, six_steps, tmp_path, capsys):
    run = _copy(six_steps, tmp_path / "run")
    _truncate(run / "last.ckpt")
    _truncate(run / "step0000006.ckpt")
    (run / f"{TEMP_PREFIX}step0000009.ckpt.x1y2.tmp").write_bytes(b"killed mid-write")
    capsys.readouterr()
    assert train_cli.main(tiny(blob_sets, run, "resume=auto", "max_steps=7")) == 0
    err = capsys.readouterr().err
    assert "skipping unreadable checkpoint" in err and "last.ckpt" in err and "step0000006.ckpt" in err
    assert re.search(r"resuming .*step0000003\.ckpt", err.replace("\n", ""))
    assert safe_load(run / "last.ckpt")["progressive_swap"]["batches_done"] == 7
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_explicit_or_all_damaged_resume_is_a_one_line_error(blob_sets, six_steps, tmp_path, capsys):
    run = _copy(six_steps, tmp_path / "run")
    _truncate(run / "last.ckpt")
    capsys.readouterr()
    assert train_cli.main(tiny(blob_sets, tmp_path / "other", f"resume={run / 'last.ckpt'}")) == 2
    assert "truncated or corrupt" in _error_line(capsys)
    for p in run.glob("*.ckpt"):
        _truncate(p)
    assert train_cli.main(tiny(blob_sets, run, "resume=auto")) == 2
    assert "no readable checkpoint" in _error_line(capsys)
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_keeps_last_ckpt(blob_sets, six_steps, tmp_path, capsys, monkeypatch):
    run = _copy(six_steps, tmp_path / "run")
    real_save = torch.save

    def disk_full(obj, f, *a, **k):  # the next checkpoint (step 9) fills the disk half-way
        real_save(obj, f, *a, **k)
        f.truncate(f.tell() // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", disk_full)
    capsys.readouterr()
    rc = train_cli.main(tiny(blob_sets, run, "resume=auto"))
    monkeypatch.undo()
    assert rc == 3
    line = _error_line(capsys)
    assert (
        "No space left on device" in line and "step0000009.ckpt" in line and "previous checkpoints are intact" in line
    )
    assert safe_load(run / "last.ckpt")["progressive_swap"]["batches_done"] == 6
    assert not list(run.glob(".*.tmp")) and not (run / "step0000009.ckpt").exists()


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def _wrapped_enospc() -> RuntimeError:
    """What torch.save and safetensors raise on a full disk: the OSError as the cause of a RuntimeError."""
    try:
        raise _enospc()
    except OSError as e:
        try:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from e
        except RuntimeError as wrapped:
            return wrapped


def _fail(make):
    def writer(*a, **k):
        raise make()
    return writer


# (what fails, how to make it fail, what the line names, batches_done of last.ckpt afterwards or None: the end)
DISK_FULL_CASES = {
    "checkpoint, wrapped by torch": (lambda mp: mp.setattr(ckpt_mod.torch, "save", _fail(_wrapped_enospc)),
                                     "step0000009.ckpt (the previous checkpoints are intact)", 6),
    "checkpoint, errno lost": (lambda mp: mp.setattr(ckpt_mod.torch, "save", _fail(
        lambda: RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                             "data/3: file write failed"))), "step0000009.ckpt", 6),
    "preview": (lambda mp: mp.setattr(callbacks_mod, "atomic_write_bytes", _fail(_enospc)),
                "preview " , 6),
    "final weights": (lambda mp: mp.setattr(callbacks_mod, "save_weights", _fail(_wrapped_enospc)),
                      "model.safetensors (the checkpoints are intact", None),
    "logs": (lambda mp: mp.setattr(csv_logs._ExperimentWriter, "save", _fail(_enospc)),
             "the logs in ", 6),  # Lightning saves the logs as training starts
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DISK_FULL_CASES))
def test_full_disk_anywhere_in_training_is_exit_3_one_line_and_last_ckpt_intact(
    blob_sets, six_steps, tmp_path, capsys, monkeypatch, case
):
    """Checkpoints, previews, logs and model.safetensors: a full disk stops the run with exit code 3
    and one line naming the file, never a traceback, and last.ckpt stays a complete checkpoint."""
    patch, named, batches = DISK_FULL_CASES[case]
    run = _copy(six_steps, tmp_path / "run")
    patch(monkeypatch)
    capsys.readouterr()
    rc = train_cli.main(tiny(blob_sets, run, "resume=auto", "preview_every=1"))
    monkeypatch.undo()
    captured = capsys.readouterr()
    assert rc == 3, captured.err[-2000:]
    assert "Traceback" not in captured.err + captured.out
    line = _error_line_of(captured.err)
    assert line.startswith("swap-train: error: ") and named in line, line
    assert "space left on device" in line or "write failed" in line, line
    done = safe_load(run / "last.ckpt")["progressive_swap"]["batches_done"]
    assert done == batches if batches is not None else done > 6  # the end of the run was saved before
    assert not list(run.glob(".*.tmp")) and not list(run.glob("previews/.*"))
    if case == "final weights":  # the weights of the run's earlier end (max_steps=6) are left as they were
        from safetensors import safe_open

        with safe_open(str(run / "model.safetensors"), "pt") as f:
            assert json.loads(f.metadata()["batches_done"]) == 6


def _error_line_of(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("swap-train:")]
    assert len(lines) == 1, lines
    return lines[0]


# -- hostile weight files --------------------------------------------------------------------------


class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_safetensors_round_trip_and_hostile_files_execute_nothing(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    save_weights(model, tmp_path / "w.safetensors", {"arch": {"res": 32}})
    back = load_weights(tmp_path / "w.safetensors")
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert f.metadata() == {"arch": '{"res": 32}'}

    marker = tmp_path / "pwned"
    for name in ("evil.safetensors", "evil.pt", "evil.ckpt"):
        (tmp_path / name).write_bytes(pickle.dumps({"state_dict": _Boom(marker)}))
    with pytest.raises(ValueError, match="cannot read safetensors"):
        load_weights(tmp_path / "evil.safetensors")
    for name in ("evil.pt", "evil.ckpt"):
        with pytest.raises(UnsafeCheckpointError, match="nothing was executed"):
            load_weights(tmp_path / name)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.safetensors")


def test_warm_start_from_a_hostile_safetensors_file_is_a_one_line_error(blob_sets, tmp_path, capsys):
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Boom(tmp_path / "pwned")))
    assert train_cli.main(tiny(blob_sets, tmp_path / "run", f"warm_start={evil}")) == 2
    assert "cannot read safetensors" in _error_line(capsys)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_every_torch_load_in_the_source_tree_is_weights_only():
    offenders = []
    for path in [*REPO.glob("progressive_swap/**/*.py"), *REPO.glob("tools/*.py"), *REPO.glob("tests/*.py")]:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(", text):
            depth, end = 1, m.end()
            while depth and end < len(text):  # the whole call, nested parentheses included
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            if "weights_only=True" not in text[m.start() : end]:
                offenders.append(f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}")
        offenders += [f"{path.relative_to(REPO)}: pickle.load" for _ in re.finditer(r"\bpickle\.load\(", text)]
    assert not offenders, offenders


# -- kill -9 at random moments ---------------------------------------------------------------------


@pytest.mark.slow
def test_chaos_three_kills_end_bitwise_equal(blob_sets, tmp_path):
    chaos_train = import_tool("chaos_train")
    report = chaos_train.chaos(list(blob_sets), tmp_path, kills=3, short=True, seed=1, log=lambda m: None)
    assert report["ok"], report
    assert report["final"]["bitwise_equal"] and report["kills_done"] >= 2
