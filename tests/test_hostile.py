"""Touch only what we wrote: every case a hostile sweep broke (a face set, a journal, a record or
a folder crafted to make a command delete, move or overwrite files it did not make, read
without bound, or answer with a traceback), each as a test that now holds (docs/faceset.md,
*Names from data*). Tiny face sets, no training: each case runs in well under a second."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_blob_faceset

from progressive_swap import faceset as F
from progressive_swap.cli import faceset as cli
from progressive_swap.cli import mask as mask_cli
from progressive_swap.core import io as cio
from progressive_swap.faceset import embedded
from progressive_swap.faceset import index as fx


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links as their target, not followed) -> a digest of its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.blake2b(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def blob(tmp_path) -> Path:
    return write_blob_faceset(tmp_path / "sandbox" / "set", 0, n=4, size=32)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file beside the set that no command may touch."""
    p = tmp_path / "sandbox" / "victim.png"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(b"the user's file\n")
    return p


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------------- names from data


@pytest.mark.parametrize("bad", ["x\n", "../x", "/abs/x", ".hidden", "a/b", "a\x00b", "a\tb", "", "x" * 129])
def test_one_name_gate_refuses_what_is_not_a_plain_name(bad):
    assert not cio.is_name(bad) and not F.format.ID_RE.match(bad)
    with pytest.raises(ValueError, match="bad face id"):
        cio.check_name(bad, "face id")
    assert cio.is_name("id0_000003") and cio.is_name("f.1-2")


def test_an_id_with_a_trailing_newline_is_refused_by_append_and_by_a_record(blob):
    """E7, A1c: ``$`` matched before a final newline; ids are matched whole now."""
    fs = F.open(blob)
    rec = fs.record("f000")
    with F.open_writer(blob) as w, pytest.raises(ValueError, match="bad face id"):
        w.append([F.FaceRecord(**{**rec.__dict__, "id": "newface\n"})], [fs.image("f000")])
    payload = embedded.record_to_json(rec, "whole").replace(b'"id":"f000"', b'"id":"f000\\n"')
    with pytest.raises(ValueError, match="bad id"):
        embedded.record_from_json(payload)
    assert not any("\n" in p.name for p in blob.rglob("*"))


@pytest.mark.parametrize("ids", [["../../victim"], ["/ABS/victim"], ["../victim"], ["f000\n"]])
def test_a_journal_naming_paths_deletes_nothing_and_is_refused_in_one_line(blob, outside, ids, capsys):
    """E1: ids in index/pending.json became file names to unlink, outside the set too."""
    ids = [i.replace("/ABS", str(outside.parent)) for i in ids]
    (blob / "victim.png").write_bytes(b"inside, not ours")
    (blob / "index" / fx.PENDING_NAME).write_text(json.dumps({"ids": ids}))
    before = tree(blob.parent)
    capsys.readouterr()
    assert cli.main(["sort", str(blob), "by=size"]) == 2
    line = one_error_line(capsys)
    assert "not a face id" in line and f"swap-faceset repair {blob}" in line
    assert tree(blob.parent) == before
    assert cli.main(["repair", str(blob)]) == 0  # repair sets the journal aside (moved, not acted on)
    assert outside.read_bytes() == b"the user's file\n" and (blob / "victim.png").is_file()
    assert F.open(blob).validate() == [] and len(F.open(blob)) == 4


def test_an_index_listing_a_path_as_an_id_is_refused(blob):
    shard = next((blob / "index").glob("shard_*.npz"))
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    strings = json.loads(arrays["strings"].tobytes())
    strings["ids"][1] = "../victim"
    arrays["strings"] = np.frombuffer(json.dumps(strings).encode(), np.uint8)
    np.savez(shard, **arrays)
    with pytest.raises(F.FaceSetError, match="bad face id '../victim'"):
        fx.read_shard(shard)


