"""``swap-faceset repair DIR``: rebuild a damaged or missing index from what the files say.

Every face image carries its own record (:mod:`~progressive_swap.faceset.embedded`), so a face
set whose index (or header) is lost, truncated, overlapping or full of NaN can be rebuilt:

1. take the set's writer lock; read the header, or rebuild it from the first image with a
   record (face type from the record, size from the image, format from the file name);
2. read every index shard that still reads; keep rows with finite geometry;
3. decode every image: a face is kept when its image decodes at S x S and either the index or
   the image's own record describes it (the index row wins where both do; a file that holds
   another face's record is renamed to that face);
4. move everything it cannot use to ``DIR.damaged/`` under the same relative path (undecodable
   or unidentified images, masks of faces not kept, unreadable or replaced index shards, a
   damaged header): **nothing is deleted**;
5. commit the new index as one shard covering every earlier shard number, then move the old
   shards away.

A folder without a usable ``faceset.json`` is rebuilt only when every image in its ``images/``
carries a face record of ours (a set whose header was lost); a folder holding other pictures
is refused, untouched and without a ``.lock`` left behind, unless ``adopt=true`` asks to make a
face set of it (the pictures without records then go to ``DIR.damaged``). Images are read only
when they are regular files under :data:`MAX_IMAGE_BYTES`, and only after their header (PNG
IHDR, JPEG SOF) says they are S x S, so a small file declaring a huge picture is never decoded.

A set that already passes :func:`~progressive_swap.faceset.verify.check` (deep: every image and
mask decodes) is left untouched. A
crash at any step leaves a set that a second ``repair`` finishes: files are only renamed, and
the new index is committed (tmp, fsync, rename) before the old one is moved.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import progressive_swap.faceset.embedded as emb
import progressive_swap.faceset.index as fx
import progressive_swap.faceset.verify as vf
from progressive_swap.core.io import check_inside, fsync_dir, is_name, read_regular
from progressive_swap.faceset.format import (
    HEADER_NAME,
    IMAGE_DIR,
    IMAGE_FORMATS,
    INDEX_DIR,
    LOCK_NAME,
    MASK_DIR,
    FaceRecord,
    FaceSetError,
    decode_image,
    decode_mask,
    make_header,
    read_header,
    write_file_durable,
    write_header,
)
from progressive_swap.faceset.writer import lock_faceset_created, records_to_columns

MAX_IMAGE_BYTES = 256 << 20
"""Larger files in ``images/`` are not read (a 2048 px 16-bit PNG is at most about 25 MB)."""

REPAIR_SUFFIX = ".repair"
"""Hidden name (``.<id>.<ext>.repair``) of an image on its way to its own name; a later repair
picks it up."""


@dataclass
class RepairResult:
    """What :func:`repair` found and did (lists name faces or paths relative to the set)."""

    path: Path
    damaged_dir: Path
    changed: bool = False
    faces: int = 0
    from_index: int = 0
    """Faces whose index row was usable."""
    from_records: int = 0
    """Faces recovered from their image's embedded record alone."""
    header_rebuilt: bool = False
    files_without_records: list[str] = field(default_factory=list)
    """Images neither the index nor a record of their own describes (moved to DIR.damaged)."""
    entries_without_files: list[str] = field(default_factory=list)
    """Face ids the index listed whose image is missing or unreadable (dropped)."""
    nonfinite: list[str] = field(default_factory=list)
    """Face ids whose index row held non-finite geometry."""
    unreadable_shards: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    """Images that held another face's record, moved to that face's name."""
    rerecorded: list[str] = field(default_factory=list)
    """Images whose own record was damaged or disagreed with the index: given the kept record
    (the old file is in DIR.damaged)."""
    moved: list[str] = field(default_factory=list)
    """Paths moved to DIR.damaged."""

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "changed": self.changed, "faces": self.faces,
            "from_index": self.from_index, "from_records": self.from_records,
            "header_rebuilt": self.header_rebuilt,
            "files_without_records": self.files_without_records,
            "entries_without_files": self.entries_without_files, "nonfinite": self.nonfinite,
            "unreadable_shards": self.unreadable_shards, "renamed": self.renamed, "rerecorded": self.rerecorded,
            "moved_to_damaged": self.moved, "damaged_dir": str(self.damaged_dir),
        }


def damaged_dir(root: Path) -> Path:
    """``DIR.damaged`` beside ``DIR``."""
    p = Path(os.path.abspath(root))
    return p.with_name(p.name + ".damaged")


