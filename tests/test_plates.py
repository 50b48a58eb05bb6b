"""Plates in, layers out: numbered sequences (patterns, frame numbers, gaps), float plates read
through OpenImageIO, and the colour path back to the plate.

Phantom frames give exact landmarks (``landmarks=given``), so nothing here runs a detector or
the network's weights beyond a tiny random model; the round trips use a stand-in network that
returns its input face.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import write_tiny_weights

from progressive_swap.cli import export as export_cli
from progressive_swap.cli import extract as extract_cli
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


# ------------------------------------------------------------------------- plates through OpenImageIO


def write_plate(path, rgb, dtype="half", attrs=None, extra_channels=None, bits=0):
    """Write float RGB values with OpenImageIO (``extra_channels``: ``{name: (H, W) array}``)."""
    import OpenImageIO as oiio

    h, w = rgb.shape[:2]
    names = ["R", "G", "B"] + list(extra_channels or {})
    px = np.concatenate([rgb] + [v[..., None] for v in (extra_channels or {}).values()], -1).astype(np.float32)
    spec = oiio.ImageSpec(w, h, len(names), dtype)
    spec.channelnames = tuple(names)
    if bits:
        spec.attribute("oiio:BitsPerSample", bits)
    for k, v in (attrs or {}).items():
        spec.attribute(k, *v) if isinstance(v, tuple) else spec.attribute(k, v)
    out = oiio.ImageOutput.create(str(path))
    assert out is not None and out.open(str(path), spec), oiio.geterror()
    assert out.write_image(np.ascontiguousarray(px)), out.geterror()
    out.close()


def srgb_to_acescg(rgb8):
    from progressive_swap.footage import colour as CO

    c = CO.plate_colour(".exr", "half")
    return CO._apply(CO._processor(c.config, c.view_space, c.plate), rgb8.astype(np.float32) / 255.0)


@pytest.mark.parametrize("pattern", ["plate.####.exr", "plate.%04d.exr", "plate.@@@@.exr", ""])
def test_sequences_are_numbered_by_their_file_names_and_gaps_are_missing_frames(tmp_path, pattern):
    from progressive_swap.extract.pipeline import missing_frames
    from progressive_swap.footage.sources import open_source

    rgb = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    for n in (1001, 1002, 1005):
        write_plate(tmp_path / f"plate.{n}.exr", rgb * (n - 1000))
    src = open_source(tmp_path / pattern)
    assert src.numbers == [1001, 1002, 1005] and src.digits == 4 and src.high_precision
    got = [(fr.index, fr.pos, float(fr.plate.max())) for fr in src.frames()]
    assert [g[:2] for g in got] == [(1001, 0), (1002, 1), (1005, 2)]
    assert [g[2] for g in got] == pytest.approx([rgb.max() * k for k in (1, 2, 5)], rel=1e-3)  # float, unclipped
    assert src.problems == ["frames 1003-1004 skipped: no file (a gap in the sequence)"]
    assert missing_frames(src.problems, src, 3) == 2
    part = open_source(tmp_path / pattern, frames=(1002, 1006))
    assert [fr.index for fr in part.frames()] == [1002, 1005] and missing_frames(part.problems, part, 2) == 3
    with pytest.raises(FileNotFoundError, match="no frame of .* in frames=2000-2001"):
        open_source(tmp_path / pattern, frames=(2000, 2001))


def test_dpx_10bit_tiff_16bit_and_png_16bit_keep_their_precision(tmp_path):
    from progressive_swap.footage.sources import open_source

    ramp = np.linspace(0, 1, 1024, dtype=np.float32)
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 0.5)], -1)[None].repeat(4, 0)  # (4, 1024, 3)
    cases = {"dpx": ("uint16", 10, 1023), "tif": ("uint16", 16, 65535), "png": ("uint16", 16, 65535)}
    for ext, (dtype, bits, top) in cases.items():
        d = tmp_path / ext
        d.mkdir()
        want = np.rint(rgb * top) / top
        for n in (1, 2):
            write_plate(d / f"p.{n:04d}.{ext}", want, dtype, bits=bits if ext == "dpx" else 0)
        src = open_source(d / f"p.####.{ext}")
        frs = list(src.frames())
        assert src.high_precision and [f.index for f in frs] == [1, 2], ext
        err = np.abs(frs[0].plate - want).max()
        assert err < 0.25 / top, (ext, err)  # the stored codes, not 8 bits (1/255 would fail)
        assert frs[0].info.bits == bits, (ext, frs[0].info.bits)


def test_exr_layer_picks_an_rgb_layer_and_an_absent_one_is_refused(tmp_path):
    from progressive_swap.footage.plates import plate_layers
    from progressive_swap.footage.sources import open_source

    rng = np.random.default_rng(1)
    beauty, diffuse = rng.random((8, 8, 3)).astype(np.float32), rng.random((8, 8, 3)).astype(np.float32) * 4
    extra = {"A": np.ones((8, 8)), "diffuse.R": diffuse[..., 0], "diffuse.G": diffuse[..., 1],
             "diffuse.B": diffuse[..., 2]}
    write_plate(tmp_path / "shot.1001.exr", beauty, "float", extra_channels=extra)
    assert plate_layers(tmp_path / "shot.1001.exr") == ["", "diffuse"]
    (fr,) = open_source(tmp_path / "shot.####.exr").frames()
    np.testing.assert_array_equal(fr.plate, beauty)
    (fr,) = open_source(tmp_path / "shot.####.exr", layer="diffuse").frames()
    np.testing.assert_array_equal(fr.plate, diffuse)
    with pytest.raises(ValueError, match=r"has no layer 'specular' \(its RGB layers: '', 'diffuse'\)"):
        open_source(tmp_path / "shot.####.exr", layer="specular")


def acescg_sequence(tmp_path, clip) -> tuple:
    """The clip as ``plates/plate.1001.exr …`` in ACEScg, and its landmarks file: ``(seq, numbers, truth)``."""
    seq = tmp_path / "plates"
    seq.mkdir()
    numbers = [1001 + i for i in range(len(clip))]
    for n, r in zip(numbers, clip):
        write_plate(seq / f"plate.{n}.exr", srgb_to_acescg(r.image))
    return seq, numbers, write_truth(tmp_path / "truth.json", clip, numbers)


def test_an_exr_sequence_from_1001_exports_layers_on_the_same_frame_numbers(tmp_path, clip, ckpt, capsys):
    seq, numbers, truth = acescg_sequence(tmp_path, clip)
    out = tmp_path / "out"
    rc = export(ckpt, seq / "plate.####.exr", out, "landmarks=given", f"landmarks_file={truth}", "format=exr")
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "layers").glob("*")) == [f"face.{n}.exr" for n in numbers]
    for n in numbers:
        meta = json.loads((out / "meta" / f"face.{n}.json").read_text())
        assert meta["frame_index"] == n and len(meta["faces"]) == 1
    from progressive_swap import faceset

    assert sorted(faceset.open(out / "faces").frame_indices.tolist()) == numbers
    used = json.loads((out / "export.json").read_text())  # a model of sRGB crops is fed the view's sRGB
    assert used["crop_space"] == "srgb" and used["colour"]["working"] == used["colour"]["view"], used.get("colour")
    assert faceset.open(out / "faces").crop_space == "srgb"
    # A landmarks file counted from 0 does not describe these frames: one line, not "no faces found".
    capsys.readouterr()
    rc = export(ckpt, seq / "plate.####.exr", tmp_path / "out0", "format=exr", "landmarks=given",
                f"landmarks_file={write_truth(tmp_path / 't0.json', clip, range(N))}")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "are numbered 1001-1004 (the numbers in the file names)" in err and "\n" not in err, err
    assert not (tmp_path / "out0").exists()  # refused before anything was written


def test_a_gap_or_a_broken_plate_is_exit_4_and_allow_missing_accepts_it(tmp_path, clip, ckpt, capsys):
    seq = tmp_path / "plates"
    seq.mkdir()
    numbers = [1001, 1002, 1004]  # 1003 is a gap
    for n, r in zip(numbers, clip):
        write_plate(seq / f"plate.{n}.exr", srgb_to_acescg(r.image))
    truth = write_truth(tmp_path / "truth.json", clip, numbers)
    args = ("landmarks=given", f"landmarks_file={truth}", "format=exr")
    assert export(ckpt, seq / "plate.%04d.exr", tmp_path / "out", *args) == 4
    err = capsys.readouterr().err
    assert "frame 1003 skipped: no file (a gap in the sequence)" in err and "incomplete: 1 frame(s)" in err, err
    assert export(ckpt, seq / "plate.%04d.exr", tmp_path / "out", *args, "allow_missing=true") == 0
    (seq / "plate.1002.exr").write_bytes(b"\x76\x2f\x31\x01 broken")
    assert export(ckpt, seq / "plate.%04d.exr", tmp_path / "out2", *args) == 4
    assert "frame 1002 skipped: plate.1002.exr" in capsys.readouterr().err


# ------------------------------------------------------------------------- the colour path back to the plate


def test_an_exr_plates_export_crop_is_the_crop_its_extraction_stored(tmp_path, clip, capsys):
    """Issue 26: a face set of a float plate stores crops of the plate's sRGB view, and a model
    trained on it must be fed the same at export, not another space (ACEScct)."""
    from progressive_swap import faceset
    from progressive_swap.export.frames import FaceIn, FrameIn
    from progressive_swap.export.pipeline import Exporter
    from progressive_swap.export.settings import ExportSettings
    from progressive_swap.export.swapper import CheckpointInfo
    from progressive_swap.footage.sources import open_source

    seq, r = tmp_path / "plates", clip[2]
    seq.mkdir()
    plate = srgb_to_acescg(r.image)
    x, y = np.round(r.landmarks[30]).astype(int)  # the nose tip: in the middle of the crop
    plate[y - 6:y + 6, x - 8:x + 8] = 12.0  # a highlight, far above the view's range
    plate[y + 8:y + 14, x - 8:x + 8] = (2.0, -0.05, 0.0)  # a red outside sRGB's gamut
    write_plate(seq / "plate.1001.exr", plate, "half")
    truth = write_truth(tmp_path / "truth.json", [r], [1001])
    size = 96
    assert extract_cli.main([f"input={seq / 'plate.####.exr'}", f"out={tmp_path / 'set'}", f"size={size}",
                             "landmarks=given", f"landmarks_file={truth}", "progress=false",
                             "crop_space=srgb"]) == 0, capsys.readouterr()
    fs = faceset.open(tmp_path / "set")
    assert fs.crop_space == "srgb" and fs.header["crop_space"] == "srgb" and len(fs) == 1
    stored, rec = fs.image(0), fs.record(0)

    fed = []

    def swap(crops):  # records what the network is given, returns it with an opaque mask
        fed.append(np.array(crops))
        return crops.astype(np.float32), np.ones(crops.shape[:3], np.float32)

    src = open_source(seq / "plate.####.exr")
    fr = next(src.frames())
    frame = FrameIn(fr.index, fr.time, fr.image, [FaceIn(rec.matrix, 0, rec.landmarks)], fr.plate, fr.info, src.colour)
    info = CheckpointInfo("standin.ckpt", "0" * 64, ARCH, size, 1.0, ["alice", "bob"], FACE_TYPE)  # no crop_space: srgb
    Exporter(tmp_path / "out", swap, info, 1, ExportSettings(crop_size=size, format="exr"), progress=False,
             digits=src.digits).run([frame])
    (crop,) = fed[0]
    assert crop.dtype == np.float32 and crop.shape == stored.shape
    err = np.abs(crop * 255.0 - stored.astype(np.float32))
    print(f"export crop vs stored crop: max {err.max():.3f}/255, mean {err.mean():.3f}/255")
    assert err.max() <= 1.0, err.max()  # the stored crop's 8-bit rounding, and no more
    assert stored.max() == 255 and (crop >= 1.0).sum() > 20  # the highlight is in the crop, at the view's top
    sidecar = json.loads((tmp_path / "out/meta/face.1001.json").read_text())
    assert sidecar["colour"]["crop_space"] == "srgb" and sidecar["colour"]["working"] == src.colour.view_space



class IdentityNet(torch.nn.Module):
    """Stand-in network: returns the face it is given, with a disc-shaped mask (alpha 1 inside)."""

    def forward(self, img, identity, stage_res, alpha, source=None):
        b, _, s, _ = img.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        return img, ((0.55 - (xx**2 + yy**2).sqrt()) * 200.0).expand(b, 1, s, s)


BANDS = (0.0, 2**-10, 0.01, 0.18, 1.0, 4.0, 16.0)  # linear values, 0 to 16


def banded_plate(x0=40, width=9):
    """A grey ACEScg plate of vertical bands of constant value (:data:`BANDS`) across the face.

    Resampling reproduces a constant exactly (the weights sum to one), so inside a band the round
    trip's only error is the colour path's precision; resampling's own error (OpenCV's 1/32 px
    interpolation grid, ~0.3 % on a steep ramp) is kept out of the figure on purpose.
    """
    x = np.arange(SIZE)
    k = np.clip((x - x0) // width, 0, len(BANDS) - 1)
    row = np.asarray(BANDS, np.float32)[k]
    return np.ascontiguousarray(np.broadcast_to(row[None, :, None], (SIZE, SIZE, 3)), np.float32)


def test_plate_to_layer_to_plate_round_trips_0_to_16_within_half_precision(tmp_path, clip):
    """A model of ACEScct crops (a face set whose ``crop_space`` says so): 0 to 16 come back.

    This test's premise is the ACEScct working space: before issue 26 every scene-referred plate
    took it; now only a model trained on ACEScct crops does (``crop_space`` in its metadata). The
    sRGB path of today's face sets is the next test."""
    _round_trip(tmp_path, clip, "acescct", BANDS)


