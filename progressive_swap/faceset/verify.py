"""Do a face set's index and files agree? The one check before any in-place change.

Every change to an existing face set goes through :class:`~progressive_swap.faceset.writer.FaceSetWriter`
(append, sort, remove, move, the reviewer) or through ``faceset.open(path, verify=True)`` (mask
writers, identity embedding), and both call :func:`require_consistent` first. A set that fails is
refused with one line pointing at ``swap-faceset repair DIR``, before anything is written, so a
damaged or missing index can never lead a writer to treat every image as debris and delete it.

What :func:`check` looks at (about 0.14 ms per face, reading only the first kilobytes of each
image; ``docs/faceset.md``, *Verification*):

- the header, and that ``index/`` exists when there are image or mask files;
- every live index shard reads, with the right column shapes, and no face id appears twice;
- matrices, landmarks and (where present) raw landmarks are finite, frame sizes positive;
- every indexed face has its image file, and every image or mask file belongs to an indexed
  face (or to the writer's journal, ``index/pending.json``: debris of an interrupted write);
- every image's header says S x S, and its embedded record (:mod:`~progressive_swap.faceset.embedded`)
  names the file's own face (a swapped or misnamed file does not).

``deep=True`` also decodes every image and mask and compares each embedded record with the
face's index row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import progressive_swap.faceset.embedded as emb
import progressive_swap.faceset.index as fx
from progressive_swap.faceset.format import (
    IMAGE_DIR,
    IMAGE_FORMATS,
    INDEX_DIR,
    MASK_DIR,
    FaceRecord,
    FaceSetError,
    decode_image,
    decode_mask,
    read_face_file,
    read_header,
)


def repair_hint(root: Path) -> str:
    return f"run swap-faceset repair {root}"


@dataclass
class Report:
    """What :func:`check` found. ``problems`` are one line each; the lists name the faces/files."""

    root: Path
    faces: int = 0
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Indexed face ids whose image file is missing."""
    unindexed: list[str] = field(default_factory=list)
    """Image and mask files (paths relative to the set) that no index shard lists."""
    nonfinite: list[str] = field(default_factory=list)
    """Face ids with a non-finite matrix or landmarks (or a non-positive frame size)."""
    bad_files: list[str] = field(default_factory=list)
    """Image or mask files that are unreadable, the wrong size, or hold another face's record."""
    with_record: int = 0
    """Image files that carry their own record."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def one_line(self) -> str:
        """The first problem, a count of the others, and the way out."""
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"face set {str(self.root)!r} is damaged: {self.problems[0]}{more}; {repair_hint(self.root)}"


def _examples(items: list[str], k: int = 1) -> str:
    return ", ".join(items[:k]) + (", …" if len(items) > k else "")


def read_index(root: Path, report: Report) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]] | None:
    """Ids, every column and the merged strings of the live shards; None (with problems noted)
    if the index cannot be read as a whole."""
    index_dir = root / INDEX_DIR
    try:
        live, _ = fx.scan_shards(index_dir)
    except FaceSetError as e:
        report.problems.append(str(e))
        return None
    parts = []
    for s in live:
        try:
            parts.append(fx.read_all(s.path))
        except FaceSetError as e:
            report.problems.append(str(e))
        except FileNotFoundError:
            report.problems.append(f"index shard {s.path.name} vanished while being read")
    if len(parts) != len(live):
        return None
    cols, strings = fx.concat_shards([c for c, _ in parts], [t for _, t in parts])
    return strings["ids"], cols, strings


def nonfinite_rows(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose matrix, landmarks or present raw landmarks hold NaN/inf, or whose frame size
    is not positive."""
    bad = ~np.isfinite(cols["matrix"]).all((1, 2))
    if "landmarks" in cols:
        bad |= ~np.isfinite(cols["landmarks"]).all((1, 2))
    if "landmarks_raw" in cols:
        bad |= cols["has_raw"] & ~np.isfinite(cols["landmarks_raw"]).all((1, 2))
    bad |= (cols["frame_size"] <= 0).any(1)
    return np.flatnonzero(bad)


