"""Appending to a face set: crash-safe batches, resume, compaction and removal.

Each :meth:`FaceSetWriter.append` is one transaction:

1. encode and write every image and mask of the batch (tmp + fsync + rename per file);
2. fsync the directories that received files;
3. write the batch's index shard (tmp + fsync + rename): the commit point.

A crash before step 3 leaves files that no shard lists (*orphans*) and stray temporary
files (``.progressive_swap.tmp.*``); readers never look at them, and the next writer deletes them when it opens the set.
One writer at a time: the writer holds an exclusive ``flock`` on ``DIR/.lock`` (released by
the OS if the process dies).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

import progressive_swap.faceset.embedded as emb
import progressive_swap.faceset.index as fx
import progressive_swap.faceset.verify as vf
from progressive_swap.core.io import TEMP_PREFIX, check_inside, check_writable_dir, fsync_dir
from progressive_swap.faceset.format import (
    DEFAULT_CROP_SPACE,
    HEADER_NAME,
    IMAGE_DIR,
    INDEX_DIR,
    LOCK_NAME,
    MASK_DIR,
    FaceRecord,
    FaceSetError,
    check_image,
    check_mask_name,
    check_record,
    crop_space_of,
    encode_image,
    encode_mask,
    image_path,
    make_header,
    mask_path,
    mask_to_u16,
    read_header,
    write_file_durable,
    write_header,
)

try:  # POSIX only; elsewhere the single-writer rule is not enforced.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MERGE_EVERY = 64
"""``append`` merges the trailing single-batch shards once this many exist, so even a session
that crashes before ``close()`` leaves few shards to open (each costs about 1 ms)."""
MAX_SHARDS_AFTER_CLOSE = 16
"""``close()`` compacts the whole index into one shard when more shards than this remain."""


class FaceSetWriter:
    """Appends faces to a face set. Create with :func:`faceset.create` or :meth:`resume`.

    Opening a writer first checks that the set's index and files agree
    (:func:`~progressive_swap.faceset.vf.require_consistent`; a damaged set is refused with
    one line), then cleans up after an interrupted session: stray temporary files, shards
    superseded by a finished compaction, and the unindexed files of the faces its journal
    (``index/pending.json``) names. No other file is ever deleted as debris.

    Args:
        path: face set directory (its ``faceset.json`` must exist).
        threads: image encoding threads per batch (cv2 releases the GIL); 1 = in the caller.
        durable: fsync every image and mask as it is written and each batch's directories (the
            default: a crash never loses a committed face). ``False`` is for a set written into
            a temporary directory that is renamed into place only when complete, and thrown
            away otherwise (the phantom): files are not fsynced one by one, and a successful
            :meth:`close` flushes everything once (``os.sync``) before the caller renames.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 4, durable: bool = True):
        self.root = Path(path)
        self.header = read_header(self.root)
        self.threads = max(1, int(threads))
        self.durable = bool(durable) or not hasattr(os, "sync")  # no os.sync to flush at the end: stay durable
        self._lock_fd = self._acquire_lock()
        try:
            self._index_dir = self.root / INDEX_DIR
            # The one check before any change: a set whose index and files disagree is refused
            # here, before the cleanup below could take its unindexed files for debris.
            pending = fx.read_pending(self._index_dir)
            vf.require_consistent(self.root, pending=pending, header=self.header)
            for d in (IMAGE_DIR, INDEX_DIR, MASK_DIR):
                (self.root / d).mkdir(exist_ok=True)
            live, superseded = fx.scan_shards(self._index_dir)
            self._ids: set[str] = set()
            self._count = 0
            for s in live:
                _, strings = fx.read_shard(s.path, ())
                self._ids.update(strings["ids"])
                self._count += len(strings["ids"])
            self._cleanup(superseded, pending)
            self._next = fx.next_shard_number(self._index_dir)
            self._plain_tail = len(live) - len(_merged_prefix(live))
        except BaseException:
            self._release_lock()
            raise
        self._pool: ThreadPoolExecutor | None = None
        self.closed = False

    @classmethod
    def resume(cls, path: str | os.PathLike, **kwargs: Any) -> "FaceSetWriter":
        """Reopen an existing face set for appending (e.g. the extractor after a crash)."""
        return cls(path, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def face_type(self) -> str:
        return self.header["face_type"]

    @property
    def size(self) -> int:
        return int(self.header["size"])

    @property
    def image_format(self) -> str:
        return self.header["image_format"]

    @property
    def crop_space(self) -> str:
        """What the crops' values mean (``srgb``: uint8 pictures; ``acescct``: 16-bit)."""
        return crop_space_of(self.header)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._ids

    # ------------------------------------------------------------------ appending

    def append(
        self,
        records: Sequence[FaceRecord],
        images: Sequence[np.ndarray],
        masks: Mapping[str, Sequence[np.ndarray | None]] | None = None,
    ) -> None:
        """Store one batch of faces atomically: either all of it is in the set, or none.

        Args:
            records: one :class:`FaceRecord` per face; ids must be new to the set.
            images: uint8 ``(S, S, 3)`` RGB crops, ``S`` = the set's size (``acescct`` sets:
                uint16, or float32 in [0, 1]).
            masks: optional ``{name: [mask or None per face]}``; masks are ``(S, S)`` float in
                [0, 1] (soft values kept to 1/65535), bool, uint8 or uint16.
        """
        self._check_open()
        records, images = list(records), list(images)
        if len(records) != len(images):
            raise ValueError(f"got {len(records)} records but {len(images)} images")
        if masks is not None and not isinstance(masks, Mapping):
            raise ValueError("masks must be a mapping {name: [mask per face]}")
        masks = {check_mask_name(k): list(v) for k, v in (masks or {}).items()}
        for name, ms in masks.items():
            if len(ms) != len(records):
                raise ValueError(f"mask {name!r}: got {len(ms)} masks for {len(records)} faces")
        if not records:
            return
        default_identity = self.header.get("identity") or ""
        seen: set[str] = set()
        payloads = []
        for r in records:
            check_record(r)
            if r.id in self._ids or r.id in seen:
                raise ValueError(f"duplicate face id {r.id!r}")
            seen.add(r.id)
            resolved = dataclasses.replace(r, identity=r.identity or default_identity)
            payloads.append(emb.record_to_json(resolved, self.face_type))  # the file's own record
        # Check every array first, so a bad image or mask fails before any file is written.
        jobs: list[tuple[Path, Any, Any]] = []  # (path, array, record payload | None for a mask)
        for r, im, payload in zip(records, images, payloads):
            jobs.append((image_path(self.root, self.header, r.id), check_image(im, self.size, self.crop_space),
                         payload))
        for name, ms in masks.items():
            for r, m in zip(records, ms):
                if m is not None:
                    jobs.append((mask_path(self.root, name, r.id), mask_to_u16(m, self.size), None))
        for name in masks:
            (self.root / MASK_DIR / name).mkdir(exist_ok=True)
        self.begin(seen)
        self._write_files(jobs)
        for d in {p.parent for p, _, _ in jobs} if self.durable else ():
            fsync_dir(d)
        self._commit(records, default_identity)
        if self._plain_tail >= MERGE_EVERY:
            self.compact(trailing_only=True)

    def begin(self, ids: Iterable[str]) -> None:
        """Journal the ids whose files are about to be added (before the commit) or deleted
        (after it), so a crash in between leaves debris the next writer may delete."""
        if self.durable:  # a non-durable set is thrown away after a crash, journal or not
            fx.write_pending(self._index_dir, ids)

    def _write_files(self, jobs: list[tuple[Path, Any, Any]]) -> None:
        size, header, durable = self.size, self.header, self.durable

        def work(job: tuple[Path, Any, Any]) -> None:
            path, arr, payload = job
            if payload is None:
                data = encode_mask(arr, size)
            else:
                data = emb.embed(encode_image(arr, size, header), payload)
            write_file_durable(path, data, fsync=durable)

        if self.threads == 1 or len(jobs) < 2:
            for j in jobs:
                work(j)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="faceset")
        for _ in self._pool.map(work, jobs):  # re-raises the first error
            pass

    def _commit(self, records: Sequence[FaceRecord], default_identity: str) -> None:
        """Write the batch's index shard: the commit point of :meth:`append`."""
        self._commit_columns(*records_to_columns(records, default_identity))

    def _commit_columns(self, cols: dict[str, np.ndarray], strings: dict[str, Any]) -> None:
        ids = strings["ids"]
        if len(set(ids)) != len(ids) or self._ids.intersection(ids):
            raise ValueError("duplicate face ids in batch")
        fx.write_shard(self._index_dir / fx.shard_filename(self._next), cols, strings)
        fx.clear_pending(self._index_dir)
        self._next += 1
        self._plain_tail += 1
        self._ids.update(ids)
        self._count += len(ids)

    # ------------------------------------------------------------------ rewriting

    def compact(self, *, trailing_only: bool = False) -> bool:
        """Merge shards into one, so the set opens with a single file read.

        Args:
            trailing_only: merge only the run of single-batch shards at the end (cheap; what
                ``close()`` does) instead of every shard.

        Returns:
            True if shards were merged.
        """
        self._check_open()
        live, _ = fx.scan_shards(self._index_dir)
        if trailing_only:
            live = live[len(_merged_prefix(live)):]
        if len(live) < 2:
            return False
        self._rewrite(live, drop=set())
        return True

    def remove(self, ids: Iterable[str]) -> int:
        """Remove faces (index entries, images and masks). Returns how many were removed.

        Readers that have the set open must reopen it afterwards.
        """
        self._check_open()
        drop = set(ids) & self._ids
        if not drop:
            return 0
        live, _ = fx.scan_shards(self._index_dir)
        self.begin(drop)  # the files go only after the index without them is committed
        self._rewrite(live, drop)
        self._ids -= drop
        self._count -= len(drop)
        for face_id in drop:
            _unlink(image_path(self.root, self.header, face_id))
            for mdir in _mask_dirs(self.root):
                _unlink(mdir / (face_id + ".png"))
        fx.clear_pending(self._index_dir)
        return len(drop)

    def _rewrite(self, shards: list[fx.ShardName], drop: set[str]) -> None:
        parts_cols, parts_strings = [], []
        for s in shards:
            cols, strings = fx.read_all(s.path)
            if drop:
                keep = np.array([i not in drop for i in strings["ids"]], dtype=bool)
                cols = {k: v[keep] for k, v in cols.items()}
                rows = np.flatnonzero(keep)
                new_row = {int(old): new for new, old in enumerate(rows)}
                strings = dict(strings, ids=[strings["ids"][i] for i in rows], extra={
                    str(new_row[int(k)]): v for k, v in strings["extra"].items() if int(k) in new_row
                })
            parts_cols.append(cols)
            parts_strings.append(strings)
        cols, strings = fx.concat_shards(parts_cols, parts_strings)
        new = fx.next_shard_number(self._index_dir)
        fx.write_shard(self._index_dir / fx.shard_filename(shards[0].first, new), cols, strings)
        self._next = new + 1
        self._plain_tail = 0
        for s in shards:  # now superseded; a crash here is handled by the next writer
            _unlink(s.path)
        fsync_dir(self._index_dir)

    # ------------------------------------------------------------------ lifecycle

    def close(self, *, compact: bool = True) -> None:
        """Finish and release the lock.

        Args:
            compact: merge the trailing single-batch shards into one, and the whole index if
                more than :data:`MAX_SHARDS_AFTER_CLOSE` shards remain (fast opens).
        """
        if self.closed:
            return
        try:
            if compact:
                self.compact(trailing_only=True)
                if len(fx.scan_shards(self._index_dir)[0]) > MAX_SHARDS_AFTER_CLOSE:
                    self.compact()
            if not self.durable:
                os.sync()  # every file on disk before the caller renames the set into place
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._release_lock()
            self.closed = True

    def __enter__(self) -> "FaceSetWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        # After an error keep what was committed, but skip the (slow, optional) merge.
        self.close(compact=exc_type is None)

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self._release_lock()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("face set writer is closed")

    def _acquire_lock(self) -> int | None:
        return lock_faceset(self.root)

    def _release_lock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def _cleanup(self, superseded: list[fx.ShardName], pending: set[str]) -> None:
        """Delete what an interrupted session left: superseded shards, tmp files, and the files
        of journaled faces that no shard lists (an append before its commit, a removal after)."""
        for s in superseded:
            _unlink(s.path)
        ext = image_path(self.root, self.header, "x").suffix
        dirs = [(self.root / IMAGE_DIR, ext), *((m, ".png") for m in _mask_dirs(self.root))]
        for d in [self.root, self.root / INDEX_DIR, *(d for d, _ in dirs)]:
            for e in os.scandir(d):  # our temporary names only, and never a link
                if e.name.startswith(TEMP_PREFIX) and e.is_file(follow_symlinks=False):
                    _unlink(Path(e.path))
        gone = pending - self._ids  # read_pending let only valid ids through
        for d, suffix in dirs if gone else ():
            for face_id in gone:
                _unlink(check_inside(self.root, d / (face_id + suffix)))
        if pending or superseded:
            fx.clear_pending(self._index_dir)
            fsync_dir(self.root / INDEX_DIR)


