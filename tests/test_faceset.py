"""Face-set format: round trips, resumable appends, crash safety, validation and the CLI."""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from progressive_swap import faceset as F
from progressive_swap.cli import faceset as cli
from progressive_swap.core.io import TEMP_PREFIX
from progressive_swap.faceset.writer import FaceSetWriter

S = 32


def make_batch(start: int, n: int, seed: int = 0, identity: str = ""):
    rng = np.random.default_rng(seed + start)
    records, images, masks = [], [], []
    for i in range(start, start + n):
        lm = rng.uniform(0, 600, (68, 2))
        records.append(F.FaceRecord(
            id=f"clip.mp4_f{i:05d}_0",
            source=f"footage/clip{i % 2}.mp4",
            frame_index=i,
            time=float("nan") if i % 4 == 3 else i / 24.0,
            track=i % 3 - 1,
            identity=identity,
            landmarks=lm,
            matrix=rng.normal(size=(2, 3)),
            frame_size=(640, 480),
            landmarks_raw=lm + rng.normal(size=(68, 2)) if i % 2 else None,
            extra={"seed": i, "params": [0.5, 1.5]} if i % 3 == 0 else {},
        ))
        images.append(rng.integers(0, 256, (S, S, 3), dtype=np.uint8))
        masks.append(rng.random((S, S)).astype(np.float32))
    return records, images, masks


def same_record(a: F.FaceRecord, b: F.FaceRecord) -> None:
    assert (a.id, a.source, a.frame_index, a.track, a.identity, a.extra) == (
        b.id, b.source, b.frame_index, b.track, b.identity, b.extra)
    assert a.time == b.time or (math.isnan(a.time) and math.isnan(b.time))
    assert tuple(a.frame_size) == tuple(b.frame_size)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    if b.landmarks_raw is None:
        assert a.landmarks_raw is None
    else:
        np.testing.assert_array_equal(a.landmarks_raw, b.landmarks_raw)


def ids_on_disk(path: Path, sub: str) -> set[str]:
    return {e for e in os.listdir(path / sub)}


@pytest.fixture
def two_batches(tmp_path):
    path = tmp_path / "A"
    b1, b2 = make_batch(0, 5), make_batch(5, 4)
    with F.create(path, face_type="whole", size=S, identity="A") as w:
        w.append(b1[0], b1[1], masks={"hull": b1[2]})
        w.append(b2[0], b2[1], masks={"hull": b2[2]})
    return path, b1, b2


# ---------------------------------------------------------------------- round trip


def test_round_trip_png(two_batches):
    path, b1, b2 = two_batches
    fs = F.open(path)
    records, images, masks = (b1[k] + b2[k] for k in range(3))
    assert len(fs) == 9 and fs.size == S and fs.face_type == "whole" and fs.image_format == "png"
    assert fs.identities == ["A"] and fs.mask_names == ["hull"] and fs.format_version == F.FORMAT_VERSION
    assert fs.ids == [r.id for r in records]
    for i, r in enumerate(records):
        r.identity = "A"  # the writer's default identity fills ""
        same_record(fs.record(i), r)
        assert fs.record(r.id) == r
        np.testing.assert_array_equal(fs.image(i), images[i])  # bitwise
        m = fs.mask(i, "hull")
        assert m.dtype == np.float32 and m.shape == (S, S)
        assert np.abs(m - masks[i]).max() <= 1 / 65535
    assert fs.mask(0, "occlusion") is None
    np.testing.assert_array_equal(fs.matrices, np.stack([r.matrix for r in records]))
    np.testing.assert_array_equal(fs.landmarks, np.stack([r.landmarks for r in records]))
    np.testing.assert_array_equal(fs.frame_indices, np.arange(9))
    np.testing.assert_array_equal(fs.tracks, [r.track for r in records])
    assert fs.sources == [r.source for r in records]
    assert np.isnan(fs.landmarks_raw[0]).all() and fs.record(0).landmarks_raw is None
    # aligned landmarks: the matrix applied to the frame landmarks, in [0, 1] crop units
    r = records[4]
    want = r.landmarks @ r.matrix[:, :2].T + r.matrix[:, 2]
    np.testing.assert_allclose(fs.landmarks_aligned[4], want, rtol=1e-12, atol=1e-9)
    assert fs.validate(deep=True) == []
    header = json.loads((path / "faceset.json").read_text())
    assert header["created_by"].startswith("progressive_swap ")
    assert {"format_version", "face_type", "size", "image_format"} <= set(header)


