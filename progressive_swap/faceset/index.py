"""The face-set index: per-face metadata stored as numpy shards under ``DIR/index/``.

One shard is one uncompressed ``.npz`` file holding the columns of a batch of faces. It is the
unit of commit: the writer stores a batch's image files first, then writes the shard to a
temporary name, fsyncs and renames it. A face exists in the set exactly when a committed
shard lists it.

Shard names carry the range of *shard numbers* they cover:

- ``shard_000007.npz``: one appended batch, number 7;
- ``shard_000000-000042.npz``: a rewrite (compaction or removal) that replaces every shard
  numbered 0..41 and takes the fresh number 42 for itself.

A shard whose range lies inside another shard's range is *superseded*: readers skip it and the
next writer deletes it. A crash between writing a merged shard and deleting the old ones thus
leaves a readable set. Faces are ordered by shard range start, then by row within a shard.

``index/pending.json`` (:data:`PENDING_NAME`) is the writer's journal: before it adds files for
faces not yet committed, or deletes the files of faces it removes, it lists their ids there.
A file that no shard lists is deleted by the next writer only when the journal names it; any
other unlisted file means the index lost faces, and the set is refused until it is repaired.

Columns (``n`` rows; see ``docs/faceset.md``):

=================  ==================  =============================================
name               dtype, shape        meaning
=================  ==================  =============================================
``strings``        uint8 (bytes,)      UTF-8 JSON: ``ids``, ``sources``, ``identities``
                                       tables and sparse ``extra`` (row -> dict)
``source_index``   int32 (n,)          row into the shard's ``sources`` table
``identity_index`` int32 (n,)          row into the shard's ``identities`` table
``frame_index``    int64 (n,)          frame number in the source
``time``           float64 (n,)        seconds from the stream's pts; NaN if unknown
``track``          int32 (n,)          track id; -1 if none
``frame_size``     int32 (n, 2)        source frame (w, h) in pixels
``matrix``         float64 (n, 2, 3)   frame pixels -> normalised crop coords [0, 1]
``has_raw``        bool (n,)           whether ``landmarks_raw`` holds data for the row
``landmarks``      float64 (n, 68, 2)  smoothed landmarks, frame pixels (used for crop)
``landmarks_raw``  float64 (n, 68, 2)  detector output, frame pixels; NaN if absent
=================  ==================  =============================================

``landmarks`` and ``landmarks_raw`` are the bulk of the index (1.1 KB per face each), so
readers load them lazily; opening a set reads only the small columns.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping
from zlib import error as zlib_error

import numpy as np

from progressive_swap.core.io import atomic_write, is_name, loads_json

PENDING_NAME = "pending.json"
INDEX_NAME = "index"
SHARD_RE = re.compile(r"^shard_(\d{6})(?:-(\d{6}))?\.npz$")

# Column name -> (dtype, trailing shape). Order is the on-disk order.
COLUMNS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "source_index": (np.dtype(np.int32), ()),
    "identity_index": (np.dtype(np.int32), ()),
    "frame_index": (np.dtype(np.int64), ()),
    "time": (np.dtype(np.float64), ()),
    "track": (np.dtype(np.int32), ()),
    "frame_size": (np.dtype(np.int32), (2,)),
    "matrix": (np.dtype(np.float64), (2, 3)),
    "has_raw": (np.dtype(np.bool_), ()),
    "landmarks": (np.dtype(np.float64), (68, 2)),
    "landmarks_raw": (np.dtype(np.float64), (68, 2)),
}
LAZY_COLUMNS = ("landmarks", "landmarks_raw")
EAGER_COLUMNS = tuple(c for c in COLUMNS if c not in LAZY_COLUMNS)


class FaceSetError(ValueError):
    """A face set on disk is missing, damaged, or incompatible (one-line message)."""


@dataclass(frozen=True)
class ShardName:
    """A shard file and the range of shard numbers it covers (inclusive)."""

    first: int
    last: int
    path: Path

    @property
    def is_merged(self) -> bool:
        return self.last != self.first

    def covers(self, other: "ShardName") -> bool:
        return self.first <= other.first and other.last <= self.last and self != other


def shard_filename(first: int, last: int | None = None) -> str:
    """File name for a shard covering numbers ``first..last`` (``last`` = ``first`` if None)."""
    if last is None or last == first:
        return f"shard_{first:06d}.npz"
    return f"shard_{first:06d}-{last:06d}.npz"


def scan_shards(index_dir: Path) -> tuple[list[ShardName], list[ShardName]]:
    """List the shards of ``index_dir``.

    Returns:
        ``(live, superseded)``: live shards sorted by range start, and shards that a wider
        shard replaces (left behind by an interrupted compaction; safe to delete).

    Raises:
        FaceSetError: if two live shards overlap without one containing the other.
    """
    names: list[ShardName] = []
    try:
        entries = os.listdir(index_dir)
    except FileNotFoundError:
        raise FaceSetError(f"corrupted index: directory {str(index_dir)!r} is missing") from None
    for entry in entries:
        m = SHARD_RE.match(entry)
        if m:
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) else first
            if last < first:
                raise FaceSetError(f"corrupted index: bad shard name {entry!r}")
            names.append(ShardName(first, last, index_dir / entry))
    # Widest first, so a covering shard is seen before the shards it covers.
    names.sort(key=lambda s: (s.first, -s.last))
    live: list[ShardName] = []
    superseded: list[ShardName] = []
    for s in names:
        if live and live[-1].last >= s.first:
            if s.last <= live[-1].last:
                superseded.append(s)
                continue
            raise FaceSetError(
                f"corrupted index: shards {live[-1].path.name} and {s.path.name} overlap"
            )
        live.append(s)
    return live, superseded


def next_shard_number(index_dir: Path) -> int:
    """The first shard number not used by any shard file, live or superseded."""
    live, old = scan_shards(index_dir)
    return max((s.last for s in live + old), default=-1) + 1


def empty_columns(n: int = 0) -> dict[str, np.ndarray]:
    """Zero-filled columns for ``n`` rows (``landmarks_raw`` NaN)."""
    cols = {k: np.zeros((n, *shape), dtype) for k, (dtype, shape) in COLUMNS.items()}
    cols["landmarks_raw"][:] = np.nan
    cols["track"][:] = -1
    return cols


def write_shard(path: Path, columns: Mapping[str, np.ndarray], strings: Mapping[str, Any]) -> None:
    """Write one shard atomically (tmp + fsync + rename, then fsync of the directory).

    Args:
        path: final shard path (``index/shard_*.npz``).
        columns: every name of :data:`COLUMNS`, all with the same number of rows.
        strings: JSON-able dict with ``ids`` (list of n str), ``sources`` and ``identities``
            (tables indexed by ``source_index`` and ``identity_index``) and ``extra``
            (``{str(row): dict}`` for the rows that have one).
    """
    arrays = {}
    for name, (dtype, shape) in COLUMNS.items():
        a = np.ascontiguousarray(columns[name], dtype=dtype)
        arrays[name] = a
    blob = json.dumps(dict(strings), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    arrays["strings"] = np.frombuffer(blob.encode("utf-8"), dtype=np.uint8)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def _load_member(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """One ``.npy`` member, its header checked before anything is allocated: a shape whose
    bytes exceed what the member holds is refused (a shard declaring ``(10**12,)`` in 16 bytes)."""
    info = zf.getinfo(name + ".npy")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"column {name} has .npy format {version}")
        if dtype.hasobject:
            raise ValueError(f"column {name} holds Python objects")
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if need > info.file_size:
            raise ValueError(f"column {name} declares shape {tuple(shape)} ({need} bytes) but holds "
                             f"{info.file_size} bytes")
        return _read_rest(f, shape, fortran, dtype)


def _read_rest(f: Any, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError("column data is cut short")
    a = np.frombuffer(data, dtype=dtype, count=count).copy()
    return a.reshape(shape[::-1]).transpose() if fortran else a.reshape(shape)


def _load_members(path: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {name: _load_member(zf, name) for name in names}
    except FileNotFoundError:
        raise
    except KeyError as e:
        missing = str(e.args[0]).split("'")[1] if "'" in str(e.args[0]) else e.args[0]
        raise FaceSetError(f"corrupted index shard {path.name}: missing column {missing.removesuffix('.npy')}") \
            from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, MemoryError, RuntimeError, zlib_error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FaceSetError(f"corrupted index shard {path.name}: {reason}") from None


def _check_column(path: Path, name: str, a: np.ndarray, n: int) -> np.ndarray:
    dtype, shape = COLUMNS[name]
    if a.dtype != dtype or a.shape != (n, *shape):
        raise FaceSetError(
            f"corrupted index shard {path.name}: column {name} is {a.dtype}{list(a.shape)}, "
            f"expected {dtype}{[n, *shape]}"
        )
    return a


def read_shard(path: Path, columns: Iterable[str] = EAGER_COLUMNS) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the ``strings`` table and the given columns of one shard, checking their shapes.

    Raises:
        FaceSetError: one line naming the shard, for a truncated, corrupt or inconsistent file.
        FileNotFoundError: if the shard vanished (a concurrent compaction).
    """
    columns = list(columns)
    raw = _load_members(path, ["strings", *columns])
    try:
        strings = loads_json(raw.pop("strings").tobytes().decode("utf-8"))
        ids = strings["ids"]
        sources, identities, extra = strings["sources"], strings["identities"], strings["extra"]
        ok = (
            isinstance(ids, list) and isinstance(sources, list) and isinstance(identities, list)
            and isinstance(extra, dict) and all(isinstance(i, str) for i in ids)
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise FaceSetError(f"corrupted index shard {path.name}: unreadable strings table")
    bad = next((i for i in ids if not is_name(i)), None)
    if bad is not None:  # an id is a file name: one that is not a plain name never reaches a path
        raise FaceSetError(f"corrupted index shard {path.name}: bad face id {bad!r}")
    n = len(ids)
    cols = {name: _check_column(path, name, raw[name], n) for name in columns}
    for name, table in (("source_index", sources), ("identity_index", identities)):
        if name in cols and n and (cols[name].min() < 0 or cols[name].max() >= len(table)):
            raise FaceSetError(f"corrupted index shard {path.name}: {name} out of range")
    return cols, strings


def read_columns(path: Path, columns: Iterable[str], n: int) -> dict[str, np.ndarray]:
    """Read some columns of a shard known to hold ``n`` rows (used for lazy columns)."""
    columns = list(columns)
    raw = _load_members(path, columns)
    return {name: _check_column(path, name, raw[name], n) for name in columns}


def read_all(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every column of a shard plus its strings (for rewriting)."""
    return read_shard(path, COLUMNS)


def concat_shards(
    cols_list: list[dict[str, np.ndarray]], strings_list: list[dict[str, Any]]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Concatenate shards, merging their string tables (used by compaction, removal, merge)."""
    sources: dict[str, int] = {}
    identities: dict[str, int] = {}
    keys = list(cols_list[0]) if cols_list else list(COLUMNS)
    out_cols: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    ids: list[str] = []
    extra: dict[str, Any] = {}
    for cols, strings in zip(cols_list, strings_list):
        offset = len(ids)
        src_map = np.array([sources.setdefault(s, len(sources)) for s in strings["sources"]] or [0], np.int32)
        id_map = np.array([identities.setdefault(s, len(identities)) for s in strings["identities"]] or [0], np.int32)
        for k in keys:
            v = cols[k]
            if k == "source_index":
                v = src_map[v]
            elif k == "identity_index":
                v = id_map[v]
            out_cols[k].append(v)
        ids.extend(strings["ids"])
        extra.update({str(int(r) + offset): e for r, e in strings["extra"].items()})
    cols = {k: np.concatenate(v) if v else empty_columns()[k] for k, v in out_cols.items()}
    return cols, {"ids": ids, "sources": list(sources), "identities": list(identities), "extra": extra}


MAX_PENDING_BYTES = 64 << 20


def read_pending(index_dir: Path) -> set[str]:
    """Ids in the writer's journal (empty if none; a damaged journal names none, so nothing
    is deleted on its word).

    Raises:
        FaceSetError: one line pointing at ``swap-faceset repair``, when the journal names
            something that is not a face id (``../x``, ``/abs``, ``x\\n``): its ids become
            file names to delete, so such a journal is never acted on.
    """
    path = index_dir / PENDING_NAME
    try:
        if path.stat().st_size > MAX_PENDING_BYTES:
            return set()
        ids = loads_json(path.read_bytes())["ids"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return set()
    if not isinstance(ids, list):
        return set()
    bad = next((i for i in ids if not is_name(i)), None)
    if bad is not None:
        root = index_dir.parent
        raise FaceSetError(f"face set {str(root)!r}: its journal {INDEX_NAME}/{PENDING_NAME} names {bad!r}, "
                           f"which is not a face id; nothing changed; run swap-faceset repair {root}")
    return set(ids)


def write_pending(index_dir: Path, ids: Iterable[str]) -> None:
    """Journal ``ids`` (atomically, fsynced) before their files are added or deleted."""
    with atomic_write(index_dir / PENDING_NAME, "w") as f:
        json.dump({"ids": sorted(set(ids))}, f)


def clear_pending(index_dir: Path) -> None:
    """Drop the journal once its faces are committed and their files settled."""
    try:
        os.unlink(index_dir / PENDING_NAME)
    except FileNotFoundError:
        pass