def test_an_srgb_model_round_trips_the_view_range_and_clips_highlights_to_its_top(tmp_path, clip):
    """A model of sRGB crops (every face set written so far) is fed the plate's sRGB view: a
    pass-through network returns the plate within one half-float step where the view holds it
    (0 to 1.0 here), and the view's top (sRGB white in the plate's space) above it."""
    from progressive_swap.footage import colour as CO

    c = CO.plate_colour(".exr", "half")
    top = CO._apply(CO._processor(c.config, c.view_space, c.plate), np.ones((1, 3), np.float32))[0]
    assert np.allclose(top, 1.0, atol=2e-3)  # sRGB white is ACEScg white (D65 → ACES white, adapted)
    want = [v if v <= 1.0 else float(top[0]) for v in BANDS]
    _round_trip(tmp_path, clip, "srgb", want)


def _round_trip(tmp_path, clip, crop_space, want_bands):
    from progressive_swap.core import align
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import FaceIn, FrameIn
    from progressive_swap.export.pipeline import Exporter
    from progressive_swap.export.settings import ExportSettings
    from progressive_swap.export.swapper import CheckpointInfo, Swapper
    from progressive_swap.footage.sources import open_source

    plate = banded_plate()
    tc = ("smpte:TimeCode", __import__("OpenImageIO").TypeDesc("timecode"), [0x01000000, 0])
    write_plate(tmp_path / "plate.1001.exr", plate, "float",
                attrs={"smpte:TimeCode": tc[1:], "FramesPerSecond": (__import__("OpenImageIO").TypeDesc("rational"),
                                                                        [24, 1]), "Camera": "A001"})
    src = open_source(tmp_path / "plate.####.exr")
    fr = next(src.frames())
    m = align.alignment_matrix(clip[0].landmarks, FACE_TYPE)
    frame = FrameIn(fr.index, fr.time, fr.image, [FaceIn(m, 0, clip[0].landmarks)], fr.plate, fr.info, src.colour)
    info = CheckpointInfo("standin.ckpt", "0" * 64, ARCH, 256, 1.0, ["alice", "bob"], FACE_TYPE, crop_space=crop_space)
    ex = Exporter(tmp_path / "out", Swapper(IdentityNet(), 1, 256), info, 1,
                  ExportSettings(crop_size=256, format="exr", composite=True), progress=False, digits=src.digits)
    ex.run([frame])
    layer, attrs = PL.read_plate_layer(tmp_path / "out/layers/face.1001.exr")
    comp = PL.composite(fr.plate, [layer])
    g = fr.plate[..., 0]
    flat = cv2.erode(g, np.ones((5, 5), np.uint8)) == cv2.dilate(g, np.ones((5, 5), np.uint8))  # inside a band
    inside = (layer[..., 3] >= 1.0) & flat
    assert inside.sum() > 500 and set(np.unique(fr.plate[inside])) == {np.float32(v) for v in BANDS}  # 0 to 16
    lookup = dict(zip(np.asarray(BANDS, np.float32), np.asarray(want_bands, np.float32)))
    want = np.vectorize(lookup.get)(fr.plate[inside]).astype(np.float32)
    err = np.abs(comp[inside] - want)
    rel = err / np.maximum(np.abs(want), 2**-14)
    assert rel.max() <= 2**-10, rel.max()  # one half-float step (10 mantissa bits): the layer is half
    print(f"round trip 0-16, {crop_space} crops: max relative error {rel.max():.2e} (half step {2**-10:.2e})")
    used = json.loads((tmp_path / "out/export.json").read_text())
    assert used["crop_space"] == crop_space and used["colour"]["crop_space"] == crop_space
    assert used["colour"]["working"] == {"acescct": "ACEScct", "srgb": "sRGB Encoded Rec.709 (sRGB)"}[crop_space]
    # The plate's own attributes and space come back on the layer.
    assert attrs["smpte:TimeCode"] is not None and list(attrs["smpte:TimeCode"]) == [0x01000000, 0]
    assert attrs["Camera"] == "A001" and attrs["colorspace"] == "ACEScg" and attrs["alpha"] == "premultiplied"
    assert np.allclose(attrs["chromaticities"], PL.CHROMATICITIES["ACEScg"], atol=1e-6)
    # The finished frame in the plate's space is the plate wherever the layer is transparent.
    finished, _ = PL.read_plate_layer(tmp_path / "out/comp/comp.1001.exr")
    clear = layer[..., 3] == 0
    np.testing.assert_allclose(finished[..., :3][clear], fr.plate[clear], rtol=2**-10, atol=2**-24)