def test_mask_dtypes_and_user_masks(tmp_path):
    recs, ims, _ = make_batch(0, 4)
    m_u8 = np.arange(S * S, dtype=np.uint32).reshape(S, S).astype(np.uint8)
    m_u16 = (np.arange(S * S, dtype=np.uint32).reshape(S, S) * 61).astype(np.uint16)
    m_bool = m_u8 > 100
    with F.create(tmp_path / "s", face_type="full", size=S) as w:
        w.append(recs, ims, masks={"hull": [m_u8, m_u16, m_bool, None]})
    fs = F.open(tmp_path / "s")
    np.testing.assert_array_equal(fs.mask(0, "hull"), m_u8.astype(np.float32) / 255)
    np.testing.assert_array_equal(fs.mask(1, "hull"), m_u16.astype(np.float32) / 65535)
    np.testing.assert_array_equal(fs.mask(2, "hull"), m_bool.astype(np.float32))
    assert fs.mask(3, "hull") is None and not fs.has_mask(3, "hull")
    assert fs.mask_counts() == {"hull": 3}
    # a hand-edited mask sits beside the automatic one and wins with prefer_user
    edited = np.full((S, S), 0.25, np.float32)
    p = fs.write_mask(recs[0].id, "hull", edited, user=True)
    assert p.parent.name == "user_hull" and "user_hull" in fs.mask_names
    assert np.abs(fs.mask(0, "hull", prefer_user=True) - 0.25).max() <= 1 / 65535
    np.testing.assert_array_equal(fs.mask(0, "hull"), m_u8.astype(np.float32) / 255)
    assert fs.mask(1, "hull", prefer_user=True) is not None  # falls back to the automatic one
    fs.write_mask(3, "occlusion", edited)  # replace/add, atomically, no stray tmp
    assert F.open(tmp_path / "s").mask_names == ["hull", "occlusion", "user_hull"]
    assert not [e for e in os.listdir(tmp_path / "s/masks/occlusion") if e.endswith(".tmp")]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        fs.write_mask(0, "hull", np.full((S, S), 1.5, np.float32))
    with pytest.raises(ValueError, match="mask must be"):
        fs.write_mask(0, "hull", np.zeros((S, S + 1), np.float32))


def test_jpeg_option(tmp_path):
    with pytest.raises(ValueError, match="jpeg_quality"):
        F.create(tmp_path / "bad", face_type="full", size=S, image_format="jpg", jpeg_quality=90)
    recs, _, _ = make_batch(0, 2)
    yy, xx = np.mgrid[0:S, 0:S]
    smooth = np.stack([xx * 7, yy * 7, (xx + yy) * 3], -1).astype(np.uint8)
    with F.create(tmp_path / "j", face_type="full", size=S, image_format="jpeg", jpeg_quality=98) as w:
        w.append(recs, [smooth, smooth[::-1].copy()])
    fs = F.open(tmp_path / "j")
    assert fs.image_format == "jpg" and fs.image_path(0).suffix == ".jpg"
    out = fs.image(0)
    assert out.dtype == np.uint8 and out.shape == (S, S, 3)
    assert np.abs(out.astype(int) - smooth).mean() < 3.0
    assert fs.validate(deep=True) == []


# ---------------------------------------------------------------------- appending and resume


def test_append_across_two_sessions(tmp_path):
    path = tmp_path / "B"
    b1, b2, b3 = make_batch(0, 3), make_batch(3, 3), make_batch(6, 2)
    with F.create(path, face_type="head", size=S, identity="B") as w:
        w.append(b1[0], b1[1])
    with F.open_writer(path) as w:
        assert len(w) == 3 and b1[0][0].id in w
        with pytest.raises(ValueError, match="duplicate face id"):
            w.append(b1[0][:1], b1[1][:1])
        w.append(b2[0], b2[1])
    with F.create(path, face_type="head", size=S, exist_ok=True) as w:
        w.append(b3[0], b3[1])
    with pytest.raises(F.FaceSetError, match="has size=32"):
        F.create(path, face_type="head", size=64, exist_ok=True)
    with pytest.raises(F.FaceSetError, match="already exists"):
        F.create(path, face_type="head", size=S)
    fs = F.open(path)
    assert fs.ids == [r.id for r in b1[0] + b2[0] + b3[0]]
    for i, im in enumerate(b1[1] + b2[1] + b3[1]):
        np.testing.assert_array_equal(fs.image(i), im)
    assert fs.identity_counts() == {"B": 8}
    assert fs.shard_count <= 2  # close() merges the trailing single-batch shards


