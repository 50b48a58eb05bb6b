"""Corruption fuzzer: damage copies of a face set, a checkpoint and a landmark file, run the
commands that read them, and check that none loses data or answers with a traceback.

    python tools/fuzz_faceset.py --cases 2000 --seed 0 [--keep DIR]

Each case copies a small phantom face set (6 faces of 32 px, with face/occluder/visible masks),
the v0.1 checkpoint of ``tests/fixtures/legacy_0_1`` and a landmark file, and damages one of
them at random: truncation, bit flips, deleted or swapped files, non-finite values, wrong
shapes, duplicate names (see :data:`FACESET_DAMAGE`), and hostile content (:data:`HOSTILE_DAMAGE`):
journal, index, record and view ids that carry paths (``../``, absolute paths, a trailing
newline, a leading dot), symlinks out of the set and planted on our temporary names, special
files (``/dev/zero``, a FIFO) as images, and bombs (a 20000^2 PNG header, a record nested 20,000
deep, a shard member declaring 10^12 elements). Then it runs, in this process (each CLI's
``main(argv)``, each under a 60 s alarm so a hang is a failure, not a stuck run):

- face set: ``info``, ``info --deep``, ``sort by=size view=V``, ``merge`` (with a sound set),
  ``swap-mask apply hull=components``, ``remove`` (one id), ``remove view=V`` (a view that may
  be damaged or made for the sibling set), ``repair``, then ``info --deep``;
- checkpoint: export's and warm start's loading (``load_model``, ``warm_start``);
- landmark file: the extractor's reader (``GivenLandmarks``).

Per case it asserts: every command ends with exit 0 and a correct result, or a non-zero exit
and exactly one line on stderr, never a traceback; after a repair that exits 0 the set passes
``info --deep``; a loaded checkpoint or landmark file holds only finite numbers; and **no byte
of the face set is lost**: every image and mask file present before the commands (hashed) is
still somewhere afterwards, in the set, in ``DIR.damaged``, or in the merged set (the files of
the one face ``remove`` removed, when it succeeded, excepted); and **nothing outside is
touched**: the sandbox around the set (its parent folder, a sibling face set, a user's hidden
files such as ``.env.template`` and ``notes/.draft.20261206``, a file beside the set named like
a face, and the target of the symlinks planted in the set) is snapshotted before the commands
and must be byte-identical after them (only ``DIR.damaged``, the merge's ``out=`` and the view
may appear).

Prints one JSON object: cases by outcome (``ok``: every command succeeded; ``refused``: some
command refused with one line, nothing lost; ``repaired``: repair rebuilt the set; ``failed``),
command results by kind, and the failures (case, damage, command, what went wrong).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from progressive_swap.cli import faceset as faceset_cli
from progressive_swap.cli import mask as mask_cli
from progressive_swap.cli.common import run_cli
from progressive_swap.core.landmarks import MEAN_FACE
from progressive_swap.extract.detect import GivenLandmarks
from progressive_swap.phantom.dataset import generate_phantom_dataset

ROOT = Path(__file__).resolve().parent.parent
LEGACY = ROOT / "tests" / "fixtures" / "legacy_0_1"


# ---------------------------------------------------------------------- running commands

COMMAND_SECONDS = 60


class Hung(BaseException):
    """Raised by the alarm: a command that reads a FIFO or /dev/zero without end."""


def _hung(*_: Any) -> None:
    raise Hung()



def call(fn: Callable[[], int | None]) -> dict[str, Any]:
    """Run ``fn`` with stdout/stderr captured (native libraries' writes to fd 2 included):
    ``{rc, err (lines), kind}``; ``kind`` is ``ok``, ``refused`` (non-zero, one line),
    ``multiline`` or ``traceback`` (an exception escaped)."""
    out, err = io.StringIO(), io.StringIO()
    native = tempfile.TemporaryFile()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(native.fileno(), 2)
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(COMMAND_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = fn()
    except SystemExit as e:
        rc = int(e.code or 0)
    except Hung:
        return {"rc": None, "err": [f"hung: no answer in {COMMAND_SECONDS} s"], "kind": "hang", "out": ""}
    except Exception as e:  # an escaped exception is the failure this tool looks for
        return {"rc": None, "err": [f"{type(e).__name__}: {str(e)[:300]}"], "kind": "traceback", "out": ""}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.dup2(saved, 2)
        os.close(saved)
        native.seek(0)
        printed = native.read().decode("utf-8", "replace")
        native.close()
    lines = [ln for ln in (printed + err.getvalue()).splitlines() if ln.strip()]
    if rc == 0:
        kind = "ok"
    elif len(lines) == 1 and "Traceback" not in lines[0]:
        kind = "refused"
    else:
        kind = "multiline"
    return {"rc": rc, "err": lines[:5], "kind": kind, "out": out.getvalue()}


def digests(*roots: Path) -> dict[str, str]:
    """BLAKE2 digest -> a path, of every regular file under ``roots``."""
    found: dict[str, str] = {}
    for r in roots:
        for dirpath, _, filenames in os.walk(r):  # links to folders are not followed
            for name in filenames:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    found.setdefault(hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest(), str(p))
    return found


def face_files(root: Path) -> dict[str, str]:
    """digest -> relative path of the set's image and mask files."""
    out = {}
    for d in ("images", "masks"):
        if (root / d).is_symlink():
            continue  # a folder linking out of the set holds none of its files
        for dirpath, _, filenames in os.walk(root / d):  # links to folders are not followed
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    out[hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()] = str(p.relative_to(root))
    return out


def snapshot(root: Path, skip: set[str]) -> dict[str, str]:
    """Every entry under ``root`` except the top-level names in ``skip``: relative path -> what
    it is (a regular file's digest, a link's target, a folder, or the kind of a special file).
    Links are never followed and special files never opened."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [n for n in dirnames if n not in skip]
        for name in dirnames + filenames:
            if rel_dir == "." and name in skip:
                continue
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "link -> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    found[rel] = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
            else:
                found[rel] = f"special {stat.S_IFMT(st.st_mode):o}"
    return found


def make_sandbox(d: Path) -> Path:
    """A user's files around the set: hidden files, a note folder, a face-named file beside the
    set, and the outside file the planted links point at. Returns that file."""
    (d / "notes").mkdir()
    for rel in (".env.template", ".bashrc.original", ".gitconfig.includes", "notes/.draft.20261206",
                "notes/.plan.mar2026x.md", "victim.png", "victim.jpg", ".abcdefgh"):
        (d / rel).write_bytes(f"the user's {rel}\n".encode())
    (d / "outside").mkdir()
    target = d / "outside" / "target.png"
    target.write_bytes(b"the user's file a link points at\n")
    return target


# ---------------------------------------------------------------------- damage


def _files(root: Path, sub: str, pattern: str = "*") -> list[Path]:
    d = root / sub
    return sorted(p for p in d.rglob(pattern) if p.is_file()) if d.is_dir() else []


def _pick(rng: np.random.Generator, items: list) -> Any:
    return items[int(rng.integers(len(items)))] if items else None


def truncate(rng, p: Path) -> str:
    data = p.read_bytes()
    n = int(rng.integers(0, max(1, len(data))))
    p.write_bytes(data[:n])
    return f"truncate {p.name} to {n}"


def flip_bits(rng, p: Path) -> str:
    data = bytearray(p.read_bytes())
    if not data:
        return f"flip nothing in empty {p.name}"
    k = int(rng.integers(1, 9))
    for _ in range(k):
        i = int(rng.integers(len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    p.write_bytes(bytes(data))
    return f"flip {k} bits in {p.name}"


def _edit_shard(root: Path, rng, edit: Callable[[dict, dict], str]) -> str:
    import progressive_swap.faceset.index as fx

    shard = _pick(rng, _files(root, "index", "shard_*.npz"))
    if shard is None:
        return "no shard to edit"
    try:
        cols, strings = fx.read_all(shard)
    except (ValueError, OSError):  # damaged already by an earlier edit
        return f"{shard.name} already unreadable"
    cols = {k: v.copy() for k, v in cols.items()}
    what = edit(cols, strings)
    arrays = {**cols, "strings": np.frombuffer(json.dumps(strings).encode(), np.uint8)}
    with open(shard, "wb") as f:  # written as is: a damaged file, not through the format's checks
        np.savez(f, **arrays)
    return f"{what} in {shard.name}"


def nonfinite_index(rng, root: Path) -> str:
    def edit(cols, strings):
        col = _pick(rng, ["landmarks", "matrix", "landmarks_raw"])
        row = int(rng.integers(len(cols[col]))) if len(cols[col]) else 0
        if len(cols[col]):
            cols[col].reshape(len(cols[col]), -1)[row, int(rng.integers(cols[col][0].size))] = \
                _pick(rng, [np.nan, np.inf, -np.inf])
            if col == "landmarks_raw":
                cols["has_raw"][row] = True
        return f"non-finite {col} row {row}"
    return _edit_shard(root, rng, edit)


def wrong_shape_index(rng, root: Path) -> str:
    def edit(cols, strings):
        col = _pick(rng, ["landmarks", "matrix", "frame_size", "track"])
        cols[col] = cols[col][:-1] if rng.random() < 0.5 else cols[col].reshape(len(cols[col]), -1)
        return f"wrong shape {col}"
    return _edit_shard(root, rng, edit)


def duplicate_ids(rng, root: Path) -> str:
    def edit(cols, strings):
        if len(strings["ids"]) > 1:
            strings["ids"][1] = strings["ids"][0]
        return "duplicate id"
    return _edit_shard(root, rng, edit)


def nonfinite_record(rng, root: Path) -> str:
    """An image whose embedded record says NaN (the CRC made right: a deliberate edit)."""
    import zlib

    p = _pick(rng, _files(root, "images", "*.png"))
    if p is None:
        return "no image"
    data = p.read_bytes()
    i = data.find(b"tEXtprogressive_swap.face\0")
    if i < 0:
        return f"no record in {p.name}"
    n = struct.unpack(">I", data[i - 4:i])[0]
    body = data[i + 4:i + 4 + n]
    doc = json.loads(body.split(b"\0", 1)[1])
    doc["landmarks"][0][0] = float("nan")
    new = b"progressive_swap.face\0" + json.dumps(doc).encode()
    chunk = struct.pack(">I", len(new)) + b"tEXt" + new + struct.pack(">I", zlib.crc32(b"tEXt" + new))
    p.write_bytes(data[:i - 4] + chunk + data[i + 8 + n:])
    return f"NaN in the record of {p.name}"


def wrong_shape_image(rng, root: Path) -> str:
    import cv2

    p = _pick(rng, _files(root, "images", "*.png") + _files(root, "masks", "*.png"))
    if p is None:
        return "no file"
    side = int(_pick(rng, [16, 31, 48]))
    ok, buf = cv2.imencode(".png", np.zeros((side, side, 3), np.uint8))
    p.write_bytes(buf.tobytes())
    return f"{p.relative_to(root)} replaced by a {side}px image"


def swap_files(rng, root: Path) -> str:
    files = _files(root, "images") if rng.random() < 0.7 else _files(root, "masks")
    if len(files) < 2:
        return "nothing to swap"
    i, j = rng.choice(len(files), 2, replace=False)
    a, b = files[int(i)], files[int(j)]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    return f"swap {a.name} and {b.name}"


def duplicate_name(rng, root: Path) -> str:
    """A file copied under a name of its kind: an image under a new id, a shard under an
    overlapping or a next number."""
    if rng.random() < 0.5:
        p = _pick(rng, _files(root, "images"))
        if p is None:
            return "no image"
        q = p.with_name("zz" + p.name)
    else:
        p = _pick(rng, _files(root, "index", "shard_*.npz"))
        if p is None:
            return "no shard"
        q = p.with_name(_pick(rng, ["shard_000001.npz", "shard_000000-000001.npz", "shard_000000-000009.npz"]))
    shutil.copyfile(p, q)
    return f"copy {p.name} to {q.name}"


def delete(rng, root: Path) -> str:
    what = _pick(rng, ["image", "mask", "shard", "index", "header", "images"])
    if what == "index":
        shutil.rmtree(root / "index", ignore_errors=True)
        return "delete index/"
    if what == "images":
        shutil.rmtree(root / "images", ignore_errors=True)
        return "delete images/"
    if what == "header":
        (root / "faceset.json").unlink(missing_ok=True)
        return "delete faceset.json"
    pool = {"image": _files(root, "images"), "mask": _files(root, "masks"),
            "shard": _files(root, "index", "shard_*.npz")}[what]
    p = _pick(rng, pool)
    if p is None:
        return f"no {what} to delete"
    p.unlink()
    return f"delete {p.relative_to(root)}"


def corrupt_file(rng, root: Path) -> str:
    p = _pick(rng, _files(root, "images") + _files(root, "masks") + _files(root, "index")
              + [root / "faceset.json"] * 3)
    if p is None or not p.exists():
        return "no file"
    return (truncate if rng.random() < 0.5 else flip_bits)(rng, p)


FACESET_DAMAGE = [corrupt_file, corrupt_file, nonfinite_index, wrong_shape_index, duplicate_ids, nonfinite_record,
                  wrong_shape_image, swap_files, duplicate_name, delete, delete]


def _path_ids(root: Path) -> list[str]:
    """Ids that carry paths: what a shared or downloaded face set may hold in its journal, index or records."""
    outside = root.parent
    return ["../victim", "../../victim", str(outside / "victim"), str(outside / "outside" / "target"),
            "../outside/target", "f000\n", ".hidden", "a/b", "..", ".", "", "x" * 300, "id\x00x"]


def hostile_journal(rng, root: Path) -> str:
    ids = [_pick(rng, _path_ids(root)) for _ in range(int(rng.integers(1, 4)))]
    (root / "index").mkdir(exist_ok=True)
    (root / "index" / "pending.json").write_text(json.dumps({"ids": ids}))
    return f"journal names {ids!r}"


def hostile_index_id(rng, root: Path) -> str:
    bad = _pick(rng, _path_ids(root))

    def edit(cols, strings):
        if strings["ids"]:
            strings["ids"][int(rng.integers(len(strings["ids"])))] = bad
        return f"index id {bad!r}"
    return _edit_shard(root, rng, edit)


def _rewrite_record(p: Path, change: Callable[[dict], Any] | None, raw: bytes | None = None) -> bool:
    import zlib

    data = p.read_bytes()
    i = data.find(b"tEXtprogressive_swap.face\0")
    if i < 0:
        return False
    n = struct.unpack(">I", data[i - 4:i])[0]
    if raw is None:
        doc = json.loads(data[i + 4:i + 4 + n].split(b"\0", 1)[1])
        change(doc)
        raw = json.dumps(doc).encode()
    new = b"progressive_swap.face\0" + raw
    chunk = struct.pack(">I", len(new)) + b"tEXt" + new + struct.pack(">I", zlib.crc32(b"tEXt" + new))
    p.write_bytes(data[:i - 4] + chunk + data[i + 8 + n:])
    return True


def hostile_record_id(rng, root: Path) -> str:
    p = _pick(rng, _files(root, "images", "*.png"))
    bad = _pick(rng, _path_ids(root))
    if p is None or not _rewrite_record(p, lambda d: d.__setitem__("id", bad)):
        return "no record to edit"
    if rng.random() < 0.5:  # and the index gone, so repair rebuilds from the records
        shutil.rmtree(root / "index", ignore_errors=True)
    return f"record id {bad!r} in {p.name}"


def hostile_symlink(rng, root: Path) -> str:
    """A link out of the set: an image, a mask, a planted temporary name, the lock, a mask folder."""
    target = root.parent / "outside" / "target.png"
    ids = sorted(p.stem for p in _files(root, "images", "*.png")) or ["f000"]
    face = _pick(rng, ids)
    kind = _pick(rng, ["image", "new image", "mask", "tmp", "repair tmp", "our tmp", "lock", "mask dir", "index tmp",
                       "images dir", "index dir"])
    where = {
        "image": root / "images" / f"{face}.png",
        "new image": root / "images" / "zz_link.png",
        "mask": root / "masks" / "face" / f"{face}.png",
        "tmp": root / "masks" / "components" / f".{face}.png.tmp",
        "repair tmp": root / "images" / f"..{face}.png.repair.new.tmp",
        "our tmp": root / "images" / f".progressive_swap.tmp.{face}.png.abcd1234.tmp",
        "lock": root / ".lock",
        "mask dir": root / "masks" / "components",
        "index tmp": root / "index" / ".pending.json.tmp",
        "images dir": root / "images",
        "index dir": root / "index",
    }[kind]
    where.parent.mkdir(parents=True, exist_ok=True)
    if where.is_dir() and not where.is_symlink():
        shutil.rmtree(where)
    elif where.exists() or where.is_symlink():
        where.unlink()
    to_dir = kind.endswith(" dir")
    where.symlink_to(target.parent if to_dir else target)
    return f"{where.relative_to(root)} -> {'outside/' if to_dir else target.name} ({kind})"


def special_file(rng, root: Path) -> str:
    """An image or mask that is /dev/zero (a link to it) or a FIFO."""
    p = _pick(rng, _files(root, "images", "*.png") + _files(root, "masks", "*.png"))
    if p is None:
        return "no file"
    p.unlink()
    if rng.random() < 0.5:
        p.symlink_to("/dev/zero")
        return f"{p.relative_to(root)} -> /dev/zero"
    os.mkfifo(p)
    return f"{p.relative_to(root)} is a FIFO"


def bomb(rng, root: Path) -> str:
    import zlib

    kind = _pick(rng, ["png", "jpeg", "nesting", "shape"])
    if kind == "png":
        side = int(_pick(rng, [12000, 20000, 65535]))

        def chunk(k: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + k + body + struct.pack(">I", zlib.crc32(k + body))
        p = _pick(rng, _files(root, "images", "*.png") + [root / "images" / "zz_bomb.png"])
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                      + chunk(b"IDAT", zlib.compress(b"\0" * 65536, 9)) + chunk(b"IEND", b""))
        return f"{p.relative_to(root)}: a {side}^2 PNG header"
    if kind == "jpeg":
        p = root / "images" / "zz_bomb.jpg"
        p.parent.mkdir(exist_ok=True)
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65000, 65000, 1) + b"\x01\x11\x00"
        p.write_bytes(b"\xff\xd8" + sof + b"\xff\xd9")
        return "a 65000^2 JPEG header"
    if kind == "nesting":
        p = _pick(rng, _files(root, "images", "*.png"))
        if p is None or not _rewrite_record(p, None, b"[" * 20000 + b"]" * 20000):
            return "no record to nest"
        return f"a record nested 20000 deep in {p.name}"
    shard = _pick(rng, _files(root, "index", "shard_*.npz"))
    if shard is None:
        return "no shard"
    import zipfile

    with zipfile.ZipFile(shard) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i4", "fortran_order": False, "shape": (10**12,)})
    name = _pick(rng, sorted(members))
    members[name] = buf.getvalue() + b"\0" * 16
    with zipfile.ZipFile(shard, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return f"{shard.name}: {name} declares 10^12 elements"


HOSTILE_DAMAGE = [hostile_journal, hostile_index_id, hostile_record_id, hostile_symlink, hostile_symlink,
                  special_file, bomb]


# ---------------------------------------------------------------------- one case


class Fuzzer:
    def __init__(self, work: Path):
        self.work = work
        base = work / "base"
        generate_phantom_dataset(base, identities=2, faces=6, size=32, videos=0, progress=False, workers=0)
        self.base = base / "faces" / "id0"
        self.other = base / "faces" / "id1"
        self.landmarks = work / "landmarks.json"
        lm = MEAN_FACE * 20 + 32
        self.landmarks.write_text(json.dumps({"fps": 24.0, "size": [64, 64], "frames": [
            {"index": i, "faces": [{"identity": "A", "box": [10, 10, 54, 54], "landmarks": (lm + i).tolist()}]}
            for i in range(4)]}))
        from progressive_swap.export.swapper import load_model

        self.model, _ = load_model(LEGACY / "model.safetensors", device="cpu")

    def case(self, k: int, seed: int) -> dict[str, Any]:
        rng = np.random.default_rng([seed, k])
        d = self.work / f"case{k}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        target = _pick(rng, ["faceset"] * 6 + ["checkpoint", "landmarks"])
        try:
            if target == "faceset":
                return self._faceset_case(rng, d)
            if target == "checkpoint":
                return self._checkpoint_case(rng, d)
            return self._landmarks_case(rng, d)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def _faceset_case(self, rng, d: Path) -> dict[str, Any]:
        s, other, view = d / "S", d / "B", d / "V"
        shutil.copytree(self.base, s)
        shutil.copytree(self.other, other)
        make_sandbox(d)
        pool = FACESET_DAMAGE if rng.random() < 0.5 else HOSTILE_DAMAGE
        damage = [_damage(f, rng, s) for f in [_pick(rng, pool) for _ in range(int(rng.integers(1, 3)))]]
        before = face_files(s)
        outputs = {"S", "S.damaged", "M", "V"}  # what the commands may write: the set, its damaged/, merge out=, view
        outside = snapshot(d, outputs)
        victim = _pick(rng, sorted(p.stem for p in _files(s, "images")))
        runs: list[tuple[str, dict]] = []
        fs_main = faceset_cli.main
        runs.append(("info", call(lambda: fs_main(["info", str(s)]))))
        runs.append(("info --deep", call(lambda: fs_main(["info", str(s), "--deep"]))))
        runs.append(("sort", call(lambda: fs_main(["sort", str(s), "by=size", f"view={view}"]))))
        runs.append(("merge", call(lambda: fs_main(["merge", str(s), str(other), f"out={d / 'M'}"]))))
        runs.append(("mask apply", call(lambda: mask_cli.main(["apply", str(s), "hull=components"]))))
        removed: set[str] = set()
        if victim:
            victim_files = {h for h, rel in face_files(s).items() if Path(rel).stem == victim}
            r = call(lambda: fs_main(["remove", str(s), f"ids={victim}"]))
            runs.append(("remove", r))
            if r["rc"] == 0:
                removed = victim_files
        if (view / "view.json").is_file():
            damage.append(_damage_view(rng, view, s, other))
            hashes_before = face_files(s)
            r = call(lambda: fs_main(["remove", str(s), f"view={view}"]))
            runs.append(("remove view=", r))
            if r["rc"] == 0:
                gone = set(hashes_before) - set(face_files(s))
                removed |= gone  # the faces the view's deletions named, as asked
        rep = call(lambda: fs_main(["repair", str(s), "--json"]))
        runs.append(("repair", rep))
        problems = []
        if rep["rc"] == 0:
            after = call(lambda: fs_main(["info", str(s), "--deep"]))
            runs.append(("info after repair", after))
            if after["rc"] != 0:
                problems.append(f"repair exited 0 but info --deep then failed: {after['err'][:1]}")
        kept = digests(s, d / "S.damaged", d / "M")
        lost = [rel for h, rel in before.items() if h not in kept and h not in removed]
        if lost:
            problems.append(f"{len(lost)} file(s) lost, e.g. {lost[0]}")
        now = snapshot(d, outputs)
        changed = sorted(k for k in set(outside) | set(now) if outside.get(k) != now.get(k))
        if changed:
            problems.append(f"{len(changed)} change(s) outside the set, e.g. {changed[0]!r}: "
                            f"{outside.get(changed[0])} -> {now.get(changed[0])}")
        return self._verdict("faceset", damage, runs, problems, repaired=_changed(rep), outside_changes=len(changed))

    def _checkpoint_case(self, rng, d: Path) -> dict[str, Any]:
        from progressive_swap.export.swapper import load_model
        from progressive_swap.train.warmstart import warm_start

        src = _pick(rng, [LEGACY / "model.safetensors", LEGACY / "last.ckpt"])
        p = d / src.name
        shutil.copyfile(src, p)
        kind = _pick(rng, ["truncate", "flip", "nan"])
        if kind == "truncate":
            damage = [truncate(rng, p)]
        elif kind == "flip":
            damage = [flip_bits(rng, p)]
        else:
            damage = [_nan_in_weights(rng, p)]
        problems = []

        def load() -> int:
            model, _ = load_model(p, device="cpu")
            if not all(bool(t.isfinite().all()) for t in model.state_dict().values() if t.is_floating_point()):
                problems.append("load_model exited 0 with non-finite weights")
            return 0

        def warm() -> int:
            model = copy.deepcopy(self.model)
            with contextlib.redirect_stdout(io.StringIO()):
                warm_start(model, p)
            if not all(bool(t.isfinite().all()) for t in model.state_dict().values() if t.is_floating_point()):
                problems.append("warm_start exited 0 with non-finite weights")
            return 0

        runs = [("load_model", call(lambda: run_cli(load, "fuzz"))),
                ("warm_start", call(lambda: run_cli(warm, "fuzz")))]
        return self._verdict("checkpoint", damage, runs, problems)

    def _landmarks_case(self, rng, d: Path) -> dict[str, Any]:
        p = d / "landmarks.json"
        shutil.copyfile(self.landmarks, p)
        kind = _pick(rng, ["truncate", "flip", "nan", "shape", "duplicate"])
        if kind in ("truncate", "flip"):
            damage = [(truncate if kind == "truncate" else flip_bits)(rng, p)]
        else:
            doc = json.loads(p.read_text())
            face = doc["frames"][int(rng.integers(len(doc["frames"])))]["faces"][0]
            if kind == "nan":
                face[_pick(rng, ["landmarks", "box"])][0] = _pick(rng, [float("nan"), float("inf")]) \
                    if rng.random() < 0.5 else [float("nan"), 1.0]
            elif kind == "shape":
                face["landmarks"] = face["landmarks"][: int(rng.integers(0, 68))]
            else:
                doc["frames"].append(copy.deepcopy(doc["frames"][0]))
            p.write_text(json.dumps(doc))
            damage = [f"{kind} in landmarks.json"]
        problems = []

        def read() -> int:
            g = GivenLandmarks(p)
            for faces in g.frames.values():
                for f in faces:
                    arrays = [np.asarray(getattr(f, n)) for n in ("landmarks", "box")
                              if getattr(f, n, None) is not None]
                    if not all(np.isfinite(a).all() for a in arrays):
                        problems.append("GivenLandmarks read non-finite values without a word")
                        return 0
            return 0

        return self._verdict("landmarks", damage, [("GivenLandmarks", call(lambda: run_cli(read, "fuzz")))], problems)

    @staticmethod
    def _verdict(target: str, damage: list[str], runs: list[tuple[str, dict]], problems: list[str],
                 repaired: bool = False, outside_changes: int = 0) -> dict[str, Any]:
        for name, r in runs:
            if r["kind"] in ("traceback", "multiline", "hang"):
                problems.append(f"{name}: {r['kind']}: {' | '.join(r['err'][:2])}")
        if problems:
            outcome = "failed"
        elif repaired:
            outcome = "repaired"
        elif all(r["rc"] == 0 for _, r in runs):
            outcome = "ok"
        else:
            outcome = "refused"
        return {"target": target, "damage": damage, "outcome": outcome, "problems": problems,
                "commands": {name: r["kind"] for name, r in runs}, "outside_changes": outside_changes}


def _damage(f: Callable[[Any, Path], str], rng, root: Path) -> str:
    """Apply one damage; one that finds its target already broken by the other says so."""
    try:
        return f(rng, root)
    except (ValueError, KeyError, IndexError, TypeError, OSError, struct.error) as e:
        return f"{f.__name__}: target already damaged ({type(e).__name__})"


def _damage_view(rng, view: Path, s: Path, other: Path) -> str:
    """Delete one face from a view, and perhaps lie in its view.json: ids with paths, another set."""
    links = sorted(p for p in view.iterdir() if p.name != "view.json")
    if links:
        _pick(rng, links).unlink()
    kind = _pick(rng, ["none", "none", "other set", "path ids", "nested"])
    doc = json.loads((view / "view.json").read_text())
    if kind == "other set":
        doc["faceset"] = str(other.resolve())
    elif kind == "path ids":
        doc["ids"] = doc["ids"] + [_pick(rng, _path_ids(s))]
    elif kind == "nested":
        (view / "view.json").write_text("[" * 20000 + "]" * 20000)
        return "view: nested 20000 deep"
    (view / "view.json").write_text(json.dumps(doc))
    return f"view: one face deleted, {kind}"


def _changed(rep: dict) -> bool:
    try:
        return rep["rc"] == 0 and bool(json.loads(rep["out"])["changed"])
    except (ValueError, KeyError, TypeError):
        return False


def _nan_in_weights(rng, p: Path) -> str:
    """Overwrite 4 aligned bytes of a float tensor's data with a float32 NaN (safetensors: after
    the JSON header; a Lightning checkpoint: somewhere in its zip's tensor data)."""
    data = bytearray(p.read_bytes())
    if p.suffix == ".safetensors":
        start = 8 + struct.unpack("<Q", data[:8])[0]
    else:
        start = len(data) // 4
    span = (len(data) - start) // 4
    pos = start + 4 * int(rng.integers(span // 2, span - 16))
    data[pos:pos + 4] = struct.pack("<f", float("nan"))
    p.write_bytes(bytes(data))
    return f"NaN at byte {pos} of {p.name}"


def _is_hostile(damage: str) -> bool:
    words = ("journal names", "index id", "record id", "->", "FIFO", "header", "nested", "declares", "view:")
    return any(w in damage for w in words)


def run(cases: int, seed: int, keep: Path | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz_faceset.") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fz = Fuzzer(work)
        results = [fz.case(k, seed) for k in range(cases)]
    by_outcome: dict[str, int] = {}
    by_command: dict[str, dict[str, int]] = {}
    for r in results:
        by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + 1
        for name, kind in r["commands"].items():
            by_command.setdefault(name, {}).setdefault(kind, 0)
            by_command[name][kind] += 1
    failures = [{"case": k, **{x: r[x] for x in ("target", "damage", "problems")}}
                for k, r in enumerate(results) if r["outcome"] == "failed"]
    tally = {"tracebacks": sum(kind == "traceback" for r in results for kind in r["commands"].values()),
             "multiline": sum(kind == "multiline" for r in results for kind in r["commands"].values()),
             "hangs": sum(kind == "hang" for r in results for kind in r["commands"].values()),
             "outside_changes": sum(r.get("outside_changes", 0) for r in results),
             "hostile_cases": sum(any(_is_hostile(x) for x in r["damage"]) for r in results)}
    return {"cases": cases, "seed": seed, "seconds": round(time.perf_counter() - t0, 1), **tally,
            "by_target": {t: sum(r["target"] == t for r in results) for t in ("faceset", "checkpoint", "landmarks")},
            "by_outcome": dict(sorted(by_outcome.items())), "by_command": by_command,
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="work here instead of a temporary folder")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    summary = run(args.cases, args.seed, args.keep)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
