"""Progress where there is no terminal: plain lines from every long command (core/progress.py)
and swap-train (train/callbacks.py)."""
from __future__ import annotations

import io
import re
import types

import pytest
import torch
from conftest import tiny, write_blob_faceset
from pytorch_lightning.callbacks import RichProgressBar

from progressive_swap.cli import export as export_cli
from progressive_swap.cli import extract as extract_cli
from progressive_swap.cli import faceset as faceset_cli
from progressive_swap.cli import mask as mask_cli
from progressive_swap.cli import phantom as phantom_cli
from progressive_swap.cli import train as train_cli
from progressive_swap.core.progress import Progress, duration, format_line
from progressive_swap.core.weights import save_weights
from progressive_swap.faceset import identity
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.phantom.renderer import sample_identity, sample_trajectory
from progressive_swap.phantom.video import write_phantom_video
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


# ---------------------------------------------------------------------- every command (core/progress.py)

# ``extract detect  frames 3/6 (50%)  12.3 frames/s  faces 3  ETA 0m01s``; the last line of a task
# says ``done in`` instead of ``ETA``.
ANY = re.compile(r"^(?P<label>\S.*?)  (?P<unit>[a-z]+) (?P<done>\d+)(?:/(?P<total>\d+) \(\d+%\))?"
                 r"(?:  [\d.]+ [a-z]+/s)?(?P<counts>(?:  [a-z]+ \d+)*)(?:  (?:ETA|done in|stopped after) \S+)?$")


def progress_lines(err: str, label: str) -> list[re.Match]:
    """The progress lines of one task (by label prefix) in a command's stderr."""
    found = [ANY.match(ln) for ln in err.splitlines()]
    return [m for m in found if m and m.group("label").startswith(label)]


def check_task(err: str, label: str, total: int, unit: str, per_line: int = 1) -> list[re.Match]:
    """Lines of ``label``: one per ``per_line`` units and a last one at the total, counts never going back."""
    lines = progress_lines(err, label)
    assert lines, f"no {label!r} progress lines in:\n{err}"
    done = [int(m.group("done")) for m in lines]
    assert done == sorted(done) and done[-1] == total, done
    assert all(m.group("unit") == unit and int(m.group("total")) == total for m in lines)
    assert lines[-1].string.split("  ")[-1].startswith("done in")
    assert len(lines) == total // per_line + 1  # progress_every=0: a line per update, and the last
    return lines


def test_plain_lines_rate_and_eta_with_a_fake_clock():
    t = [100.0]
    out = io.StringIO()
    with Progress(every=10, stream=out, clock=lambda: t[0]) as p:
        task = p.task("extract detect", 100, "frames", done=20, faces=0)  # 20 found done: a resumed run
        for _ in range(40):
            t[0] += 1.0
            task.advance(2, faces=1)  # 2 frames a second
        assert task.rate() == pytest.approx(2.0) and task.eta() == pytest.approx(0.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 + 1  # at 10, 20, 30, 40 s, and the last
    assert lines[0] == "extract detect  frames 40/100 (40%)  2.0 frames/s  faces 10  ETA 0m30s"
    assert lines[2] == "extract detect  frames 80/100 (80%)  2.0 frames/s  faces 30  ETA 0m10s"
    assert lines[-1] == "extract detect  frames 100/100 (100%)  2.0 frames/s  faces 40  done in 0m40s"
    assert all(ANY.match(ln) for ln in lines)


def test_unknown_total_long_runs_interruption_and_the_terminal():
    t = [0.0]
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), Progress(every=0, stream=out, clock=lambda: t[0]) as p:
        task = p.task("phantom", None, "faces")
        t[0] = 4000.0
        task.advance(8000)
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == ["phantom  faces 8000  2.0 faces/s",
                                           "phantom  faces 8000  2.0 faces/s  stopped after 1h06m"]
    assert duration(59.6) == "1m00s" and duration(7199) == "1h59m"
    with Progress(stream=_Tty()) as p:  # a terminal: rich's bar, no plain lines
        assert p._rich is not None and Progress(stream=io.StringIO())._rich is None
    quiet = io.StringIO()
    with Progress(every=0, stream=quiet, enabled=False) as p:
        p.task("export", 3, "frames").advance(3)
    assert quiet.getvalue() == ""


