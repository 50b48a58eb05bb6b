"""What the face-set reviewer does to a face set: the grid's data, thumbnails, removing, moving and
undoing faces, and saving painted masks, each under the face set's writer lock
(:mod:`progressive_swap.faceset.review` serves it over HTTP)."""
from __future__ import annotations

import contextlib
import os
import secrets
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from progressive_swap import faceset as F
from progressive_swap.core.io import TEMP_PREFIX, fsync_dir, is_name, make_temp
from progressive_swap.faceset import curate, identity
from progressive_swap.faceset import index as fx
from progressive_swap.faceset.format import (
    HEADER_NAME,
    IMAGE_DIR,
    INDEX_DIR,
    LOCK_NAME,
    MASK_DIR,
    USER_PREFIX,
    check_mask_name,
    read_face_file,
)
from progressive_swap.faceset.writer import FaceSetWriter

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css",
                 ".png": "image/png", ".jpg": "image/jpeg"}
THUMB = 128


class ReviewError(Exception):
    """A request the reviewer refuses: an HTTP status and a one-line reason for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def default_trash_path(path: str | os.PathLike) -> Path:
    """``DIR.trash`` beside ``DIR``."""
    p = Path(os.path.abspath(path))
    return p.with_name(p.name + ".trash")


class Reviewer:
    """The state behind the page: the face set (reopened when its index changes on disk),
    score and thumbnail caches, and the undo history of this session.

    Args:
        path: face set directory.
        trash: face set that removed faces go to (default ``DIR.trash``).
    """

    def __init__(self, path: str | os.PathLike, trash: str | os.PathLike | None = None):
        self.root = Path(path)
        self.trash = Path(trash) if trash is not None else default_trash_path(self.root)
        self.token = secrets.token_hex(16)
        self._lock = threading.RLock()  # one change at a time within this server
        self._fs: F.FaceSet | None = None
        self._sig: tuple = ()
        self._scores: tuple[F.FaceSet | None, dict[str, np.ndarray]] = (None, {})  # (the set they score, scores)
        self.undo: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._fs = F.open(self.root)  # a missing or damaged set fails here, before the server starts
        self._sig = self.signature()
        self.problems = self._fs.validate()

    # ------------------------------------------------------------------ the set

    def signature(self) -> tuple:
        """Changes whenever the index on disk changes (a commit renames a new shard in)."""
        try:
            return tuple(sorted(os.listdir(self.root / INDEX_DIR)))
        except FileNotFoundError:
            raise ReviewError(HTTPStatus.GONE, f"the face set {str(self.root)!r} is gone from disk") from None

    def faceset(self) -> F.FaceSet:
        """The set as it is on disk now (reopened after any change)."""
        with self._lock:
            sig = self.signature()
            if self._fs is None or sig != self._sig:
                self._fs = F.open(self.root)
                self._sig = sig
            return self._fs

    def info(self) -> dict[str, Any]:
        fs = self.faceset()
        kinds = sorted({n[len(USER_PREFIX):] if n.startswith(USER_PREFIX) else n for n in fs.mask_names})
        return {
            "path": str(self.root), "count": len(fs), "size": fs.size, "face_type": fs.face_type,
            "sort_keys": ["index", *curate.SORT_KEYS] + (["identity"] if identity.embedded_count(fs) else []),
            "mask_kinds": kinds, "mask_names": fs.mask_names, "trash": str(self.trash),
            "problems": self.problems, "version": self.version(), "undo": len(self.undo),
        }

    def version(self) -> str:
        return str(abs(hash(self.signature())))

    def faces(self, key: str, order: str | None) -> dict[str, Any]:
        """Ids in the requested order with their scores (NaN as null), both from one snapshot of
        the set: cached scores are kept with the very set object they were computed on, so a
        change on disk meanwhile never pairs one version's scores with another's ids."""
        fs = self.faceset()
        n = len(fs)
        if key == "index":
            scores = np.arange(n, dtype=np.float64)
            desc = order == "desc"
        elif key in curate.SORT_KEYS or key == "identity":
            with self._lock:
                scored, cache = self._scores
                if scored is not fs:
                    cache = {}
                    self._scores = (fs, cache)
                if key not in cache:
                    cache[key] = (identity.self_distances(fs) if key == "identity"
                                  else curate.face_scores(fs, [key])[key])
                scores = cache[key]
            desc = curate.DEFAULT_DESCENDING.get(key, False) if order is None else order == "desc"
        else:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"unknown sort key {key!r}")
        idx = curate.sort_order(scores, desc)
        ids = fs.ids
        out = [None if not np.isfinite(scores[i]) else round(float(scores[i]), 3) for i in idx]
        return {"ids": [ids[i] for i in idx], "scores": out,
                "key": key, "descending": bool(desc), "version": self.version()}

    def _row(self, face_id: str) -> tuple[F.FaceSet, int]:
        fs = self.faceset()
        try:
            return fs, fs.index_of(face_id)
        except (KeyError, ValueError, F.FaceSetError):
            raise ReviewError(HTTPStatus.GONE, f"face {face_id!r} is no longer in the set "
                                               "(removed by another tab or tool)") from None

    # ------------------------------------------------------------------ images

    def thumb(self, face_id: str, overlay: str | None = None) -> bytes:
        """JPEG thumbnail (cached in ``DIR/cache/thumbs``; remade when the image or mask is newer)."""
        fs, i = self._row(face_id)
        src = fs.image_path(i)
        try:
            mtime = src.stat().st_mtime_ns
        except FileNotFoundError:
            raise ReviewError(HTTPStatus.NOT_FOUND, f"image of face {face_id!r} is missing on disk") from None
        mask_file = None
        if overlay:
            overlay = _kind(overlay)  # a name from the request: 400 when it is not a mask name
            for name in (USER_PREFIX + overlay, overlay):
                if fs.mask_path(i, name).is_file():
                    mask_file = fs.mask_path(i, name)
                    break
            if mask_file is not None:
                mtime = max(mtime, mask_file.stat().st_mtime_ns)
        name = f"{face_id}.jpg" if not overlay else f"{face_id}.{overlay}.jpg"
        cached = self.root / identity.CACHE_DIR / "thumbs" / name
        try:
            if cached.stat().st_mtime_ns >= mtime:
                return cached.read_bytes()
        except FileNotFoundError:
            pass
        try:
            img = fs.image(i)
        except F.FaceSetError as e:
            raise ReviewError(HTTPStatus.NOT_FOUND, str(e)) from None
        t = cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA) if fs.size != THUMB else img
        if mask_file is not None:
            m = cv2.resize(fs.mask(i, mask_file.parent.name), (THUMB, THUMB), interpolation=cv2.INTER_AREA)[..., None]
            t = (t * (1 - 0.45 * m) + np.array([255, 40, 40]) * 0.45 * m).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(t, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        data = buf.tobytes()
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(cached)  # exclusive: never through a planted link
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, cached)  # a derived file: atomic, no fsync needed
        return data

    def image(self, face_id: str) -> tuple[bytes, str]:
        fs, i = self._row(face_id)
        p = fs.image_path(i)
        try:
            return read_face_file(p), CONTENT_TYPES.get(p.suffix, "application/octet-stream")
        except FileNotFoundError:
            raise ReviewError(HTTPStatus.NOT_FOUND, f"image of face {face_id!r} is missing on disk") from None
        except F.FaceSetError as e:
            raise ReviewError(HTTPStatus.CONFLICT, str(e)) from None

    # ------------------------------------------------------------------ masks

    @staticmethod
    def _mask_version(path: Path) -> str:
        try:
            st = path.stat()
        except FileNotFoundError:
            return "none"
        return f"{st.st_mtime_ns}-{st.st_size}"

    def mask(self, face_id: str, kind: str) -> tuple[bytes, str, str]:
        """Raw little-endian uint16 ``S*S`` mask: ``user_<kind>`` if painted, else ``kind``,
        else zeros; plus its source name and the ``user_<kind>`` file's version."""
        kind = _kind(kind)
        fs, i = self._row(face_id)
        user = fs.mask_path(i, USER_PREFIX + kind)
        version = self._mask_version(user)
        for name in (USER_PREFIX + kind, kind):
            try:
                m = fs.mask(i, name)
            except F.FaceSetError as e:
                raise ReviewError(HTTPStatus.CONFLICT, f"mask {name} of face {face_id!r} is damaged: {e}") from None
            if m is not None:
                return np.round(m * 65535).astype("<u2").tobytes(), name, version
        return np.zeros(fs.size * fs.size, "<u2").tobytes(), "none", version

    def polygons(self, face_id: str) -> dict[str, Any]:
        """Hand-drawn polygons a face carries in its record (imported DeepFaceLab XSeg polygons,
        ``extra["ie_polys"]``), in crop pixels: ``{"polygons": [{"type", "points"}]}``."""
        fs, i = self._row(face_id)
        out = []
        for p in fs.record(i).extra.get("ie_polys") or []:
            try:
                pts = np.asarray(p["uv"], np.float64).reshape(-1, 2) * fs.size - 0.5
            except (KeyError, TypeError, ValueError):
                continue
            if p.get("type") in ("include", "exclude") and np.isfinite(pts).all():
                out.append({"type": p["type"], "points": np.round(pts, 2).tolist()})
        return {"polygons": out}

    def save_mask(self, face_id: str, kind: str, data: bytes, expect: str | None) -> str:
        """Write ``user_<kind>`` of a face from raw uint16 data, under the writer lock.

        Args:
            expect: the ``user_<kind>`` version the page loaded; refused if it changed since.

        Returns:
            The new version.
        """
        kind = _kind(kind)
        with self._lock:
            fs, i = self._row(face_id)
            s = fs.size
            if len(data) != s * s * 2:
                raise ReviewError(HTTPStatus.BAD_REQUEST, f"mask must be {s}x{s} 16-bit ({s * s * 2} bytes), "
                                                          f"got {len(data)} bytes; not saved")
            m = np.frombuffer(data, "<u2").reshape(s, s).astype(np.uint16)
            with _writer(self.root) as w:
                if face_id not in w:
                    raise ReviewError(HTTPStatus.GONE, f"face {face_id!r} is no longer in the set; edit not saved")
                path = fs.mask_path(i, USER_PREFIX + kind)
                now = self._mask_version(path)
                if expect is not None and expect != now:
                    raise ReviewError(HTTPStatus.CONFLICT, f"the {USER_PREFIX}{kind} mask of {face_id} changed since "
                                                           "this page loaded it (another tab or tool); not saved. "
                                                           "Reload the mask to see that version")
                fs.write_mask(i, kind, m, user=True)
                return self._mask_version(path)

    # ------------------------------------------------------------------ moving faces

    def _move(self, src: Path, ids: list[str], dst: Path) -> int:
        with self._lock:
            try:
                with _writer_errors():
                    return curate.move_faces(src, ids, dst)
            finally:
                self._fs = None

    def remove(self, ids: list[str]) -> dict[str, Any]:
        """Move faces to the trash set; one undo step."""
        ids = _ids(ids)
        with self._lock:
            created = not (self.trash / HEADER_NAME).exists()
            n = self._move(self.root, ids, self.trash)
            self.undo.append({"op": "trash", "ids": ids, "dst": str(self.trash), "created": created})
        return {"moved": n, "to": str(self.trash), "undo": len(self.undo)}

    def destination(self, dest: str) -> Path:
        """Where ``move`` may put faces: a face set beside the reviewed one (same parent folder),
        or a new folder there. Never the set itself or a folder inside it, never an existing
        folder that is not a face set, never anywhere else on the machine (the page is a web
        page: what it may ask for is kept to the set's neighbours).

        Args:
            dest: a name (``bob``), or a path whose folder is the set's (links resolved).

        Raises:
            ReviewError: 400 with the reason.
        """
        dest = str(dest or "").strip()
        if not dest:
            raise ReviewError(HTTPStatus.BAD_REQUEST, "give the face set to move the faces to")
        home = self.root.resolve()
        if any(ord(c) < 32 for c in dest):
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"{dest!r} holds a control character; give a plain name")
        d = Path(dest).expanduser()
        d = (d if d.is_absolute() else home.parent / d).resolve()
        if d == home or home in d.parents:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"{dest!r} is the reviewed face set or inside it; "
                                                      "give a face set beside it")
        if d.parent != home.parent:
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"{dest!r} is not beside the reviewed face set: faces move "
                                                      f"only to face sets in {str(home.parent)!r} (e.g. bob)")
        if d.exists() and not (d.is_dir() and (d / HEADER_NAME).is_file()):
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"{str(d)!r} exists and is not a face set; "
                                                      "give a face set or a new name")
        return d

    def move(self, ids: list[str], dest: str) -> dict[str, Any]:
        """Move faces to a face set beside this one (created when missing, see :meth:`destination`);
        one undo step."""
        ids = _ids(ids)
        with self._lock:
            d = self.destination(dest)
            created = not d.exists()
            n = self._move(self.root, ids, d)
            self.undo.append({"op": "move", "ids": ids, "dst": str(d), "created": created})
        return {"moved": n, "to": str(d), "undo": len(self.undo)}

    def undo_last(self) -> dict[str, Any]:
        """Move the faces of the last removal or move back into the set; a face set that move
        created is removed again once it holds no face and nothing but what the move wrote
        (anything else put there since keeps it)."""
        with self._lock:
            if not self.undo:
                raise ReviewError(HTTPStatus.CONFLICT, "nothing to undo")
            op = self.undo[-1]
            dst = Path(op["dst"])
            n = self._move(dst, op["ids"], self.root)
            self.undo.pop()
            removed = op.get("created", False) and _remove_if_empty(dst)
            return {"restored": n, "ids": op["ids"], "undo": len(self.undo), "removed": str(dst) if removed else None}