def repair(path: str | os.PathLike, adopt: bool = False) -> RepairResult:
    """Rebuild the index of the face set at ``path`` (see the module doc).

    Args:
        adopt: make a face set of a folder without a usable header even when some of its
            images carry no face record of ours (they are moved to ``DIR.damaged``).

    Raises:
        FaceSetError: not a folder, locked by another writer, nothing to rebuild a header from,
            or (without ``adopt``) a folder that does not look like a face set.
    """
    root = Path(path)
    if not root.is_dir():
        raise FaceSetError(f"face set {str(root)!r} does not exist or is not a directory")
    res = RepairResult(root, damaged_dir(root))
    if res.damaged_dir.is_symlink() or (res.damaged_dir.exists() and not res.damaged_dir.is_dir()):
        raise FaceSetError(f"{str(res.damaged_dir)!r} (where repair moves what it cannot use) is a link or a file; "
                           "nothing changed; move it away and repair again")
    fd, created = lock_faceset_created(root)
    try:
        _repair(root, res, adopt)
    except BaseException:
        if created and not res.changed:  # refused: leave the folder as it was, without our lock
            with contextlib.suppress(OSError):
                os.unlink(root / LOCK_NAME)
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return res


def _pending(root: Path) -> tuple[set[str], bool]:
    """The journal's ids, and whether it is sound (a journal naming non-ids is set aside)."""
    try:
        return fx.read_pending(root / INDEX_DIR), True
    except FaceSetError:
        return set(), False


def _repair(root: Path, res: RepairResult, adopt: bool = False) -> None:
    header = _header(root, res, adopt)
    if header is not None and not res.header_rebuilt:
        pending, sound = _pending(root)
        mdir = root / MASK_DIR
        linked = any((root / d).is_symlink() for d in (IMAGE_DIR, INDEX_DIR, MASK_DIR)) or (
            mdir.is_dir() and any(e.is_symlink() for e in os.scandir(mdir)))
        if sound and not linked and vf.check(root, deep=True, pending=pending, header=header).ok:
            return  # nothing to repair: every file decodes and agrees with the index
    if header is None:
        raise FaceSetError(f"{str(root)!r}: {HEADER_NAME} is unusable and no image carries its own record "
                           "to rebuild it from; nothing changed")
    size, ext = int(header["size"]), IMAGE_FORMATS[header["image_format"]]
    res.changed = True
    for d in (IMAGE_DIR, INDEX_DIR, MASK_DIR):  # a folder that is a link out of the set: the link moves away
        if (root / d).is_symlink():
            _move_damaged(root, root / d, res)
    rows, order, index_whole = _index_rows(root, res)
    pending = _pending(root)[0] if index_whole else set()
    # Images: every candidate file, decoded; who it is comes from its record, else its name.
    claims: dict[str, list[tuple[Path, FaceRecord | None]]] = {}
    idir = root / IMAGE_DIR
    files = sorted(idir.iterdir()) if idir.is_dir() else []
    for p in files:
        name = p.name
        if not p.is_file() or not (name.endswith(ext) or name.endswith(ext + REPAIR_SUFFIX)):
            continue
        if name.startswith(".") and not name.endswith(REPAIR_SUFFIX):
            continue  # a temporary file of an unfinished write
        stem = name[1:-len(ext + REPAIR_SUFFIX)] if name.endswith(REPAIR_SUFFIX) else name[: -len(ext)]
        try:
            data = read_regular(p, MAX_IMAGE_BYTES, "face image")
            wh, payload = emb.parse_head(data[: emb.HEAD_BYTES * 4])
            if wh != (size, size):  # the header's size first: never decode a picture of another size
                raise FaceSetError(f"{name} is {wh}, not {size}x{size}")
            if data.startswith(emb.PNG_SIGNATURE) and not emb.png_intact(data):
                raise FaceSetError(f"damaged {name}")
            decode_image(data, size, name)
        except (FaceSetError, OSError):
            _move_damaged(root, p, res)
            continue
        rec = None
        if payload is not None:
            try:
                rec = emb.record_from_json(payload)[0]
            except ValueError:
                rec = None
        if rec is None and not is_name(stem):
            res.files_without_records.append(f"{IMAGE_DIR}/{name}")
            _move_damaged(root, p, res)
            continue
        claims.setdefault(rec.id if rec is not None else stem, []).append((p, rec))
    kept: dict[str, tuple[Path, FaceRecord]] = {}
    for face_id, found in claims.items():
        found.sort(key=lambda t: t[0].name != face_id + ext)  # the file under its own name first
        (p, rec), extra = found[0], found[1:]
        for q, _ in extra:
            _move_damaged(root, q, res)
        if face_id in pending and face_id not in rows:
            _move_damaged(root, p, res)  # debris of an interrupted write the journal names
            continue
        record = rows.get(face_id) or rec
        if record is None:
            res.files_without_records.append(f"{IMAGE_DIR}/{p.name}")
            _move_damaged(root, p, res)
            continue
        kept[face_id] = (p, record)
    res.entries_without_files = [i for i in order if i not in kept]
    # Misnamed images (swapped, or left hidden by an interrupted repair) go to their own names,
    # through hidden names so two swapped files never overwrite each other.
    moves = [(face_id, p) for face_id, (p, _) in kept.items() if p.name != face_id + ext]
    for face_id, p in moves:
        hidden = idir / f".{face_id}{ext}{REPAIR_SUFFIX}"
        if p != hidden:
            os.replace(p, hidden)
    for face_id, _ in moves:
        target = idir / (face_id + ext)
        if target.exists():
            _move_damaged(root, target, res)
        os.replace(idir / f".{face_id}{ext}{REPAIR_SUFFIX}", target)
        res.renamed.append(f"{IMAGE_DIR}/{face_id}{ext}")
    if moves:
        fsync_dir(idir)
    for face_id, (p, record) in kept.items():
        _fix_record(root, idir / (face_id + ext), record, header["face_type"], res)
    _masks(root, size, set(kept), res)
    listed = set(order)
    ids = [i for i in order if i in kept] + sorted(i for i in kept if i not in listed)
    res.faces = len(ids)
    res.from_index = sum(1 for i in ids if i in rows)
    res.from_records = res.faces - res.from_index
    _commit(root, [kept[i][1] for i in ids], res)