def list_files(root: Path, header: dict[str, Any]) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """Image files ``{id: path}`` and mask files ``{name: {id: path}}`` (hidden files skipped)."""
    ext = IMAGE_FORMATS[header["image_format"]]
    images: dict[str, Path] = {}
    masks: dict[str, dict[str, Path]] = {}
    idir = root / IMAGE_DIR
    if idir.is_dir():
        with os.scandir(idir) as it:
            for e in it:
                if not e.name.startswith(".") and e.name.endswith(ext) and e.is_file():
                    images[e.name[: -len(ext)]] = Path(e.path)
    mdir = root / MASK_DIR
    if mdir.is_dir():
        for d in sorted(mdir.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                with os.scandir(d) as it:
                    masks[d.name] = {e.name[:-4]: Path(e.path) for e in it
                                     if not e.name.startswith(".") and e.name.endswith(".png") and e.is_file()}
    return images, masks


def check(root: str | os.PathLike, *, deep: bool = False, pending: Iterable[str] = (),
          header: dict[str, Any] | None = None) -> Report:
    """Check that a face set's index and files agree (see the module doc).

    Args:
        root: face set directory.
        deep: also decode every image and mask, and compare embedded records with the index.
        pending: ids whose unindexed files are the writer's own debris (its journal).
        header: the already-read header (read here otherwise).

    Raises:
        FaceSetError: only for a missing or unreadable header (not a face set at all).
    """
    root = Path(root)
    header = read_header(root) if header is None else header
    report = Report(root)
    size = int(header["size"])
    images, masks = list_files(root, header)
    pending = set(pending)
    if not (root / INDEX_DIR).is_dir():
        if images or any(masks.values()):
            report.problems.append(f"{INDEX_DIR}/ is missing but {len(images)} image file(s) are present")
            report.unindexed = [f"{IMAGE_DIR}/{p.name}" for p in images.values()]
        return report
    got = read_index(root, report)
    if got is None:
        return report
    ids, cols, strings = got
    report.faces = len(ids)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        report.problems.append(f"face id {dup!r} is indexed twice")
    bad = nonfinite_rows(cols)
    if len(bad):
        report.nonfinite = [ids[k] for k in bad]
        report.problems.append(f"{len(bad)} face(s) with non-finite landmarks or matrix in the index, "
                               f"e.g. {ids[bad[0]]}")
    indexed = set(ids)
    report.missing = [i for i in ids if i not in images]
    if report.missing:
        report.problems.append(f"{len(report.missing)} indexed image(s) missing, e.g. {IMAGE_DIR}/"
                               f"{report.missing[0]}{IMAGE_FORMATS[header['image_format']]}")
    stray = [f"{IMAGE_DIR}/{p.name}" for i, p in sorted(images.items()) if i not in indexed and i not in pending]
    for name, files in masks.items():
        stray += [f"{MASK_DIR}/{name}/{p.name}" for i, p in sorted(files.items())
                  if i not in indexed and i not in pending]
    if stray:
        report.unindexed = stray
        report.problems.append(f"{len(stray)} file(s) that the index does not list, e.g. {stray[0]}")
    rows = {i: k for k, i in enumerate(ids)}
    for face_id, path in sorted(images.items()):
        if face_id not in indexed:
            continue
        problem = _check_image_head(path, face_id, size, report)
        if problem is None and deep:
            problem = _check_image_deep(path, size, header["face_type"], cols, strings, rows[face_id])
        if problem:
            report.bad_files.append(f"{IMAGE_DIR}/{path.name}")
            report.problems.append(problem)
    if deep:
        for name, files in masks.items():
            for face_id, path in sorted(files.items()):
                where = f"{MASK_DIR}/{name}/{path.name}"
                try:
                    data = read_face_file(path, "mask")
                    if not emb.png_intact(data):
                        raise FaceSetError(f"corrupt mask {where} (a PNG chunk is cut short or fails its CRC)")
                    decode_mask(data, size, where)
                except (FaceSetError, OSError) as e:
                    report.bad_files.append(f"{MASK_DIR}/{name}/{path.name}")
                    report.problems.append(str(e))
    return report


def _check_image_head(path: Path, face_id: str, size: int, report: Report) -> str | None:
    try:
        wh, payload = emb.parse_head(emb.read_head(path))
    except OSError as e:
        return f"image {IMAGE_DIR}/{path.name} is unreadable: {e.strerror or e}"
    if wh is None:
        return f"image {IMAGE_DIR}/{path.name} is not a readable image"
    if wh != (size, size):
        return f"image {IMAGE_DIR}/{path.name} is {wh[0]}x{wh[1]}, expected {size}x{size}"
    if payload is not None:
        report.with_record += 1
        try:
            rec, _ = emb.record_from_json(payload)
        except ValueError as e:
            return f"image {IMAGE_DIR}/{path.name}: {e}"
        if rec.id != face_id:
            return f"image {IMAGE_DIR}/{path.name} holds the face {rec.id!r}, not {face_id!r}"
    return None


def _check_image_deep(path: Path, size: int, face_type: str, cols: dict[str, np.ndarray],
                      strings: dict[str, Any], row: int) -> str | None:
    where = f"{IMAGE_DIR}/{path.name}"
    try:
        data = read_face_file(path, "face image")
        if data.startswith(emb.PNG_SIGNATURE) and not emb.png_intact(data):
            raise FaceSetError(f"corrupt face image {where} (a PNG chunk is cut short or fails its CRC)")
        decode_image(data, size, where)
    except (FaceSetError, OSError) as e:
        return str(e)
    _, payload = emb.parse_head(data[: emb.HEAD_BYTES * 4])
    if payload is None:
        return None
    rec, ft = emb.record_from_json(payload)
    same = ft == face_type and rec == row_record(cols, strings, row)
    return None if same else f"image {where}: its embedded record differs from the index"


def row_record(cols: dict[str, np.ndarray], strings: dict[str, Any], k: int) -> FaceRecord:
    """Row ``k`` of a shard's columns (:func:`read_index`) as a :class:`FaceRecord`."""
    return FaceRecord(
        id=strings["ids"][k], source=strings["sources"][cols["source_index"][k]],
        frame_index=int(cols["frame_index"][k]), time=float(cols["time"][k]), track=int(cols["track"][k]),
        identity=strings["identities"][cols["identity_index"][k]], landmarks=cols["landmarks"][k].copy(),
        matrix=cols["matrix"][k].copy(), frame_size=(int(cols["frame_size"][k, 0]), int(cols["frame_size"][k, 1])),
        landmarks_raw=cols["landmarks_raw"][k].copy() if cols["has_raw"][k] else None,
        extra=dict(strings["extra"].get(str(k), {})),
    )


def require_consistent(root: str | os.PathLike, *, pending: Iterable[str] = (),
                       header: dict[str, Any] | None = None) -> Report:
    """:func:`check`, raising :class:`FaceSetError` (one line, naming ``swap-faceset repair``)
    if the set fails. Call it before changing a set in place."""
    root = Path(root)
    masks = root / MASK_DIR
    linked = [f"{MASK_DIR}/{e.name}" for e in os.scandir(masks) if e.is_symlink()] \
        if masks.is_dir() and not masks.is_symlink() else []
    for d in (IMAGE_DIR, INDEX_DIR, MASK_DIR, *linked):  # a writer would write through the link, outside the set
        if (root / d).is_symlink():
            raise FaceSetError(f"face set {str(root)!r}: {d}/ is a symbolic link, so writes would land outside "
                               f"the set; nothing changed; run swap-faceset repair {root}")
    report = check(root, pending=pending, header=header)
    if not report.ok:
        raise FaceSetError(report.one_line())
    return report
