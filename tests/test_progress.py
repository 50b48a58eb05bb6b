"""Progress where there is no terminal: plain lines from swap-train (train/callbacks.py)."""
from __future__ import annotations

import io
import re
import types

from conftest import tiny
from pytorch_lightning.callbacks import RichProgressBar

from progressive_swap.cli import train as train_cli
from progressive_swap.train.callbacks import LogProgress, progress
from progressive_swap.train.growth import GrowthSchedule

LINE = re.compile(r"^stage (\d+)px alpha (\d\.\d\d)  step (\d+)/(\d+) \(\d+%\)"
                  r"( +[\d.]+ img/s)?  loss [\d.]+( +ETA \S+)?$")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar_and_a_log_gets_lines():
    assert isinstance(progress(stream=_Tty()), RichProgressBar)
    assert isinstance(progress(stream=io.StringIO()), LogProgress)


def test_log_lines_report_rate_and_eta_from_the_schedule():
    sched = GrowthSchedule([dict(res=16, images=160, batch=4), dict(res=32, images=80, fade=80, batch=4)], identities=2)
    t = [0.0]
    out = io.StringIO()
    bar = LogProgress(interval_s=10, stream=out, clock=lambda: t[0])
    module = types.SimpleNamespace(batches_done=0, schedule=sched)
    trainer = types.SimpleNamespace(is_global_zero=True, callback_metrics={"loss": 0.5})
    bar.on_train_start(trainer, module)
    for step in range(1, sched.total_batches + 1):
        module.batches_done, t[0] = step, step * 1.0  # one batch (8 images) a second
        bar.on_train_batch_end(trainer, module, None, None, step)
    lines = out.getvalue().splitlines()
    assert len(lines) == sched.total_batches // 10
    first = LINE.match(lines[0])
    assert first and first.group(3) == "10" and int(first.group(4)) == sched.total_batches
    assert "8.0 img/s" in lines[0]
    left = (sched.total_batches - 10) * 8 / 8.0
    assert f"ETA {int(left) // 60}m{int(left) % 60:02d}s" in lines[0]
    assert "stage 32px alpha 0." in next(ln for ln in lines if "32px" in ln)  # the fade shows its alpha


def test_swap_train_logs_plain_progress_lines_when_stderr_is_a_file(blob_sets, tmp_path, capsys):
    assert train_cli.main(tiny(blob_sets, tmp_path / "run", "progress_every=0")) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [ln for ln in err if LINE.match(ln)]
    steps = [int(LINE.match(ln).group(3)) for ln in lines]
    assert steps == sorted(steps) and steps[-1] == int(LINE.match(lines[-1]).group(4))  # ends at the last step
    assert len(lines) >= 10
