"""How much of each face its crop space clipped (issue 34): ``clipped_share`` in
``footage/colour.py``, reported by ``swap-extract`` and ``swap-export`` (``docs/plates.md``).

Tiny ACEScg crops and one phantom EXR plate with a highlight on the face; nothing runs a
detector, and the export uses a stand-in network that returns its input.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("OpenImageIO")
pytest.importorskip("PyOpenColorIO")

from progressive_swap.footage import colour as C  # noqa: E402

ACESCG = None


def acescg():
    """The path of an ACEScg EXR plate (the default for .exr files)."""
    global ACESCG
    if ACESCG is None:
        ACESCG = C.plate_colour(".exr", "half")
    assert ACESCG.plate == "ACEScg" and ACESCG.scene
    return ACESCG


def from_srgb(rgb8: np.ndarray) -> np.ndarray:
    c = acescg()
    return c.convert(rgb8.astype(np.float32) / 255.0, c.view_space, c.plate)


# ------------------------------------------------------------------------- the pure function


def test_a_crop_with_37_over_white_pixels_of_400_scores_37_over_400_in_srgb_and_0_in_acescct():
    crop = np.full((20, 20, 3), 0.18, np.float32)
    crop.reshape(-1, 3)[:37] = 4.0  # two stops over sRGB white
    assert C.clipped_share(crop, None, acescg(), "srgb") == pytest.approx(37 / 400)
    assert C.clipped_share(crop, None, acescg(), "acescct") == 0.0  # linear 4 is an ordinary ACEScct value
    # Counted in the mask: rows 1-9 (180 pixels) hold 17 of the 37 (all of row 0, the first 17 of row 1).
    mask = np.zeros((20, 20), np.float32)
    mask[1:10] = 1.0
    assert C.clipped_share(crop, mask, acescg(), "srgb") == pytest.approx(17 / 180)
    assert C.clipped_share(crop, (mask * 255).astype(np.uint8), acescg(), "srgb") == pytest.approx(17 / 180)
    mask[1] = 0.5  # a soft edge counts by its weight
    assert C.clipped_share(crop, mask, acescg(), "srgb") == pytest.approx(8.5 / 170)
    assert C.clipped_share(crop, np.zeros((20, 20), bool), acescg(), "srgb") == 0.0  # an empty mask
    # Above ACEScct's top (linear 222) its 16-bit codes clip too.
    crop.reshape(-1, 3)[:5] = 300.0
    assert C.clipped_share(crop, None, acescg(), "acescct") == pytest.approx(5 / 400)


def test_an_in_gamut_crop_scores_0_in_both_spaces_black_and_white_included():
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    pic[0, :] = 0
    pic[1, :] = 255  # sRGB black and white come back as -1e-7 and 1.0000001 through float: not clipped
    crop = from_srgb(pic)
    assert C.clipped_share(crop, None, acescg(), "srgb") == 0.0
    assert C.clipped_share(crop, None, acescg(), "acescct") == 0.0
    assert C.clipped_share(crop, None, None, "srgb") == 0.0  # 8-bit footage: nothing to clip, nothing computed


def test_a_saturated_colour_outside_srgb_is_counted_though_not_over_white():
    crop = np.full((10, 10, 3), 0.18, np.float32)
    crop[:, :4] = (0.0, 0.3, 0.0)  # AP1 green: negative red and blue in sRGB, every channel below 1
    c = acescg()
    as_srgb = c.convert(crop, c.plate, c.view_space)
    assert as_srgb[:, :4].max() < 1.0 and as_srgb[:, :4].min() < -0.01  # out of gamut, not over white
    assert C.clipped_share(crop, None, c, "srgb") == pytest.approx(0.4)
    assert C.clipped_share(crop, None, c, "acescct") == 0.0  # AP1 holds it
    crop[0, 0] = np.nan  # a broken pixel cannot be stored either
    assert C.clipped_share(crop, None, c, "acescct") == pytest.approx(0.01)


def test_bad_input_is_one_line():
    crop = np.zeros((8, 8, 3), np.float32)
    for call, match in ((lambda: C.clipped_share(crop, np.ones((4, 4)), acescg(), "srgb"), r"mask is \(4, 4\)"),
                        (lambda: C.clipped_share(crop, None, acescg(), "linear"), "unknown crop space 'linear'"),
                        (lambda: C.clipped_share(crop[..., :2], None, acescg(), "srgb"), r"\(H, W, 3\)")):
        with pytest.raises(ValueError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_the_line_says_the_share_and_points_srgb_to_acescct():
    s = C.clip_summary([0.0, 0.032 * 2, 0.0], "srgb")
    assert s == {"crop_space": "srgb", "faces": 3, "mean": pytest.approx(0.021333, abs=1e-6), "max": 0.064}
    assert C.clip_line(s) == ("crop space srgb clipped 2.1 % of face pixels (max 6.4 % on one face, 3 faces); "
                              "crop_space=acescct keeps them (up to linear 222, within AP1's gamut)")
    assert C.clip_line(C.clip_summary([0.0], "acescct")) == \
        "crop space acescct clipped 0 % of face pixels (max 0 % on one face, 1 face)"


# ------------------------------------------------------------------------- swap-extract


@pytest.fixture(scope="module")
def bright_face():
    """A phantom face as an ACEScg plate with a 12 x 16 px highlight of linear 12.0 on the nose."""
    from test_plates import SIZE, srgb_to_acescg

    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    r = render(sample_identity(3), sample_trajectory(1, 1, fps=25)[0], SIZE)
    plate = srgb_to_acescg(r.image)
    bright = np.zeros(plate.shape[:2], np.float32)
    x, y = np.round(r.landmarks[30]).astype(int)  # the nose tip, mid-face
    bright[y - 6:y + 6, x - 8:x + 8] = 1.0
    plate[bright > 0] = 12.0
    return r, plate, bright


def _extract(inp, truth, out, *extra):
    from progressive_swap.cli import extract as extract_cli

    return extract_cli.main([f"input={inp}", f"out={out}", "size=96", "landmarks=given", f"landmarks_file={truth}",
                             "progress=false", *extra])


def _manifest_summary(out) -> dict:
    (m,) = out.glob(".extract/*/manifest.json")
    return json.loads(m.read_text())["summary"]


def test_extract_reports_what_srgb_crops_clipped_and_acescct_keeps(tmp_path, bright_face, capsys):
    import cv2
    from test_plates import write_plate, write_truth

    from progressive_swap import faceset
    from progressive_swap.core import align
    from progressive_swap.masks.hull import landmark_mask

    r, plate, bright = bright_face
    seq = tmp_path / "plates"
    seq.mkdir()
    write_plate(seq / "plate.1001.exr", plate, "float")
    truth = write_truth(tmp_path / "truth.json", [r], [1001])
    pattern = seq / "plate.####.exr"
    capsys.readouterr()
    assert _extract(pattern, truth, tmp_path / "srgb", "crop_space=srgb") == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    s = _manifest_summary(tmp_path / "srgb")["clipped_share"]
    assert s["crop_space"] == "srgb" and s["faces"] == 1 and s["mean"] == s["max"]
    # What it should be: the highlight's footprint in the crop, inside the face's hull mask. Bilinear
    # edges mix 12.0 with skin, so an edge pixel is over white from a small share of highlight on.
    fs = faceset.open(tmp_path / "srgb")
    rec = fs.record(0)
    assert rec.extra["clipped_share"] == s["max"]
    foot = align.warp_to_crop(bright, rec.matrix, 96)
    mask = landmark_mask(align.transform_points(rec.landmarks, align.crop_matrix(rec.matrix, 96)), 96, "components")
    low, high = (float((mask * (foot > t)).sum() / mask.sum()) for t in (0.9, 0.02))
    print(f"srgb clipped {s['mean']:.4f} of the face (the highlight's footprint: {low:.4f} to {high:.4f})")
    assert 0.01 < low <= s["mean"] + 1e-6 and s["mean"] <= high + 1e-6, (low, s, high)
    want = f"  crop space srgb clipped {100 * s['mean']:.1f} % of face pixels (max {100 * s['max']:.1f} % on one " \
           "face, 1 face); crop_space=acescct keeps them (up to linear 222, within AP1's gamut)"
    assert want in lines, lines
    # The same plate into 16-bit ACEScct crops: nothing clipped.
    capsys.readouterr()
    assert _extract(pattern, truth, tmp_path / "cct", "crop_space=acescct", "--json") == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["clipped_share"] == {"crop_space": "acescct", "faces": 1, "mean": 0.0, "max": 0.0}
    assert faceset.open(tmp_path / "cct").record(0).extra["clipped_share"] == 0.0
    # A rerun of the finished srgb extraction writes nothing and reports the figure its faces recorded
    # (crop_space=auto, the default, keeps the space of the extraction it resumes).
    assert _extract(pattern, truth, tmp_path / "srgb", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["faces_written"] == 0 and again["clipped_share"] == s
    # 8-bit footage holds nothing sRGB cannot: 0 for every face, nothing measured or recorded per face.
    png = tmp_path / "png"
    png.mkdir()
    cv2.imwrite(str(png / "plate.1001.png"), r.image[..., ::-1])
    assert _extract(png / "plate.####.png", truth, tmp_path / "eight", "--json") == 0
    s8 = json.loads(capsys.readouterr().out)["clipped_share"]
    assert s8 == {"crop_space": "srgb", "faces": 1, "mean": 0.0, "max": 0.0}
    assert "clipped_share" not in faceset.open(tmp_path / "eight").record(0).extra


# ------------------------------------------------------------------------- swap-export


def _tiny_model(root, crop_space: str):
    """A tiny random model (``tests/test_plates.py``'s) whose metadata says its crops were ``crop_space``."""
    import torch
    from test_plates import ARCH, FACE_TYPE

    from progressive_swap.core.weights import save_weights
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder

    torch.manual_seed(0)
    model = CombAutoencoder(CombArch(**ARCH))
    root.mkdir()
    meta = {"arch": model.arch_args(), "face_type": FACE_TYPE, "identities": ["alice", "bob"], "stage_res": 32,
            "alpha": 1.0, "crop_space": crop_space}
    save_weights(model, root / "model.safetensors", meta)
    return root / "model.safetensors"


def test_export_reports_what_the_models_crop_space_clipped_on_the_plate(tmp_path, bright_face, capsys):
    from test_plates import export, write_plate, write_truth

    r, plate, bright = bright_face
    seq = tmp_path / "plates"
    seq.mkdir()
    write_plate(seq / "plate.1001.exr", plate, "float")
    write_plate(seq / "plate.1002.exr", np.minimum(plate, 0.5), "float")  # the same face, nothing over white
    truth = write_truth(tmp_path / "truth.json", [r, r], [1001, 1002])
    given = ("landmarks=given", f"landmarks_file={truth}", "format=exr", "preview=false")
    figures = {}
    for cs in ("srgb", "acescct"):
        out = tmp_path / cs
        capsys.readouterr()
        assert export(_tiny_model(tmp_path / f"m_{cs}", cs), seq / "plate.####.exr", out, *given) == 0, \
            capsys.readouterr().err
        lines = capsys.readouterr().err.splitlines()  # the export talks on stderr
        s = json.loads((out / "export.json").read_text())["summary"]["clipped_share"]
        metas = [json.loads((out / "meta" / f"face.{n}.json").read_text())["faces"][0] for n in (1001, 1002)]
        assert [m["clipped_share"] for m in metas][1] == 0.0  # the frame without the highlight
        assert s["crop_space"] == cs and s["faces"] == 2 and s["max"] == metas[0]["clipped_share"]
        assert s["mean"] == pytest.approx(s["max"] / 2, abs=1e-6)
        line = next(x for x in lines if x.startswith("crop space"))
        assert line.startswith(f"crop space {cs} clipped "), lines
        figures[cs] = s
        # A rerun skips both frames and reports the figures their sidecars hold.
        capsys.readouterr()
        assert export(tmp_path / f"m_{cs}" / "model.safetensors", seq / "plate.####.exr", out, *given) == 0
        again = json.loads((out / "export.json").read_text())["summary"]
        assert again["skipped"] == 2 and again["clipped_share"] == s
    print(f"export: srgb {figures['srgb']}, acescct {figures['acescct']}")
    assert 0.02 < figures["srgb"]["max"] < 0.2  # the highlight on the nose: some percent of the face
    assert figures["acescct"]["max"] == 0.0