# Linear ACEScg values a network of ACEScct crops must be able to put on a layer, per channel:
# a highlight, mid grey, a deep shadow (below ACEScct's toe), and zero.
OUTPUTS = {"highlight": (16.0, 12.0, 4.0), "grey": (0.18, 0.18, 0.18), "shadow": (0.002, 2**-10, 0.0)}


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_network_on_a_reconstruct_export_puts_0_to_16_on_the_layer_within_half_precision(tmp_path, clip, bf16):
    """The real model, checkpoint and CLI (``reconstruct=true``), with every decoder's output layer
    set to a known constant (zero weights, biases at the ACEScct codes of :data:`OUTPUTS`, the mask
    fully opaque): whatever the network says, the layer must hold it in the plate's space to one
    half-float step, with bfloat16 inference too. (A network's output is a function of its
    weights, so a constant is the one output with a ground truth; the pass-through above covers
    the input side.)"""
    from progressive_swap.core.weights import save_weights
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.footage import colour as CO
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder

    to_cct = CO._processor(CO.BUILTIN_CONFIG, "ACEScg", "ACEScct")
    seq, _, truth = acescg_sequence(tmp_path, clip[:1])
    for name, linear in OUTPUTS.items():
        code = CO._apply(to_cct, np.asarray([linear], np.float32))[0].astype(np.float64)
        model = CombAutoencoder(CombArch(**ARCH))
        with torch.no_grad():
            for key, t in model.state_dict().items():
                if ".to_rgb." in key:
                    t.zero_() if key.endswith("weight") else t.copy_(torch.tensor([*np.log(code / (1 - code)), 30.0]))
        ck = tmp_path / name / "model.safetensors"
        ck.parent.mkdir()
        save_weights(model, ck, {"arch": model.arch_args(), "face_type": FACE_TYPE, "identities": ["alice", "bob"],
                                 "stage_res": 32, "alpha": 1.0, "crop_space": "acescct"})
        out = tmp_path / name / "out"
        assert export(ck, seq / "plate.####.exr", out, "landmarks=given", f"landmarks_file={truth}", "format=exr",
                      "from_identity=bob", "reconstruct=true", f"bf16={str(bf16).lower()}") == 0
        layer, attrs = PL.read_plate_layer(out / "layers/face.1001.exr")
        assert attrs["colorspace"] == "ACEScg" and attrs["alpha"] == "premultiplied"
        opaque = layer[..., 3] >= 1.0
        assert opaque.sum() > 2000, opaque.sum()
        got = layer[..., :3][opaque]  # premultiplied by 1: the colour itself
        want = np.asarray(linear, np.float32)
        rel = np.abs(got - want) / np.maximum(want, 2**-14)
        print(f"{name} {linear} bf16={bf16}: max relative error {rel.max():.2e} (half step {2**-10:.2e})")
        assert rel.max() <= 2**-10, (name, rel.max(), got.min(0), got.max(0))

