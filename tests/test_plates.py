"""Plates in, layers out: numbered sequences (patterns, frame numbers, gaps), float plates read
through OpenImageIO, and the colour path back to the plate.

Phantom frames give exact landmarks (``landmarks=given``), so nothing here runs a detector or
the network's weights beyond a tiny random model; the round trips use a stand-in network that
returns its input face.
"""
from __future__ import annotations

import json

import cv2
import pytest
from conftest import write_tiny_weights

from progressive_swap.cli import export as export_cli
from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

FACE_TYPE = "whole"
SIZE = 160
N = 4
ARCH = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
            channel_base=256, channel_max=16, channel_min=8)


@pytest.fixture(scope="module")
def clip():
    ident = sample_identity(3)
    return [render(ident, p, SIZE) for p in sample_trajectory(1, N, fps=25)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("ckpt"), ARCH, FACE_TYPE)


def write_truth(path, clip, numbers) -> str:
    frames = [{"index": int(n), "faces": [{"landmarks": r.landmarks.tolist()}]} for n, r in zip(numbers, clip)]
    path.write_text(json.dumps({"fps": 25, "size": [SIZE, SIZE], "frames": frames}))
    return str(path)


def export(ckpt, inp, out, *extra) -> int:
    return export_cli.main([f"checkpoint={ckpt}", f"input={inp}", f"out={out}", "identity=bob", "progress=false",
                            *extra])


# ------------------------------------------------------------------------- patterns as sources


def test_an_export_of_a_numbered_png_pattern_finds_its_plates(tmp_path, clip, ckpt, capsys):
    """The bug of issue 26: the pattern was extracted, then refused as 'not found' by the export."""
    seq = tmp_path / "plates"
    seq.mkdir()
    for i, r in enumerate(clip):
        cv2.imwrite(str(seq / f"plate.{i:04d}.png"), r.image[..., ::-1])
    truth = write_truth(tmp_path / "truth.json", clip, range(N))
    out = tmp_path / "out"
    rc = export(ckpt, seq / "plate.%04d.png", out, "landmarks=given", f"landmarks_file={truth}")
    assert rc == 0, capsys.readouterr().err
    assert len(list((out / "layers").glob("face.*.png"))) == N
    assert json.loads((out / "export.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("pattern", ["plate.%04d.png", "plate.####.png", "nothing_*.png"])
def test_a_pattern_matching_no_file_is_one_line_and_writes_nothing(tmp_path, ckpt, capsys, pattern):
    (tmp_path / "plates").mkdir()
    out = tmp_path / "out"
    assert export(ckpt, tmp_path / "plates" / pattern, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swap-export: error:") and "\n" not in err, err
    assert not out.exists()
