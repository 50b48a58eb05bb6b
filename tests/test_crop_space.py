"""What a face set's crops' values mean (``crop_space`` in ``faceset.json``) travels into the
model and back out at export (issue 26; ``docs/plates.md``).

Sets and checkpoints written before the field existed are ``srgb``: 8-bit sRGB pictures, which
is what every extraction has stored (for float plates, their sRGB view).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY, tiny

from progressive_swap import faceset
from progressive_swap.cli import export as export_cli
from progressive_swap.cli import train as train_cli
from progressive_swap.export.swapper import read_checkpoint
from progressive_swap.faceset.format import FaceSetError
from progressive_swap.train.datamodule import check_facesets
from progressive_swap.train.module import CKPT_KEY

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"


def tagged(src: str, dst: Path, crop_space: str | None) -> str:
    """A copy of a face set whose header says ``crop_space`` (``None``: the field removed)."""
    shutil.copytree(src, dst)
    h = json.loads((dst / "faceset.json").read_text())
    h.pop("crop_space", None)
    if crop_space is not None:
        h["crop_space"] = crop_space
    (dst / "faceset.json").write_text(json.dumps(h))
    return str(dst)


def test_old_face_sets_and_checkpoints_without_the_field_are_srgb(blob_sets, tmp_path):
    for name in ("id0", "id1"):  # the v0.1 fixtures, unchanged on disk
        assert "crop_space" not in json.loads((LEGACY / name / "faceset.json").read_text())
        assert faceset.open(LEGACY / name).crop_space == "srgb"
    assert check_facesets([str(LEGACY / "id0"), str(LEGACY / "id1")], 32)["crop_space"] == "srgb"
    # A new set says so explicitly, and trains with an old one: both are sRGB.
    assert faceset.open(blob_sets[0]).header["crop_space"] == "srgb"
    assert check_facesets([str(LEGACY / "id0"), blob_sets[1]], 32)["crop_space"] == "srgb"
    # Appending to an old set (a resumed extraction) keeps working, and keeps its header as it was.
    old = tagged(str(LEGACY / "id0"), tmp_path / "old", None)
    faceset.create(old, face_type="whole", size=32, exist_ok=True).close()
    assert "crop_space" not in json.loads((Path(old) / "faceset.json").read_text())
    with pytest.raises(FaceSetError, match="crop_space='srgb', not 'acescct'"):
        faceset.create(old, face_type="whole", size=32, exist_ok=True, crop_space="acescct")
    # Checkpoints without it (the v0.1 run) are models of sRGB crops.
    assert read_checkpoint(LEGACY / "model.safetensors")[0].crop_space == "srgb"
    assert read_checkpoint(LEGACY / "last.ckpt")[0].crop_space == "srgb"
    # A value nobody wrote is refused in one line, not read as sRGB.
    bad = tagged(blob_sets[0], tmp_path / "bad", "linear")
    with pytest.raises(FaceSetError, match="crop_space must be one of srgb, acescct, got 'linear'"):
        faceset.open(bad)


def test_training_refuses_face_sets_of_different_crop_spaces_in_one_line(blob_sets, tmp_path, capsys):
    b = tagged(blob_sets[1], tmp_path / "B", "acescct")
    argv = ["recipe=demo", "data=facesets", f"data.faces=[{blob_sets[0]},{b}]", f"out={tmp_path / 'run'}", *TINY]
    capsys.readouterr()
    assert train_cli.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("swap-train: error:") and "different crop spaces" in err[0], err
    assert f"{b}=acescct" in err[0] and f"{blob_sets[0]}=srgb" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_model_carries_its_face_sets_crop_space_to_export(blob_sets, tmp_path, capsys):
    """The tiny 4-step run of the suite, on sets tagged ``acescct`` (only the tag differs)."""
    a, b = (tagged(s, tmp_path / n, "acescct") for s, n in zip(blob_sets, "AB"))
    out = tmp_path / "run"
    argv = tiny([a, b], out, "max_steps=4")
    assert train_cli.main(argv) == 0
    from progressive_swap.core.weights import safe_load

    assert safe_load(out / "last.ckpt")[CKPT_KEY]["crop_space"] == "acescct"
    info = read_checkpoint(out / "model.safetensors")[0]
    assert info.crop_space == "acescct" and info.face_type == "whole"
    # Such a model has nothing to be fed from 8-bit (sRGB) footage: one line, nothing written.
    import cv2

    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    seq = tmp_path / "plates"
    seq.mkdir()
    r = render(sample_identity(3), sample_trajectory(1, 1, fps=25)[0], 96)
    cv2.imwrite(str(seq / "plate.0001.png"), r.image[..., ::-1])
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"fps": 25, "size": [96, 96],
                                 "frames": [{"index": 1, "faces": [{"landmarks": r.landmarks.tolist()}]}]}))
    capsys.readouterr()
    rc = export_cli.main([f"checkpoint={out / 'model.safetensors'}", f"input={seq / 'plate.####.png'}",
                          f"out={tmp_path / 'ex'}", "identity=id1", "landmarks=given", f"landmarks_file={truth}",
                          "progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "trained on acescct crops" in err[0], err
    assert not (tmp_path / "ex").exists()
