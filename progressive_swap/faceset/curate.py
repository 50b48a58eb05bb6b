"""Face-set curation: per-face quality scores, sorting, removal and merging.

Scores (:func:`face_scores`), one value per face:

* ``blur``: variance of the Laplacian of the grayscale crop's centre (higher = sharper);
* ``yaw``, ``pitch``: head pose in degrees (:mod:`progressive_swap.core.pose`; yaw > 0 =
  the subject turns to their left, towards image right; pitch > 0 = looking down);
* ``size``: the face's size in the source frame, pixels (:func:`~progressive_swap.core.align.face_size`).

**Sorting** (:func:`sort_faceset`) reorders the set's *index*: the order of ``fs.ids``,
``fs.image(i)`` and every tool that walks the set. In place it is one atomic index rewrite
(the same commit as a compaction: a crash leaves either the old or the new order); with
``out`` it writes a new set in sorted order (files hard-linked where possible) into a hidden
sibling folder and renames it to ``out`` when complete. Image files are named by face id, so a
file browser shows them by name, not in this order: :func:`write_view` makes a folder of
links named ``<rank>_<id>.<ext>`` for browsing, and :func:`removed_in_view` lists the faces
whose links were deleted there, for :func:`remove_faces`.

Layout and crash safety of face sets: ``docs/faceset.md``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from progressive_swap import faceset as F
from progressive_swap.core import align
from progressive_swap.core.io import _UMASK, TEMP_PREFIX, fsync_dir, is_name, loads_json
from progressive_swap.core.pose import head_poses
from progressive_swap.faceset import index as fx
from progressive_swap.faceset.format import HEADER_NAME, INDEX_DIR, crop_space_of
from progressive_swap.faceset.writer import FaceSetWriter, concat_shards, link_or_copy

SORT_KEYS: tuple[str, ...] = ("blur", "yaw", "pitch", "size")
"""Keys :func:`sort_faceset` accepts."""
DEFAULT_DESCENDING: dict[str, bool] = {"blur": True, "size": True, "yaw": False, "pitch": False}
"""Default order per key: sharpest and largest first (the bad ones gather at the end); yaw
from the subject's right profile to their left, pitch from looking up to looking down."""
VIEW_MANIFEST = "view.json"
_VIEW_RE = re.compile(r"^(\d{6,})_(.+)\.(png|jpg)$")


# ---------------------------------------------------------------------- scores