def test_oiiotool_composites_our_layer_over_the_plate_as_we_do(tmp_path, clip):
    import shutil
    import subprocess

    if shutil.which("oiiotool") is None:
        pytest.skip("oiiotool is not installed (Debian package openimageio-tools; tools/install_apps.sh)")
    from progressive_swap.core import align
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import FaceIn, FrameIn
    from progressive_swap.export.pipeline import Exporter
    from progressive_swap.export.settings import ExportSettings
    from progressive_swap.export.swapper import CheckpointInfo, Swapper
    from progressive_swap.footage.sources import open_source

    r = clip[1]
    plate = srgb_to_acescg(r.image)
    plate[70:80, 70:90] = 12.0  # a highlight above 1.0 on the face
    write_plate(tmp_path / "plate.1001.exr", plate, "half")
    src = open_source(tmp_path / "plate.####.exr")
    fr = next(src.frames())
    m = align.alignment_matrix(r.landmarks, FACE_TYPE)
    frame = FrameIn(fr.index, fr.time, fr.image, [FaceIn(m, 0, r.landmarks)], fr.plate, fr.info, src.colour)
    info = CheckpointInfo("standin.ckpt", "0" * 64, ARCH, 256, 1.0, ["alice", "bob"], FACE_TYPE)
    ex = Exporter(tmp_path / "out", Swapper(IdentityNet(), 1, 256), info, 1,
                  ExportSettings(crop_size=256, format="exr", feather=0.02), progress=False, digits=src.digits)
    ex.run([frame])
    layer_path = tmp_path / "out/layers/face.1001.exr"
    subprocess.run(["oiiotool", str(layer_path), str(tmp_path / "plate.1001.exr"), "--ch", "R,G,B,A=1.0", "--over",
                    "-d", "float",
                    "-o", str(tmp_path / "theirs.exr")], check=True, capture_output=True, timeout=60)
    theirs, _ = PL.read_plate_layer(tmp_path / "theirs.exr")
    layer, _ = PL.read_plate_layer(layer_path)
    ours = PL.composite(fr.plate, [layer])
    soft = (layer[..., 3] > 0.01) & (layer[..., 3] < 0.99)
    assert soft.sum() > 100  # the feathered edge, where the two could disagree, is really there
    err = np.abs(theirs[..., :3] - ours) / np.maximum(np.abs(ours), 2**-14)
    print(f"oiiotool --over vs ours: max relative difference {err.max():.2e}")
    assert err.max() <= 2**-10, err.max()