def test_one_writer_at_a_time(tmp_path):
    w = F.create(tmp_path / "s", face_type="full", size=S)
    with pytest.raises(F.FaceSetError, match="open for writing"):
        F.open_writer(tmp_path / "s")
    w.close()
    F.open_writer(tmp_path / "s").close()


def test_crash_before_index_commit_keeps_completed_batches(tmp_path, monkeypatch):
    path = tmp_path / "C"
    b1, b2 = make_batch(0, 3), make_batch(3, 3)
    w = F.create(path, face_type="full", size=S)
    w.append(b1[0], b1[1], masks={"hull": b1[2]})

    def crash(*a, **k):
        raise RuntimeError("simulated crash before the index commit")

    monkeypatch.setattr(FaceSetWriter, "_commit", crash)
    with pytest.raises(RuntimeError):
        w.append(b2[0], b2[1], masks={"hull": b2[2]})
    # the images and masks of the failed batch are on disk, unlisted
    assert f"{b2[0][0].id}.png" in ids_on_disk(path, "images")
    w._release_lock()  # the process "died": the OS drops its lock
    w.closed = True
    # stray files a crash can leave: a half-written shard and a half-written image
    (path / "index" / f"{TEMP_PREFIX}shard_000001.npz.x1y2z3w4.tmp").write_bytes(b"PK\x03\x04 half a shard")
    (path / "images" / f"{TEMP_PREFIX}{b2[0][1].id}.png.a1b2c3d4.tmp").write_bytes(b"\x89PNG half")
    fs = F.open(path)
    assert fs.ids == [r.id for r in b1[0]]
    assert fs.validate(deep=True) == []
    monkeypatch.undo()
    # resume: leftovers are cleaned, and the failed batch can be written again
    with F.open_writer(path) as w2:
        assert len(w2) == 3
        assert ids_on_disk(path, "images") == {f"{r.id}.png" for r in b1[0]}
        assert ids_on_disk(path, "masks/hull") == {f"{r.id}.png" for r in b1[0]}
        assert not [e for e in os.listdir(path / "index") if e.endswith(".tmp")]
        w2.append(b2[0], b2[1], masks={"hull": b2[2]})
    fs = F.open(path)
    assert fs.ids == [r.id for r in b1[0] + b2[0]]
    np.testing.assert_array_equal(fs.image(4), b2[1][1])
    assert fs.validate(deep=True) == []


def test_truncated_or_garbage_shard_is_an_error_unless_skipped(tmp_path):
    path = tmp_path / "D"
    b1, b2 = make_batch(0, 3), make_batch(3, 2)
    with F.create(path, face_type="full", size=S) as w:
        w.append(b1[0], b1[1])
        w.append(b2[0], b2[1])
        w.close(compact=False)
    shard = path / "index" / "shard_000001.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(F.FaceSetError, match="corrupted index shard shard_000001.npz"):
        F.open(path)
    with pytest.raises(F.FaceSetError, match="corrupted index shard"):
        F.open_writer(path)  # a writer must not delete the images of an unreadable shard
    fs = F.open(path, on_corrupt="skip")
    assert fs.ids == [r.id for r in b1[0]] and len(fs.problems) == 1
    shard.write_bytes(b"not a zip file at all")
    with pytest.raises(F.FaceSetError, match="corrupted index shard"):
        F.open(path)
    assert cli.main(["info", str(path)]) == 2


def test_corrupt_landmark_column_is_caught_lazily(tmp_path):
    path = tmp_path / "E"
    with F.create(path, face_type="full", size=S) as w:
        w.append(*make_batch(0, 3)[:2])
    shard = next((path / "index").glob("shard_*.npz"))
    data = bytearray(shard.read_bytes())
    pos = data.index(b"landmarks_raw.npy") - 400  # inside the `landmarks` member's data
    data[pos] ^= 0xFF
    shard.write_bytes(bytes(data))
    fs = F.open(path)  # the small columns are intact
    with pytest.raises(F.FaceSetError, match="corrupted index shard"):
        fs.landmarks
    assert any("corrupted index shard" in p for p in F.open(path).validate(deep=True))


def test_interrupted_compaction_leaves_a_readable_set(tmp_path):
    path = tmp_path / "G"
    b1, b2 = make_batch(0, 2), make_batch(2, 2)
    with F.create(path, face_type="full", size=S) as w:
        w.append(b1[0], b1[1])
        w.append(b2[0], b2[1])
        w.close(compact=False)
    saved = {p.name: p.read_bytes() for p in (path / "index").iterdir()}
    with F.open_writer(path) as w:
        assert w.compact()
    names = sorted(os.listdir(path / "index"))
    assert names == ["shard_000000-000002.npz"]
    for name, data in saved.items():  # as if the crash came before the old shards were deleted
        (path / "index" / name).write_bytes(data)
    fs = F.open(path)
    assert fs.ids == [r.id for r in b1[0] + b2[0]] and fs.shard_count == 1
    F.open_writer(path).close()
    assert sorted(os.listdir(path / "index")) == names  # superseded shards deleted