def test_check_inside_refuses_paths_that_leave_the_root(tmp_path):
    (tmp_path / "r" / "d").mkdir(parents=True)
    (tmp_path / "r" / "link").symlink_to(tmp_path)
    assert cio.check_inside(tmp_path / "r", tmp_path / "r" / "d" / "x.png")
    assert cio.check_inside(tmp_path / "r", tmp_path / "r" / "link")  # the link itself is inside
    for bad in (tmp_path / "r" / ".." / "x.png", tmp_path / "r" / "link" / "x.png", Path("/etc/passwd")):
        with pytest.raises(ValueError, match="not inside"):
            cio.check_inside(tmp_path / "r", bad)


# ---------------------------------------------------------------------- temporary files


def test_planted_temp_symlinks_are_never_written_through(blob, outside, capsys):
    """E2, E3: the fixed names ``.<id>.png.tmp`` and ``..<id>.png.repair.new.tmp`` were opened
    with ``open("wb")``, following a planted link out of the set."""
    (blob / "masks" / "components").mkdir(parents=True)
    for d, name in (("masks/components", ".f000.png.tmp"), ("images", "..f001.png.repair.new.tmp"),
                    ("images", ".f001.png.tmp"), ("index", ".pending.json.tmp")):
        (blob / d / name).symlink_to(outside)
    assert mask_cli.main(["apply", str(blob), "hull=components"]) == 0
    p = blob / "images" / "f001.png"  # a record repair rewrites
    old = p.read_bytes()
    p.write_bytes(embedded.embed(embedded.strip(old), embedded.parse_head(old)[1].replace(b'"track":0',
                                                                                       b'"track":7')))
    assert cli.main(["repair", str(blob)]) == 0
    capsys.readouterr()
    assert outside.read_bytes() == b"the user's file\n"
    assert not (blob / "masks" / "components" / "f000.png").is_symlink()
    assert not p.is_symlink() and embedded.parse_head(p.read_bytes())[1] == embedded.parse_head(old)[1]


def test_atomic_writes_use_exclusive_temp_files_under_our_prefix(tmp_path, outside):
    target = tmp_path / "a.json"
    (tmp_path / ".a.json.tmp").symlink_to(outside)  # the old fixed name, planted
    cio.atomic_write_json(target, {"x": 1})
    F.format.write_file_durable(tmp_path / "b.png", b"data")
    assert outside.read_bytes() == b"the user's file\n"
    assert json.loads(target.read_text()) == {"x": 1} and (tmp_path / "b.png").read_bytes() == b"data"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(cio.TEMP_PREFIX)]


USER_HIDDEN = [".env.template", ".bashrc.original", ".gitconfig.includes", "notes/.draft.20261206",
               "notes/.plan.mar2026x.md", ".abcdefgh", "layers/.x.abcd1234.tmp", "meta/.keep.12345678"]


@pytest.mark.parametrize("manifest", ["export.json", "faceset.json"])
def test_the_debris_sweep_of_export_and_extract_leaves_a_users_hidden_files(tmp_path, manifest):
    """E5, E6: ``swap-export out=`` / ``swap-extract out=`` an existing folder deleted every hidden
    name whose last part was 8 letters or digits. Both commands call this sweep on ``out=``
    (export with its own subfolders, extract with ``.extract``); the commands themselves train
    or decode video and are too slow for this file, so the sweep they share is tested here."""
    out = tmp_path / "project"
    for rel in USER_HIDDEN:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(f"user data {rel}\n")
    (out / manifest).write_text("{}\n")
    ours = [out / f"{cio.TEMP_PREFIX}export.json.k3j4h5g6.tmp",
            out / "layers" / f"{cio.TEMP_PREFIX}l.0001.abcd1234.exr"]
    for p in ours:
        p.write_bytes(b"debris")
    (out / "notes" / f"{cio.TEMP_PREFIX}x.tmp").write_bytes(b"not in a folder we write")
    before = {rel: (out / rel).read_bytes() for rel in USER_HIDDEN}
    removed = cio.remove_debris(out, subdirs=("meta", "layers", "comp", "patches", ".extract"), manifest=manifest)
    assert sorted(removed) == sorted(ours)
    assert {rel: (out / rel).read_bytes() for rel in USER_HIDDEN} == before
    assert (out / "notes" / f"{cio.TEMP_PREFIX}x.tmp").is_file()
    (out / manifest).unlink()  # a folder without our manifest: nothing is swept at all
    (out / ours[0].name).write_bytes(b"debris")
    assert cio.remove_debris(out, subdirs=("layers",), manifest=manifest) == []


