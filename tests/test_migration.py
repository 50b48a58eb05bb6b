"""Importing DeepFaceLab and FaceSwap face sets (``swap-faceset import``), safely.

The fixtures were written by the peers' own code (``../shared/fixtures/migration``, read only:
copied into ``tmp_path`` first). The malicious ones would ``touch pwned_by_import`` in the working
directory if their metadata were loaded with plain ``pickle`` or ``eval``.
"""
from __future__ import annotations

import io
import pickle
import shutil
import struct
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import pytest

from progressive_swap import faceset
from progressive_swap.cli.faceset import main as faceset_main
from progressive_swap.core.align import crop_matrix, transform_points, warp_to_crop
from progressive_swap.faceset.migrate.containers import decode_image, jpeg_app15, png_chunks, png_itxt
from progressive_swap.faceset.migrate.faceswap import legacy_matrix, read_alignments
from progressive_swap.faceset.migrate.safe_load import (
    DamagedMetadataError,
    UnsafeMetadataError,
    bounded_zlib,
    literal_text,
    restricted_loads,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "migration"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"migration fixtures not found at {FIXTURES}")
MALICIOUS = ["dfl_app15_os_system.jpg", "dfl_legacy_fcwp_os_system.png", "faceswap_alignments_os_system.fsa",
             "faceswap_itxt_eval_payload.png"]