def _only_ours(root: Path) -> bool:
    """Whether a face set folder holds nothing but what creating it and moving faces through it
    wrote: the header, the lock, index shards and journal, and empty ``images/`` and
    ``masks/<name>/`` folders (our temporary files aside)."""
    def ours(e: os.DirEntry) -> bool:
        return e.name.startswith(TEMP_PREFIX) and e.is_file(follow_symlinks=False)

    for e in os.scandir(root):
        if e.name in (HEADER_NAME, LOCK_NAME) and e.is_file(follow_symlinks=False) or ours(e):
            continue
        if e.name == INDEX_DIR and e.is_dir(follow_symlinks=False):
            if all(ours(f) or (f.is_file(follow_symlinks=False) and (fx.SHARD_RE.match(f.name)
                                                                     or f.name == fx.PENDING_NAME))
                   for f in os.scandir(e.path)):
                continue
            return False
        if e.name == IMAGE_DIR and e.is_dir(follow_symlinks=False):
            if all(ours(f) for f in os.scandir(e.path)):
                continue
            return False
        if e.name == MASK_DIR and e.is_dir(follow_symlinks=False):
            for m in os.scandir(e.path):
                if not (m.is_dir(follow_symlinks=False) and all(ours(f) for f in os.scandir(m.path))):
                    return False
            continue
        return False
    return True