def _fix_record(root: Path, path: Path, record: FaceRecord, face_type: str, res: RepairResult) -> None:
    """Give an image whose own record is damaged or says otherwise than the kept one the kept
    record (same pixels); the old file goes to DIR.damaged. Images without a record (written
    before records existed) are left as they are."""
    data = path.read_bytes()
    _, payload = emb.parse_head(data[: emb.HEAD_BYTES * 4])
    if payload is None and emb.KEY.encode("latin-1") + b"\0" not in data[: emb.HEAD_BYTES * 4]:
        return  # no record at all
    try:
        if payload is not None and emb.record_from_json(payload) == (record, face_type):
            return
    except ValueError:
        pass
    fresh = path.with_name(f".{path.name}{REPAIR_SUFFIX}.new")
    write_file_durable(fresh, emb.embed(emb.strip(data), emb.record_to_json(record, face_type)))
    _move_damaged(root, path, res)
    os.replace(fresh, path)
    res.rerecorded.append(f"{IMAGE_DIR}/{path.name}")


def _header(root: Path, res: RepairResult, adopt: bool = False) -> dict[str, Any] | None:
    """The set's header, rebuilt from the first image with a record if it is unusable (only when
    every image carries a record of ours, or ``adopt``)."""
    try:
        return read_header(root)
    except FaceSetError:
        pass
    idir = root / IMAGE_DIR
    if not adopt and idir.is_dir():
        strangers = [p.name for p in sorted(idir.iterdir())
                     if not p.name.startswith(".") and _record_of(p) is None]
        if strangers:
            raise FaceSetError(
                f"{str(root)!r} has no usable {HEADER_NAME} and {len(strangers)} picture(s) in {IMAGE_DIR}/ carry "
                f"no face record (e.g. {strangers[0]!r}): it does not look like a face set; nothing changed; "
                f"pass adopt=true to make a face set of it (those pictures go to {damaged_dir(root).name}/)")
    for p in sorted(idir.iterdir()) if idir.is_dir() else []:
        fmt = next((f for f, e in IMAGE_FORMATS.items() if p.name.endswith(e)), None)
        if fmt is None or p.name.startswith(".") or not p.is_file():
            continue
        try:
            head = read_regular(p, MAX_IMAGE_BYTES, "face image")[: emb.HEAD_BYTES * 4]
        except OSError:
            continue
        wh, payload = emb.parse_head(head)
        try:
            _, face_type = emb.record_from_json(payload) if payload is not None else (None, None)
            if face_type is None or wh is None or wh[0] != wh[1]:
                continue
            # 16-bit PNGs are the crops of an ACEScct set (sRGB sets store 8 bits): IHDR's bit depth.
            space = "acescct" if fmt == "png" and len(head) > 24 and head[24] == 16 else "srgb"
            header = make_header(face_type, int(wh[0]), fmt, 95, 1, None, space)
        except ValueError:
            continue
        if (root / HEADER_NAME).exists():
            _move_damaged(root, root / HEADER_NAME, res)
        write_header(root, header)
        res.header_rebuilt = True
        return header
    return None


