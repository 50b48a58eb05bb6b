"""Nothing silently wrong: interrupts keep the work, outputs are never stale, damaged input is
never a success, inputs agree, one writer per output, every option checked before writing.

Bad-input rows follow ``tests/test_bad_inputs.py``: exit code, one line on stderr, nothing written.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import import_tool

from progressive_swap.cli import common
from progressive_swap.cli.common import parse_overrides, run_cli
from progressive_swap.cli.export import ExportOptions
from progressive_swap.cli.schema import field_docs
from progressive_swap.core.io import TEMP_PREFIX, OutputInUse, locked_dir, remove_debris
from progressive_swap.extract.pipeline import ExtractOptions, extraction_problems
from progressive_swap.masks.hull import LANDMARK_MASKS
from progressive_swap.train import datamodule

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "swap-train": "progressive_swap.cli.train",
    "swap-phantom": "progressive_swap.cli.phantom",
    "swap-extract": "progressive_swap.cli.extract",
    "swap-mask": "progressive_swap.cli.mask",
    "swap-export": "progressive_swap.cli.export",
}


@pytest.fixture(scope="module")
def inputs(blob_sets, tmp_path_factory) -> dict[str, str]:
    from progressive_swap.phantom.renderer import sample_identity, sample_trajectory
    from progressive_swap.phantom.video import write_phantom_video

    d = tmp_path_factory.mktemp("nsw")
    video, truth = write_phantom_video(d, "clip", sample_identity(3), sample_trajectory(3, 6, 24.0), 96, fps=24.0)
    doc = json.loads(truth.read_text())
    for name, change in (("other_size", {"size": [200, 100]}), ("long", {"frames": doc["frames"] + [
            {"index": 40, "faces": doc["frames"][0]["faces"]}]})):
        (d / f"{name}.json").write_text(json.dumps({**doc, **change}))
    return {"A": blob_sets[0], "B": blob_sets[1], "dir": str(d), "video": str(video), "truth": str(truth)}


TRAIN = ["recipe=demo", "data=facesets", "out={out}", "data.num_workers=0"]
CASES = [
    # options: misspelt keys and values, bounds, duplicates, unknown mask names
    ("swap-extract", ["input={video}", "out={out}", "smoth=none"], "did you mean 'smooth'"),
    ("swap-extract", ["input={video}", "out={out}", "smooth=savgl"], "did you mean 'savgol'"),
    ("swap-extract", ["input={video}", "out={out}", "smooth_window=-0.2"], "smooth_window must be > 0"),
    ("swap-extract", ["input={video}", "out={out}", "cuts=[4,-3]"], "cuts must be >= 0"),
    ("swap-extract", ["input={video}", "out={out}", "fps=-24"], "fps must be >= 0"),
    ("swap-extract", ["input={video}", "out={out}", "landmarks=given"], "landmarks_file"),
    (
        "swap-extract",
        ["input={video}", "out={out}", "landmarks=given", "landmarks_file={truth}", "boxes=given:{truth}"],
        "drop boxes=given",
    ),
    ("swap-phantom", ["out={out}", "fps=0"], "fps must be > 0"),
    ("swap-phantom", ["out={out}", "idenities=3"], "did you mean 'identities'"),
    ("swap-mask", ["apply", "{A}", "model={dir}/nope.safetensors", "intersect=[hull]"], "no 'hull' masks"),
    ("swap-mask", ["train", "{A}", "out={out}/m.safetensors", "loss=dice"], "unknown loss 'dice'"),
    ("swap-export", ["checkpoint=x", "input={A}", "out={out}", "identity=0", "mask=stored"], "stored_mask=NAME"),
    ("swap-export", ["checkpoint=x", "input={A}", "out={out}", "identity=0", "fromat=exr"], "did you mean 'format'"),
    ("swap-export", ["checkpoint=x", "input={A}", "out={out}", "identity=0", "batch=0"], "batch must be >= 1"),
    ("swap-train", [*TRAIN, "data.faces=[{A},{A}]"], "twice"),
    ("swap-train", [*TRAIN, "data.faces=[{A},{B}]", "data.mask=visble"], "data.mask='visble'"),
    # inputs agree: landmark files of other footage
    (
        "swap-extract",
        ["input={video}", "out={out}", "size=64", "landmarks=given", "landmarks_file={dir}/other_size.json"],
        "made for 200x100 frames",
    ),
    (
        "swap-extract",
        ["input={video}", "out={out}", "size=64", "landmarks=given", "landmarks_file={dir}/long.json"],
        "lists frame 40",
    ),
]


@pytest.mark.parametrize("prog,argv,match", CASES, ids=[f"{c[0]}-{i:02d}" for i, c in enumerate(CASES)])
def test_bad_input_sweep(prog, argv, match, inputs, tmp_path, capsys):
    cli = importlib.import_module(COMMANDS[prog])
    out = tmp_path / "out"
    args = [a.format(out=out, **inputs) for a in argv]
    capsys.readouterr()
    rc = cli.main(args + (["progress=false"] if prog == "swap-extract" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:") and match in err[0], err
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


# -- one place for every default; --help generated from the code ---------------------------------


def test_one_definition_of_mask_kinds_and_phantom_faces():
    from progressive_swap.cli.config import compose
    from progressive_swap.cli.phantom import PhantomOptions
    from progressive_swap.extract import pipeline
    from progressive_swap.phantom.dataset import DEFAULT_FACES

    assert pipeline.MASK_KINDS is LANDMARK_MASKS and datamodule.LANDMARK_MASKS is LANDMARK_MASKS
    assert PhantomOptions().faces == DEFAULT_FACES
    # The demo's data group names the count so it can be overridden (data.phantom.faces=N); it is the same number.
    assert compose("train", []).data.phantom.faces == DEFAULT_FACES


@pytest.mark.parametrize("prog", ["swap-export", "swap-extract", "swap-phantom"])
def test_help_lists_every_key_with_default_and_description(prog, capsys):
    cli = importlib.import_module(COMMANDS[prog])
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    cls = {"swap-export": ExportOptions, "swap-extract": ExtractOptions}.get(prog)
    if cls is None:
        from progressive_swap.cli.phantom import PhantomOptions as cls
    docs = field_docs(cls)
    for name in cls.__dataclass_fields__:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(f"{name}=")), None)
        assert line is not None, name
        assert docs[name] and docs[name][:20] in line, (name, line)


def test_old_spellings_still_work_with_one_note(tmp_path, capsys):
    def fn():
        cfg = parse_overrides(
            common.split_deprecated(["landmarks=given:f.json"], "landmarks", "given", "landmarks_file", "p"),
            ExtractOptions(),
        )
        assert cfg.landmarks == "given" and cfg.landmarks_file == "f.json"

    assert run_cli(fn, "p") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["p: note: landmarks=given:X is deprecated; write landmarks=given landmarks_file=X"]
    assert ExtractOptions(landmarks="given:x.json").landmarks_file == "x.json"  # the Python API too


# -- one writer per output; debris of killed runs -------------------------------------------------


def test_second_writer_fails_at_once_naming_the_first(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from progressive_swap.core.io import locked_dir\nimport time\n"
                               f"with locked_dir({str(out)!r}):\n print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(OutputInUse, match=f"process {holder.pid}"):
            with locked_dir(out):
                pass
        assert time.monotonic() - t0 < 2
    finally:
        holder.kill()
        holder.wait()
    with locked_dir(out):  # released with the process, kill -9 included
        pass
    assert list(out.iterdir()) == []  # no lock file left behind


def test_debris_of_killed_writes_is_removed(tmp_path):
    (tmp_path / "meta").mkdir()
    debris = [tmp_path / f"{TEMP_PREFIX}last.ckpt.k3j_x9a1.tmp",
              tmp_path / "meta" / f"{TEMP_PREFIX}face.000003.ab12cd34.png"]
    keep = [tmp_path / "face.000003.png", tmp_path / ".hidden", tmp_path / "meta" / "face.000003.json",
            tmp_path / ".last.ckpt.k3j_x9a1.tmp"]  # an old-style name: could be a user's file
    for p in debris + keep:
        p.write_bytes(b"x")
    assert sorted(remove_debris(tmp_path, subdirs=("meta",))) == sorted(debris)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in debris)


# -- interrupts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "interrupted")])
def test_every_command_exits_128_plus_signal(sig, code, word, capsys):
    def fn():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the signal arrives first
        return 0

    assert run_cli(fn, "swap-x") == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0] and "rerun" in err[0]
    assert signal.getsignal(signal.SIGTERM) is not common._raise_terminated  # handler restored


def test_interrupted_extraction_is_not_valid(inputs, tmp_path):
    from progressive_swap.cli import extract as extract_cli

    out = tmp_path / "set"
    args = [f"input={inputs['video']}", f"out={out}", "size=32", "landmarks=given",
            f"landmarks_file={inputs['truth']}", "progress=false"]
    assert extract_cli.main(args) == 0 and extraction_problems(out) == []
    manifest = next(out.glob(".extract/*/manifest.json"))
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "complete": False}))  # as a kill during the crop pass leaves it
    from progressive_swap.cli import faceset as faceset_cli

    assert faceset_cli.main(["info", str(out)]) == 2
    assert "interrupted" in extraction_problems(out)[0]


@pytest.mark.slow
def test_sigint_and_sigterm_lose_no_step_and_resume_bitwise(blob_sets, tmp_path):
    chaos_train = import_tool("chaos_train")
    report = chaos_train.chaos(list(blob_sets), tmp_path, kills=2, short=True, seed=3, log=lambda m: None,
                               signals=("SIGINT", "SIGTERM"))
    assert report["ok"], report
    stopped = [e for e in report["events"] if e["trigger"] != "finished before the kill"]  # a late signal is no stop
    assert stopped and [e["rc"] for e in stopped] == [130, 143][: len(stopped)]
    assert all(e["steps_lost"] == 0 for e in report["events"])
    assert report["final"]["bitwise_equal"]


# -- export: stale outputs, damaged layers, damaged footage --------------------------------------


def test_export_layers_follow_their_input(inputs, tmp_path, capsys):
    """Re-extracted faces and damaged layers are redone; damaged footage is exit 4 and 'incomplete'."""
    from progressive_swap.cli import export as export_cli
    from progressive_swap.cli import extract as extract_cli
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
    from progressive_swap.train.checkpoint import save_weights

    arch = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8, channel_base=256,
                channel_max=16, channel_min=8)
    ckpt = tmp_path / "m.safetensors"
    save_weights(CombAutoencoder(CombArch(**arch)), ckpt,
                 {"arch": arch, "stage_res": 32, "alpha": 1.0, "identities": ["a", "b"], "face_type": "whole"})
    fset = tmp_path / "set"
    ext = [f"input={inputs['video']}", f"out={fset}", "size=32", "landmarks=given",
           f"landmarks_file={inputs['truth']}", "progress=false"]
    assert extract_cli.main(ext) == 0
    out = tmp_path / "layers"
    args = [f"checkpoint={ckpt}", f"input={fset}", f"out={out}", "identity=a", "progress=false", "device=cpu"]
    assert export_cli.main(args) == 0
    capsys.readouterr()
    layers = sorted((out / "layers").glob("*.png"))
    layers[2].write_bytes(layers[2].read_bytes()[:100])  # damaged under its final name
    assert export_cli.main(args) == 0
    assert "1 redone" in capsys.readouterr().err
    # Re-extract with other smoothing: crops and matrices change, so every frame is redone.
    import shutil

    shutil.rmtree(fset)
    assert extract_cli.main([*ext, "smooth=none"]) == 0
    capsys.readouterr()
    assert export_cli.main(args) == 0
    err = capsys.readouterr().err
    n = len(layers)
    assert f"{n} redone" in err and "0 already complete" in err
    assert json.loads((out / "export.json").read_text())["status"] == "complete"
    # Damaged footage: an image sequence with one frame broken after extraction is exit 4,
    # export.json "incomplete"; allow_missing=true accepts it (still "incomplete").
    import cv2

    from progressive_swap.footage.sources import open_source

    frames = tmp_path / "frames"
    frames.mkdir()
    for fr in open_source(inputs["video"]).frames():
        cv2.imwrite(str(frames / f"f_{fr.index:04d}.png"), fr.image[:, :, ::-1])
    fset2 = tmp_path / "set2"
    assert extract_cli.main([f"input={frames}", f"out={fset2}", "size=32", "landmarks=given",
                             f"landmarks_file={inputs['truth']}", "progress=false"]) == 0
    (frames / "f_0003.png").write_bytes(b"\x89PNG broken")
    out2 = tmp_path / "layers2"
    args2 = [f"checkpoint={ckpt}", f"input={fset2}", f"out={out2}", "identity=a", "progress=false", "device=cpu"]
    capsys.readouterr()
    rc = export_cli.main(args2)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and err[-1].startswith("swap-export: error: incomplete: 1 frame(s)"), err
    manifest = json.loads((out2 / "export.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["frames_missing"] == 1
    assert export_cli.main([*args2, "allow_missing=true"]) == 0
    assert json.loads((out2 / "export.json").read_text())["status"] == "incomplete"
    # Another footage into the same out= is refused: its layers and these would mix.
    from progressive_swap.export.settings import check_previous

    with pytest.raises(ValueError, match="holds an export of"):
        check_previous(out, str(tmp_path / "another.mp4"), None)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="changed since"):
        check_previous(out, json.loads((out / "export.json").read_text())["input"], {"kind": "video", "size": 1})
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
