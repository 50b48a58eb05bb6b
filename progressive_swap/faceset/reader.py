"""Read access to a face set: :class:`FaceSet` (import it from :mod:`progressive_swap.faceset`).

Convention: ``landmarks`` are frame pixels (x right, y down, pixel centres at integers);
``matrices`` map frame pixels to *normalised crop coordinates* ``u`` in [0, 1], so
``landmarks_aligned`` are in [0, 1] units for any crop size S (pixel = ``u * S - 0.5``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

import progressive_swap.faceset.embedded as emb
import progressive_swap.faceset.index as fx
import progressive_swap.faceset.verify as vf
from progressive_swap.core.io import fsync_dir
from progressive_swap.faceset.format import (
    IMAGE_DIR,
    INDEX_DIR,
    MASK_DIR,
    USER_PREFIX,
    FaceRecord,
    FaceSetError,
    check_mask_name,
    crop_space_of,
    decode_image,
    decode_mask,
    encode_mask,
    image_path,
    mask_path,
    read_face_file,
    read_header,
    write_file_atomic,
    write_file_durable,
)
from progressive_swap.faceset.writer import FaceSetWriter, concat_shards, create, link_or_copy
from progressive_swap.footage.colour import crop_view


class FaceSet:
    """Read access to a face set. Open with :func:`open` (or ``FaceSet.open``).

    Opening reads ``faceset.json`` and the small index columns; ``landmarks`` and
    ``landmarks_raw`` load on first use. No file handle stays open, so a FaceSet pickles
    cheaply into DataLoader workers (lazily loaded arrays are dropped and reloaded there).

    A matrix, landmark or frame size that is not finite (NaN, inf) is refused with one line
    naming the face: when the set opens (matrices) or on first use (landmarks).

    Args:
        path: face set directory.
        on_corrupt: ``"raise"`` (default) fails on a damaged index shard; ``"skip"`` leaves the
            shard's faces out and lists the reason in :attr:`problems`.
        verify: first check that the index and the files agree
            (:func:`~progressive_swap.faceset.vf.require_consistent`); for tools that change
            the set in place without a writer (mask writers) and whole-set readers that must
            not work on a damaged set.
    """

    def __init__(self, path: str | os.PathLike, *, on_corrupt: str = "raise", verify: bool = False):
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        self.root = Path(path)
        if verify:
            vf.require_consistent(self.root, pending=fx.read_pending(self.root / INDEX_DIR))
        self.header = read_header(self.root)
        self.problems: list[str] = []
        for attempt in range(3):  # a concurrent compaction may delete a shard we just listed
            try:
                self._load_index(on_corrupt)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise FaceSetError(f"index of {str(self.root)!r} keeps changing; retry") from None
            except FaceSetError as e:
                if "swap-faceset repair" in str(e):
                    raise
                raise FaceSetError(f"{e}; {vf.repair_hint(self.root)}") from None
        self._lazy: dict[str, np.ndarray] = {}
        self._mask_names: list[str] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, *, on_corrupt: str = "raise", verify: bool = False) -> "FaceSet":
        """Same as :func:`progressive_swap.faceset.open`."""
        return cls(path, on_corrupt=on_corrupt, verify=verify)

    def _load_index(self, on_corrupt: str) -> None:
        live, _ = fx.scan_shards(self.root / INDEX_DIR)
        self.problems = []
        parts: list[tuple[dict[str, np.ndarray], dict[str, Any]]] = []
        self._shards: list[tuple[Path, int, int]] = []  # (path, first row, rows)
        start = 0
        for s in live:
            try:
                cols, strings = fx.read_shard(s.path)
            except FaceSetError as e:
                if on_corrupt == "raise":
                    raise
                self.problems.append(str(e))
                continue
            n = len(strings["ids"])
            self._shards.append((s.path, start, n))
            parts.append((cols, strings))
            start += n
        cols, strings = concat_shards([p[0] for p in parts], [p[1] for p in parts])
        cols = {k: cols[k] for k in fx.EAGER_COLUMNS}
        self._ids: list[str] = strings["ids"]
        self._id_to_index: dict[str, int] | None = dict(zip(self._ids, range(len(self._ids))))
        if len(self._id_to_index) != len(self._ids):
            raise FaceSetError(f"corrupted index in {str(self.root)!r}: duplicate face ids")
        # Identities sorted, so identity_indices index the public `identities` list.
        table = strings["identities"]
        order = sorted(range(len(table)), key=table.__getitem__)
        self._identities = [table[i] for i in order]
        rank = np.zeros(max(len(order), 1), np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        cols["identity_index"] = rank[cols["identity_index"]]
        self._source_table: list[str] = strings["sources"]
        self._extra = {int(k): v for k, v in strings["extra"].items()}
        for a in cols.values():
            a.setflags(write=False)
        self._cols = cols
        self._refuse_nonfinite(cols)

    def _refuse_nonfinite(self, cols: dict[str, np.ndarray]) -> None:
        """One line naming the first face whose stored geometry is not finite."""
        bad = vf.nonfinite_rows(cols)
        if not len(bad):
            return
        k = bad[0]
        cause = [n for n in ("matrix", "landmarks") if n in cols and not np.isfinite(cols[n][k]).all()]
        if "landmarks_raw" in cols and cols["has_raw"][k] and not np.isfinite(cols["landmarks_raw"][k]).all():
            cause.append("landmarks_raw")
        if (cols["frame_size"][k] <= 0).any():
            cause.append("frame_size")
        more = f" (+{len(bad) - 1} more faces)" if len(bad) > 1 else ""
        raise FaceSetError(f"face {self._ids[k]!r} of {str(self.root)!r} has non-finite {' and '.join(cause)} "
                           f"in the index{more}; {vf.repair_hint(self.root)}")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lazy"] = {}  # reloaded from disk on first use in the worker
        state["_id_to_index"] = None
        return state

    # ------------------------------------------------------------------ header facts

    @property
    def face_type(self) -> str:
        return self.header["face_type"]

    @property
    def crop_space(self) -> str:
        """What the crops' values mean: ``srgb`` (8-bit sRGB pictures; sets without the field) or
        ``acescct`` (:data:`~progressive_swap.faceset.format.CROP_SPACES`)."""
        return crop_space_of(self.header)

    @property
    def size(self) -> int:
        """Crop side in pixels."""
        return int(self.header["size"])

    @property
    def image_format(self) -> str:
        """``"png"`` or ``"jpg"``."""
        return self.header["image_format"]

    @property
    def format_version(self) -> int:
        return int(self.header["format_version"])

    @property
    def identities(self) -> list[str]:
        """Sorted distinct identity labels."""
        return list(self._identities)

    @property
    def mask_names(self) -> list[str]:
        """Mask kinds with at least one file (``user_*`` = hand-edited)."""
        if self._mask_names is None:
            names = []
            mdir = self.root / MASK_DIR
            for d in sorted(mdir.iterdir()) if mdir.is_dir() else []:
                if d.is_dir():
                    with os.scandir(d) as it:
                        if any(not e.name.startswith(".") for e in it):
                            names.append(d.name)
            self._mask_names = names
        return list(self._mask_names)

    @property
    def shard_count(self) -> int:
        """Index shards read at open (``FaceSetWriter.compact`` merges them into one)."""
        return len(self._shards)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"FaceSet({str(self.root)!r}, n={len(self)}, face_type={self.face_type!r}, size={self.size})"

    # ------------------------------------------------------------------ arrays

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def matrices(self) -> np.ndarray:
        """``(N, 2, 3)`` float64, frame px -> crop [0, 1]."""
        return self._cols["matrix"]

    @property
    def frame_indices(self) -> np.ndarray:
        return self._cols["frame_index"]

    @property
    def times(self) -> np.ndarray:
        """``(N,)`` seconds; NaN where unknown."""
        return self._cols["time"]

    @property
    def tracks(self) -> np.ndarray:
        return self._cols["track"]

    @property
    def frame_sizes(self) -> np.ndarray:
        """``(N, 2)`` int32 source frame (w, h)."""
        return self._cols["frame_size"]

    @property
    def pixel_aspects(self) -> np.ndarray:
        """``(N,)`` float64 pixel aspect ratio of each face's source frame (``extra["pixel_aspect"]``,
        written for anamorphic plates; 1.0 where absent). Landmarks, ``matrix`` and ``frame_size``
        are always the frame's own pixels; ``x' = a x + (a - 1) / 2`` de-squeezes them
        (:func:`progressive_swap.core.align.desqueeze_points`)."""
        if "pixel_aspect" not in self._lazy:
            a = np.ones(len(self._ids), np.float64)
            for i, e in self._extra.items():
                v = e.get("pixel_aspect") if isinstance(e, dict) else None
                if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0:
                    a[i] = float(v)
            a.setflags(write=False)
            self._lazy["pixel_aspect"] = a
        return self._lazy["pixel_aspect"]

    @property
    def identity_indices(self) -> np.ndarray:
        """``(N,)`` int32 index into :attr:`identities`."""
        return self._cols["identity_index"]

    @property
    def sources(self) -> list[str]:
        """Source of each face (length N)."""
        return [self._source_table[k] for k in self._cols["source_index"]]

    @property
    def landmarks(self) -> np.ndarray:
        """``(N, 68, 2)`` float64 smoothed landmarks, frame pixels (loaded on first use)."""
        return self._lazy_column("landmarks")

    @property
    def landmarks_raw(self) -> np.ndarray:
        """``(N, 68, 2)`` float64 detector landmarks, frame pixels; NaN rows where absent."""
        return self._lazy_column("landmarks_raw")

    @property
    def landmarks_aligned(self) -> np.ndarray:
        """``(N, 68, 2)`` landmarks in normalised crop coordinates [0, 1] (any crop size)."""
        if "landmarks_aligned" not in self._lazy:
            m, lm = self.matrices[:, :, None, :], self.landmarks  # (N, 2, 1, 3), (N, 68, 2)
            # Written out: batched 2x2 matmul/einsum is ~20x slower at N = 100k.
            a = np.stack([m[:, r, :, 0] * lm[..., 0] + m[:, r, :, 1] * lm[..., 1] + m[:, r, :, 2]
                          for r in (0, 1)], axis=-1)  # (N, 68, 2)
            a.setflags(write=False)
            self._lazy["landmarks_aligned"] = a
        return self._lazy["landmarks_aligned"]

    def _lazy_column(self, name: str) -> np.ndarray:
        if name not in self._lazy:
            parts = [fx.read_columns(p, [name], n)[name] for p, _, n in self._shards]
            a = np.concatenate(parts) if parts else fx.empty_columns()[name]
            a.setflags(write=False)
            if name in ("landmarks", "landmarks_raw"):
                self._refuse_nonfinite({"matrix": self._cols["matrix"], "frame_size": self._cols["frame_size"],
                                        "has_raw": self._cols["has_raw"], name: a})
            self._lazy[name] = a
        return self._lazy[name]

    # ------------------------------------------------------------------ per face

    def index_of(self, face_id: str) -> int:
        """Row of a face id (KeyError if absent)."""
        if self._id_to_index is None:
            self._id_to_index = dict(zip(self._ids, range(len(self._ids))))
        try:
            return self._id_to_index[face_id]
        except KeyError:
            raise KeyError(f"no face {face_id!r} in {str(self.root)!r}") from None

    def _row(self, i: int | str) -> int:
        if isinstance(i, str):
            return self.index_of(i)
        n = len(self._ids)
        j = int(i)
        if not -n <= j < n:
            raise IndexError(f"face index {i} out of range for {n} faces")
        return j % n

    def record(self, i: int | str) -> FaceRecord:
        """The :class:`FaceRecord` of face ``i`` (row or id)."""
        i = self._row(i)
        c = self._cols
        raw = self.landmarks_raw[i].copy() if c["has_raw"][i] else None
        return FaceRecord(
            id=self._ids[i],
            source=self._source_table[c["source_index"][i]],
            frame_index=int(c["frame_index"][i]),
            time=float(c["time"][i]),
            track=int(c["track"][i]),
            identity=self._identities[c["identity_index"][i]],
            landmarks=self.landmarks[i].copy(),
            matrix=c["matrix"][i].copy(),
            frame_size=(int(c["frame_size"][i, 0]), int(c["frame_size"][i, 1])),
            landmarks_raw=raw,
            extra=dict(self._extra.get(i, {})),
        )

    def records(self) -> Iterator[FaceRecord]:
        for i in range(len(self)):
            yield self.record(i)

    def image_path(self, i: int | str) -> Path:
        return image_path(self.root, self.header, self._ids[self._row(i)])

    def mask_path(self, i: int | str, name: str) -> Path:
        return mask_path(self.root, check_mask_name(name), self._ids[self._row(i)])

    def image(self, i: int | str) -> np.ndarray:
        """uint8 ``(S, S, 3)`` sRGB picture of face ``i`` (row or id): the stored crop of an
        ``srgb`` set; for an ``acescct`` set its display view (ACEScct → sRGB, clipped), what
        detectors, embeddings, the reviewer and previews look at. The network's values are
        :meth:`values`."""
        stored = self._stored(i)
        if stored.dtype == np.uint8:
            return stored
        return crop_view(stored.astype(np.float32) / 65535.0, self.crop_space)

    def values(self, i: int | str) -> np.ndarray:
        """float32 ``(S, S, 3)`` in [0, 1]: face ``i``'s crop values in the set's
        :attr:`crop_space`, at the precision stored (8-bit sRGB, or 16-bit ACEScct): what the
        network is trained on."""
        stored = self._stored(i)
        return stored.astype(np.float32) / np.float32(np.iinfo(stored.dtype).max)

    def _stored(self, i: int | str) -> np.ndarray:
        path = self.image_path(i)
        try:
            data = read_face_file(path, "face image")
        except FileNotFoundError:
            raise FaceSetError(f"damaged face set: image {str(path)!r} is missing") from None
        return decode_image(data, self.size, repr(str(path)))

    def has_mask(self, i: int | str, name: str) -> bool:
        return self.mask_path(i, name).is_file()

    def mask(self, i: int | str, name: str, *, prefer_user: bool = False) -> np.ndarray | None:
        """float32 ``(S, S)`` mask in [0, 1], or None if face ``i`` has no mask ``name``.

        Args:
            prefer_user: return the hand-edited ``user_<name>`` mask when there is one.
        """
        if prefer_user and not name.startswith(USER_PREFIX):
            m = self.mask(i, USER_PREFIX + name)
            if m is not None:
                return m
        path = self.mask_path(i, name)
        try:
            data = read_face_file(path, "mask")
        except FileNotFoundError:
            return None
        return decode_mask(data, self.size, repr(str(path)))

    def write_mask(self, i: int | str, name: str, mask: np.ndarray, *, user: bool = False) -> Path:
        """Atomically add or replace one mask file of face ``i`` (row or id).

        Args:
            name: mask kind, e.g. ``"hull"``, ``"occlusion"``.
            mask: ``(S, S)`` float in [0, 1], bool, uint8 or uint16.
            user: store it as a hand-edited mask, under ``user_<name>``.

        Returns:
            The mask file's path.
        """
        if user and not name.startswith(USER_PREFIX):
            name = USER_PREFIX + name
        path = self.mask_path(i, name)
        data = encode_mask(mask, self.size)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, data)
        if self._mask_names is not None and name not in self._mask_names:
            self._mask_names = sorted([*self._mask_names, name])
        return path

    # ------------------------------------------------------------------ checks and edits

    def validate(self, *, deep: bool = False, limit: int = 20) -> list[str]:
        """Check the set on disk; return up to ``limit`` one-line problems (empty = valid).

        The index and the files must agree (:func:`~progressive_swap.faceset.verify.check`):
        every indexed face has its image, every image and mask file belongs to an indexed face,
        image sizes and embedded records match, stored geometry is finite. ``deep`` also decodes
        every image and mask.
        """
        report = self.check(deep=deep)
        problems = list(dict.fromkeys([*self.problems, *report.problems]))
        return problems[:limit]

    def check(self, *, deep: bool = False) -> vf.Report:
        """The full :class:`~progressive_swap.faceset.verify.Report` of the set on disk now."""
        return vf.check(self.root, deep=deep, pending=fx.read_pending(self.root / INDEX_DIR), header=self.header)

    def mask_counts(self) -> dict[str, int]:
        """Number of indexed faces that have each mask kind."""
        ids = set(self._ids)
        return {
            name: sum(1 for e in os.listdir(self.root / MASK_DIR / name)
                      if e.endswith(".png") and e[:-4] in ids)
            for name in self.mask_names
        }

    def identity_counts(self) -> dict[str, int]:
        counts = np.bincount(self.identity_indices, minlength=len(self._identities))
        return {k: int(c) for k, c in zip(self._identities, counts)}

    def remove(self, ids: Iterable[str]) -> int:
        """Remove faces by id (takes the writer lock) and reload; returns how many went."""
        with FaceSetWriter(self.root) as w:
            n = w.remove(ids)
        self.__dict__.update(FaceSet(self.root).__dict__)
        return n

    def merge(self, other_paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> "FaceSet":
        """Write a new set at ``out`` holding this set's faces followed by the others'."""
        return merge([self.root, *other_paths], out)


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
        for key in ("face_type", "size", "image_format", "crop_space"):
            mine, theirs = ((crop_space_of(x.header) if key == "crop_space" else x.header[key]) for x in (s, first))
            if mine != theirs:
                raise FaceSetError(f"cannot merge {str(s.root)!r}: {key}={mine!r}, not {theirs!r}")
    seen: set[str] = set()
    for s in sets:
        dup = seen.intersection(s._ids)
        if dup:
            raise FaceSetError(f"cannot merge {str(s.root)!r}: face id {sorted(dup)[0]!r} appears twice")
        seen.update(s._ids)
    h = first.header
    with create(out, face_type=h["face_type"], size=h["size"], image_format=h["image_format"],
                jpeg_quality=h.get("jpeg_quality", 95), png_compression=h.get("png_compression", 1),
                identity=h.get("identity"), threads=threads, crop_space=crop_space_of(h)) as w:
        for s in sets:
            link_face_files(s, w, s._ids)
            parts = [fx.read_all(p) for p, _, _ in s._shards]
            cols, strings = concat_shards([c for c, _ in parts], [t for _, t in parts])
            w._commit_columns(cols, strings)
    return FaceSet(out)


def link_face_files(src: FaceSet, writer: FaceSetWriter, ids: Sequence[str]) -> None:
    """Hard-link (or copy) the images and masks of ``ids`` from ``src`` into ``writer``'s set,
    then fsync the directories. The index entries are the caller's to commit.

    The ids are journaled first (:meth:`FaceSetWriter.begin`), so a crash before the commit
    leaves debris the next writer removes. An image without its embedded record (a set written
    before records existed) is written anew with the record instead of linked.
    """
    writer.begin(ids)
    targets = []
    for face_id in ids:
        a, b = image_path(src.root, src.header, face_id), image_path(writer.root, writer.header, face_id)
        if emb.file_record(a) is None:
            data = a.read_bytes()
            payload = emb.record_to_json(src.record(face_id), src.face_type)
            write_file_durable(b, emb.embed(data, payload), fsync=writer.durable)
        else:
            targets.append((a, b))
        for name in src.mask_names:
            m = mask_path(src.root, name, face_id)
            if m.exists():
                targets.append((m, mask_path(writer.root, name, face_id)))
    for a, b in targets:
        b.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(a, b)
    for d in {b.parent for _, b in targets} | {writer.root / IMAGE_DIR}:
        fsync_dir(d)