# ---------------------------------------------------------------------- helpers


def lock_faceset(root: Path) -> int | None:
    """Take the set's writer lock (``flock`` on ``DIR/.lock``); close the returned descriptor to
    release it. One line if another process holds it."""
    fd, _ = lock_faceset_created(root)
    return fd


def lock_faceset_created(root: Path) -> tuple[int | None, bool]:
    """:func:`lock_faceset`, also saying whether this call created ``DIR/.lock`` (exclusively,
    ``O_EXCL``), so a caller that then refuses the folder can remove the lock it made and only
    that. The lock file is never opened through a symlink."""
    if fcntl is None:
        return None, False
    path, nofollow = root / LOCK_NAME, getattr(os, "O_NOFOLLOW", 0)
    created = True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | nofollow, 0o644)
    except FileExistsError:
        created = False
        try:
            fd = os.open(path, os.O_RDWR | nofollow)
        except OSError as e:
            raise FaceSetError(f"face set {str(root)!r}: cannot open its lock {LOCK_NAME} ({e.strerror}); "
                               f"it must be a plain file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FaceSetError(f"face set {str(root)!r} is open for writing by another process") from None
    return fd, created


def records_to_columns(
    records: Sequence[FaceRecord], default_identity: str = ""
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Pack records into shard columns and the strings table."""
    n = len(records)
    cols = fx.empty_columns(n)
    sources: dict[str, int] = {}
    identities: dict[str, int] = {}
    extra: dict[str, Any] = {}
    for i, r in enumerate(records):
        cols["source_index"][i] = sources.setdefault(r.source, len(sources))
        cols["identity_index"][i] = identities.setdefault(r.identity or default_identity, len(identities))
        cols["frame_index"][i] = int(r.frame_index)
        cols["time"][i] = float("nan") if r.time is None else float(r.time)
        cols["track"][i] = int(r.track)
        cols["frame_size"][i] = [int(v) for v in r.frame_size]
        cols["matrix"][i] = r.matrix
        cols["landmarks"][i] = r.landmarks
        if r.landmarks_raw is not None:
            cols["has_raw"][i] = True
            cols["landmarks_raw"][i] = r.landmarks_raw
        if r.extra:
            extra[str(i)] = json.loads(json.dumps(r.extra))
    strings = {"ids": [r.id for r in records], "sources": list(sources), "identities": list(identities), "extra": extra}
    return cols, strings


def _merged_prefix(live: list[fx.ShardName]) -> list[fx.ShardName]:
    """``live`` up to and including its last merged shard (the rest are single batches)."""
    k = len(live)
    while k > 0 and not live[k - 1].is_merged:
        k -= 1
    return live[:k]


def _mask_dirs(root: Path) -> list[Path]:
    mdir = root / MASK_DIR
    if not mdir.is_dir():
        return []
    return sorted(p for p in mdir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


concat_shards = fx.concat_shards  # re-exported: curate and the reader use it from here

__all__ = ["FaceSetWriter", "records_to_columns", "concat_shards"]


def create(
    path: str | os.PathLike,
    *,
    face_type: str,
    size: int,
    image_format: str = "png",
    jpeg_quality: int = 95,
    png_compression: int = 1,
    identity: str | None = None,
    exist_ok: bool = False,
    threads: int = 4,
    durable: bool = True,
    crop_space: str = DEFAULT_CROP_SPACE,
) -> FaceSetWriter:
    """Create a face set and return a writer for it.

    Args:
        path: directory (created if needed; may exist if it holds no face set).
        face_type: crop coverage, a name from :data:`progressive_swap.core.landmarks.FACE_TYPES`.
        size: crop side in pixels, a multiple of 16 up to 2048.
        image_format: ``"png"`` (lossless) or ``"jpg"``.
        jpeg_quality: 95..100, for ``"jpg"``.
        png_compression: zlib level 0..9; low is much faster to write and barely larger.
        identity: default identity label for records whose ``identity`` is "".
        exist_ok: if a set exists at ``path``, check it matches and resume appending to it.
        threads: image encoding threads per batch.
        durable: fsync each file as it is written (see :class:`FaceSetWriter`).
        crop_space: what the crops' values mean (:data:`~progressive_swap.faceset.format.CROP_SPACES`).
    """
    header = make_header(face_type, size, image_format, jpeg_quality, png_compression, identity, crop_space)
    root = Path(path)
    if (root / HEADER_NAME).exists():
        if not exist_ok:
            raise FaceSetError(f"face set {str(root)!r} already exists (append with open_writer)")
        old = read_header(root)
        old = {**old, "crop_space": crop_space_of(old)}
        for key in ("face_type", "size", "image_format", "crop_space"):
            if old[key] != header[key]:
                raise FaceSetError(f"face set {str(root)!r} has {key}={old[key]!r}, not {header[key]!r}")
        return FaceSetWriter(root, threads=threads, durable=durable)
    check_writable_dir(root)
    for d in (INDEX_DIR, IMAGE_DIR):
        if (root / d).is_dir() and any(os.scandir(root / d)):
            raise FaceSetError(f"{str(root)!r} has {d}/ but no {HEADER_NAME}: a damaged face set?")
    write_header(root, header)
    (root / INDEX_DIR).mkdir(exist_ok=True)
    return FaceSetWriter(root, threads=threads, durable=durable)


def open_writer(path: str | os.PathLike, *, threads: int = 4) -> FaceSetWriter:
    """Reopen an existing face set for appending (same as ``FaceSetWriter.resume``)."""
    return FaceSetWriter(path, threads=threads)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` through a temporary name, or copy it durably where links fail."""
    tmp = dst.with_name(f"{TEMP_PREFIX}{dst.name}.{secrets.token_hex(4)}.tmp")  # os.link never follows or overwrites
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        write_file_durable(dst, src.read_bytes())