# ---------------------------------------------------------------------- validation


def test_validation_errors(tmp_path):
    recs, ims, _ = make_batch(0, 2)
    for bad in (100, 0, 4096, 2048 + 16):
        with pytest.raises(ValueError, match="size must be a multiple of 16"):
            F.create(tmp_path / f"s{bad}", face_type="full", size=bad)
    with pytest.raises(ValueError, match="unknown face_type 'torso'"):
        F.create(tmp_path / "t", face_type="torso", size=S)
    with pytest.raises(ValueError, match="image_format"):
        F.create(tmp_path / "t", face_type="full", size=S, image_format="webp")
    path = tmp_path / "V"
    with F.create(path, face_type="full", size=S) as w:
        with pytest.raises(ValueError, match="bad face id"):
            w.append([F.FaceRecord(**{**recs[0].__dict__, "id": "../evil"})], ims[:1])
        with pytest.raises(ValueError, match="face image must be uint8"):
            w.append(recs[:1], [ims[0].astype(np.float32)])
        with pytest.raises(ValueError, match="landmarks must be finite"):
            w.append([F.FaceRecord(**{**recs[0].__dict__, "landmarks": np.zeros((5, 2))})], ims[:1])
        with pytest.raises(ValueError, match="duplicate face id"):
            w.append([recs[0], recs[0]], [ims[0], ims[0]])
        w.append(recs, ims)
    assert ids_on_disk(path, "images") == {f"{r.id}.png" for r in recs}  # failed batches left nothing

    header_path = path / "faceset.json"
    good = json.loads(header_path.read_text())

    def with_header(**changes):
        header_path.write_text(json.dumps({**good, **changes}))

    with_header(format_version=F.FORMAT_VERSION + 1)
    with pytest.raises(F.FaceSetError, match="newer than this progressive_swap"):
        F.open(path)
    with_header(format_version="1")
    with pytest.raises(F.FaceSetError, match="unknown format_version"):
        F.open(path)
    with_header(face_type="torso")
    with pytest.raises(F.FaceSetError, match="unknown face_type"):
        F.open(path)
    with_header(size=33)
    with pytest.raises(F.FaceSetError, match="size must be"):
        F.open(path)
    header_path.write_text("{not json")
    with pytest.raises(F.FaceSetError, match="corrupt face set header"):
        F.open(path)
    header_path.unlink()
    with pytest.raises(F.FaceSetError, match="faceset.json is missing"):
        F.open(path)
    with pytest.raises(F.FaceSetError, match="damaged face set"):
        F.create(path, face_type="full", size=S)
    with pytest.raises(F.FaceSetError, match="does not exist"):
        F.open(tmp_path / "nowhere")


# ---------------------------------------------------------------------- workers, edits


def test_pickles_cheaply_for_dataloader_workers(two_batches):
    path, b1, _ = two_batches
    fs = F.open(path)
    _ = fs.landmarks_aligned  # loaded in the parent...
    blob = pickle.dumps(fs)
    assert len(blob) < 20_000  # ...but not shipped: lazily reloaded in the worker
    fs2 = pickle.loads(blob)
    np.testing.assert_array_equal(fs2.landmarks, fs.landmarks)
    np.testing.assert_array_equal(fs2.image(2), b1[1][2])
    assert fs2.index_of(b1[0][1].id) == 1


def test_remove_merge_compact(two_batches, tmp_path):
    path, b1, b2 = two_batches
    fs = F.open(path)
    gone = [b1[0][1].id, b2[0][0].id]
    assert fs.remove(gone + ["no-such-face"]) == 2
    keep = [r for r in b1[0] + b2[0] if r.id not in gone]
    assert fs.ids == [r.id for r in keep] and len(F.open(path)) == 7
    for r in keep:
        r.identity = "A"
        same_record(fs.record(r.id), r)  # extra and raw landmarks follow their rows
    assert f"{gone[0]}.png" not in ids_on_disk(path, "images")
    assert f"{gone[0]}.png" not in ids_on_disk(path, "masks/hull")
    other = tmp_path / "other"
    rb = make_batch(100, 2, identity="Z")
    with F.create(other, face_type="whole", size=S) as w:
        w.append(*rb[:2])
    merged = fs.merge([other], tmp_path / "merged")
    assert merged.ids == fs.ids + [r.id for r in rb[0]]
    assert merged.identity_counts() == {"A": 7, "Z": 2}
    np.testing.assert_array_equal(merged.image(merged.index_of(rb[0][1].id)), rb[1][1])
    np.testing.assert_array_equal(merged.mask(0, "hull"), fs.mask(0, "hull"))
    assert merged.validate(deep=True) == []
    with pytest.raises(F.FaceSetError, match="appears twice"):
        F.merge([path, path], tmp_path / "dup")