# ------------------------------------------------------------------------- which detector ran


def test_the_first_line_names_the_detector_and_dlibs_licence(tmp_path, clip, ckpt, capsys, monkeypatch):
    from progressive_swap.extract import options as O

    seq = tmp_path / "plates"
    seq.mkdir()
    for i, r in enumerate(clip):
        cv2.imwrite(str(seq / f"plate.{i:04d}.png"), r.image[..., ::-1])
    truth = write_truth(tmp_path / "truth.json", clip, range(N))
    assert export(ckpt, seq, tmp_path / "out", "landmarks=given", f"landmarks_file={truth}") == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("swap-export: ") and first.endswith(f"  landmarks: given in {truth} (no detector)"), first
    assert extract_cli.main([f"input={seq}", f"out={tmp_path / 'set'}", "size=32", "landmarks=given",
                             f"landmarks_file={truth}", "progress=false"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"swap-extract: landmarks: given in {truth} (no detector)", out
    monkeypatch.setattr(O, "checkpoint_dir", lambda: tmp_path / "no-weights")  # auto: FAN's weights absent
    monkeypatch.setattr(O, "dlib_available", lambda: True)
    lines = O.detector_lines(O.ExtractOptions(input="x", out="y"))
    assert lines[0].startswith("detector: dlib") and "(detector=auto)" in lines[0]
    assert "excludes commercial use" in lines[1]
    assert O.detector_lines(O.ExtractOptions(input="x", out="y", detector="fan")) == [
        "detector: face-alignment (S3FD boxes + 2D-FAN landmarks)"]


def test_a_resumed_exr_export_with_composite_skips_its_finished_frames(tmp_path, clip, ckpt, capsys):
    """Finished EXR frames were read back with OpenCV (which has no EXR reader here), so every
    frame looked unfinished and was done again."""
    seq, numbers, truth = acescg_sequence(tmp_path, clip)
    out = tmp_path / "out"
    args = ("landmarks=given", f"landmarks_file={truth}", "format=exr", "composite=true")
    assert export(ckpt, seq / "plate.####.exr", out, *args) == 0, capsys.readouterr().err
    comps = sorted((out / "comp").glob("comp.*.exr"))
    assert [p.name for p in comps] == [f"comp.{n}.exr" for n in numbers]
    stamps = {p: p.stat().st_mtime_ns for p in [*comps, *(out / "layers").glob("*.exr")]}
    assert export(ckpt, seq / "plate.####.exr", out, *args) == 0, capsys.readouterr().err
    summary = json.loads((out / "export.json").read_text())["summary"]
    assert summary["skipped"] == N and summary.get("redone", 0) == 0, summary
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    (out / "comp" / "comp.1002.exr").write_bytes(b"v/1\x01 damaged")  # a damaged finished frame is redone
    assert export(ckpt, seq / "plate.####.exr", out, *args) == 0
    summary = json.loads((out / "export.json").read_text())["summary"]
    assert summary["skipped"] == N - 1 and summary["redone"] == 1, summary


def test_bench_extract_times_an_exr_sequence(tmp_path):
    """The 2K EXR benchmark's code path, on a tiny plate (its figures are in docs/plates.md)."""
    from conftest import import_tool

    bench = import_tool("bench_extract")
    out = tmp_path / "bench.json"
    assert bench.main(["--plates", "exr", "--frames", "2", "--plate-size", "256x144", "--crop", "64",
                       "--oiio-threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    (run,) = res["runs"]
    assert res["plate_size"] == [256, 144] and run["oiio_threads_used"] == 1 and run["read"]["frames_per_s"] > 0
    assert run["pipeline_srgb"]["faces"] == run["pipeline_acescct"]["faces"] == 2


def timecode(n: int) -> dict:
    """A plate attribute: 01:00:00:00 at frame 1001, one frame later per number."""
    import OpenImageIO as oiio

    return {"smpte:TimeCode": (oiio.TypeDesc("timecode"), [0x01000000 + n - 1001, 0])}


def test_tiff_and_dpx_layers_on_request_match_the_exr_layer(tmp_path, clip, ckpt, capsys):
    """Issue 26 item 2: DPX and TIFF layers on request, in the plate's space. A float TIFF is the
    EXR layer at float precision (premultiplied); a DPX of a log plate holds straight alpha and
    16-bit codes; both line up with the plate's frame numbers and resume like EXR."""
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.footage import colour as CO

    c = CO.plate_colour(".dpx", "uint16")  # the built-in config's compositing_log: ACEScct
    to_log = CO._processor(c.config, CO.SRGB, c.plate)
    numbers = [1001, 1002]
    seqs = {"exr": tmp_path / "exr", "dpx": tmp_path / "dpx"}
    for kind, seq in seqs.items():
        seq.mkdir()
        for n, r in zip(numbers, clip):
            if kind == "exr":
                write_plate(seq / f"plate.{n}.exr", srgb_to_acescg(r.image), attrs=timecode(n))
            else:
                log = CO._apply(to_log, r.image.astype(np.float32) / 255.0)
                write_plate(seq / f"plate.{n}.dpx", log, "uint16", bits=10, attrs=timecode(n))
    truth = write_truth(tmp_path / "truth.json", clip, numbers)
    given = ("landmarks=given", f"landmarks_file={truth}")
    layers = {}
    for kind, fmt in (("exr", "exr"), ("exr", "tiff"), ("dpx", "exr"), ("dpx", "dpx")):
        out = tmp_path / f"out_{kind}_{fmt}"
        assert export(ckpt, seqs[kind] / f"plate.####.{kind}", out, *given, f"format={fmt}") == 0, capsys.readouterr()
        ext = {"exr": "exr", "tiff": "tif", "dpx": "dpx"}[fmt]
        assert sorted(p.name for p in (out / "layers").iterdir()) == [f"face.{n}.{ext}" for n in numbers]
        meta = json.loads((out / "meta" / "face.1002.json").read_text())
        assert meta["format"] == fmt and meta["plate"]["attributes"]["smpte:TimeCode"] == [0x01000001, 0]
        layers[kind, fmt] = [PL.read_plate_layer(out / "layers" / f"face.{n}.{ext}") for n in numbers]
    for (px_exr, _), (px_tif, _) in zip(layers["exr", "exr"], layers["exr", "tiff"]):
        assert (px_exr[..., 3] > 0.1).sum() > 100  # a face is there (a random model: partial alpha)
        np.testing.assert_allclose(px_tif, px_exr, rtol=2**-10, atol=2**-14)  # EXR is half, TIFF float
    to_plate = CO._processor(c.config, "ACEScg", c.plate)  # a log plate's EXR layer is linear (ACEScg)
    for n, (px_exr, exr_attrs), (px_dpx, attrs) in zip(numbers, layers["dpx", "exr"], layers["dpx", "dpx"]):
        assert exr_attrs["colorspace"] == "ACEScg"  # (a DPX keeps no string attributes; its sidecar names ACEScct)
        a = px_exr[..., 3:4]
        straight = np.divide(px_exr[..., :3], a, out=np.zeros_like(px_exr[..., :3]), where=a > 0)
        as_log = np.concatenate([CO._apply(to_plate, straight) * a, a], -1)
        np.testing.assert_allclose(px_dpx, as_log, atol=2e-3)  # 16-bit straight codes, premultiplied back
        assert list(attrs["smpte:TimeCode"]) == [0x01000000 + n - 1001, 0]  # each frame's own timecode
    meta = json.loads((tmp_path / "out_dpx_dpx" / "meta" / "face.1001.json").read_text())
    assert meta["conventions"] == {"alpha": "straight", "colorspace": "ACEScct", "bit_depth": 16}
    # A resumed DPX export skips its finished frames (read back through OpenImageIO).
    assert export(ckpt, seqs["dpx"] / "plate.####.dpx", tmp_path / "out_dpx_dpx", *given, "format=dpx") == 0
    assert json.loads((tmp_path / "out_dpx_dpx" / "export.json").read_text())["summary"]["skipped"] == 2
    # Refused in one line, nothing written: DPX of a scene-linear plate, TIFF of sRGB footage.
    png = tmp_path / "png"
    png.mkdir()
    for n, r in zip(numbers, clip):
        cv2.imwrite(str(png / f"plate.{n}.png"), r.image[..., ::-1])
    for inp, fmt, words in ((seqs["exr"] / "plate.####.exr", "dpx", "ACEScg is scene-linear"),
                            (png / "plate.####.png", "tiff", "sRGB footage: use format=png16 or exr"),
                            (seqs["dpx"] / "plate.####.dpx", "png16",
                             "(ACEScct): format=png16 cannot hold its values; use format=exr or tiff (linear, "
                             "premultiplied: in the plate's space when it is scene-linear, else the config's "
                             "scene_linear) or dpx (the plate's own space)")):
        capsys.readouterr()
        assert export(ckpt, inp, tmp_path / f"no_{fmt}", *given, f"format={fmt}") == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
        assert not (tmp_path / f"no_{fmt}").exists()


@pytest.mark.parametrize("bits", [8, 16])
def test_oiiotool_composites_png_layers_over_a_numbered_png_sequence_as_we_do(tmp_path, clip, ckpt, bits, capsys):
    """Issue 26's "done when" for PNG: 8- and 16-bit numbered sequences export, and oiiotool's
    *over* of our straight-alpha sRGB layer over the plate, in linear light as our composite,
    gives our finished frame (``comp/``) within its 8-bit rounding."""
    import shutil
    import subprocess

    if shutil.which("oiiotool") is None:
        pytest.skip("oiiotool is not installed (Debian package openimageio-tools; tools/install_apps.sh)")
    seq = tmp_path / "plates"
    seq.mkdir()
    numbers = [1001, 1002]
    for n, r in zip(numbers, clip):
        img = r.image.astype(np.uint16) * 257 if bits == 16 else r.image
        cv2.imwrite(str(seq / f"plate.{n}.png"), np.ascontiguousarray(img[..., ::-1]))
    truth = write_truth(tmp_path / "truth.json", clip, numbers)
    out = tmp_path / "out"
    rc = export(ckpt, seq / "plate.####.png", out, "landmarks=given", f"landmarks_file={truth}", "format=png16",
                "composite=true")
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "layers").iterdir()) == [f"face.{n}.png" for n in numbers]
    for n in numbers:
        layer = out / "layers" / f"face.{n}.png"
        got = tmp_path / f"oiio.{n}.png"
        # PNG alpha is straight: OpenImageIO premultiplies on reading, so the conversion to linear
        # must unpremultiply around it (oiiotool 2.4 does not by default).
        subprocess.run(["oiiotool", str(layer), "--colorconvert:unpremult=1", "sRGB", "linear",
                        str(seq / f"plate.{n}.png"), "--colorconvert", "sRGB", "linear", "--ch", "R,G,B,A=1.0",
                        "--over", "--colorconvert", "linear", "sRGB", "-d", "uint8", "-o", str(got)],
                       check=True, capture_output=True)
        theirs = cv2.imread(str(got), cv2.IMREAD_UNCHANGED)[..., :3].astype(int)
        ours = cv2.imread(str(out / "comp" / f"comp.{n}.png"), cv2.IMREAD_UNCHANGED)[..., :3].astype(int)
        a = cv2.imread(str(layer), cv2.IMREAD_UNCHANGED)[..., 3]
        assert a.dtype == np.uint16 and ((a > 0) & (a < 65535)).sum() > 100  # soft alpha to composite
        diff = np.abs(theirs - ours)
        print(f"{bits}-bit plates: oiiotool --over vs ours: max {diff.max()} code(s), mean {diff.mean():.4f}")
        assert diff.max() <= 1 and diff[a > 0].mean() < 0.05


def test_a_large_frame_converts_in_slices_exactly_as_in_one_call(monkeypatch):
    from progressive_swap.footage import colour as CO

    c = CO.plate_colour(".exr", "half")
    cpu = CO._processor(c.config, c.plate, c.view_space)
    rgb = (np.random.default_rng(1).random((300, 457, 3)) * 4 - 0.1).astype(np.float32)
    monkeypatch.setattr(CO, "PARALLEL_PIXELS", 1 << 40)
    one = CO._apply(cpu, rgb)
    monkeypatch.setattr(CO, "PARALLEL_PIXELS", 1)
    monkeypatch.setattr(CO.os, "cpu_count", lambda: 3)  # uneven slices
    np.testing.assert_array_equal(CO._apply(cpu, rgb), one)
    assert not np.array_equal(one, rgb)  # it did convert


def write_log_sequence(tmp_path, clip, config: str, space: str):
    """Two phantom frames as 16-bit DPX codes of ``space`` (made by OCIO from their sRGB), numbered
    1001-1002, and the ``landmarks=given`` options for them."""
    from progressive_swap.footage import colour as CO

    to_log = CO._processor(config, CO.SRGB, space)
    seq = tmp_path / "dpx"
    seq.mkdir()
    numbers = [1001, 1002]
    for n, r in zip(numbers, clip[:2]):
        write_plate(seq / f"plate.{n}.dpx", CO._apply(to_log, r.image.astype(np.float32) / 255.0), "uint16")
    return seq, ("landmarks=given", f"landmarks_file={write_truth(tmp_path / 'truth.json', clip[:2], numbers)}")


def over_linearised_plate(layer_path, plate_path, config: str, space: str) -> tuple[np.ndarray, np.ndarray]:
    """OpenImageIO's *over* of an ACEScg layer on the plate linearised by ``config``, taken back to
    ``space``; and the plate's own codes."""
    import OpenImageIO as oiio

    from progressive_swap.footage import colour as CO

    plate = np.asarray(oiio.ImageBuf(str(plate_path)).get_pixels(oiio.FLOAT), np.float32)[..., :3]
    plate_lin = CO._apply(CO._processor(config, space, "ACEScg"), plate)
    b = oiio.ImageBuf(oiio.ImageSpec(plate_lin.shape[1], plate_lin.shape[0], 4, "float"))
    b.set_pixels(oiio.ROI(), np.concatenate([plate_lin, np.ones_like(plate_lin[..., :1])], -1))
    over = oiio.ImageBufAlgo.over(oiio.ImageBuf(str(layer_path)), b)
    return CO._apply(CO._processor(config, "ACEScg", space), np.asarray(over.get_pixels(oiio.FLOAT))[..., :3]), plate


def test_a_log_plates_exr_layer_is_linear_and_composites_over_the_linearised_plate(tmp_path, clip, ckpt, capsys):
    """Issue 34 item 3: an ACEScct DPX plate's EXR layer is premultiplied ACEScg (the config's
    scene_linear), and OpenImageIO's *over* of it on the linearised plate is our finished frame,
    which goes back to ACEScct; a non-linear layer_space is refused in one line."""

    from progressive_swap.export import plate_layers as PL
    from progressive_swap.footage import colour as CO

    c = CO.plate_colour(".dpx", "uint16")  # ACEScct
    seq, given = write_log_sequence(tmp_path, clip, c.config, c.plate)
    out = tmp_path / "out"
    assert export(ckpt, seq / "plate.####.dpx", out, *given, "format=exr", "composite=true") == 0, capsys.readouterr()
    assert "colour ACEScct (the default for .dpx files, the config's compositing_log)  layers in ACEScg" in (
        capsys.readouterr().err.splitlines()[0])
    layer, attrs = PL.read_plate_layer(out / "layers" / "face.1001.exr")
    assert attrs["colorspace"] == "ACEScg" and np.allclose(attrs["chromaticities"], CO.PRIMARIES["AP1"], atol=1e-6)
    assert (layer[..., 3] > 0.1).sum() > 100
    meta = json.loads((out / "meta" / "face.1001.json").read_text())
    assert meta["conventions"]["colorspace"] == "ACEScg" and meta["colour"]["layer"] == "ACEScg"
    theirs, _ = over_linearised_plate(out / "layers" / "face.1001.exr", seq / "plate.1001.dpx", c.config, "ACEScct")
    finished, comp_attrs = PL.read_plate_layer(out / "comp" / "comp.1001.exr")
    assert comp_attrs["colorspace"] == "ACEScct"
    assert np.abs(finished[..., :3] - theirs).max() <= 2**-10  # a half step of the ACEScct codes
    capsys.readouterr()
    assert export(ckpt, seq / "plate.####.dpx", tmp_path / "no", *given, "format=exr", "layer_space=ACEScct") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "layer_space=ACEScct is log, not scene-linear" in err, err
    assert not (tmp_path / "no").exists()


def test_a_log_plates_layer_and_finished_frame_say_what_they_are_in_their_embedded_conventions(
        tmp_path, clip, ckpt, capsys):
    """The ``progressive_swap`` JSON in a plate's EXR layer and finished frame states the file's own
    conventions, as its ``colorspace`` and ``alpha`` attributes and the sidecar do: the layer
    premultiplied in the layer space (ACEScg for an ACEScct plate), the finished frame in the
    plate's space, opaque (alpha 1 everywhere); not the video conventions (``scene-linear``;
    ``png8``, ``sRGB``, ``none``) it used to carry."""
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.footage import colour as CO

    c = CO.plate_colour(".dpx", "uint16")  # ACEScct: layers in ACEScg, finished frames back in ACEScct
    seq = tmp_path / "dpx"
    seq.mkdir()
    write_plate(seq / "plate.1001.dpx", CO._apply(CO._processor(c.config, CO.SRGB, c.plate),
                                                   clip[0].image.astype(np.float32) / 255.0), "uint16")
    truth = write_truth(tmp_path / "truth.json", clip[:1], [1001])
    out = tmp_path / "out"
    rc = export(ckpt, seq / "plate.####.dpx", out, "landmarks=given", f"landmarks_file={truth}", "format=exr",
                "composite=true")
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "meta" / "face.1001.json").read_text())
    manifest = json.loads((out / "export.json").read_text())
    layer, layer_attrs = PL.read_plate_layer(out / meta["files"]["merged"])
    comp, comp_attrs = PL.read_plate_layer(out / meta["comp"])
    want = {"layer": ("ACEScg", "premultiplied", meta["conventions"], manifest["conventions"]),
            "comp": ("ACEScct", "opaque", meta["comp_conventions"], manifest["composite"]["conventions"])}
    for name, attrs in (("layer", layer_attrs), ("comp", comp_attrs)):
        space, alpha, sidecar, recorded = want[name]
        embedded = json.loads(attrs["progressive_swap"])
        got = {"attribute": (attrs["colorspace"], attrs["alpha"]), "embedded": (embedded["colorspace"],
               embedded["alpha"]), "sidecar": (sidecar["colorspace"], sidecar["alpha"]),
               "export.json": (recorded["colorspace"], recorded["alpha"])}
        assert set(got.values()) == {(space, alpha)}, (name, got)
        assert embedded["format"] == "exr" and attrs["oiio:ColorSpace"] and sidecar["bit_depth"] == "half"
    assert (layer[..., 3] > 0.1).sum() > 100 and layer[..., 3].min() == 0.0  # a layer with real coverage
    assert comp.shape[-1] == 4 and np.all(comp[..., 3] == 1.0)  # opaque: its alpha is 1 everywhere
    assert manifest["composite"]["frames"] == "comp/comp.NNNN.exr" and manifest["composite"]["video"] is None


