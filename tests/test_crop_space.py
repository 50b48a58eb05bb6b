"""What a face set's crops' values mean (``crop_space`` in ``faceset.json``) travels into the
model and back out at export (issue 26; ``docs/plates.md``).

Sets and checkpoints written before the field existed are ``srgb``: 8-bit sRGB pictures, which
is what every extraction has stored (for float plates, their sRGB view).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny

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


def test_an_8_bit_set_beside_an_acescct_one_loads_as_the_acescct_values_of_its_pictures(blob_sets, tmp_path):
    """One model learns one meaning of its values: beside an ACEScct set (a plate's), an 8-bit
    set's pictures load converted to ACEScct, whose view gives the pictures back."""
    from progressive_swap.footage.colour import crop_view, frame_in_crop_space
    from progressive_swap.train.datamodule import CombDataset

    b = tagged(blob_sets[1], tmp_path / "B", "acescct")
    info = check_facesets([blob_sets[0], b], 32)
    assert info["crop_space"] == "acescct" and info["crop_spaces"] == ["srgb", "acescct"]
    ds = CombDataset([blob_sets[0], b], mask="extended", augment=None)
    s = faceset.open(blob_sets[0])
    got = ds.load(0, 0, s.size)["image"].transpose(1, 2, 0)
    np.testing.assert_allclose(got, frame_in_crop_space(s.image(0), None, "acescct"), atol=1e-6)
    assert np.abs(got - s.image(0) / 255.0).max() > 0.05  # not the sRGB values
    assert np.abs(crop_view(got, "acescct").astype(int) - s.image(0)).max() <= 1
    # the ACEScct set itself loads as stored, and two sRGB sets stay sRGB
    np.testing.assert_allclose(ds.load(1, 0, s.size)["image"].transpose(1, 2, 0), faceset.open(b).values(0), atol=1e-6)
    assert CombDataset(blob_sets, mask="extended").crop_space == "srgb"


def test_a_model_carries_its_face_sets_crop_space_to_export(blob_sets, tmp_path, capsys):
    """The tiny 4-step run of the suite, on an 8-bit set and one tagged ``acescct`` (only the
    tag differs): a model of ACEScct crops, the 8-bit set's pictures converted as they load."""
    a, b = blob_sets[0], tagged(blob_sets[1], tmp_path / "B", "acescct")
    out = tmp_path / "run"
    argv = tiny([a, b], out, "max_steps=4")
    capsys.readouterr()
    assert train_cli.main(argv) == 0
    said = "".join(capsys.readouterr())
    name = faceset.open(a).identities[0]
    assert f"crop space acescct: the 8-bit sRGB pictures of {name} are converted to acescct as they load" in said
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


# ------------------------------------------------------------------------- 16-bit ACEScct face sets


def _linear(cct):
    from progressive_swap.footage import colour as CO

    return CO._apply(CO._processor(CO.BUILTIN_CONFIG, "ACEScct", "ACEScg"), cct)


@pytest.fixture(scope="module")
def plate_face():
    """A phantom face as an ACEScg plate, with a highlight (12.0) and a deep shadow (0.002)."""
    from test_plates import SIZE, srgb_to_acescg

    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    r = render(sample_identity(3), sample_trajectory(1, 1, fps=25)[0], SIZE)
    plate = srgb_to_acescg(r.image)
    x, y = np.round(r.landmarks[30]).astype(int)  # the nose tip, mid-crop
    plate[y - 6:y + 6, x - 8:x + 8] = 12.0
    plate[y + 8:y + 14, x - 8:x + 8] = 0.002
    return r, plate


def _extract(tmp_path, inp, truth, out, *extra):
    from progressive_swap.cli import extract as extract_cli

    return extract_cli.main([f"input={inp}", f"out={out}", "size=96", "landmarks=given", f"landmarks_file={truth}",
                             "progress=false", *extra])


def test_a_float_plate_extracted_to_acescct_keeps_highlights_and_shadows_in_16_bits(tmp_path, plate_face, capsys):
    """Issue 26 item 3: the crop is the plate's values in ACEScct at 16 bits, the very crop the
    export feeds a model of such sets; the 8-bit sRGB set clips the same highlight to 1."""
    import cv2

    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import FaceIn, FrameIn
    from progressive_swap.footage.sources import open_source

    r, plate = plate_face
    seq = tmp_path / "plates"
    seq.mkdir()
    from test_plates import write_plate, write_truth

    write_plate(seq / "plate.1001.exr", plate, "float")
    truth = write_truth(tmp_path / "truth.json", [r], [1001])
    pattern = seq / "plate.####.exr"
    capsys.readouterr()
    assert _extract(tmp_path, pattern, truth, tmp_path / "cct", "crop_space=auto") == 0, capsys.readouterr().err
    first = capsys.readouterr().out.splitlines()[0]
    assert "; crop space acescct (auto: a scene-referred plate; its highlights and shadows kept)" in first, first
    assert _extract(tmp_path, pattern, truth, tmp_path / "srgb", "crop_space=srgb") == 0, capsys.readouterr().err
    assert "; crop space srgb (crop_space=)" in capsys.readouterr().out.splitlines()[0]
    cct, srgb = faceset.open(tmp_path / "cct"), faceset.open(tmp_path / "srgb")
    assert cct.crop_space == "acescct" and cct.header["image_format"] == "png" and len(cct) == 1
    raw = cv2.imread(str(cct.image_path(0)), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (96, 96, 3)
    values = cct.values(0)
    # The export's crop of this face for a model of ACEScct crops, computed from the plate.
    src = open_source(pattern)
    fr = next(src.frames())
    rec = cct.record(0)
    frame = FrameIn(fr.index, fr.time, fr.image, [FaceIn(rec.matrix, 0, rec.landmarks)], fr.plate, fr.info,
                    src.colour.for_crops("acescct"))
    want = PL.crop_working(frame, rec.matrix, 96)
    err = np.abs(values - want).max()
    print(f"16-bit ACEScct crop vs the export's crop: max {err * 65535:.2f}/65535")
    assert err <= 0.5 / 65535 + 1e-7  # its 16-bit rounding and nothing else
    lin = _linear(values)
    assert abs(lin.max() - 12.0) / 12.0 < 2e-3, lin.max()  # the highlight, in 16 bits of log
    dark = lin[(lin > 0.0015) & (lin < 0.0025)]
    assert dark.size > 20 and np.abs(dark - 0.002).max() < 0.002 * 2e-3  # the shadow, to 0.2 %
    from test_plates import srgb_to_acescg

    assert srgb.image(0).max() == 255 and srgb_to_acescg(srgb.image(0)).max() < 1.01  # the 8-bit view clips at 1
    # What people and detectors look at: the sRGB view, close to the 8-bit set's picture.
    view, pic = cct.image(0).astype(np.float32), srgb.image(0).astype(np.float32)
    diff = np.abs(view - pic)
    print(f"sRGB view of the 16-bit set vs the 8-bit set: mean {diff.mean():.2f}, "
          f"99th pct {np.percentile(diff, 99):.1f}")
    assert cct.image(0).dtype == np.uint8 and diff.mean() < 1.5
    assert subprocess_info_deep(tmp_path / "cct") == 0


def subprocess_info_deep(path) -> int:
    from progressive_swap.cli.faceset import main as faceset_main

    return faceset_main(["info", str(path), "--deep"])


def test_8bit_footage_extracts_to_acescct_too_and_jpg_is_refused(tmp_path, capsys):
    """A model of ACEScct crops needs every identity in ACEScct: 8-bit footage converts (sRGB →
    ACEScct), and its view gives the footage's picture back; JPEG cannot hold 16 bits."""
    import cv2
    from test_plates import write_truth

    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    seq = tmp_path / "plates"
    seq.mkdir()
    clip = [render(sample_identity(5), p, 160) for p in sample_trajectory(2, 2, fps=25)]
    for i, r in enumerate(clip):
        cv2.imwrite(str(seq / f"shot.{i:04d}.png"), r.image[..., ::-1])
    truth = write_truth(tmp_path / "truth.json", clip, range(2))
    pattern = seq / "shot.####.png"
    assert _extract(tmp_path, pattern, truth, tmp_path / "cct", "crop_space=acescct") == 0, capsys.readouterr().err
    assert _extract(tmp_path, pattern, truth, tmp_path / "srgb") == 0
    cct, srgb = faceset.open(tmp_path / "cct"), faceset.open(tmp_path / "srgb")
    assert cct.crop_space == "acescct" and len(cct) == len(srgb) == 2
    for i in range(2):
        diff = np.abs(cct.image(i).astype(np.float32) - srgb.image(i).astype(np.float32))
        assert diff.mean() < 1.0, diff.mean()  # sRGB → ACEScct → sRGB is the identity up to resampling
        assert 0.1 < cct.values(i).mean() < 0.6  # log values: not the sRGB picture stored as is
    capsys.readouterr()
    assert _extract(tmp_path, pattern, truth, tmp_path / "jpg", "crop_space=acescct", "image_format=jpg") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "16-bit PNG" in err and not (tmp_path / "jpg").exists(), err


def _to_acescct_set(src: str, dst) -> str:
    """A copy of an 8-bit face set with its crops converted to 16-bit ACEScct (records and masks kept)."""
    from progressive_swap.footage.colour import frame_in_crop_space

    s = faceset.open(src)
    with faceset.create(dst, face_type=s.face_type, size=s.size, crop_space="acescct") as w:
        recs = [s.record(i) for i in range(len(s))]
        w.append(recs, [frame_in_crop_space(s.image(i), None, "acescct") for i in range(len(s))])
    return str(dst)


def test_training_reads_16bit_sets_at_their_precision(blob_sets, tmp_path):
    from progressive_swap.core.weights import safe_load
    from progressive_swap.train.datamodule import CombDataset

    a, b = (_to_acescct_set(s, tmp_path / n) for s, n in zip(blob_sets, "AB"))
    fs = faceset.open(a)
    ds = CombDataset([a, b], mask="components", augment={}, paste_occluders=1.0)
    item = ds.load(0, 3, fs.size)  # unaugmented, full size: the stored values, not divided again
    np.testing.assert_array_equal(item["image"], fs.values(3).transpose(2, 0, 1))
    steps = item["image"] * 255.0
    assert np.abs(steps - np.rint(steps)).max() > 0.1  # 16-bit values, not 8-bit codes
    for sample in range(6):  # colour augmentation and pasted occluders on float values
        got = ds.load(0, 3, 16, sample)["image"]
        assert got.dtype == np.float32 and np.isfinite(got).all() and 0.0 <= got.min() and got.max() <= 1.0
    out = tmp_path / "run"
    assert train_cli.main(tiny([a, b], out, "max_steps=4")) == 0
    assert safe_load(out / "last.ckpt")[CKPT_KEY]["crop_space"] == "acescct"


def test_repair_rebuilds_a_16bit_sets_lost_header_as_acescct(blob_sets, tmp_path):
    """The header is the only place a set says what its values mean; the images' bit depth tells
    repair (8-bit PNG: sRGB pictures, 16-bit: ACEScct)."""
    from progressive_swap.cli import faceset as faceset_cli

    sets = {"acescct": _to_acescct_set(blob_sets[0], tmp_path / "cct"), "srgb": str(tmp_path / "srgb")}
    shutil.copytree(blob_sets[1], sets["srgb"])
    for space, path in sets.items():
        before = faceset.open(path).values(2)
        (Path(path) / "faceset.json").unlink()
        assert faceset_cli.main(["repair", path]) == 0
        fs = faceset.open(path)
        assert fs.crop_space == space and len(fs) == 12
        np.testing.assert_array_equal(fs.values(2), before)


def test_the_crop_space_benchmark_puts_highlights_where_it_judges_them(tmp_path):
    """tools/bench_crop_space.py's plates and its judge, on a tiny random model (its figures, from
    two demo trainings, are in docs/plates.md)."""
    from conftest import import_tool, write_tiny_weights
    from test_plates import ARCH

    bench = import_tool("bench_crop_space")
    data = bench.make_plates(tmp_path, frames=2, held_out=2, seed=0)
    assert [p.name for p in sorted((tmp_path / "plates_0").iterdir())] == ["p.1001.exr", "p.1002.exr"]
    for h in data["held"]:
        assert h["plate"].max() > 2.0 and h["swap"].max() > 2.0  # a highlight far above the view's 1.0
    ckpt = write_tiny_weights(tmp_path, ARCH, "whole")
    res = bench.evaluate(ckpt, data["held"])
    assert res["crop_space"] == "srgb"
    for name in ("recon", "swap"):
        r = res[name]
        assert r["frames_with_highlight"] == 2 and r["highlight_stops"] > 0.5  # an sRGB model cannot reach it
        assert 0 < r["view_psnr"] < 40 and np.isfinite(r["linear_rel_err"])


def test_crop_space_auto_by_footage_and_by_what_is_resumed():
    """``auto``: ACEScct for scene-referred plates, sRGB for display-referred footage and for
    8-bit crop files; a resumed extraction or a face set being added to keeps its own."""
    from progressive_swap.extract.options import ExtractOptions, check_options, resolve_crop_space

    auto = ExtractOptions(input="x", out="y", crop_space="auto")
    assert resolve_crop_space(auto, scene=True)[0] == "acescct"
    assert resolve_crop_space(auto, scene=False) == ("srgb", "auto: display-referred footage")
    jpg = ExtractOptions(input="x", out="y", crop_space="auto", image_format="jpg")
    check_options(jpg)  # auto with jpg is no contradiction: it resolves to 8 bits
    assert resolve_crop_space(jpg, scene=True)[0] == "srgb"
    assert resolve_crop_space(auto, scene=True, resumed="srgb") == ("srgb", "auto: the extraction being resumed")
    given = ExtractOptions(input="x", out="y", crop_space="srgb")
    assert resolve_crop_space(given, scene=True, resumed="acescct") == ("srgb", "crop_space=")
