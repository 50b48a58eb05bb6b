"""Face sets: directories of aligned face crops, masks and per-face metadata.

Written by the extractor (which resumes into a set after a crash) and the phantom generator;
read by the trainer's data loader (random access by index from worker processes), the exporter
and the mask tools. Layout, conventions and crash safety: ``docs/faceset.md``.

Example:
    >>> from progressive_swap.data import faceset  # doctest: +SKIP
    >>> with faceset.create("out/A", face_type="whole", size=512, identity="A") as w:
    ...     w.append(records, images, masks={"hull": hull_masks})
    >>> fs = faceset.open("out/A")
    >>> fs.image(0).shape, fs.landmarks_aligned.shape   # (512, 512, 3), (N, 68, 2)

Convention: ``landmarks`` are frame pixels (x right, y down, pixel centres at integers);
``matrices`` map frame pixels to *normalised crop coordinates* ``u`` in [0, 1], so
``landmarks_aligned`` are in [0, 1] units for any crop size S (pixel = ``u * S - 0.5``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from progressive_swap.data import faceset_index as fx
from progressive_swap.data.faceset_format import (
    FORMAT_VERSION, HEADER_NAME, IMAGE_DIR, INDEX_DIR, USER_PREFIX, FaceRecord, FaceSetError,
    image_path, make_header, mask_path, read_header, write_file_durable, write_header,
)
from progressive_swap.data.faceset_reader import FaceSet
from progressive_swap.data.faceset_writer import FaceSetWriter, concat_shards
from progressive_swap.io import check_writable_dir, fsync_dir

__all__ = [
    "FORMAT_VERSION", "USER_PREFIX", "FaceRecord", "FaceSet", "FaceSetError", "FaceSetWriter",
    "create", "open", "open_writer", "merge",
]


# ---------------------------------------------------------------------- functions


def open(path: str | os.PathLike, *, on_corrupt: str = "raise") -> FaceSet:  # noqa: A001
    """Open a face set for reading (see :class:`FaceSet`)."""
    return FaceSet(path, on_corrupt=on_corrupt)


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
) -> FaceSetWriter:
    """Create a face set and return a writer for it.

    Args:
        path: directory (created if needed; may exist if it holds no face set).
        face_type: crop coverage, a name from ``faces.landmarks.FACE_TYPES``.
        size: crop side in pixels, a multiple of 16 up to 2048.
        image_format: ``"png"`` (lossless) or ``"jpg"``.
        jpeg_quality: 95..100, for ``"jpg"``.
        png_compression: zlib level 0..9; low is much faster to write and barely larger.
        identity: default identity label for records whose ``identity`` is "".
        exist_ok: if a set exists at ``path``, check it matches and resume appending to it.
        threads: image encoding threads per batch.
    """
    header = make_header(face_type, size, image_format, jpeg_quality, png_compression, identity)
    root = Path(path)
    if (root / HEADER_NAME).exists():
        if not exist_ok:
            raise FaceSetError(f"face set {str(root)!r} already exists (append with open_writer)")
        old = read_header(root)
        for key in ("face_type", "size", "image_format"):
            if old[key] != header[key]:
                raise FaceSetError(f"face set {str(root)!r} has {key}={old[key]!r}, not {header[key]!r}")
        return FaceSetWriter(root, threads=threads)
    check_writable_dir(root)
    for d in (INDEX_DIR, IMAGE_DIR):
        if (root / d).is_dir() and any(os.scandir(root / d)):
            raise FaceSetError(f"{str(root)!r} has {d}/ but no {HEADER_NAME}: a damaged face set?")
    write_header(root, header)
    return FaceSetWriter(root, threads=threads)


def open_writer(path: str | os.PathLike, *, threads: int = 4) -> FaceSetWriter:
    """Reopen an existing face set for appending (same as ``FaceSetWriter.resume``)."""
    return FaceSetWriter(path, threads=threads)


def merge(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, threads: int = 4) -> FaceSet:
    """Merge face sets (same face type, size and image format) into a new set at ``out``.

    Files are hard-linked where possible (safe: the format never edits a file in place),
    else copied. Face ids must be distinct across the inputs.
    """
    sets = [FaceSet(p) for p in paths]
    if not sets:
        raise ValueError("merge needs at least one face set")
    first = sets[0]
    for s in sets[1:]:
        for key in ("face_type", "size", "image_format"):
            if s.header[key] != first.header[key]:
                raise FaceSetError(f"cannot merge {str(s.root)!r}: {key}={s.header[key]!r}, not {first.header[key]!r}")
    seen: set[str] = set()
    for s in sets:
        dup = seen.intersection(s._ids)
        if dup:
            raise FaceSetError(f"cannot merge {str(s.root)!r}: face id {sorted(dup)[0]!r} appears twice")
        seen.update(s._ids)
    h = first.header
    with create(out, face_type=h["face_type"], size=h["size"], image_format=h["image_format"],
                jpeg_quality=h.get("jpeg_quality", 95), png_compression=h.get("png_compression", 1),
                identity=h.get("identity"), threads=threads) as w:
        for s in sets:
            link_face_files(s, w, s._ids)
            parts = [fx.read_all(p) for p, _, _ in s._shards]
            cols, strings = concat_shards([c for c, _ in parts], [t for _, t in parts])
            w._commit_columns(cols, strings)
    return FaceSet(out)


def link_face_files(src: FaceSet, writer: FaceSetWriter, ids: Sequence[str]) -> None:
    """Hard-link (or copy) the images and masks of ``ids`` from ``src`` into ``writer``'s set,
    then fsync the directories. The index entries are the caller's to commit."""
    targets = []
    for face_id in ids:
        targets.append((image_path(src.root, src.header, face_id), image_path(writer.root, writer.header, face_id)))
        for name in src.mask_names:
            m = mask_path(src.root, name, face_id)
            if m.exists():
                targets.append((m, mask_path(writer.root, name, face_id)))
    for a, b in targets:
        b.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(a, b)
    for d in {b.parent for _, b in targets}:
        fsync_dir(d)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name("." + dst.name + ".tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        write_file_durable(dst, src.read_bytes())