def test_a_logc3_dpx_sequence_extracts_through_the_studio_config_and_its_layers_composite_linearly(
        tmp_path, clip, ckpt, capsys):
    """Issue 34's done-when: a LogC3 DPX sequence (codes made by OCIO's studio config itself)
    extracts with ``ocio=studio colorspace="ARRI LogC3 (EI800)"``; the export of that face set (not
    told the space again) writes premultiplied linear EXR layers, and OpenImageIO's *over* of them
    on the linearised plate is our finished frame, which goes back to LogC3, within a half step of
    its codes."""

    from progressive_swap.export import plate_layers as PL
    from progressive_swap.footage import colour as CO

    space, studio = "ARRI LogC3 (EI800)", CO.config_source("studio")
    seq, given = write_log_sequence(tmp_path, clip, studio, space)
    colour = ("ocio=studio", f"colorspace={space}")
    fs = tmp_path / "set"
    rc = extract_cli.main([f"input={seq / 'plate.####.dpx'}", f"out={fs}", *given, *colour, f"face_type={FACE_TYPE}",
                           "size=64", "progress=false"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert f"colour {space} (colorspace=)" in printed.out + printed.err, printed
    (manifest_path,) = (fs / ".extract").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["plate_space"] == space, manifest
    out = tmp_path / "out"
    # the face set remembers how its plates were read: the export is not told again
    assert export(ckpt, fs, out, "format=exr", "composite=true") == 0, capsys.readouterr().err
    first = capsys.readouterr().err.splitlines()[0]
    assert f"colour {space} (colorspace=)" in first and "layers in ACEScg" in first, first
    layer, attrs = PL.read_plate_layer(out / "layers" / "face.1001.exr")
    assert attrs["colorspace"] == "ACEScg" and np.allclose(attrs["chromaticities"], CO.PRIMARIES["AP1"], atol=1e-6)
    assert (layer[..., 3] > 0.1).sum() > 100
    theirs, plate = over_linearised_plate(out / "layers" / "face.1001.exr", seq / "plate.1001.dpx", studio, space)
    finished, comp_attrs = PL.read_plate_layer(out / "comp" / "comp.1001.exr")
    assert comp_attrs["colorspace"] == space
    assert np.abs(finished[..., :3] - theirs).max() <= 2**-10  # a half step of the log codes
    # where the layer is transparent the finished frame is the plate (LogC3 codes, 16-bit DPX)
    clear = layer[..., 3] == 0
    assert clear.sum() > 1000 and np.abs(finished[..., :3][clear] - plate[clear]).max() <= 2**-10
