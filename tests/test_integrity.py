"""Face sets that cannot be lost: the check before every in-place change, the records each
image carries, ``swap-faceset repair`` and the corruption fuzzer (docs/faceset.md,
*Verification*, *Embedded records*, *Repair*)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import import_tool, write_blob_faceset

from progressive_swap import faceset as F
from progressive_swap.cli import faceset as cli
from progressive_swap.cli import mask as mask_cli
from progressive_swap.faceset import curate, embedded
from progressive_swap.faceset import index as fx

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"


def hashes(root: Path) -> dict[str, str]:
    """BLAKE2 of every image and mask under ``root`` (relative path -> digest)."""
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes()).hexdigest()
            for d in ("images", "masks") for p in sorted((root / d).rglob("*")) if p.is_file()}


def all_bytes_kept(before: dict[str, str], *roots: Path) -> bool:
    """Every digest of ``before`` is still on disk under one of ``roots``."""
    now = set()
    for r in roots:
        if r.is_dir():
            now |= {hashlib.blake2b(p.read_bytes()).hexdigest() for p in r.rglob("*") if p.is_file()}
    return set(before.values()) <= now


@pytest.fixture
def blob(tmp_path) -> Path:
    path = write_blob_faceset(tmp_path / "A", 0, n=6, size=32)
    F.open(path).write_mask("f001", "hull", np.ones((32, 32), np.float32))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------------- verification


@pytest.mark.parametrize("damage", ["shards deleted", "index folder deleted", "shard truncated"])
@pytest.mark.parametrize("command", [
    ["sort", "{d}", "by=size"], ["remove", "{d}", "ids=f002"], ["mask", "apply", "{d}", "hull=components"],
])
def test_in_place_commands_refuse_a_damaged_index_and_delete_nothing(blob, damage, command, capsys):
    before = hashes(blob)
    if damage == "shards deleted":
        for s in (blob / "index").glob("shard_*.npz"):
            s.unlink()
    elif damage == "index folder deleted":
        shutil.rmtree(blob / "index")
    else:
        s = next((blob / "index").glob("shard_*.npz"))
        s.write_bytes(s.read_bytes()[:100])
    capsys.readouterr()
    argv = [a.format(d=blob) for a in command]
    rc = mask_cli.main(argv[1:]) if argv[0] == "mask" else cli.main(argv)
    assert rc == 2
    line = one_error_line(capsys)
    assert f"swap-faceset repair {blob}" in line and "Traceback" not in line
    assert hashes(blob) == before  # nothing deleted, nothing rewritten


def test_info_reports_unindexed_files_and_entries_without_files(blob, capsys):
    for s in (blob / "index").glob("shard_*.npz"):
        s.unlink()
    assert cli.main(["info", str(blob), "--json"]) == 2
    info = json.loads(capsys.readouterr().out)
    assert not info["valid"] and info["count"] == 0 and info["files_not_indexed"] == 7  # 6 images, 1 mask
    blob2 = write_blob_faceset(blob.parent / "B", 1, n=3)
    (blob2 / "images" / "f001.png").unlink()
    assert cli.main(["info", str(blob2), "--json"]) == 2
    info = json.loads(capsys.readouterr().out)
    assert info["indexed_files_missing"] == 1 and info["files_not_indexed"] == 0
    assert any("f001" in p for p in info["problems"])


def _rewrite_shard(path: Path, edit) -> None:
    shard = next((path / "index").glob("shard_*.npz"))
    cols, strings = fx.read_all(shard)
    cols = {k: v.copy() for k, v in cols.items()}
    edit(cols, strings)
    fx.write_shard(shard, cols, strings)


@pytest.mark.parametrize("column", ["landmarks", "matrix"])
def test_non_finite_geometry_is_refused_when_read_naming_the_face(blob, column, capsys):
    _rewrite_shard(blob, lambda c, s: c[column].__setitem__((3, 0, 1), np.nan))
    with pytest.raises(F.FaceSetError, match=f"face 'f003' .* non-finite {column}"):
        fs = F.open(blob)
        fs.landmarks  # loaded on first use
    capsys.readouterr()
    assert cli.main(["info", str(blob)]) == 2
    assert "f003" in one_error_line(capsys)
    with pytest.raises(F.FaceSetError, match="repair"):
        F.open_writer(blob)


def test_swapped_image_files_are_refused(blob):
    a, b = blob / "images" / "f000.png", blob / "images" / "f001.png"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    problems = F.open(blob).validate()
    assert any("holds the face 'f001', not 'f000'" in p for p in problems)
    with pytest.raises(F.FaceSetError, match="repair"):
        curate.sort_faceset(blob, "size")


def test_journaled_crash_debris_is_cleaned_but_an_unlisted_file_is_refused(blob):
    extra = blob / "images" / "zz9.png"
    shutil.copy(blob / "images" / "f000.png", extra)
    with pytest.raises(F.FaceSetError, match="1 file.* the index does not list, e.g. images/zz9.png"):
        F.open_writer(blob)
    assert extra.is_file()
    fx.write_pending(blob / "index", ["zz9"])  # the journal of an append that never committed
    assert F.open(blob).validate() == []
    with F.open_writer(blob):
        pass
    assert not extra.exists() and not (blob / "index" / fx.PENDING_NAME).exists()
    assert len(F.open(blob)) == 6 and F.open(blob).validate(deep=True) == []


def test_remove_journals_its_deletes_so_a_crash_after_the_commit_is_finished_later(blob, monkeypatch):
    import progressive_swap.faceset.writer as writer

    calls = []
    monkeypatch.setattr(writer, "_unlink", lambda p: calls.append(p) or (_ for _ in ()).throw(SystemExit))
    w = F.open_writer(blob)
    with pytest.raises(SystemExit):  # "killed" after the index commit, before the first file went
        w.remove(["f002"])
    w._release_lock()
    w.closed = True
    monkeypatch.undo()
    assert "f002" not in F.open(blob).ids and (blob / "images" / "f002.png").is_file()
    assert F.open(blob).validate() == []  # journaled: debris, not damage
    with F.open_writer(blob):
        pass
    assert not (blob / "images" / "f002.png").exists()


# ---------------------------------------------------------------------- embedded records


def test_every_written_image_carries_its_own_record(blob):
    fs = F.open(blob)
    for i in range(len(fs)):
        rec = embedded.file_record(fs.image_path(i))
        assert rec == fs.record(i)
    wh, payload = embedded.parse_head(embedded.read_head(fs.image_path(0)))
    assert wh == (32, 32) and json.loads(payload)["face_type"] == "whole"


def test_jpeg_faces_carry_records_too(tmp_path):
    src = F.open(write_blob_faceset(tmp_path / "A", 0, n=2))
    with F.create(tmp_path / "J", face_type="whole", size=32, image_format="jpg") as w:
        w.append(list(src.records()), [src.image(i) for i in range(2)])
    fs = F.open(tmp_path / "J")
    assert embedded.file_record(fs.image_path(1)) == fs.record(1)
    assert fs.validate(deep=True) == [] and fs.image(1).shape == (32, 32, 3)


def test_legacy_sets_without_records_validate_and_gain_records_when_merged(tmp_path):
    for name in ("id0", "id1"):
        fs = F.open(LEGACY / name, verify=True)
        assert fs.validate(deep=True) == [] and embedded.file_record(fs.image_path(0)) is None
    out = tmp_path / "M"
    old = hashes(LEGACY / "id0")
    src = tmp_path / "id0"
    shutil.copytree(LEGACY / "id0", src)
    fs = F.open(LEGACY / "id0")
    curate.move_faces(src, ["f000", "f001"], out)
    moved = F.open(out)
    assert moved.ids == ["f000", "f001"] and moved.validate(deep=True) == []
    assert embedded.file_record(moved.image_path(0)) == moved.record(0)
    assert np.array_equal(moved.image(0), fs.image(0))  # same pixels, now self-describing
    assert hashes(LEGACY / "id0") == old


# ---------------------------------------------------------------------- repair


def _repair(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["repair", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("damage", ["shards deleted", "index folder deleted", "shard truncated", "header deleted"])
def test_repair_rebuilds_a_lost_index_from_the_images_records(blob, damage, capsys):
    want = [F.open(blob).record(i) for i in range(6)]
    before = hashes(blob)
    if damage == "shards deleted":
        for s in (blob / "index").glob("shard_*.npz"):
            s.unlink()
    elif damage == "index folder deleted":
        shutil.rmtree(blob / "index")
    elif damage == "shard truncated":
        s = next((blob / "index").glob("shard_*.npz"))
        s.write_bytes(s.read_bytes()[:300])
    else:
        (blob / "faceset.json").unlink()
    out = _repair(blob, capsys)
    assert out["valid"] and out["faces"] == 6 and out["from_records"] == (0 if damage == "header deleted" else 6)
    assert out["header_rebuilt"] == (damage == "header deleted")
    fs = F.open(blob)
    assert sorted(fs.records(), key=lambda r: r.id) == want  # every field, bit for bit
    assert hashes(blob) == before and fs.mask("f001", "hull") is not None
    assert (damage != "shard truncated") or out["unreadable_shards"] and (blob.parent / "A.damaged" / "index").is_dir()
    capsys.readouterr()
    assert cli.main(["info", str(blob), "--deep"]) == 0
    assert cli.main(["sort", str(blob), "by=size"]) == 0


def test_repair_keeps_index_rows_drops_non_finite_ones_and_moves_what_it_cannot_use(blob, capsys):
    want = F.open(blob).record("f002")
    _rewrite_shard(blob, lambda c, s: c["landmarks"].__setitem__((2, 5, 0), np.inf))
    (blob / "images" / "f004.png").unlink()  # an index entry without its file
    stranger = blob / "images" / "x01.png"  # a file no index row or record describes
    stranger.write_bytes((LEGACY / "id0" / "images" / "f000.png").read_bytes())
    (blob / "images" / "f005.png").write_bytes(b"\x89PNG not really")  # undecodable
    before = hashes(blob)
    out = _repair(blob, capsys)
    assert out["valid"] and out["nonfinite"] == ["f002"] and out["entries_without_files"] == ["f004", "f005"]
    assert out["files_without_records"] == ["images/x01.png"]
    fs = F.open(blob)
    assert fs.ids == ["f000", "f001", "f002", "f003"]  # the index order, f002 from its own record
    assert fs.record("f002") == want and out["from_records"] == 1
    assert all_bytes_kept(before, blob, blob.parent / "A.damaged")
    assert (blob.parent / "A.damaged" / "images" / "x01.png").is_file()


def test_repair_puts_swapped_images_back_under_their_names(blob, capsys):
    fs = F.open(blob)
    want = {i: fs.image(i) for i in ("f000", "f001")}
    a, b = blob / "images" / "f000.png", blob / "images" / "f001.png"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    out = _repair(blob, capsys)
    assert out["valid"] and sorted(out["renamed"]) == ["images/f000.png", "images/f001.png"]
    fs = F.open(blob)
    assert all(np.array_equal(fs.image(i), want[i]) for i in want) and len(fs) == 6


def test_repair_of_a_sound_set_changes_nothing_and_legacy_sets_stay_as_they_are(blob, tmp_path, capsys):
    before = hashes(blob)
    index = sorted(p.name for p in (blob / "index").iterdir())
    out = _repair(blob, capsys)
    assert not out["changed"] and out["valid"]
    assert hashes(blob) == before and sorted(p.name for p in (blob / "index").iterdir()) == index
    legacy = tmp_path / "legacy"
    shutil.copytree(LEGACY / "id1", legacy)
    (legacy / "index" / "shard_000000.npz").unlink()  # no records to rebuild from: files kept aside
    out = _repair(legacy, capsys)
    assert out["faces"] == 0 and len(out["files_without_records"]) == 6
    assert all_bytes_kept(hashes(LEGACY / "id1"), legacy.parent / "legacy.damaged")


def test_repair_gives_an_image_with_a_damaged_record_the_index_record_and_keeps_the_old_file(blob, capsys):
    p = blob / "images" / "f003.png"
    old = p.read_bytes()
    orig = embedded.parse_head(old)[1]
    p.write_bytes(embedded.embed(embedded.strip(old), orig.replace(b'"track":0', b'"track":7')))
    assert any("differs from the index" in x for x in F.open(blob).validate(deep=True))
    out = _repair(blob, capsys)
    assert out["valid"] and out["rerecorded"] == ["images/f003.png"]
    assert embedded.parse_head(p.read_bytes())[1] == orig  # the index's record again
    assert (blob.parent / "A.damaged" / "images" / "f003.png").read_bytes() != old  # the edited file, kept


# ---------------------------------------------------------------------- the fuzzer


def test_a_short_fuzz_run_loses_nothing_and_never_answers_with_a_traceback():
    fuzz = import_tool("fuzz_faceset")
    summary = fuzz.run(100, seed=0)
    assert summary["cases"] == 100 and summary["by_target"]["faceset"] > 50
    assert not summary["failures"], summary["failures"]
    assert summary["by_target"]["checkpoint"] > 5
    assert summary["by_outcome"].get("repaired", 0) > 20 and summary["by_command"]["repair"]["ok"] > 20


def test_the_fuzzer_notices_a_lost_file(monkeypatch):
    fuzz = import_tool("fuzz_faceset")
    from progressive_swap.faceset import repair

    real = repair.repair

    def careless(path):
        for p in sorted(Path(path, "images").glob("*.png"))[:1]:
            p.unlink()
        return real(path)

    monkeypatch.setattr(repair, "repair", careless)
    summary = fuzz.run(6, seed=0)
    assert any("lost" in p for f in summary["failures"] for p in f["problems"])