BENIGN = {"dfl": 2, "dfl_legacy_png": 1, "faceswap_v2.10": 1, "faceswap_v3.0.0": 1}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = faceset_main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def copy_fixtures(tmp_path: Path, *folders: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for folder in folders:
        for p in (FIXTURES / folder).iterdir():
            shutil.copyfile(p, src / p.name)
    return src


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """The source frame every fixture was cut from: scikit-image's astronaut."""
    data = pytest.importorskip("skimage.data")
    d = tmp_path_factory.mktemp("frames")
    cv2.imwrite(str(d / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return d


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max(1, (a | b).sum()))


# ----------------------------------------------------------------------------- safety


def test_malicious_files_are_refused_in_one_line_run_nothing_and_the_rest_imports(tmp_path, monkeypatch):
    src = copy_fixtures(tmp_path, "malicious", "dfl")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run("import", src, f"out={tmp_path / 'set'}", "progress_every=0")
    assert not list(tmp_path.rglob("pwned_by_import")) and not Path("pwned_by_import").exists()
    assert rc == 4, err
    lines = [ln for ln in err.splitlines() if "refused" in ln]
    for name in MALICIOUS:
        mine = [ln for ln in lines if name in ln]
        assert len(mine) == 1, (name, err)
        assert "system" in mine[0], mine[0]  # names what it asked for
    assert "Traceback" not in err
    fs = faceset.open(tmp_path / "set")
    assert len(fs) == 2 and all(e["imported_from"] == "deepfacelab" for e in (fs.record(i).extra for i in range(2)))


@pytest.mark.parametrize("name", MALICIOUS)
def test_each_malicious_container_refused_at_the_global(name):
    data = (FIXTURES / "malicious" / name).read_bytes()
    with pytest.raises(UnsafeMetadataError, match="system"):
        if name.endswith(".fsa"):
            read_alignments(data)
        elif name.endswith(".jpg"):
            restricted_loads(jpeg_app15(data)[0])
        elif name.startswith("dfl"):
            restricted_loads(png_chunks(data, {b"fcWp"})[0][1])
        else:
            literal_text(png_itxt(png_chunks(data, {b"iTXt"})[0][1])[1])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned_by_import",))


@pytest.mark.parametrize("payload, needle", [
    (lambda: pickle.dumps(_Evil(), protocol=4), "system"),
    (lambda: pickle.dumps(np.array([1, "a"], dtype=object), protocol=4), "dtype 'O8'"),
    (lambda: pickle.dumps(np.zeros(3, dtype=[("a", "<f4")]), protocol=4), "dtype 'V4'"),
    (lambda: pickle.dumps(np.array(["abc"]), protocol=4), "dtype"),
    (lambda: b"\x80\x02cx\ny\n.", "asks for x.y"),
    (lambda: b"\x80\x02X\x01\x00\x00\x00pQ.", "persistent"),
    (lambda: b"\x80\x02\x82\x01.", "extension"),  # EXT1: the copyreg extension registry
    (lambda: pickle.dumps({"f": eval}, protocol=4), "builtins.eval"),
    (lambda: b"\x80\x02cnumpy.testing._private.utils\nrunstring\n.", "runstring"),
])
def test_restricted_unpickler_refuses_code_and_odd_arrays(payload, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((UnsafeMetadataError, DamagedMetadataError), match=needle) as e:
        restricted_loads(payload())
    assert "\n" not in str(e.value)
    assert not Path("pwned_by_import").exists()


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_restricted_unpickler_reads_plain_data_and_numeric_arrays(protocol):
    d = {"lm": np.arange(136, dtype="<f4").reshape(68, 2), "rect": np.array([1, 2, 3, 4], np.int32),
         "m": np.eye(2, 3), "u8": np.arange(5, dtype=np.uint8)[:, None], "b": np.array([True, False]),
         "s": "x", "t": (1, 2.5, None, True), "raw": b"\x00\x01", "nested": [{"a": [1, 2]}]}
    got = restricted_loads(pickle.dumps(d, protocol=protocol))
    assert got.keys() == d.keys()
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
        else:
            assert got[k] == v, k


def test_bounded_decompression_and_literal_caps():
    bomb = zlib.compress(b"\0" * (8 << 20))
    with pytest.raises(UnsafeMetadataError, match="inflates past"):
        bounded_zlib(bomb, 1 << 20)
    with pytest.raises(DamagedMetadataError):
        bounded_zlib(zlib.compress(b"abc"), 10, exact=4)
    with pytest.raises(UnsafeMetadataError, match="cap"):
        literal_text(b"1" * 100, max_chars=50)
    with pytest.raises(UnsafeMetadataError):
        literal_text(b"[" * 200_000 + b"]" * 200_000)
    assert literal_text(b"{'a': (1, b'x', True)}") == {"a": (1, b"x", True)}


def test_second_app15_segment_is_refused(tmp_path):
    data = (FIXTURES / "dfl" / "dfl_whole_face.jpg").read_bytes()
    payload, count = jpeg_app15(data)
    assert count == 1
    seg = b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload
    src = tmp_path / "src"
    src.mkdir()
    (src / "twice.jpg").write_bytes(data[:2] + seg + data[2:])
    rc, _, err = run("import", src, f"out={tmp_path / 'set'}", "progress_every=0")
    assert rc == 4 and "2 APP15 segments" in err and not (tmp_path / "set").exists()


def _damaged_variants(tmp_path: Path) -> Path:
    """Files of peer versions we have not seen, or damaged: each must be read or refused in one line."""
    d = tmp_path / "odd"
    d.mkdir()
    jpg = (FIXTURES / "dfl" / "dfl_whole_face_xseg.jpg").read_bytes()
    payload, _ = jpeg_app15(jpg)
    meta = restricted_loads(payload)

    def dfl(name: str, m: dict) -> None:
        p = pickle.dumps(m, protocol=4)
        i = jpg.index(payload) - 4
        (d / name).write_bytes(jpg[:i] + b"\xff\xef" + struct.pack(">H", len(p) + 2) + p + jpg[i + 4 + len(payload):])

    dfl("no_matrix.jpg", {k: v for k, v in meta.items() if k != "image_to_face_mat"})  # before 2019-04: read
    dfl("mark_only.jpg", {**meta, "face_type": "mark_only"})
    dfl("bad_landmarks.jpg", {**meta, "landmarks": "x"})
    dfl("list_polys.jpg", {**meta, "seg_ie_polys": [(1, meta["seg_ie_polys"]["polys"][0]["pts"].tolist())]})
    dfl("not_a_dict.jpg", [1, 2, 3])
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (d / "empty.jpg").write_bytes(b"")
    alignments = {"__meta__": {"version": 9.9}, "__data__": {"f_000001.png": {"faces": [
        {"landmarks_xy": [[0.0, 0.0]] * 98, "mask": {}}]}}}
    (d / "alignments.fsa").write_bytes(zlib.compress(pickle.dumps(alignments, protocol=5)))
    png = (FIXTURES / "faceswap_v2.10" / "astronaut_0.png").read_bytes()
    (d / "f_000001_0.png").write_bytes(png[:33] + png[png.index(b"IEND") - 4:])  # header stripped: from the fsa
    return d


def _dfl_with(tmp_path: Path, name: str, **changes) -> Path:
    """A DFL fixture JPG with some metadata changed (written through a plain pickle of benign data)."""
    jpg = (FIXTURES / "dfl" / "dfl_whole_face_xseg.jpg").read_bytes()
    payload, _ = jpeg_app15(jpg)
    p = pickle.dumps({**restricted_loads(payload), **changes}, protocol=4)
    i = jpg.index(payload) - 4
    out = tmp_path / name
    out.write_bytes(jpg[:i] + b"\xff\xef" + struct.pack(">H", len(p) + 2) + p + jpg[i + 4 + len(payload):])
    return out


def test_frames_from_a_video_by_frame_number(tmp_path, frames):
    from progressive_swap.footage.video import write_video

    astro = cv2.cvtColor(cv2.imread(str(frames / "astronaut.png")), cv2.COLOR_BGR2RGB)
    video = tmp_path / "clip.mp4"
    write_video(video, [np.zeros_like(astro), astro, np.full_like(astro, 255)], fps=25, crf=10)
    src = tmp_path / "src"
    src.mkdir()
    _dfl_with(src, "clip_000002_0.jpg", source_filename="clip_000002.png")  # frame 2 counted from 1
    size = 160
    rc, _, err = run("import", src, f"out={tmp_path / 'v'}", f"size={size}", f"frames={video}", "progress_every=0")
    assert rc == 0, err
    rc, _, err = run("import", src, f"out={tmp_path / 'p'}", f"size={size}", "progress_every=0")
    assert rc == 0, err
    v, p = faceset.open(tmp_path / "v"), faceset.open(tmp_path / "p")
    assert v.record(0).extra["pixels"] == "frame" and v.frame_indices[0] == 2
    diff = np.abs(v.image(0).astype(float) - p.image(0).astype(float))[16:-16, 16:-16].mean()
    assert diff < 8.0, diff  # the astronaut, not a black or white frame


def test_unknown_or_damaged_peer_files_are_read_or_refused_in_one_line(tmp_path):
    src = _damaged_variants(tmp_path)
    rc, _, err = run("import", src, f"out={tmp_path / 'set'}", "progress_every=0")
    assert rc == 4 and "Traceback" not in err
    refused = [ln for ln in err.splitlines() if " refused " in ln]
    names = sorted(p.name for p in src.iterdir())
    fs = faceset.open(tmp_path / "set")
    read = {fs.record(i).extra["peer_file"] for i in range(len(fs))}
    assert read == {"no_matrix.jpg", "list_polys.jpg"}
    for n in names:
        if n not in read | {"alignments.fsa"}:  # the alignments are read; their 98-point face is refused
            assert sum(f"/{n}:" in ln for ln in refused) == 1, (n, err)
    assert any("98-point" in ln for ln in refused)


# ----------------------------------------------------------------------------- readers and geometry


@pytest.mark.parametrize("folder", ["dfl", "dfl_legacy_png"])
def test_dfl_import_without_frames_matches_the_recrop_from_the_frame(folder, tmp_path, frames):
    src = copy_fixtures(tmp_path, folder)
    size = 160
    rc, _, err = run("import", src, f"out={tmp_path / 'a'}", f"size={size}", "progress_every=0")
    assert rc == 0, err
    rc, _, err = run("import", src, f"out={tmp_path / 'b'}", f"size={size}", f"frames={frames}", "progress_every=0")
    assert rc == 0, err
    for d in ("a", "b"):
        assert run("info", tmp_path / d, "--deep")[0] == 0
    a, b = faceset.open(tmp_path / "a"), faceset.open(tmp_path / "b")
    assert len(a) == len(b) == BENIGN[folder]
    for i in range(len(a)):
        ra = a.record(i)
        assert ra.extra["pixels"] == "peer crop" and b.record(i).extra["pixels"] == "frame"
        assert ra.extra["covered"] > 0.95
        # Their crop landmarks, carried through their matrix and ours, land on our crop landmarks.
        data = (src / ra.extra["peer_file"]).read_bytes()
        if folder == "dfl":
            meta = restricted_loads(jpeg_app15(data)[0])
        else:
            meta = restricted_loads(png_chunks(data, {b"fcWp"})[0][1])
        their_crop = np.asarray(meta["landmarks"])
        frame_lm = transform_points(their_crop, np.linalg.inv(np.vstack([meta["image_to_face_mat"], [0, 0, 1]]))[:2])
        ours = transform_points(frame_lm, crop_matrix(ra.matrix, size))
        assert np.abs(ours - a.landmarks_aligned[i] * size + 0.5).max() < 1.0
        assert np.allclose(ra.landmarks, meta["source_landmarks"])
        # Pixels: same place as the re-crop from the frame (their JPEG and resampling aside).
        ga = cv2.cvtColor(a.image(i), cv2.COLOR_RGB2GRAY).astype(np.float32)
        gb = cv2.cvtColor(b.image(i), cv2.COLOR_RGB2GRAY).astype(np.float32)
        (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
        assert np.hypot(dx, dy) < 0.5, (dx, dy)
        assert np.abs(ga - gb)[16:-16, 16:-16].mean() < 6.0


def test_dfl_masks_match_the_stored_mask_warped_by_hand(tmp_path):
    src = copy_fixtures(tmp_path, "dfl")
    size = 256
    rc, _, err = run("import", src, f"out={tmp_path / 's'}", f"size={size}", "progress_every=0")
    assert rc == 0, err
    fs = faceset.open(tmp_path / "s")
    i = fs.index_of("dfl_whole_face_xseg")
    meta = restricted_loads(jpeg_app15((src / "dfl_whole_face_xseg.jpg").read_bytes())[0])
    stored = decode_image(meta["xseg_mask"].reshape(-1).tobytes(), gray=True).astype(np.float32) / 255
    mat = meta["image_to_face_mat"]
    # By hand: the 256 px mask back to the 512 px crop, that crop to the frame, the frame to our crop.
    crop = cv2.resize(stored, (512, 512), interpolation=cv2.INTER_LINEAR)
    frame = cv2.warpAffine(crop, mat, (512, 512), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    hand = warp_to_crop(frame, fs.matrices[i], size, border=cv2.BORDER_CONSTANT)
    assert iou(fs.mask(i, "user_xseg"), hand) > 0.98
    # Polygons: includes then excludes, rasterised again from the record's own copy of them.
    polys = fs.record(i).extra["ie_polys"]
    assert [p["type"] for p in polys] == ["include", "exclude"]
    drawn = np.zeros((size, size), np.uint8)
    for p in polys:
        pts = np.asarray(p["uv"]) * size - 0.5
        cv2.fillPoly(drawn, [np.round(pts).astype(np.int32)], 1 if p["type"] == "include" else 0)
    assert iou(fs.mask(i, "user_xseg_polys"), drawn) > 0.98
    assert 0.2 < (drawn > 0).mean() < 0.8  # the exclude (the mouth) really cut a hole in the include
    assert fs.mask(fs.index_of("dfl_whole_face"), "user_xseg") is None


@pytest.mark.parametrize("folder", ["faceswap_v2.10", "faceswap_v3.0.0"])
def test_faceswap_import_with_frames_and_its_masks(folder, tmp_path, frames):
    src = copy_fixtures(tmp_path, folder)
    rc, _, err = run("import", src, f"out={tmp_path / 'n'}", "progress_every=0")
    assert rc == 4 and "give frames=" in err  # their PNG does not say where it sits in the frame
    size = 160
    rc, _, err = run("import", src, f"out={tmp_path / 's'}", f"size={size}", f"frames={frames}", "progress_every=0")
    assert rc == 0, err
    assert run("info", tmp_path / "s", "--deep")[0] == 0
    fs = faceset.open(tmp_path / "s")
    assert len(fs) == 1 and fs.sources[0] == "astronaut.png"
    faces = read_alignments((src / "alignments.fsa").read_bytes())["astronaut.png"]
    assert np.allclose(fs.landmarks[0], faces[0]["landmarks_xy"], atol=1e-4)
    assert fs.record(0).frame_size == (512, 512)
    for name in ("components", "extended"):
        m = faces[0]["mask"][name]
        stored = np.frombuffer(zlib.decompress(m["mask"]), np.uint8).reshape(128, 128).astype(np.float32) / 255
        frame = cv2.warpAffine(stored, np.asarray(m["affine_matrix"])[:2], (512, 512),
                               flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        hand = warp_to_crop(frame, fs.matrices[0], size, border=cv2.BORDER_CONSTANT)
        assert iou(fs.mask(0, f"user_fs_{name}"), hand) > 0.98, name
    # The mean face behind FaceSwap's crops: its fit reproduces the stored mask matrix's rotation and scale.
    lin = np.asarray(faces[0]["mask"]["components"]["affine_matrix"])[:2, :2]
    assert np.allclose(legacy_matrix(np.asarray(faces[0]["landmarks_xy"], float))[:, :2] * 64, lin, rtol=1e-3)


def test_import_is_resumable_and_refuses_a_size_its_pixels_do_not_hold(tmp_path):
    src = copy_fixtures(tmp_path, "dfl")
    rc, _, err = run("import", src, f"out={tmp_path / 's'}", "size=1024", "progress_every=0")
    assert rc == 2 and "upscale=true" in err and not (tmp_path / "s").exists()
    rc, out, _ = run("import", src, f"out={tmp_path / 's'}", "progress_every=0")
    assert rc == 0 and "imported 2 face(s)" in out
    held = faceset.open(tmp_path / "s").size
    assert 400 <= held <= 512 and held % 16 == 0
    rc, out, _ = run("import", src, f"out={tmp_path / 's'}", "progress_every=0")
    assert rc == 0 and "imported 0 face(s)" in out and "2 already there" in out
    assert len(faceset.open(tmp_path / "s")) == 2
    rc, _, _ = run("import", src, f"out={tmp_path / 'u'}", "size=1024", "upscale=true", "progress_every=0")
    assert rc == 0 and faceset.open(tmp_path / "u").size == 1024


def _pak(tmp_path: Path, jpgs: list[Path], evil: bool = False) -> Path:
    """A DeepFaceLab ``faceset.pak`` laid out as FORMATS.md says, IntEnums pickled as DFL does."""
    import enum
    import sys
    import types

    mods = {}
    for mod, cls, values in (("facelib.FaceType", "FaceType", {"WHOLE_FACE": 4}),
                             ("samplelib.Sample", "SampleType", {"FACE": 1})):
        m = types.ModuleType(mod)
        e = enum.IntEnum(cls, values)
        e.__module__, e.__qualname__ = mod, cls
        setattr(m, cls, e)
        mods[mod] = m
        mods[mod.split(".")[0]] = types.ModuleType(mod.split(".")[0])
    configs = []
    for p in jpgs:
        configs.append({"sample_type": mods["samplelib.Sample"].SampleType.FACE, "filename": p.name,
                        "face_type": mods["facelib.FaceType"].FaceType.WHOLE_FACE, "shape": (512, 512, 3),
                        "landmarks": [[0.0, 0.0]] * 68, "seg_ie_polys": {"polys": []}, "xseg_mask": None,
                        "xseg_mask_compressed": None, "eyebrows_expand_mod": 1.0,
                        "source_filename": "astronaut.png", "person_name": "astro"})
    if evil:
        configs[0]["x"] = _Evil()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        header = pickle.dumps(configs, 4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    blobs = [p.read_bytes() for p in jpgs]
    offsets, o = [], 0
    for b in blobs:
        offsets.append(o)
        o += len(b)
    table_end = 16 + len(header) + 8 * (len(blobs) + 1)
    offsets.append(table_end + o)  # DeepFaceLab's last offset is an absolute file position
    src = tmp_path / ("evil" if evil else "pak")
    src.mkdir()
    (src / "faceset.pak").write_bytes(struct.pack("<QQ", 1, len(header)) + header
                                      + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(blobs))
    return src


def test_faceset_pak_is_read_with_its_enums_as_ints_and_person_name(tmp_path, monkeypatch):
    jpgs = sorted((FIXTURES / "dfl").glob("*.jpg"))
    src = _pak(tmp_path, jpgs)
    rc, _, err = run("import", src, f"out={tmp_path / 's'}", "progress_every=0")
    assert rc == 0, err
    fs = faceset.open(tmp_path / "s")
    assert len(fs) == 2 and fs.identities == ["astro"]
    assert sorted(fs.ids) == sorted(p.stem for p in jpgs)
    assert fs.mask(fs.index_of("dfl_whole_face_xseg"), "user_xseg") is not None
    monkeypatch.chdir(tmp_path)
    rc, _, err = run("import", _pak(tmp_path, jpgs, evil=True), f"out={tmp_path / 'e'}", "progress_every=0")
    assert rc == 4 and "faceset.pak: asks for" in err and "system" in err and not Path("pwned_by_import").exists()


@pytest.mark.parametrize("given", ["faceswap_v2.10/alignments.fsa", "dfl", "malicious"])
def test_extract_with_their_curated_landmarks(given, tmp_path, frames, monkeypatch):
    from progressive_swap.cli.extract import main as extract_main

    src = tmp_path / "given"
    shutil.copytree(FIXTURES / Path(given).parts[0], src)
    landmarks_file = src / Path(given).name if given.endswith(".fsa") else src
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        rc = extract_main([f"input={frames / 'astronaut.png'}", f"out={tmp_path / 's'}", "landmarks=given",
                           f"landmarks_file={landmarks_file}", "size=160"])
    if given == "malicious":
        assert rc == 2 and "asks for os.system" in err.getvalue() and not Path("pwned_by_import").exists()
        assert len([ln for ln in err.getvalue().splitlines() if "error" in ln]) == 1
        return
    assert rc == 0, err.getvalue()
    fs = faceset.open(tmp_path / "s")
    if given.endswith(".fsa"):
        want = [np.asarray(read_alignments(landmarks_file.read_bytes())["astronaut.png"][0]["landmarks_xy"], float)]
    else:
        want = [np.asarray(restricted_loads(jpeg_app15(p.read_bytes())[0])["source_landmarks"])
                for p in sorted(src.glob("*.jpg"))]
    assert len(fs) == len(want)
    for lm in want:
        assert min(np.abs(fs.landmarks[i] - lm).max() for i in range(len(fs))) < 1e-4


def test_training_reads_the_imported_user_mask(tmp_path):
    from progressive_swap.train.datamodule import CombDataset

    src = copy_fixtures(tmp_path, "dfl")
    assert run("import", src, f"out={tmp_path / 's'}", "size=64", "progress_every=0")[0] == 0
    fs = faceset.open(tmp_path / "s")
    i = fs.index_of("dfl_whole_face_xseg")
    ds = CombDataset([str(tmp_path / "s"), str(tmp_path / "s")], mask="xseg", cache_mb=0)
    _, m, _ = ds._unaugmented(0, i, 64)
    assert iou(m, fs.mask(i, "user_xseg")) > 0.99  # the painted mask, not the landmark hull


def test_damaged_copies_of_every_fixture_are_read_or_refused_in_one_line(tmp_path, capfd):
    """Random damage to the peers' files (bit flips, cuts, inserted and zeroed bytes, mostly in the
    metadata): exit 0 or 4, one line per refused file, no traceback, nothing from native decoders."""
    import random

    rng = random.Random(7)
    files = [p for d in BENIGN for p in sorted((FIXTURES / d).iterdir())]
    src = tmp_path / "src"
    src.mkdir()
    for k in range(24):
        p = files[k % len(files)]
        data = bytearray(p.read_bytes())
        lim = min(len(data), 7000)
        op = k % 4
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(lim)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data = data[:rng.randrange(len(data))]
        elif op == 2:
            i, j = rng.randrange(lim), rng.randrange(lim)
            data[i:i] = data[j:j + rng.randint(1, 200)]
        else:
            i = rng.randrange(lim)
            data[i:i + 64] = bytes(len(data[i:i + 64]))
        (src / f"{k:02d}_{p.name}").write_bytes(bytes(data))
    capfd.readouterr()
    rc, _, err = run("import", src, f"out={tmp_path / 's'}", "size=64", "upscale=true", "progress_every=0")
    native = capfd.readouterr().err
    assert rc in (0, 4) and "Traceback" not in err and native == "", native
    refused = [ln for ln in err.splitlines() if " refused " in ln and ".fsa:" not in ln]
    read = len(faceset.open(tmp_path / "s")) if (tmp_path / "s").exists() else 0
    assert read + len(refused) == sum(p.suffix != ".fsa" for p in src.iterdir())


def test_faceswap_face_with_a_head_centred_mask_imports_without_frames(tmp_path, frames):
    """A head-centred mask's matrix is the PNG's own (at the mask's size): no frame needed."""
    from progressive_swap.faceset.migrate.faceswap import png_header

    png = (FIXTURES / "faceswap_v2.10" / "astronaut_0.png").read_bytes()
    meta = png_header(png)
    lm = np.asarray(meta["alignments"]["landmarks_xy"], float)
    # The PNG's true position, found by registering it against the frame (the pose-free fit at
    # offset 0, then the shift that makes the two agree).
    leg = legacy_matrix(lm) * 192
    leg[:, 2] += 160
    frame = cv2.imread(str(frames / "astronaut.png"))
    ref = cv2.cvtColor(cv2.warpAffine(frame, leg, (512, 512), flags=cv2.INTER_CUBIC), cv2.COLOR_BGR2GRAY)
    face = cv2.cvtColor(decode_image(png), cv2.COLOR_RGB2GRAY)
    (dx, dy), _ = cv2.phaseCorrelate(ref.astype(np.float32), face.astype(np.float32))
    true = leg.copy()
    true[:, 2] += (dx, dy)
    head128 = (true - np.array([[0, 0, 160], [0, 0, 160]])) / 192 * 48 + np.array([[0, 0, 40], [0, 0, 40]])
    meta["alignments"]["mask"] = {"bisenet-fp_head": {
        "mask": zlib.compress(np.full((128, 128), 255, np.uint8).tobytes()), "affine_matrix": head128.tolist(),
        "interpolator": 3, "stored_size": 128, "stored_centering": "head"}}
    text = b"faceswap\0\0\0\0\0" + str(meta).encode()
    chunk = struct.pack(">I", len(text)) + b"iTXt" + text + struct.pack(">I", zlib.crc32(b"iTXt" + text))
    start = png.index(b"iTXt") - 4
    end = start + 12 + struct.unpack(">I", png[start:start + 4])[0]
    src = tmp_path / "src"
    src.mkdir()
    (src / "astronaut_0.png").write_bytes(png[:start] + chunk + png[end:])
    size = 160
    rc, _, err = run("import", src, f"out={tmp_path / 'a'}", f"size={size}", "progress_every=0")
    assert rc == 0, err
    rc, _, err = run("import", src, f"out={tmp_path / 'b'}", f"size={size}", f"frames={frames}", "progress_every=0")
    assert rc == 0, err
    a, b = faceset.open(tmp_path / "a"), faceset.open(tmp_path / "b")
    assert a.record(0).extra["pixels"] == "peer crop" and a.record(0).extra["covered"] == 1.0
    ga = cv2.cvtColor(a.image(0), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b.image(0), cv2.COLOR_RGB2GRAY).astype(np.float32)
    (sx, sy), _ = cv2.phaseCorrelate(ga, gb)
    assert np.hypot(sx, sy) < 0.5 and np.abs(ga - gb)[16:-16, 16:-16].mean() < 3.0, (sx, sy)
    assert iou(a.mask(0, "user_fs_bisenet_fp_head"), np.ones((size, size))) > 0.99


@pytest.mark.parametrize("option, says", [("format=foo", "format must be"), ("face_type=weird", "unknown face_type"),
                                          ("frames=/nonexistent", "is not a folder"), ("size=2048", "upscale=true")])
def test_bad_options_are_one_line_and_write_nothing(option, says, tmp_path):
    src = copy_fixtures(tmp_path, "dfl")
    rc, _, err = run("import", src, f"out={tmp_path / 's'}", option, "progress_every=0")
    assert rc == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "s").exists()


def test_reviewer_gives_the_imported_polygons_in_crop_pixels(tmp_path):
    from progressive_swap.faceset.reviewer import Reviewer

    src = copy_fixtures(tmp_path, "dfl")
    assert run("import", src, f"out={tmp_path / 's'}", "size=128", "progress_every=0")[0] == 0
    rv = Reviewer(tmp_path / "s")
    polys = rv.polygons("dfl_whole_face_xseg")["polygons"]
    assert [p["type"] for p in polys] == ["include", "exclude"]
    drawn = np.zeros((128, 128), np.uint8)
    for p in polys:
        cv2.fillPoly(drawn, [np.round(np.asarray(p["points"])).astype(np.int32)], 1 if p["type"] == "include" else 0)
    assert iou(faceset.open(tmp_path / "s").mask("dfl_whole_face_xseg", "user_xseg_polys"), drawn) > 0.97
    assert rv.polygons("dfl_whole_face")["polygons"] == []


def test_identity_is_the_pak_person_else_the_out_folder_unless_given(tmp_path):
    jpgs = sorted((FIXTURES / "dfl").glob("*.jpg"))
    src = _pak(tmp_path, jpgs)
    assert run("import", src, f"out={tmp_path / 'a'}", "identity=bob", "progress_every=0")[0] == 0
    assert faceset.open(tmp_path / "a").identities == ["bob"]
    plain = copy_fixtures(tmp_path, "dfl")
    assert run("import", plain, f"out={tmp_path / 'alice'}", "progress_every=0")[0] == 0
    assert faceset.open(tmp_path / "alice").identities == ["alice"]


def test_dfl_xseg_mask_stored_as_lossy_jpeg_is_read(tmp_path):
    """DeepFaceLab falls back to a JPEG when the mask's PNG exceeds 50 KB (and newer OpenCV gives
    ``(N,)`` buffers, older ``(N, 1)``)."""
    meta = restricted_loads(jpeg_app15((FIXTURES / "dfl" / "dfl_whole_face_xseg.jpg").read_bytes())[0])
    png_mask = decode_image(meta["xseg_mask"].reshape(-1).tobytes(), gray=True)
    ok, jpg = cv2.imencode(".jpg", png_mask * 255 if png_mask.max() <= 1 else png_mask, [cv2.IMWRITE_JPEG_QUALITY, 60])
    src = tmp_path / "src"
    src.mkdir()
    _dfl_with(src, "a.jpg")
    _dfl_with(src, "b.jpg", xseg_mask=jpg.reshape(-1))
    assert run("import", src, f"out={tmp_path / 's'}", "size=128", "progress_every=0")[0] == 0
    fs = faceset.open(tmp_path / "s")
    a, b = fs.mask("a", "user_xseg"), fs.mask("b", "user_xseg")
    assert iou(a, b) > 0.97


def test_faceswap_head_style_header_with_3x3_mask_matrices(tmp_path, frames):
    """Recent FaceSwap stores 3x3 homogeneous mask matrices and lists where older versions store arrays."""
    from progressive_swap.faceset.migrate.faceswap import png_header

    png = (FIXTURES / "faceswap_v3.0.0" / "astronaut_0.png").read_bytes()
    meta = png_header(png)
    for m in meta["alignments"]["mask"].values():
        m["affine_matrix"] = [*np.asarray(m["affine_matrix"], np.float32).tolist(), [0.0, 0.0, 1.0]]
    a = meta["alignments"]
    meta["alignments"] = {k: a[k] for k in ("x", "y", "w", "h", "landmarks_xy", "mask", "identity")}
    text = b"faceswap\0\0\0\0\0" + str(meta).encode()
    chunk = struct.pack(">I", len(text)) + b"iTXt" + text + struct.pack(">I", zlib.crc32(b"iTXt" + text))
    start = png.index(b"iTXt") - 4
    end = start + 12 + struct.unpack(">I", png[start:start + 4])[0]
    src = tmp_path / "head_style"
    src.mkdir()
    (src / "astronaut_0.png").write_bytes(png[:start] + chunk + png[end:])
    ref = copy_fixtures(tmp_path, "faceswap_v3.0.0")
    for d, s in (("new", src), ("old", ref)):
        rc, _, err = run("import", s, f"out={tmp_path / d}", "size=160", f"frames={frames}", "progress_every=0")
        assert rc == 0, err
    new, old = faceset.open(tmp_path / "new"), faceset.open(tmp_path / "old")
    for name in ("user_fs_components", "user_fs_extended"):
        assert iou(new.mask(0, name), old.mask(0, name)) > 0.99