# ---------------------------------------------------------------------- repair: only what we wrote


def _photos(folder: Path, n: int = 3) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cv2.imwrite(str(folder / f"IMG_{k:04d}.png"), np.full((20, 30, 3), 40 * k, np.uint8))


@pytest.mark.parametrize("case", ["A7a unrelated photos", "A7c images of photos only", "A7b photos and one face"])
def test_repair_refuses_a_folder_that_is_not_a_face_set_and_leaves_no_lock(blob, tmp_path, case, capsys):
    home = tmp_path / "home"
    if case.startswith("A7a"):
        _photos(home)
    else:
        _photos(home / "images")
        (home / "masks" / "logos").mkdir(parents=True)
        (home / "masks" / "logos" / "logo.png").write_bytes(b"logo")
    if case.startswith("A7b"):
        shutil.copy(blob / "images" / "f000.png", home / "images" / "face_i_liked.png")
    before = tree(home)
    capsys.readouterr()
    assert cli.main(["repair", str(home)]) == 2
    line = one_error_line(capsys)
    assert "nothing changed" in line
    assert tree(home) == before and not (tmp_path / "home.damaged").exists()  # no .lock, no faceset.json
    if case.startswith("A7b"):
        assert "adopt=true" in line
        assert cli.main(["repair", str(home), "adopt=true"]) == 0  # asked for: a set of one face
        assert len(F.open(home)) == 1 and (tmp_path / "home.damaged" / "images" / "IMG_0000.png").is_file()


def test_repair_still_rebuilds_a_set_whose_header_alone_was_lost(blob, capsys):
    (blob / "faceset.json").unlink()
    assert cli.main(["repair", str(blob)]) == 0 and len(F.open(blob)) == 4


# ---------------------------------------------------------------------- bounded reads


def _nested_record_set(blob: Path, depth: int) -> None:
    p = blob / "images" / "f002.png"
    body = embedded.KEY.encode() + b"\0" + b"[" * depth + b"]" * depth
    data = embedded.strip(p.read_bytes())
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    p.write_bytes(data[:33] + chunk + data[33:])


@pytest.mark.parametrize("command", [["info", "{d}", "--deep"], ["repair", "{d}"], ["sort", "{d}", "by=size"]])
def test_a_deeply_nested_record_is_one_line_never_a_recursion_error(blob, command, capsys):
    """A3a: 20,000 nested ``[`` in a record (valid CRC) gave RecursionError tracebacks."""
    _nested_record_set(blob, 20000)
    with pytest.raises(ValueError, match="nested deeper"):
        cio.loads_json(b"[" * 20000 + b"]" * 20000)
    capsys.readouterr()
    rc = cli.main([a.format(d=blob) for a in command])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err and len(err.strip().splitlines()) <= 1
    assert rc in (0, 2)
    if command[0] == "repair":
        assert rc == 0 and F.open(blob).validate(deep=True) == []


def test_a_shard_declaring_a_huge_shape_is_refused_before_allocating(blob, capsys):
    """A3e: a member header of shape (10**12,) with 16 bytes of data: _ArrayMemoryError tracebacks."""
    shard = next((blob / "index").glob("shard_*.npz"))
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i4", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(shard, "w") as zf:
        for k, a in arrays.items():
            if k == "track":
                zf.writestr("track.npy", buf.getvalue() + b"\0" * 16)
            else:
                b = io.BytesIO()
                np.save(b, a)
                zf.writestr(k + ".npy", b.getvalue())
    with pytest.raises(F.FaceSetError, match="declares shape"):
        fx.read_shard(shard)
    capsys.readouterr()
    assert cli.main(["info", str(blob)]) == 2
    assert "repair" in one_error_line(capsys)
    assert cli.main(["repair", str(blob)]) == 0 and len(F.open(blob)) == 4