# ---------------------------------------------------------------------- CLI


def test_cli_info(two_batches, capsys):
    path, b1, _ = two_batches
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "whole" in out and "A: 9" in out and "hull: 9" in out
    assert cli.main(["info", str(path), "--json", "--deep"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["valid"] is True and info["count"] == 9 and info["identities"] == {"A": 9}
    assert info["masks"] == {"hull": 9} and info["format_version"] == F.FORMAT_VERSION
    assert info["size"] == S and info["face_type"] == "whole" and info["image_format"] == "png"

    image = path / "images" / f"{b1[0][2].id}.png"
    good = image.read_bytes()
    image.write_bytes(b"garbage")
    assert cli.main(["info", str(path)]) == 2  # the quick check reads each image's header
    assert "is not a readable image" in capsys.readouterr().err
    image.write_bytes(good[: len(good) - 40])  # header and record intact, pixels cut short
    assert cli.main(["info", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(path), "--deep", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["valid"] is False
    assert "corrupt face image" in captured.err and len(captured.err.strip().splitlines()) == 1
    image.unlink()
    assert cli.main(["info", str(path)]) == 2
    assert "1 indexed image(s) missing" in capsys.readouterr().err
    shutil.rmtree(path / "index")
    assert cli.main(["info", str(path), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["valid"] is False
    assert cli.main(["info", str(path.parent / "nowhere")]) == 2
    assert cli.main(["bogus"]) == 2
    assert cli.main(["info"]) == 2


def test_shards_stay_few_for_fast_opens(tmp_path, monkeypatch):
    from progressive_swap.faceset import writer as faceset_writer

    monkeypatch.setattr(faceset_writer, "MERGE_EVERY", 3)
    monkeypatch.setattr(faceset_writer, "MAX_SHARDS_AFTER_CLOSE", 2)
    path = tmp_path / "H"
    batches = [make_batch(i, 1) for i in range(7)]
    w = F.create(path, face_type="full", size=S)
    for b in batches:
        w.append(b[0], b[1])
    # no close(), as after a crash: merged every 3 batches
    assert sorted(os.listdir(path / "index")) == [
        "shard_000000-000003.npz", "shard_000004-000007.npz", "shard_000008.npz"]
    assert F.open(path).ids == [b[0][0].id for b in batches]
    w.close()
    assert F.open(path).shard_count == 1  # more than MAX_SHARDS_AFTER_CLOSE remained
    fs = F.open(path)
    assert fs.ids == [b[0][0].id for b in batches]
    for i, b in enumerate(batches):
        np.testing.assert_array_equal(fs.landmarks[i], b[0][0].landmarks)
        np.testing.assert_array_equal(fs.image(i), b[1][0])


def test_a_set_written_without_per_file_fsync_is_the_same_and_flushed_once(tmp_path, monkeypatch):
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls["fsync"] += 1
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    batches = [make_batch(0, 6), make_batch(6, 6)]
    counts = {}
    for durable in (True, False):
        calls.update(fsync=0, sync=0)
        with F.create(tmp_path / str(durable), face_type="whole", size=S, durable=durable) as w:
            for recs, ims, ms in batches:
                w.append(recs, ims, masks={"hull": ms})
        counts[durable] = dict(calls)
    # 24 files (12 images, 12 masks): each fsynced when durable, none when not; one flush at close.
    assert counts[True]["fsync"] >= 24 and counts[True]["sync"] == 0
    assert counts[False]["fsync"] < counts[True]["fsync"] - 24 + 1 and counts[False]["sync"] == 1
    a, b = F.open(tmp_path / "True"), F.open(tmp_path / "False")
    assert len(a) == len(b) == 12
    for k in (0, 7, 11):
        np.testing.assert_array_equal(a.image(k), b.image(k))
        np.testing.assert_array_equal(a.mask(k, "hull"), b.mask(k, "hull"))
        same_record(a.record(k), b.record(k))