def test_swap_train_lines_have_the_shared_shape():
    line = format_line("stage 64px alpha 0.42", "step", 512, 1178, 18.3, "img/s", ["loss 0.1234"], "ETA 4m10s")
    assert line == "stage 64px alpha 0.42  step 512/1178 (43%)  18.3 img/s  loss 0.1234  ETA 4m10s"
    assert LINE.match(line)


def test_swap_phantom_logs_faces(tmp_path, capsys):
    rc = phantom_cli.main([f"out={tmp_path}", "faces=3", "videos=1", "frames=2", "size=32", "progress_every=0"])
    assert rc == 0
    lines = check_task(capsys.readouterr().err, "phantom", 2 * (3 + 2), "faces")
    assert {m.group("label") for m in lines} >= {"phantom faces id0", "phantom faces id1", "phantom video id0"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    return write_phantom_video(d, "clip", sample_identity(3), sample_trajectory(3, 6, 24.0), 96, fps=24.0)


def test_swap_extract_logs_frames_fps_and_faces(clip, tmp_path, capsys):
    video, truth = clip
    rc = extract_cli.main([f"input={video}", f"out={tmp_path}", "size=32", "landmarks=given",
                           f"landmarks_file={truth}", "progress_every=0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    for label in ("extract detect", "extract crop"):
        lines = check_task(err, label, 6, "frames")
        assert lines[-1].group("counts") == "  faces 6"


def test_swap_export_logs_frames(clip, tmp_path, capsys):
    torch.manual_seed(0)
    model = CombAutoencoder(CombArch(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
                                     channel_base=256, channel_max=16, channel_min=8))
    meta = {"arch": model.arch_args(), "face_type": "whole", "identities": ["a", "b"], "stage_res": 32, "alpha": 1.0}
    save_weights(model, tmp_path / "model.safetensors", meta)
    video, truth = clip
    rc = export_cli.main([f"checkpoint={tmp_path / 'model.safetensors'}", f"input={video}", f"out={tmp_path / 'x'}",
                          "identity=a", "landmarks=given", f"landmarks_file={truth}", "progress_every=0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = check_task(err, "export", 6, "frames")
    assert lines[-1].group("counts") == "  faces 6"
    check_task(err, "extract crop", 6, "frames")  # footage input is extracted first


def test_swap_mask_hull_train_and_apply_log_faces(tmp_path, capsys):
    fs = write_blob_faceset(tmp_path / "set", 0, n=6)
    assert mask_cli.main(["apply", str(fs), "hull=both", "progress_every=0"]) == 0
    check_task(capsys.readouterr().err, "mask hull set", 6, "faces")
    model = tmp_path / "m.safetensors"
    rc = mask_cli.main(["train", str(fs), f"out={model}", "mask=components", "size=32", "steps=3", "batch=2",
                        "val_fraction=0.2", "context_channels=16", "fuse_channels=16", "aux_channels=8",
                        "progress_every=0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    check_task(err, "mask train", 3 * 2, "faces", per_line=2)  # a line per step of 2 faces
    assert mask_cli.main(["apply", str(fs), f"model={model}", "batch=4", "progress_every=0"]) == 0
    lines = progress_lines(capsys.readouterr().err, "mask apply set")
    assert [int(m.group("done")) for m in lines] == [4, 6, 6] and int(lines[-1].group("total")) == 6


@pytest.mark.skipif(not identity.available(), reason="the dlib extra is not installed")
def test_swap_faceset_embed_logs_faces(tmp_path, capsys):
    fs = write_blob_faceset(tmp_path / "set", 0, n=3)
    assert faceset_cli.main(["embed", str(fs), "progress_every=0"]) == 0
    check_task(capsys.readouterr().err, "embed", 3, "faces")