def blur_score(image: np.ndarray, centre: float = 0.5) -> float:
    """Sharpness of a face crop: variance of the Laplacian of its grayscale centre.

    Args:
        image: ``(S, S, 3)`` RGB or ``(S, S)`` grayscale, uint8 (or float in [0, 1]).
        centre: side of the central square used, as a fraction of the crop (the face's middle:
            eyes, nose, mouth; the background and hair at the edges are left out).

    Returns:
        Higher = sharper. Comparable between crops of the same size (one face set).
    """
    a = np.asarray(image)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    if a.ndim != 2 or min(a.shape) < 3:
        raise ValueError(f"blur_score needs an (S, S[, 3]) image, got shape {np.shape(image)}")
    a = a.astype(np.float32) * (255.0 if a.dtype.kind == "f" else 1.0)
    h, w = a.shape
    ch, cw = max(3, int(round(h * centre))), max(3, int(round(w * centre)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return float(cv2.Laplacian(a[y0:y0 + ch, x0:x0 + cw], cv2.CV_32F).var())


def face_scores(fs: F.FaceSet, keys: Iterable[str] = SORT_KEYS, threads: int = 8) -> dict[str, np.ndarray]:
    """Per-face scores of a face set, ``{key: (N,) float64}`` in the set's order.

    Args:
        fs: an open face set.
        keys: which of :data:`SORT_KEYS` to compute (``blur`` decodes every image; the others
            read the index only).
        threads: image decoding threads for ``blur``.
    """
    keys = list(keys)
    for k in keys:
        if k not in SORT_KEYS:
            raise ValueError(f"unknown score {k!r}; choose one of {', '.join(SORT_KEYS)}")
    out: dict[str, np.ndarray] = {}
    n = len(fs)
    if "blur" in keys:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            out["blur"] = np.fromiter(pool.map(lambda i: blur_score(fs.image(i)), range(n)), np.float64, n)
    if "yaw" in keys or "pitch" in keys:
        poses = head_poses(*_square_pixels(fs)) if n else np.zeros((0, 3))
        if "yaw" in keys:
            out["yaw"] = poses[:, 0]
        if "pitch" in keys:
            out["pitch"] = poses[:, 1]
    if "size" in keys:
        out["size"] = np.array([align.face_size(m) for m in fs.matrices], np.float64)
    return {k: out[k] for k in keys}


def _square_pixels(fs) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks and frame sizes in square pixels: an anamorphic plate's faces (``pixel_aspect``
    recorded) de-squeezed, as the head looks, the others as stored."""
    lms, sizes, a = fs.landmarks, fs.frame_sizes, fs.pixel_aspects
    if (a == 1.0).all():
        return lms, sizes
    lms = np.array(lms, np.float64)
    lms[..., 0] = lms[..., 0] * a[:, None] + ((a - 1.0) / 2.0)[:, None]
    sizes = np.array(sizes, np.float64)
    sizes[:, 0] *= a
    return lms, sizes


def sort_order(scores: np.ndarray, descending: bool) -> np.ndarray:
    """Stable sort of ``scores``; NaNs (a failed pose fit) go last either way."""
    s = np.asarray(scores, np.float64)
    key = np.where(np.isnan(s), np.inf, -s if descending else s)
    return np.argsort(key, kind="stable")


# ---------------------------------------------------------------------- sorting


@dataclass
class SortResult:
    """What :func:`sort_faceset` did."""

    path: Path
    """The sorted set (``out``, or the input when sorted in place)."""
    by: str
    descending: bool
    ids: list[str]
    """Face ids in the new order."""
    scores: np.ndarray
    """The key's score per face, in the new order."""
    in_place: bool


def sort_faceset(path: str | os.PathLike, by: str, out: str | os.PathLike | None = None,
                 descending: bool | None = None, threads: int = 8,
                 scorer: Callable[[F.FaceSet], np.ndarray] | None = None) -> SortResult:
    """Reorder a face set by a score.

    Args:
        path: face set directory.
        by: one of :data:`SORT_KEYS`, or any name when ``scorer`` is given.
        out: write the sorted set here (must not exist, or be an empty folder); None or the
            input's path: reorder the input's index in place (atomic).
        descending: None: :data:`DEFAULT_DESCENDING` for the key (ascending for a ``scorer``).
        threads: image decoding threads (``by="blur"``).
        scorer: computes one score per face of the open set (e.g. the identity distance of
            :mod:`progressive_swap.faceset.identity`); NaN = no score (last).
    """
    if scorer is None and by not in SORT_KEYS:
        raise ValueError(f"unknown sort key {by!r}; choose one of {', '.join(SORT_KEYS)}")
    desc = DEFAULT_DESCENDING.get(by, False) if descending is None else bool(descending)

    def scores_of(fs: F.FaceSet) -> np.ndarray:
        return np.asarray(scorer(fs), np.float64) if scorer is not None else face_scores(fs, [by], threads)[by]

    root = Path(path)
    in_place = out is None or _same_path(root, Path(out))
    if in_place:
        with FaceSetWriter(root) as w:  # the lock: nobody appends while we reorder
            fs = F.open(root)
            scores = scores_of(fs)
            order = sort_order(scores, desc)
            _reorder_index_in_place(w, fs.ids, order)
        return SortResult(root, by, desc, [fs.ids[i] for i in order], scores[order], True)
    out = Path(out)
    _check_new_dir(out)
    fs = F.open(root)
    scores = scores_of(fs)
    order = sort_order(scores, desc)
    with _staging(out) as tmp:
        _write_reordered_copy(fs, order, tmp)
    return SortResult(out, by, desc, [fs.ids[i] for i in order], scores[order], False)


def _reorder_index_in_place(w: FaceSetWriter, ids: list[str], order: np.ndarray) -> None:
    """Replace every live shard by one shard in ``order`` (a compaction with a permutation)."""
    index_dir = w.root / INDEX_DIR
    live, _ = fx.scan_shards(index_dir)
    if not live:
        return
    cols, strings = _permuted_columns(live, ids, order)
    new = fx.next_shard_number(index_dir)
    fx.write_shard(index_dir / fx.shard_filename(live[0].first, new), cols, strings)  # the commit
    for s in live:  # superseded now; a crash here is cleaned up by the next writer
        try:
            os.unlink(s.path)
        except FileNotFoundError:
            pass
    fsync_dir(index_dir)


def _permuted_columns(live: list[fx.ShardName], ids: list[str], order: np.ndarray):
    parts = [fx.read_all(s.path) for s in live]
    cols, strings = concat_shards([c for c, _ in parts], [t for _, t in parts])
    if strings["ids"] != list(ids):
        raise F.FaceSetError("face set changed while it was being sorted; run again")
    order = np.asarray(order, np.int64)
    cols = {k: v[order] for k, v in cols.items()}
    new_row = {int(old): new for new, old in enumerate(order)}
    strings = dict(strings, ids=[strings["ids"][i] for i in order],
                   extra={str(new_row[int(k)]): v for k, v in strings["extra"].items()})
    return cols, strings


def _write_reordered_copy(fs: F.FaceSet, order: np.ndarray, out: Path) -> None:
    h = fs.header
    with F.create(out, face_type=h["face_type"], size=h["size"], image_format=h["image_format"],
                  jpeg_quality=h.get("jpeg_quality", 95), png_compression=h.get("png_compression", 1),
                  identity=h.get("identity"), crop_space=crop_space_of(h)) as w:
        F.link_face_files(fs, w, fs.ids)
        live, _ = fx.scan_shards(fs.root / INDEX_DIR)
        if live:
            w._commit_columns(*_permuted_columns(live, fs.ids, order))


# ---------------------------------------------------------------------- remove and merge


def remove_faces(path: str | os.PathLike, ids: Sequence[str]) -> int:
    """Remove faces (index entries, images, masks) by id; every id must be in the set.

    Raises:
        ValueError: an id is not in the set (nothing is removed), or ``ids`` is empty.
    """
    ids = list(dict.fromkeys(str(i) for i in ids))
    if not ids:
        raise ValueError("no face ids given")
    fs = F.open(path, verify=True)  # a damaged set is refused before the ids are looked up
    _check_known(fs, ids, "removed")
    return fs.remove(ids)


def _check_known(fs: F.FaceSet, ids: Sequence[str], verb: str) -> None:
    """Raise a one-line ``ValueError`` naming the first id that is not in ``fs`` (nothing ``verb``)."""
    known = set(fs.ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        more = f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"no face {unknown[0]!r} in {str(fs.root)!r}{more}; nothing {verb}")


def subset_columns(fs: F.FaceSet, ids: Sequence[str]) -> tuple[dict[str, np.ndarray], dict]:
    """The index columns and strings of faces ``ids`` of ``fs``, in that order (for a commit
    into another set with ``FaceSetWriter._commit_columns``)."""
    live, _ = fx.scan_shards(fs.root / INDEX_DIR)
    parts = [fx.read_all(s.path) for s in live]
    cols, strings = concat_shards([c for c, _ in parts], [t for _, t in parts])
    row = {face_id: k for k, face_id in enumerate(strings["ids"])}
    missing = [i for i in ids if i not in row]
    if missing:
        raise F.FaceSetError(f"face {missing[0]!r} is no longer in {str(fs.root)!r}")
    rows = np.array([row[i] for i in ids], np.int64)
    new_row = {int(old): new for new, old in enumerate(rows)}
    cols = {k: v[rows] for k, v in cols.items()}
    extra = {str(new_row[int(k)]): v for k, v in strings["extra"].items() if int(k) in new_row}
    return cols, dict(strings, ids=list(ids), extra=extra)


def move_faces(src: str | os.PathLike, ids: Sequence[str], dst: str | os.PathLike,
               identity: str | None = None) -> int:
    """Move faces (index entries, images, masks) from the set ``src`` to the set ``dst``.

    ``dst`` is created with ``src``'s face type, size and image format when it does not exist;
    an existing ``dst`` must match them and must not hold any of the ids. Both sets' writer
    locks are held throughout (a set open for writing elsewhere is refused, one line saying
    so). The faces are committed to ``dst`` first (files hard-linked) and only then removed
    from ``src``: a crash in between leaves them in both sets, never in neither.

    Args:
        src: face set the faces leave.
        ids: face ids, each in ``src``.
        dst: face set they join.
        identity: default identity label of a newly created ``dst`` (None: ``src``'s).

    Returns:
        How many faces moved.

    Raises:
        ValueError: no ids, an id not in ``src``, ``dst`` = ``src``, or an id already in ``dst``.
        FaceSetError: a set is damaged, mismatched or open for writing elsewhere.
    """
    ids = list(dict.fromkeys(str(i) for i in ids))
    if not ids:
        raise ValueError("no face ids given")
    src, dst = Path(src), Path(dst)
    if _same_path(src, dst):
        raise ValueError(f"cannot move faces of {str(src)!r} into itself")
    with FaceSetWriter(src) as ws:
        fs = F.open(src)
        _check_known(fs, ids, "moved")
        h = fs.header
        if (dst / HEADER_NAME).exists():
            wd = FaceSetWriter(dst)
            for key in ("face_type", "size", "image_format", "crop_space"):
                theirs, mine = ((crop_space_of(x) if key == "crop_space" else x[key]) for x in (wd.header, h))
                if theirs != mine:
                    wd.close(compact=False)
                    raise F.FaceSetError(f"cannot move faces into {str(dst)!r}: {key}={theirs!r}, "
                                         f"but {str(src)!r} has {mine!r}")
        else:
            wd = F.create(dst, face_type=h["face_type"], size=h["size"], image_format=h["image_format"],
                          jpeg_quality=h.get("jpeg_quality", 95), png_compression=h.get("png_compression", 1),
                          identity=h.get("identity") if identity is None else identity,
                          crop_space=crop_space_of(h))
        with wd:
            clash = [i for i in ids if i in wd]
            if clash:
                raise ValueError(f"face {clash[0]!r} is already in {str(dst)!r}; nothing moved")
            F.link_face_files(fs, wd, ids)
            wd._commit_columns(*subset_columns(fs, ids))  # the faces are in dst now
        return ws.remove(ids)


def merge_facesets(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> F.FaceSet:
    """Merge face sets into a new set at ``out`` (:func:`faceset.merge`), all or nothing.

    ``out`` must not exist (or be an empty folder); the merge is written into a hidden sibling
    folder and renamed to ``out`` when complete, so a failure leaves no partial set.
    """
    if len(paths) < 2:
        raise ValueError("merge needs at least two face sets")
    out = Path(out)
    for p in paths:
        if _same_path(Path(p), out):
            raise ValueError(f"out={str(out)!r} is one of the inputs")
    _check_new_dir(out)
    sets = [F.open(p, verify=True) for p in paths]  # every input is checked before anything is written
    first = sets[0]
    for s in sets[1:]:
        for key in ("face_type", "size", "image_format"):
            if s.header[key] != first.header[key]:
                raise F.FaceSetError(f"cannot merge {str(s.root)!r}: {key}={s.header[key]!r}, "
                                     f"but {str(first.root)!r} has {first.header[key]!r}")
    with _staging(out) as tmp:
        F.merge(paths, tmp)
    return F.open(out)


# ---------------------------------------------------------------------- review folders


def write_view(fs: F.FaceSet, view: str | os.PathLike) -> Path:
    """A folder of links to the set's images named ``<rank>_<id>.<ext>`` (rank = index order),
    so a file browser shows the faces in the set's order, plus ``view.json`` listing the ids.

    Delete the images of bad faces there, then :func:`removed_in_view` lists them.
    ``view`` must not exist or be empty.
    """
    view = Path(view)
    home = fs.root.resolve()
    where = Path(os.path.realpath(view))
    if where == home or home in where.parents:  # its links would be files the index does not list
        raise ValueError(f"view={str(view)!r} is inside the face set {str(fs.root)!r}; give a folder outside it")
    _check_new_dir(view)
    width = max(6, len(str(len(fs))))
    with _staging(view) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for k, face_id in enumerate(fs.ids):
            src = fs.image_path(k)
            if src.exists():
                link_or_copy(src, tmp / f"{k:0{width}d}_{face_id}{src.suffix}")
        (tmp / VIEW_MANIFEST).write_text(json.dumps({"faceset": str(fs.root.resolve()), "ids": fs.ids}))
    return view


def removed_in_view(view: str | os.PathLike, faceset: str | os.PathLike | None = None) -> list[str]:
    """Ids listed in a :func:`write_view` folder whose image link has been deleted.

    Args:
        faceset: the set the ids are for; a view made for another set is refused (one line).
    """
    view = Path(view)
    try:
        manifest = loads_json((view / VIEW_MANIFEST).read_bytes())
        listed = list(manifest["ids"])
        made_for = manifest["faceset"]
        if not all(is_name(i) for i in listed) or not isinstance(made_for, str):
            raise ValueError("bad ids")
    except FileNotFoundError:
        raise ValueError(f"{str(view)!r} is not a review folder (no {VIEW_MANIFEST})") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{str(view / VIEW_MANIFEST)!r} is damaged") from None
    if faceset is not None and Path(made_for) != Path(faceset).resolve():
        raise ValueError(f"{str(view)!r} was made for the face set {made_for!r}, not {str(faceset)!r}; nothing removed")
    present = set()
    for name in os.listdir(view):
        m = _VIEW_RE.match(name)
        if m:
            present.add(m.group(2))
    return [i for i in listed if i not in present]


# ---------------------------------------------------------------------- helpers


def _same_path(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b) or (a.exists() and b.exists() and os.path.samefile(a, b))


def _check_new_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(os.scandir(out))):
        raise ValueError(f"{str(out)!r} already exists; choose a new out= folder")


class _staging:
    """Build a folder at a hidden sibling of ``out`` and rename it to ``out`` on success;
    on failure remove it (nothing half-written)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.tmp = self.out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        # a fresh folder of ours (created exclusively), never one that happens to have the name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{self.out.name[:100]}.", dir=self.out.parent))
        os.chmod(self.tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the finished folder gets the usual mode
        return self.tmp

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            os.rename(self.tmp, self.out)  # replaces an empty folder; fails on a non-empty one
        except OSError:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        fsync_dir(self.out.parent)


__all__ = ["SORT_KEYS", "DEFAULT_DESCENDING", "blur_score", "face_scores", "sort_order", "SortResult",
           "sort_faceset", "remove_faces", "move_faces", "subset_columns", "merge_facesets", "write_view",
           "removed_in_view"]