def _remove_ours(root: Path) -> None:
    """Delete a folder :func:`_only_ours` accepted, file by file (``rmdir`` refuses a folder that
    is not empty, so a file that arrived meanwhile stays)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        os.rmdir(dirpath)


def _remove_if_empty(path: Path) -> bool:
    """Delete a face set this session created once it holds no face again and nothing but what
    the move wrote (checked under its writer lock, then again after renaming it aside, so no
    other writer can add to it while it is removed). Returns whether it was removed."""
    try:
        w = F.open_writer(path)
    except (F.FaceSetError, OSError, ValueError):
        return False  # in use or damaged meanwhile: keep it
    try:
        empty = len(w) == 0 and _only_ours(path)
    finally:
        w.close(compact=False)
    if not empty:
        return False  # faces or the user's files arrived since: keep them
    aside = path.with_name(f"{TEMP_PREFIX}{path.name[:100]}.removing.{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except OSError:
        return False
    try:
        if not _only_ours(aside):
            raise OSError("changed meanwhile")
        _remove_ours(aside)
    except OSError:
        with contextlib.suppress(OSError):
            os.rename(aside, path)  # put back whatever is left, under its own name
        return False
    fsync_dir(path.parent)
    return True


def _kind(kind: str) -> str:
    kind = (kind or "").strip()
    if kind.startswith(USER_PREFIX):
        kind = kind[len(USER_PREFIX):]
    try:
        return check_mask_name(kind)
    except ValueError as e:
        raise ReviewError(HTTPStatus.BAD_REQUEST, str(e)) from None


def _ids(ids: Any) -> list[str]:
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ReviewError(HTTPStatus.BAD_REQUEST, "select one or more faces first")
    bad = next((i for i in ids if not is_name(i)), None)
    if bad is not None:  # ids from a request pass the same gate as ids from a journal
        raise ReviewError(HTTPStatus.BAD_REQUEST, f"{bad!r} is not a face id")
    return ids


class _writer_errors:
    """Turn the set's refusals into page messages."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> None:
        if exc is None or isinstance(exc, ReviewError):
            return
        if isinstance(exc, F.FaceSetError) and "open for writing" in str(exc):
            raise ReviewError(HTTPStatus.CONFLICT, f"{exc}; nothing changed, try again when it is done") from None
        if isinstance(exc, (ValueError, F.FaceSetError)):
            raise ReviewError(HTTPStatus.CONFLICT, f"{exc}") from None


class _writer:
    """The face set's writer lock for the duration of a save (refusal = a page message)."""

    def __init__(self, root: Path):
        self.root = root
        self.w: FaceSetWriter | None = None

    def __enter__(self) -> FaceSetWriter:
        with _writer_errors():
            self.w = FaceSetWriter(self.root)
        return self.w

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.w is not None:
            self.w.close(compact=False)