def _big_png(path: Path, side: int) -> None:
    """A PNG whose IHDR says ``side`` x ``side`` grey (zeros compress to almost nothing)."""
    raw = zlib.compress(b"\0" * (side + 1) * 64, 9)  # a few rows: the header is what matters
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(embedded.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_repair_reads_an_images_header_before_decoding_it(blob, monkeypatch, capsys):
    """A3d: repair decoded a 20000^2 PNG (1.2 GB) before looking at the IHDR it had parsed."""
    _big_png(blob / "images" / "zz_big.png", 20000)
    import progressive_swap.faceset.repair as R

    decoded = []
    real = R.decode_image
    monkeypatch.setattr(R, "decode_image", lambda data, size, where: decoded.append(where) or real(data, size, where))
    assert cli.main(["repair", str(blob)]) == 0
    assert "zz_big.png" not in decoded and (blob.parent / "set.damaged" / "images" / "zz_big.png").is_file()


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_a_face_image_that_is_a_device_or_fifo_is_refused_not_read(blob, kind):
    """E9: training read a symlink to /dev/zero until MemoryError (a FIFO would hang)."""
    p = blob / "images" / "f003.png"
    p.unlink()
    if kind == "dev_zero":
        p.symlink_to("/dev/zero")
    else:
        os.mkfifo(p)
    with pytest.raises(OSError, match="not a regular file"):
        cio.read_regular(p, 1 << 20, "face image")
    fs = F.open(blob)
    with pytest.raises(F.FaceSetError, match="not a regular file"):
        fs.image("f003")
    from progressive_swap.train.datamodule import check_facesets

    other = write_blob_faceset(blob.parent / "other", 1, n=4, size=32)
    with pytest.raises(F.FaceSetError, match="repair"):  # training refuses the set before reading it
        check_facesets([blob, other], 32)


# ---------------------------------------------------------------------- reviewer and views


def test_undo_keeps_the_users_files_in_a_set_a_move_created(blob):
    """D3b: undo rmtree'd the set the move had created, with the notes the user put there since."""
    from progressive_swap.faceset.reviewer import Reviewer

    rv = Reviewer(blob)
    rv.move(["f000"], "bob")
    bob = blob.parent / "bob"
    (bob / "NOTES_user.txt").write_text("mine\n")
    (bob / "refs").mkdir()
    (bob / "refs" / "ref_photo.jpg").write_bytes(b"jpeg")
    out = rv.undo_last()
    assert out["restored"] == 1 and out["removed"] is None
    assert (bob / "NOTES_user.txt").read_text() == "mine\n" and (bob / "refs" / "ref_photo.jpg").is_file()
    rv.move(["f001"], "carol")  # nothing added: the set the move made goes again, and only it
    assert rv.undo_last()["removed"] == str(blob.parent / "carol") and not (blob.parent / "carol").exists()
    assert len(F.open(blob)) == 4 and not [p for p in blob.parent.iterdir() if p.name.startswith(cio.TEMP_PREFIX)]


def test_sorted_faces_pair_ids_and_scores_of_one_snapshot(blob, monkeypatch):
    """D5, D6: a change between opening the set and scoring it paired one version's scores with
    another's ids (500 IndexError under concurrent removes and undos)."""
    from progressive_swap.faceset import curate
    from progressive_swap.faceset.reviewer import Reviewer

    rv = Reviewer(blob)
    real_faceset, calls = rv.faceset, []

    def racing() -> F.FaceSet:  # another request changes the set and sorts it while this one runs
        fs = real_faceset()
        if not calls:
            calls.append(1)
            rv.remove(["f002"])
            assert len(rv.faces("size", None)["ids"]) == 3
        return fs

    monkeypatch.setattr(rv, "faceset", racing)
    got = rv.faces("size", None)
    assert len(got["ids"]) == len(got["scores"]) == 4 and sorted(got["ids"]) == ["f000", "f001", "f002", "f003"]
    monkeypatch.undo()
    fs = F.open(blob)
    want = curate.face_scores(fs, ["size"])["size"]
    now = rv.faces("size", None)
    assert now["ids"] == [fs.ids[i] for i in curate.sort_order(want, curate.DEFAULT_DESCENDING.get("size", False))]


def test_remove_view_refuses_a_view_made_for_another_set(blob, tmp_path, capsys):
    """E4: ``remove SET view=VIEW`` removed faces from a set the view was not made for."""
    copy = tmp_path / "sandbox" / "set_copy"
    shutil.copytree(blob, copy)
    view = tmp_path / "view"
    assert cli.main(["sort", str(blob), "by=size", f"view={view}"]) == 0
    next(view.glob("*_f001.png")).unlink()
    capsys.readouterr()
    assert cli.main(["remove", str(copy), f"view={view}"]) == 2
    assert "was made for the face set" in one_error_line(capsys) and len(F.open(copy)) == 4
    assert cli.main(["remove", str(blob), f"view={view}"]) == 0 and sorted(F.open(blob).ids) == ["f000", "f002", "f003"]


def test_a_view_inside_the_set_is_refused_and_the_set_stays_sound(blob, capsys):
    """E10: ``sort SET view=SET/masks/review`` left 8 unindexed files; every later command refused the set."""
    capsys.readouterr()
    assert cli.main(["sort", str(blob), "by=size", f"view={blob / 'masks' / 'review'}"]) == 2
    assert "inside the face set" in one_error_line(capsys)
    assert not (blob / "masks" / "review").exists() and F.open(blob).validate() == []


# ---------------------------------------------------------------------- plates, export, manifests


@pytest.fixture(scope="module")
def nan_plate():
    """One phantom face as an ACEScg float plate with NaN, +inf, -5 and 1e6 on the face (B2)."""
    from test_plates import SIZE, srgb_to_acescg

    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    r = render(sample_identity(3), sample_trajectory(1, 1, fps=25)[0], SIZE)
    plate = srgb_to_acescg(r.image).astype(np.float32)
    x, y = np.round(r.landmarks[30]).astype(int)
    plate[y, x - 3:x + 3] = np.array([np.nan, np.inf, -5.0, 1e6, np.nan, -np.inf], np.float32)[:, None]
    return r, plate


def test_acescct_extraction_zeroes_non_finite_plate_values_and_names_the_frame(tmp_path, nan_plate, capsys):
    """B2: ``crop_space=acescct`` aborted the whole shot on one NaN pixel, naming no frame, and
    left a partial set a rerun could not finish; the sRGB path zeroes NaN."""
    from test_plates import write_plate, write_truth

    from progressive_swap.cli import extract as extract_cli

    r, plate = nan_plate
    (tmp_path / "plates").mkdir()
    write_plate(tmp_path / "plates" / "plate.1001.exr", plate, "float")
    truth = write_truth(tmp_path / "truth.json", [r], [1001])
    capsys.readouterr()
    rc = extract_cli.main([f"input={tmp_path / 'plates' / 'plate.####.exr'}", f"out={tmp_path / 'faces'}", "size=64",
                           "landmarks=given", f"landmarks_file={truth}", "progress=false", "crop_space=acescct"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"problem: frame 1001: \d+ non-finite plate value", out), out
    fs = F.open(tmp_path / "faces")
    assert len(fs) == 1 and np.isfinite(fs.values(0)).all() and fs.validate(deep=True) == []


def test_the_export_crop_of_a_nan_plate_is_finite_and_nothing_non_finite_is_written(nan_plate, tmp_path):
    """B2x: an ``acescct`` model wrote NaN over the whole face of every layer (np.clip keeps NaN),
    and comps gained ~28,000 non-finite samples a frame."""
    from test_plates import write_plate

    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import FaceIn, FrameIn
    from progressive_swap.export.pipeline import Exporter
    from progressive_swap.footage.sources import open_source

    r, plate = nan_plate
    (tmp_path / "p").mkdir()
    write_plate(tmp_path / "p" / "plate.1001.exr", plate, "float")
    src = open_source(tmp_path / "p" / "plate.####.exr")
    fr = next(src.frames())
    from progressive_swap.core import align

    m = align.alignment_matrix(r.landmarks, "whole")
    for space in ("acescct", "srgb"):
        colour = src.colour.for_crops(space) if space == "acescct" else src.colour
        frame = FrameIn(fr.index, fr.time, fr.image, [FaceIn(m, 0, r.landmarks)], fr.plate, fr.info, colour)
        assert np.isfinite(PL.crop_working(frame, m, 32)).all(), space

    class Stub:
        stats = {"nonfinite_layer_values": 0, "nonfinite_comp_values": 0}

    layer = np.zeros((4, 4, 4), np.float32)
    layer[0, 0, 0], layer[1, 1, 3] = np.nan, np.inf
    clean = Exporter._finite(Stub, layer, "layer")
    assert np.isfinite(clean).all() and Stub.stats["nonfinite_layer_values"] == 2
    assert Exporter._finite(Stub, np.ones((2, 2, 3), np.float32), "comp") is not None
    assert Stub.stats["nonfinite_comp_values"] == 0


def test_export_sidecars_are_strict_json_even_when_a_plate_attribute_is_nan(tmp_path):
    """B2x (b7_tc): a plate attribute that is NaN was copied into every sidecar as a bare ``NaN``."""
    from progressive_swap.export import writers as W

    path = tmp_path / "face.1001.json"
    W.write_sidecar(path, {"plate": {"attributes": {"someNaN": float("nan"), "inf": [1.0, float("inf")]}}})
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in a sidecar"))
    assert doc["plate"]["attributes"] == {"someNaN": None, "inf": [1.0, None]}


@pytest.mark.parametrize("doc", [[], {}, {"options": "x"}, "[" * 5000 + "]" * 5000, "{not json"])
def test_a_damaged_extraction_manifest_is_one_line(blob, doc, capsys):
    """E8: ``.extract/*/manifest.json`` of ``[]`` or ``{}``: KeyError / TypeError / AttributeError
    tracebacks from swap-extract's resume and from swap-faceset info."""
    from progressive_swap.extract import pipeline

    m = blob / ".extract" / "clip-abc123" / "manifest.json"
    m.parent.mkdir(parents=True)
    m.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError, match="damaged"):
        pipeline.read_manifest(m)
    assert pipeline.extraction_options(blob, "clip.mp4") == {}
    capsys.readouterr()
    assert cli.main(["info", str(blob)]) == 2
    assert "extraction record clip-abc123 is unreadable" in one_error_line(capsys)


def test_frames_with_a_huge_end_counts_gaps_from_the_files_present(tmp_path):
    """B6: ``frames=1001-99999999999`` walked every missing number (hours at 100 % CPU)."""
    import time

    import cv2

    from progressive_swap.footage.sources import open_source

    (tmp_path / "s").mkdir()
    for n in (1001, 1002, 1004):
        cv2.imwrite(str(tmp_path / "s" / f"f.{n}.png"), np.zeros((8, 8, 3), np.uint8))
    t = time.perf_counter()
    src = open_source(tmp_path / "s" / "f.####.png", frames=(1001, 99999999999))
    assert time.perf_counter() - t < 2.0
    assert src.problems == ["frame 1003 skipped: no file (a gap in the sequence)",
                            "frames 1005-99999999999 skipped: no file (a gap in the sequence)"]


OCIO_CFG = """ocio_profile_version: 2
search_path: "."
roles:
  default: raw
  scene_linear: lin
file_rules:
  - !<Rule> {{name: Default, colorspace: default}}
displays:
  sRGB:
    - !<View> {{name: Raw, colorspace: raw}}
colorspaces:
  - !<ColorSpace>
    name: raw
    isdata: true
  - !<ColorSpace>
    name: ref
  - !<ColorSpace>
    name: lin
    from_scene_reference: !<FileTransform> {{src: {lut}}}
"""


@pytest.mark.parametrize("lut", ["no_such_lut.cube", "/etc/passwd", "/etc/shadow", "bomb.cube"])
def test_an_ocio_config_naming_a_missing_or_bad_lut_is_one_line(tmp_path, lut):
    """B4b: a FileTransform pointing at a missing LUT, at /etc/passwd, or at a LUT_3D_SIZE 2000
    cube gave 37-40-line PyOpenColorIO tracebacks."""
    pytest.importorskip("PyOpenColorIO")
    from progressive_swap.footage import colour as CO

    (tmp_path / "bomb.cube").write_text("LUT_3D_SIZE 2000\n0 0 0\n")
    cfg = tmp_path / "x.ocio"
    cfg.write_text(OCIO_CFG.format(lut=lut))
    with pytest.raises(CO.ColourError) as e:
        CO._processor(str(cfg), "lin", "ref")
    assert "\n" not in str(e.value) and "cannot convert" in str(e.value)


@pytest.mark.parametrize("folder", ["masks/components", "images", "index"])
def test_a_set_folder_that_links_outside_is_never_written_through(blob, outside, folder, capsys):
    """A folder of the set replaced by a link out of it: in-place commands refuse, repair moves
    the link itself to DIR.damaged, and the files it pointed at stay where they are."""
    target = outside.parent / "outside_dir"
    target.mkdir()
    if folder == "masks/components":  # an empty folder: nothing unindexed gives the link away
        (blob / "masks").mkdir(exist_ok=True)
        (blob / folder).symlink_to(target)
        capsys.readouterr()
        assert mask_cli.main(["apply", str(blob), "hull=components"]) == 2
        assert "symbolic link" in one_error_line(capsys) and os.listdir(target) == []
        assert cli.main(["repair", str(blob)]) == 0 and not (blob / folder).exists()  # the link moved aside
        assert os.listdir(target) == [] and F.open(blob).validate() == []
        shutil.rmtree(blob.parent / "set.damaged")
    (target / "keep.png").write_bytes(b"the user's picture")
    (blob / folder).parent.mkdir(parents=True, exist_ok=True)
    if (blob / folder).exists():
        shutil.rmtree(blob / folder)
    (blob / folder).symlink_to(target)
    capsys.readouterr()
    assert cli.main(["sort", str(blob), "by=size"]) == 2
    assert "repair" in one_error_line(capsys)
    cli.main(["repair", str(blob)])
    capsys.readouterr()
    assert sorted(os.listdir(target)) == ["keep.png"] and (target / "keep.png").read_bytes() == b"the user's picture"
    assert outside.read_bytes() == b"the user's file\n" and not (blob / folder).is_symlink()


def test_swap_extract_into_a_folder_of_a_users_hidden_files_leaves_each_byte_identical(tmp_path, nan_plate):
    """E6: ``swap-extract out=`` an existing folder deleted ``.env.template``, ``.bashrc.original``,
    ``.gitconfig.includes``. Run twice (the second resumes and sweeps)."""
    from test_plates import write_plate, write_truth

    from progressive_swap.cli import extract as extract_cli

    r, plate = nan_plate
    (tmp_path / "plates").mkdir()
    write_plate(tmp_path / "plates" / "plate.1001.exr", np.nan_to_num(plate), "float")
    truth = write_truth(tmp_path / "truth.json", [r], [1001])
    out = tmp_path / "project"
    for rel in USER_HIDDEN:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(f"user data {rel}\n")
    before = tree(out)
    argv = [f"input={tmp_path / 'plates' / 'plate.####.exr'}", f"out={out}", "size=64", "landmarks=given",
            f"landmarks_file={truth}", "progress=false"]
    assert extract_cli.main(argv) == 0
    debris = out / ".extract" / f"{cio.TEMP_PREFIX}det_000000.npz.abcd1234.tmp"
    debris.parent.mkdir(parents=True, exist_ok=True)
    debris.write_bytes(b"half")
    assert extract_cli.main(argv) == 0 and not debris.exists()
    now = tree(out)
    assert {k: now.get(k) for k in before} == before and len(F.open(out)) == 1


def test_the_fuzzer_notices_a_change_outside_the_set(monkeypatch):
    """The fuzzer's sandbox oracle: a command that touches a user's file beside the set fails the case."""
    from conftest import import_tool

    from progressive_swap.faceset import repair

    fuzz = import_tool("fuzz_faceset")
    real = repair.repair

    def careless(path, adopt=False):
        (Path(path).parent / ".env.template").unlink(missing_ok=True)
        return real(path, adopt)

    monkeypatch.setattr(repair, "repair", careless)
    summary = fuzz.run(4, seed=0)
    assert summary["outside_changes"] > 0
    assert any("outside the set" in p and ".env.template" in p for f in summary["failures"] for p in f["problems"])


@pytest.mark.parametrize("request_", [("thumb", "../../x"), ("move", "\x00x"), ("move", "a\nb"),
                                      ("remove", "../set/images/f000"), ("remove", "f000\n")])
def test_reviewer_requests_carrying_paths_or_control_characters_are_400(blob, request_):
    """D4, D2 (minor): ``overlay=../../x`` and a destination with a NUL answered 500; ``a\\nb`` made a set."""
    from http import HTTPStatus

    from progressive_swap.faceset.reviewer import Reviewer, ReviewError

    rv = Reviewer(blob)
    kind, value = request_
    with pytest.raises(ReviewError) as e:
        if kind == "thumb":
            rv.thumb("f000", value)
        elif kind == "move":
            rv.move(["f000"], value)
        else:
            rv.remove([value])
    assert e.value.status == HTTPStatus.BAD_REQUEST and sorted(os.listdir(blob.parent)) == ["set"]


def test_an_export_sidecar_naming_paths_outside_out_is_not_trusted(tmp_path, outside):
    """A sidecar (``meta/face.N.json``) is data too: the files it names count as the frame's
    only when they are regular files inside ``out`` under the folders an export writes."""
    from progressive_swap.export.pipeline import Exporter

    class Stub:
        out = tmp_path / "out"

    (Stub.out / "layers").mkdir(parents=True)
    (Stub.out / "layers" / "face.1001.png").write_bytes(b"png")
    (Stub.out / "layers" / "link.png").symlink_to(outside)
    own = Exporter._own_file
    assert own(Stub, "layers/face.1001.png")
    for bad in ("../sandbox/victim.png", str(outside), "layers/../../sandbox/victim.png", "layers/link.png",
                "export.json", None, ["layers/face.1001.png"]):
        assert not own(Stub, bad), bad


@pytest.mark.parametrize("kind", ["user folder", "another face set", "a set with the user's notes"])
def test_swap_phantom_replaces_only_a_phantom_set_it_wrote(blob, tmp_path, kind):
    """``swap-phantom out=`` replaced (rmtree) whatever sat at ``out/faces/idN``."""
    from progressive_swap.phantom.dataset import generate_phantom_dataset

    final = tmp_path / "ph" / "faces" / "id0"
    if kind == "user folder":
        final.mkdir(parents=True)
        (final / "notes.txt").write_text("mine\n")
    else:
        shutil.copytree(blob, final)
        if kind.startswith("a set with"):
            (final / "notes.txt").write_text("mine\n")
    before = tree(final)
    with pytest.raises(ValueError, match="choose another out="):
        generate_phantom_dataset(tmp_path / "ph", identities=2, faces=2, size=32, videos=0, progress=False, workers=0)
    assert tree(final) == before


def test_repair_never_moves_files_through_a_linked_damaged_folder(blob, tmp_path, capsys):
    """``DIR.damaged`` is a sibling path: a link there would carry the set's files anywhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (blob.parent / "set.damaged").symlink_to(elsewhere)
    (blob / "images" / "f001.png").write_bytes(b"\x89PNG not really")
    capsys.readouterr()
    assert cli.main(["repair", str(blob)]) == 2
    assert "is a link or a file" in one_error_line(capsys) and os.listdir(elsewhere) == []