def _record_of(p: Path) -> Any:
    """The face record an image file carries (None: none, unreadable, or not a regular file)."""
    try:
        head = read_regular(p, MAX_IMAGE_BYTES, "face image")[: emb.HEAD_BYTES * 4]
        payload = emb.parse_head(head)[1]
        return None if payload is None else emb.record_from_json(payload)[0]
    except (OSError, ValueError):
        return None


def _index_rows(root: Path, res: RepairResult) -> tuple[dict[str, FaceRecord], list[str], bool]:
    """Usable index rows ``{id: record}``, the ids in index order, and whether every shard read."""
    index_dir = root / INDEX_DIR
    names = []
    for p in sorted(index_dir.iterdir()) if index_dir.is_dir() else []:
        m = fx.SHARD_RE.match(p.name)
        if m:
            first = int(m.group(1))
            names.append(fx.ShardName(first, int(m.group(2) or first), p))
    try:
        shards, _ = fx.scan_shards(index_dir)  # superseded shards are stale: skip them
    except FaceSetError:
        shards = sorted(names, key=lambda s: (s.first, -s.last))  # overlapping: read them all
    rows: dict[str, FaceRecord] = {}
    order: list[str] = []
    whole = True
    for s in shards:
        try:
            cols, strings = fx.read_all(s.path)
        except (FaceSetError, OSError):
            res.unreadable_shards.append(f"{INDEX_DIR}/{s.path.name}")
            whole = False
            continue
        bad = set(vf.nonfinite_rows(cols).tolist())
        for k, face_id in enumerate(strings["ids"]):
            if face_id in order:
                continue
            order.append(face_id)  # its place in the set's order, even if only its file describes it
            if k in bad:
                res.nonfinite.append(face_id)
                continue
            rows[face_id] = vf.row_record(cols, strings, k)
    return rows, order, whole


def _masks(root: Path, size: int, kept: set[str], res: RepairResult) -> None:
    """Move masks of faces not kept, and masks that do not decode, to DIR.damaged."""
    mdir = root / MASK_DIR
    for d in sorted(mdir.iterdir()) if mdir.is_dir() and not mdir.is_symlink() else []:
        if d.is_symlink() and d.is_dir():  # a mask folder linking out of the set: the link moves, not its files
            _move_damaged(root, d, res)
            continue
        if not d.is_dir() or d.name.startswith("."):
            continue
        for p in sorted(d.iterdir()):
            if not p.is_file() or p.name.startswith(".") or not p.name.endswith(".png"):
                continue
            try:
                data = p.read_bytes()
                ok = p.name[:-4] in kept and emb.png_intact(data) and decode_mask(data, size, p.name) is not None
            except (FaceSetError, OSError):
                ok = False
            if not ok:
                _move_damaged(root, p, res)


def _commit(root: Path, records: list[FaceRecord], res: RepairResult) -> None:
    """One new shard covering every earlier shard number (the commit), then the old ones away."""
    index_dir = root / INDEX_DIR
    index_dir.mkdir(exist_ok=True)
    old = [p for p in sorted(index_dir.iterdir()) if p.is_file() and (fx.SHARD_RE.match(p.name)
                                                                        or p.name == fx.PENDING_NAME)]
    numbers = [int(n) for p in old if (m := fx.SHARD_RE.match(p.name)) for n in m.groups() if n is not None]
    last = max(numbers, default=-1) + 1
    if records:
        cols, strings = records_to_columns(records)
        fx.write_shard(index_dir / fx.shard_filename(0, last), cols, strings)
    for p in old:
        _move_damaged(root, p, res)
    fsync_dir(index_dir)


def _move_damaged(root: Path, p: Path, res: RepairResult) -> None:
    """Move ``p`` to the same relative path under ``DIR.damaged`` (a free name: never over a file)."""
    rel = check_inside(root, p).relative_to(root)
    dst = res.damaged_dir / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    k = 0
    while dst.exists():
        k += 1
        dst = res.damaged_dir / rel.with_name(f"{rel.name}.{k}")
    try:
        os.rename(p, dst)
    except OSError:  # another file system: copy, flush, then remove
        shutil.copy2(p, dst)
        with open(dst, "rb") as f:
            os.fsync(f.fileno())
        os.unlink(p)
    fsync_dir(dst.parent)
    res.moved.append(str(rel))
