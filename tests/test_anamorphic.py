"""Anamorphic plates (issue 34): a plate whose ``PixelAspectRatio`` is 2 is detected and aligned
on de-squeezed pixels, so its crops are the crops of the same picture with square pixels, and its
layers land on its own squeezed grid.

The fixture is one phantom frame as two ACEScg EXR plates: *square* (160 x 160) and *squeezed*
2:1 (80 x 160, ``PixelAspectRatio`` 2 in the file), where each squeezed pixel is the mean of two
square ones (an ideal anamorphic lens and sensor: squeezed pixel ``x`` covers square pixels
``2x`` and ``2x + 1``). Landmarks are given (the phantom's truth, in each plate's own pixels), so
nothing here runs a detector or a network: the export uses a stand-in that paints a known smooth
pattern with a soft round mask in crop space, whatever it is given.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_plates import ARCH, FACE_TYPE, srgb_to_acescg, write_plate

from progressive_swap import faceset
from progressive_swap.cli import extract as extract_cli
from progressive_swap.core import align
from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

SIZE, CROP, ASPECT = 160, 96, 2.0


def squeeze(a: np.ndarray) -> np.ndarray:
    """2:1 horizontal squeeze of ``(H, W, ...)``: each output pixel the mean of two neighbours."""
    return 0.5 * (a[:, 0::2] + a[:, 1::2])


def write_seq(root, name, plate, landmarks, attrs=None):
    """``root/name/plate.1001.exr`` and its landmarks file (the plate's own pixels)."""
    (root / name).mkdir()
    write_plate(root / name / "plate.1001.exr", plate, "float", attrs=attrs)
    h, w = plate.shape[:2]
    truth = root / f"{name}.json"
    truth.write_text(json.dumps({"fps": 25, "size": [w, h],
                                 "frames": [{"index": 1001, "faces": [{"landmarks": landmarks.tolist()}]}]}))
    return root / name / "plate.####.exr", truth


def extract(inp, truth, out, *extra) -> int:
    return extract_cli.main([f"input={inp}", f"out={out}", f"size={CROP}", f"face_type={FACE_TYPE}",
                             "landmarks=given", f"landmarks_file={truth}", "progress=false", *extra])


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    root = tmp_path_factory.mktemp("anamorphic")
    r = render(sample_identity(3), sample_trajectory(1, 1, fps=25)[0], SIZE)
    square = srgb_to_acescg(r.image)
    squeezed = squeeze(square)
    lm_sq = align.squeeze_points(r.landmarks, ASPECT)  # the same points in the squeezed plate's pixels
    d = {"root": root, "square": square, "squeezed": squeezed, "lm": r.landmarks, "lm_sq": lm_sq}
    d["square_in"], truth = write_seq(root, "square", square, r.landmarks)
    assert extract(d["square_in"], truth, root / "square_set") == 0
    d["squeezed_in"], d["squeezed_truth"] = write_seq(root, "squeezed", squeezed, lm_sq,
                                                      {"PixelAspectRatio": ASPECT})
    assert extract(d["squeezed_in"], d["squeezed_truth"], root / "squeezed_set") == 0
    return d


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_an_anamorphic_plates_crop_is_the_square_plates_crop(plates, capsys):
    """Extraction: the squeezed plate's matrix is the square plate's composed with the de-squeeze
    (exactly: the landmarks are the same points), the record says what it maps from, and the
    crop matches the square plate's crop: PSNR >= 33 dB (measured 36.4; the squeezed plate lost
    half the horizontal detail, which is the whole difference), where crops aligned as if the
    pixels were square come out squashed (15.6 dB)."""
    root = plates["root"]
    capsys.readouterr()
    assert extract(plates["squeezed_in"], plates["squeezed_truth"], root / "first_line") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("swap-extract: pixel aspect 2 (PixelAspectRatio of plate.1001.exr)"), first
    manifest = json.loads(next((root / "first_line" / ".extract").glob("*/manifest.json")).read_text())
    assert manifest["pixel_aspect"] == manifest["summary"]["pixel_aspect"] == ASPECT
    assert manifest["plate_space"] == "ACEScg"  # what a resume is checked against (test_plate_colour.py)
    fs_sq, fs = faceset.open(root / "squeezed_set"), faceset.open(root / "square_set")
    rec_sq, rec = fs_sq.record(0), fs.record(0)
    assert rec_sq.extra["pixel_aspect"] == ASPECT and "pixel_aspect" not in rec.extra
    assert fs_sq.pixel_aspects.tolist() == [ASPECT] and fs.pixel_aspects.tolist() == [1.0]
    assert tuple(rec_sq.frame_size) == (SIZE // 2, SIZE)
    np.testing.assert_allclose(rec_sq.landmarks, plates["lm_sq"], atol=1e-9)  # the plate's own pixels
    np.testing.assert_allclose(rec_sq.matrix, align.compose(rec.matrix, align.desqueeze_matrix(ASPECT)), atol=1e-9)
    np.testing.assert_allclose(fs_sq.landmarks_aligned, fs.landmarks_aligned, atol=1e-9)
    got = psnr(fs_sq.image(0), fs.image(0))
    from progressive_swap.footage.sources import open_source

    fr = next(open_source(plates["squeezed_in"]).frames())
    squashed = psnr(align.warp_to_crop(fr.image, align.alignment_matrix(plates["lm_sq"], FACE_TYPE), CROP), fs.image(0))
    print(f"crop of the squeezed plate vs the square plate's: PSNR {got:.1f} dB (square-pixel alignment: "
          f"{squashed:.1f} dB)")
    assert got >= 33.0 and squashed < 20.0, (got, squashed)


def pattern(crops):
    """Stand-in network: a smooth colour pattern over the crop and a soft disc mask (1 inside
    radius 0.1 of the crop side, 0 beyond 0.45, a smoothstep between), whatever it is given."""
    b, s = crops.shape[:2]
    u, v = mask_uv(*np.meshgrid((np.arange(s) + 0.5) / s, (np.arange(s) + 0.5) / s, indexing="xy"))
    return np.broadcast_to(u, (b, s, s, 3)).astype(np.float32), np.broadcast_to(v, (b, s, s)).astype(np.float32)


def mask_uv(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pattern's colour and alpha at normalised crop coordinates ``(u, v)``."""
    rgb = np.stack([0.5 + 0.2 * np.sin(2 * np.pi * u), 0.5 + 0.2 * np.cos(2 * np.pi * v), 0.3 + 0.4 * u * v], -1)
    t = np.clip((0.45 - np.hypot(u - 0.5, v - 0.5)) / 0.35, 0.0, 1.0)
    return rgb, t * t * (3 - 2 * t)


def _export(root, name, fs, inp, **source_options):
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import faceset_frames
    from progressive_swap.export.pipeline import Exporter
    from progressive_swap.export.settings import ExportSettings
    from progressive_swap.export.swapper import CheckpointInfo
    from progressive_swap.footage.sources import open_source

    src = open_source(inp, **source_options)
    info = CheckpointInfo("standin.ckpt", "0" * 64, ARCH, CROP, 1.0, ["alice", "bob"], FACE_TYPE)
    out = root / f"{name}_out"
    Exporter(out, pattern, info, 1, ExportSettings(crop_size=CROP, format="exr", composite=True), progress=False,
             digits=src.digits).run(faceset_frames(fs, src, fs.sources[0]))
    layer, attrs = PL.read_plate_layer(out / "layers/face.1001.exr")
    comp, comp_attrs = PL.read_plate_layer(out / "comp/comp.1001.exr")
    return layer, attrs, comp[..., :3], comp_attrs, src.colour


def test_an_anamorphic_plates_layer_lands_on_its_own_grid(plates):
    """Export: the squeezed plate's layer is on its own 80 x 160 grid with ``PixelAspectRatio`` 2,
    and it is the square plate's layer squeezed.

    * Footprint: its alpha at each squeezed pixel centre equals the stand-in's mask at the point
      the square plate's matrix (composed with the de-squeeze) sends it to, as closely as the
      square plate's own layer does (both errors are the bilinear un-warp of a 96 px mask: 9.0e-4
      and 9.2e-4; allowed 1.25 times the square one plus a half-float step). A half-pixel slip of
      the de-squeeze's origin gives 1.8e-2 (checked here); square-pixel alignment about 0.7.
    * Composite: over the squeezed plate it equals the square plate's layer, squeezed, over the
      same plate, within **half an 8-bit code** of the sRGB view (measured 0.32; 0.47 with a
      stronger pattern). It is not zero because the squeezed layer samples the crop at each squeezed
      pixel's centre, while squeezing the square layer averages two samples half a square pixel
      either side: for a smooth layer they differ by a quarter of its second difference (about
      1e-3 here), and the half-float layers round each by up to 2^-11 of the value. Where the
      layer is transparent the finished frame is the plate (half-float rounding only).
    """
    from progressive_swap.footage import colour as CO

    root = plates["root"]
    fs, fs_sq = faceset.open(root / "square_set"), faceset.open(root / "squeezed_set")
    layer, _, _, _, _ = _export(root, "square", fs, plates["square_in"])
    layer_sq, attrs, comp_sq, comp_attrs, colour = _export(root, "squeezed", fs_sq, plates["squeezed_in"])
    assert layer.shape == (SIZE, SIZE, 4) and layer_sq.shape == (SIZE, SIZE // 2, 4)
    assert attrs["PixelAspectRatio"] == comp_attrs["PixelAspectRatio"] == ASPECT

    def alpha_error(lay, m):
        h, w = lay.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w]
        uv = align.transform_points(np.stack([xs, ys], -1).astype(np.float64), m)
        return float(np.abs(lay[..., 3] - mask_uv(uv[..., 0], uv[..., 1])[1]).max())

    m = fs.record(0).matrix
    err = alpha_error(layer, m)
    err_sq = alpha_error(layer_sq, align.compose(m, align.desqueeze_matrix(ASPECT)))
    slip = alpha_error(layer_sq, align.compose(m, np.array([[ASPECT, 0, 0], [0, 1, 0]])))
    print(f"alpha vs the mask where the face is: square {err:.2e}, squeezed {err_sq:.2e} (origin half a px off: "
          f"{slip:.2e})")
    assert err_sq <= 1.25 * err + 2**-11 and slip > 10 * err_sq, (err, err_sq, slip)
    assert (layer_sq[..., 3] > 0.5).sum() > 500

    from progressive_swap.export import plate_layers as PL

    view = CO._processor(colour.config, colour.plate, colour.view_space)
    want = PL.composite(plates["squeezed"], [squeeze(layer)])
    codes = np.abs(CO._apply(view, np.ascontiguousarray(want, np.float32))
                   - CO._apply(view, np.ascontiguousarray(comp_sq, np.float32))) * 255.0
    print(f"finished frame vs the square layer squeezed, over the squeezed plate: max {codes.max():.3f} "
          f"mean {codes.mean():.4f} codes of the 8-bit view")
    assert codes.max() <= 0.5, codes.max()
    clear = layer_sq[..., 3] == 0
    assert clear.sum() > 1000
    np.testing.assert_allclose(comp_sq[clear], plates["squeezed"][clear], rtol=2**-11, atol=2**-24)


def test_a_detector_sees_an_anamorphic_frame_de_squeezed(plates):
    """The detector is given the frame resampled to square pixels (160 x 160 here, within a few
    codes of the square plate's view: PSNR >= 30 dB), and what it finds there comes back in the
    plate's own pixels."""
    from progressive_swap.extract.pipeline import _FaceFinder
    from progressive_swap.footage.sources import open_source

    seen = []
    lm = plates["lm"]

    class Detector:  # finds the face where it is in the de-squeezed frame
        def detect_boxes(self, image):
            seen.append(image)
            return np.array([[*lm.min(0), *lm.max(0), 0.9]])

        def landmarks_batch(self, images, boxes):
            return [np.array([lm]) for _ in images]

    finder = _FaceFinder.__new__(_FaceFinder)
    finder.given = finder.given_boxes = None
    finder.detector = Detector()
    fr = next(open_source(plates["squeezed_in"]).frames())
    (faces,) = finder([fr], ASPECT)
    (face,) = faces
    square_view = next(open_source(plates["square_in"]).frames()).image
    assert seen[0].shape == square_view.shape
    got = psnr(seen[0], square_view)
    print(f"the detector's view vs the square plate's: PSNR {got:.1f} dB")
    assert got >= 30.0, got
    np.testing.assert_allclose(face.landmarks, plates["lm_sq"], atol=1e-9)
    np.testing.assert_allclose(face.box[[0, 2]], align.squeeze_points(np.c_[lm.min(0), lm.max(0)].T, ASPECT)[:, 0])


def test_anamorphic_refusals_are_one_line(plates, capsys):
    """A face aligned at another pixel aspect than its plates', a pixel aspect that is not a ratio,
    and resuming an extraction made at another pixel aspect: one line each, exit 2."""
    from progressive_swap.export.frames import faceset_frames
    from progressive_swap.footage.sources import open_source

    root = plates["root"]
    fs_sq = faceset.open(root / "squeezed_set")
    flat, _ = write_seq(root, "no_aspect", plates["squeezed"], plates["lm_sq"])  # the same pixels, no attribute
    with pytest.raises(ValueError, match=r"aligned at pixel aspect 2, but plate.####.exr has PixelAspectRatio 1;"):
        list(faceset_frames(fs_sq, open_source(flat), fs_sq.sources[0]))
    bad, truth = write_seq(root, "bad", plates["squeezed"], plates["lm_sq"], {"PixelAspectRatio": 50.0})
    capsys.readouterr()
    assert extract(bad, truth, root / "bad_set") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "PixelAspectRatio 50.0 is not a pixel aspect ratio (expected 0.1 to 10)" in err, err
    assert not (root / "bad_set").exists()
    assert extract(plates["squeezed_in"], plates["squeezed_truth"], root / "resumed") == 0
    manifest = next((root / "resumed" / ".extract").glob("*/manifest.json"))
    doc = json.loads(manifest.read_text())
    del doc["pixel_aspect"]  # as an extraction before PixelAspectRatio was read
    manifest.write_text(json.dumps(doc))
    capsys.readouterr()
    assert extract(plates["squeezed_in"], plates["squeezed_truth"], root / "resumed") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "aligned at pixel aspect 1 (by a version that read no PixelAspectRatio), not 2" in err


def test_yaw_and_pitch_of_an_anamorphic_face_are_measured_de_squeezed(plates):
    """``swap-faceset sort yaw``/``pitch`` read the squeezed face's landmarks de-squeezed: the same
    angles as the square plate's face (read as they are stored, the head seems turned)."""
    from progressive_swap.core.pose import head_poses
    from progressive_swap.faceset import curate

    root = plates["root"]
    fs, fs_sq = faceset.open(root / "square_set"), faceset.open(root / "squeezed_set")
    want, got = curate.face_scores(fs, ["yaw", "pitch"]), curate.face_scores(fs_sq, ["yaw", "pitch"])
    assert abs(got["yaw"][0] - want["yaw"][0]) < 0.01 and abs(got["pitch"][0] - want["pitch"][0]) < 0.01, (got, want)
    naive = head_poses(fs_sq.landmarks, fs_sq.frame_sizes)[0]
    assert abs(naive[0] - want["yaw"][0]) > 5 or abs(naive[1] - want["pitch"][0]) > 5, (naive, want)


def test_a_strongly_reduced_anamorphic_crop_is_pre_filtered_along_each_axis():
    """A crop much smaller than the face is pre-reduced before sampling (``warp_to_crop``); on an
    anamorphic plate the horizontal reduction is ``a`` times the vertical one, and each axis gets
    its own. A 512 px phantom squeezed 2:1, cropped at 32 px (0.1 crop px per square pixel):
    PSNR >= 45 dB against the square plate's crop (measured 53.3; one reduction for both axes, as
    for square pixels, gave 36.9, and none 31.6)."""
    r = render(sample_identity(5), sample_trajectory(2, 1, fps=25)[0], 512)
    square = r.image.astype(np.float32) / 255.0
    m = align.alignment_matrix(r.landmarks, FACE_TYPE)
    m_sq = align.alignment_matrix(align.squeeze_points(r.landmarks, ASPECT), FACE_TYPE, ASPECT)
    np.testing.assert_allclose(m_sq, align.compose(m, align.desqueeze_matrix(ASPECT)), atol=1e-9)
    a, b = align.warp_to_crop(square, m, 32), align.warp_to_crop(squeeze(square), m_sq, 32)
    got = float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))
    print(f"32 px crop of a 2:1 squeezed 512 px plate vs the square plate's: PSNR {got:.1f} dB")
    assert got >= 45.0, got


@pytest.mark.parametrize("ext", ["dpx", "tif", "png"])
def test_dpx_tiff_and_png_plates_state_their_pixel_aspect_too(plates, ext):
    """The header's pixel aspect of a 16-bit DPX, TIFF or PNG written by OpenImageIO is read as the
    EXR's (only the EXR goes through extraction and export here)."""
    from progressive_swap.footage.sources import open_source

    d = plates["root"] / f"as_{ext}"
    d.mkdir()
    write_plate(d / f"plate.1001.{ext}", np.clip(plates["squeezed"], 0, 1), "uint16", attrs={"PixelAspectRatio": 2.0})
    src = open_source(d / f"plate.####.{ext}")
    assert src.pixel_aspect == ASPECT and next(src.frames()).info.pixel_aspect == ASPECT


# ---------------------------------------------------------------- pixel_aspect= (a wrong or missing header)


@pytest.fixture(scope="module")
def unlabelled(plates):
    """The squeezed plate with nothing about its squeeze in its header (OpenImageIO's EXR then says
    ``PixelAspectRatio`` 1), extracted with ``pixel_aspect=2``."""
    root = plates["root"]
    inp, truth = write_seq(root, "unlabelled", plates["squeezed"], plates["lm_sq"])
    assert extract(inp, truth, root / "given_set", f"pixel_aspect={ASPECT:g}") == 0
    return {"in": inp, "truth": truth, "set": root / "given_set"}


def test_pixel_aspect_gives_an_unlabelled_plate_the_labelled_plates_crop(plates, unlabelled, capsys):
    """``pixel_aspect=2`` on a squeezed plate whose header says 1: the matrix and the crop of the
    plate whose header says 2, recorded at 2. The same command resumes; one without
    ``pixel_aspect=`` is refused in one line; the labelled plate's extraction resumes with
    ``pixel_aspect=2`` (the aspect used is what a resume is checked against)."""
    root = plates["root"]
    fs_given, fs_sq = faceset.open(unlabelled["set"]), faceset.open(root / "squeezed_set")
    assert fs_given.pixel_aspects.tolist() == [ASPECT]
    np.testing.assert_allclose(fs_given.record(0).matrix, fs_sq.record(0).matrix, atol=1e-12)
    assert np.array_equal(fs_given.image(0), fs_sq.image(0))
    manifest = json.loads(next((unlabelled["set"] / ".extract").glob("*/manifest.json")).read_text())
    assert manifest["pixel_aspect"] == manifest["options"]["pixel_aspect"] == ASPECT
    assert extract(unlabelled["in"], unlabelled["truth"], unlabelled["set"], "pixel_aspect=2") == 0
    assert len(faceset.open(unlabelled["set"])) == 1
    capsys.readouterr()
    assert extract(unlabelled["in"], unlabelled["truth"], unlabelled["set"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "aligned at pixel aspect 2 (given as pixel_aspect=2), not 1;" in err, err
    labelled = root / "labelled_then_given"
    assert extract(plates["squeezed_in"], plates["squeezed_truth"], labelled) == 0
    assert extract(plates["squeezed_in"], plates["squeezed_truth"], labelled, "pixel_aspect=2") == 0
    assert len(faceset.open(labelled)) == 1


def test_pixel_aspect_replaces_every_frames_header(plates, capsys):
    """Headers that disagree (1001 says nothing, 1002 says 1.5) are refused as a change of pixel
    aspect; with ``pixel_aspect=2`` every frame is read at 2 and the headers are not compared."""
    root = plates["root"]
    inp, truth = write_seq(root, "mixed", plates["squeezed"], plates["lm_sq"])
    write_plate(root / "mixed" / "plate.1002.exr", plates["squeezed"], "float", attrs={"PixelAspectRatio": 1.5})
    doc = json.loads(truth.read_text())
    doc["frames"].append({"index": 1002, "faces": doc["frames"][0]["faces"]})
    truth.write_text(json.dumps(doc))
    capsys.readouterr()
    assert extract(inp, truth, root / "mixed_refused") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "change pixel aspect at frame 1002 (1 -> 1.5)" in err, err
    assert extract(inp, truth, root / "mixed_set", "pixel_aspect=2") == 0
    fs = faceset.open(root / "mixed_set")
    assert fs.frame_indices.tolist() == [1001, 1002] and fs.pixel_aspects.tolist() == [ASPECT, ASPECT]


def test_a_bad_pixel_aspect_is_one_line_and_writes_nothing(plates, unlabelled, capsys):
    """``pixel_aspect=`` outside 0.1 to 10 (or negative, or on 8-bit footage, which has no header
    read): one line, exit 2, for ``swap-extract`` and ``swap-export``; nothing is written."""
    import cv2

    from progressive_swap.cli import export as export_cli

    root = plates["root"]
    png = root / "eight_bit.png"
    cv2.imwrite(str(png), np.zeros((16, 16, 3), np.uint8))
    cases = [("50", unlabelled["in"], "pixel_aspect=50 is not a pixel aspect ratio: give one from 0.1 to 10"),
             ("0.05", unlabelled["in"], "pixel_aspect=0.05 is not a pixel aspect ratio"),
             ("-2", unlabelled["in"], "pixel_aspect must be >= 0.0, got -2.0"),
             ("2", png, "pixel_aspect= replaces the PixelAspectRatio header of EXR, DPX and 16-bit or float "
                        "plates; eight_bit.png is 8-bit")]
    for i, (value, inp, says) in enumerate(cases):
        out = root / f"bad_aspect_{i}"
        capsys.readouterr()
        assert extract(inp, unlabelled["truth"], out, f"pixel_aspect={value}") == 2, value
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and says in err, err
        assert not out.exists()
    out = root / "bad_aspect_export"
    assert export_cli.main(["checkpoint=none.ckpt", f"input={unlabelled['in']}", f"out={out}", "identity=bob",
                            "progress=false", "pixel_aspect=50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and cases[0][2] in err, err
    assert not out.exists()


def test_the_first_line_names_pixel_aspect_given(plates, unlabelled, capsys):
    """The first line says the pixel aspect came from ``pixel_aspect=`` and what the header says;
    replacing a header's 2 by 1 is said too (square pixels), a header's 1 by 1 is not."""
    from progressive_swap.footage.sources import open_source

    capsys.readouterr()
    assert extract(unlabelled["in"], unlabelled["truth"], plates["root"] / "given_line", "pixel_aspect=2") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("swap-extract: pixel aspect 2 (pixel_aspect=; the header says 1): faces detected and "
                            "aligned on de-squeezed pixels, layers on the plate's own; colour"), first
    assert open_source(plates["squeezed_in"], pixel_aspect=1).aspect_line() == (
        "pixel aspect 1 (pixel_aspect=; the header says 2): square pixels")
    assert open_source(unlabelled["in"], pixel_aspect=1).aspect_line() == ""


def test_layers_of_a_plate_given_pixel_aspect_carry_it(plates, unlabelled):
    """Export on the unlabelled plate read with ``pixel_aspect=2``: the layer is the labelled
    plate's layer, and it and the finished frame say ``PixelAspectRatio`` 2 (not the header's 1,
    which would show the layer squashed over the plate); the sidecar keeps the header's attributes
    and the value used. Read at its header's 1, the faces are refused; ``swap-export`` reads a
    face set's plates with the ``pixel_aspect`` its extraction was given."""
    from progressive_swap.cli.common import parse_overrides
    from progressive_swap.cli.export import ExportOptions, plate_options
    from progressive_swap.export.frames import faceset_frames
    from progressive_swap.footage.sources import open_source

    root = plates["root"]
    fs_given, fs_sq = faceset.open(unlabelled["set"]), faceset.open(root / "squeezed_set")
    layer, attrs, _, comp_attrs, _ = _export(root, "given", fs_given, unlabelled["in"], pixel_aspect=ASPECT)
    layer_sq, attrs_sq, _, _, _ = _export(root, "labelled", fs_sq, plates["squeezed_in"])
    assert attrs["PixelAspectRatio"] == comp_attrs["PixelAspectRatio"] == attrs_sq["PixelAspectRatio"] == ASPECT
    np.testing.assert_array_equal(layer, layer_sq)
    meta = json.loads((root / "given_out" / "meta" / "face.1001.json").read_text())
    assert meta["plate"]["pixel_aspect"] == ASPECT and meta["plate"]["attributes"]["PixelAspectRatio"] == 1.0
    with pytest.raises(ValueError, match=r"aligned at pixel aspect 2, but plate.####.exr has PixelAspectRatio 1; "
                                         r".*give pixel_aspect=2"):
        list(faceset_frames(fs_given, open_source(unlabelled["in"]), fs_given.sources[0]))
    o = parse_overrides([], ExportOptions(), "swap-export")  # as the command reads its options
    assert plate_options(o, unlabelled["set"], fs_given.sources[0])["pixel_aspect"] == ASPECT
    assert plate_options(o, root / "squeezed_set", fs_sq.sources[0])["pixel_aspect"] == 0.0


def test_swap_export_reads_plates_at_pixel_aspect_given(plates, unlabelled, tmp_path, capsys):
    """``swap-export`` end to end (a tiny untrained model): footage input with ``pixel_aspect=2``
    names it on its first line and writes a layer with ``PixelAspectRatio`` 2 over the 80 px wide
    plate; a face set extracted with ``pixel_aspect=2`` exports without it (its extraction's value
    is used). TIFF and DPX layers of that plate carry the value given too."""
    from conftest import write_tiny_weights
    from test_plates import export

    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import faceset_frames
    from progressive_swap.footage.sources import open_source

    (tmp_path / "ckpt").mkdir()
    ckpt = write_tiny_weights(tmp_path / "ckpt", ARCH, FACE_TYPE)
    given = ["landmarks=given", f"landmarks_file={unlabelled['truth']}"]
    capsys.readouterr()
    assert export(ckpt, unlabelled["in"], tmp_path / "footage", "format=exr", "pixel_aspect=2", *given) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "  pixel aspect 2 (pixel_aspect=; the header says 1): " in first, first
    for out in (tmp_path / "footage", tmp_path / "set"):
        if out.name == "set":
            assert export(ckpt, unlabelled["set"], out, "format=exr") == 0
        layer, attrs = PL.read_plate_layer(out / "layers" / "face.1001.exr")
        assert layer.shape == (SIZE, SIZE // 2, 4) and attrs["PixelAspectRatio"] == ASPECT, out
        assert json.loads((out / "export.json").read_text())["pixel_aspect"] == ASPECT
    fs = faceset.open(unlabelled["set"])
    fr = next(faceset_frames(fs, open_source(unlabelled["in"], pixel_aspect=ASPECT), fs.sources[0]))
    assert fr.info.attributes["PixelAspectRatio"] == 1.0 and fr.pixel_aspect == ASPECT
    for fmt in ("tiff", "dpx"):
        path = PL.encode_plate_exr(tmp_path / f"face{PL.LAYER_FILES[fmt][0]}", layer, fr, {}, fmt, "ACEScg")
        assert PL.read_plate_layer(path)[1]["PixelAspectRatio"] == ASPECT, fmt
