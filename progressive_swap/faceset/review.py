"""``swap-faceset review DIR``: a face-set reviewer and mask editor in the browser.

A local web server (the standard library's ``ThreadingHTTPServer``) and a page of plain
HTML/JS/CSS shipped with the package (``review_static/``; no build step, nothing fetched from
the network). The page shows the faces as a virtualised grid of thumbnails (made once, cached
in ``DIR/cache/thumbs/``, loaded as they scroll into view), sorted by any of
:data:`curate.SORT_KEYS`, by ``identity`` once the set is embedded, or in the set's order; it
overlays a mask on demand; removes selected faces to a trash face set (``DIR.trash``; undo
moves them back) or moves them to another face set; and paints masks at the crop's full
resolution, saved as ``user_<kind>`` 16-bit masks.

Safety: every change goes through the face set's writer lock (:class:`FaceSetWriter`), one
at a time within the server; a mask save is one atomic file replacement and is refused (with
the reason, shown in the page) when the face is gone, the set is locked by another process,
or the mask changed since the page loaded it (another tab, another tool). Mutating requests
need the page's token (a header other sites cannot send), and the server binds 127.0.0.1
unless told otherwise.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import cv2
import numpy as np

from progressive_swap import faceset as F
from progressive_swap.faceset import curate, identity
from progressive_swap.faceset.format import INDEX_DIR, USER_PREFIX, check_mask_name
from progressive_swap.faceset.writer import FaceSetWriter

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
THUMB = 128
"""Thumbnail side in pixels."""
STATIC = Path(__file__).with_name("review_static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css",
          ".png": "image/png", ".jpg": "image/jpeg"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


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
        self._scores: dict[str, np.ndarray] = {}
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
                self._scores = {}
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
        """Ids in the requested order with their scores (NaN as null)."""
        fs = self.faceset()
        n = len(fs)
        if key == "index":
            scores = np.arange(n, dtype=np.float64)
            desc = order == "desc"
        elif key in curate.SORT_KEYS or key == "identity":
            with self._lock:
                if key not in self._scores:
                    self._scores[key] = (identity.self_distances(fs) if key == "identity"
                                         else curate.face_scores(fs, [key])[key])
                scores = self._scores[key]
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
            check_mask_name(overlay)
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
        tmp = cached.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)  # a derived file: atomic, no fsync needed
        return data

    def image(self, face_id: str) -> tuple[bytes, str]:
        fs, i = self._row(face_id)
        p = fs.image_path(i)
        try:
            return p.read_bytes(), _TYPES.get(p.suffix, "application/octet-stream")
        except FileNotFoundError:
            raise ReviewError(HTTPStatus.NOT_FOUND, f"image of face {face_id!r} is missing on disk") from None

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
        n = self._move(self.root, ids, self.trash)
        self.undo.append({"op": "trash", "ids": ids, "dst": str(self.trash)})
        return {"moved": n, "to": str(self.trash), "undo": len(self.undo)}

    def move(self, ids: list[str], dest: str) -> dict[str, Any]:
        """Move faces to another face set (created when missing); one undo step."""
        ids = _ids(ids)
        if not dest or not str(dest).strip():
            raise ReviewError(HTTPStatus.BAD_REQUEST, "give the face set to move the faces to")
        d = Path(dest).expanduser()
        if not d.is_absolute():
            d = self.root.resolve().parent / d
        n = self._move(self.root, ids, d)
        self.undo.append({"op": "move", "ids": ids, "dst": str(d)})
        return {"moved": n, "to": str(d), "undo": len(self.undo)}

    def undo_last(self) -> dict[str, Any]:
        """Move the faces of the last removal or move back into the set."""
        with self._lock:
            if not self.undo:
                raise ReviewError(HTTPStatus.CONFLICT, "nothing to undo")
            op = self.undo[-1]
            n = self._move(Path(op["dst"]), op["ids"], self.root)
            self.undo.pop()
            return {"restored": n, "ids": op["ids"], "undo": len(self.undo)}


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


# ---------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server: "ReviewServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: errors reach the page
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _check_host(self) -> None:
        # DNS rebinding: a page on another name must not reach a loopback-only server.
        if self.server.reviewer_host in _LOOPBACK or self.server.reviewer_host == "localhost":
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host not in _LOOPBACK:
                raise ReviewError(HTTPStatus.FORBIDDEN, f"unexpected Host {host!r}")

    def _check_token(self) -> None:
        if self.headers.get("X-Review-Token") != self.server.reviewer.token:
            raise ReviewError(HTTPStatus.FORBIDDEN, "missing or wrong page token; reload the page")

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n > 64 * 2**20:
            raise ReviewError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method: str) -> None:
        try:
            self._check_host()
            url = urlparse(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [unquote(p) for p in url.path.split("/") if p]
            rv = self.server.reviewer
            if method in ("PUT", "POST"):
                self._check_token()
            if method == "GET" and not parts:
                html = (STATIC / "index.html").read_text().replace("{{TOKEN}}", rv.token)
                return self._send(200, html.encode(), _TYPES[".html"])
            if method == "GET" and len(parts) == 2 and parts[0] == "static":
                f = STATIC / parts[1]
                if "/" in parts[1] or parts[1].startswith(".") or not f.is_file():
                    raise ReviewError(HTTPStatus.NOT_FOUND, "no such file")
                return self._send(200, f.read_bytes(), _TYPES.get(f.suffix, "application/octet-stream"))
            if method == "GET" and parts == ["api", "info"]:
                return self._json(rv.info())
            if method == "GET" and parts == ["api", "version"]:
                return self._json({"version": rv.version()})
            if method == "GET" and parts == ["api", "faces"]:
                return self._json(rv.faces(q.get("sort", "index"), q.get("order")))
            if method == "GET" and len(parts) == 2 and parts[0] == "thumb":
                return self._send(200, rv.thumb(parts[1], q.get("overlay") or None), "image/jpeg")
            if method == "GET" and len(parts) == 2 and parts[0] == "image":
                data, ctype = rv.image(parts[1])
                return self._send(200, data, ctype)
            if len(parts) == 3 and parts[:2] == ["api", "mask"]:
                if method == "GET":
                    data, source, version = rv.mask(parts[2], q.get("kind", ""))
                    return self._send(200, data, "application/octet-stream",
                                      {"X-Mask-Source": source, "X-Mask-Version": version})
                if method == "PUT":
                    version = rv.save_mask(parts[2], q.get("kind", ""), self._body(),
                                           self.headers.get("X-Mask-Version"))
                    return self._json({"saved": parts[2], "version": version})
            if method == "POST" and len(parts) == 2 and parts[0] == "api":
                try:
                    body = json.loads(self._body() or b"{}")
                except ValueError:
                    raise ReviewError(HTTPStatus.BAD_REQUEST, "request body is not JSON") from None
                if parts[1] == "remove":
                    return self._json(rv.remove(body.get("ids")))
                if parts[1] == "move":
                    return self._json(rv.move(body.get("ids"), body.get("dest", "")))
                if parts[1] == "undo":
                    return self._json(rv.undo_last())
            raise ReviewError(HTTPStatus.NOT_FOUND, f"no such page: {method} {url.path}")
        except ReviewError as e:
            self._error(e.status, str(e))
        except F.FaceSetError as e:
            self._error(HTTPStatus.CONFLICT, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # one line to the page, and the server keeps serving
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")


class ReviewServer(ThreadingHTTPServer):
    """The reviewer's HTTP server. ``url`` is where the page is."""

    daemon_threads = True

    def __init__(self, reviewer: Reviewer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.reviewer = reviewer
        self.reviewer_host = host
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {host} is in use (another review?); "
                                 "pass port=N, or port=0 for any free port") from None
            if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, OSError) and e.errno is None:
                raise ValueError(f"cannot listen on host={host!r}: {e.strerror or e}") from None
            raise

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in str(host) else host}:{port}/"


def start(path: str | os.PathLike, host: str = DEFAULT_HOST, port: int = 0,
          trash: str | os.PathLike | None = None) -> ReviewServer:
    """Start a reviewer in a background thread (tests, notebooks); ``shutdown()`` stops it."""
    srv = ReviewServer(Reviewer(path, trash), host, port)
    threading.Thread(target=srv.serve_forever, daemon=True, name="review").start()
    return srv


def serve(path: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          trash: str | os.PathLike | None = None) -> int:
    """Serve the reviewer until Ctrl-C (``swap-faceset review``)."""
    import socket

    try:
        socket.getaddrinfo(host, port)
    except socket.gaierror as e:
        raise ValueError(f"cannot listen on host={host!r}: {e.strerror}") from None
    rv = Reviewer(path, trash)
    srv = ReviewServer(rv, host, port)
    fs = rv.faceset()
    reach = ("only this machine can open it" if host in _LOOPBACK
             else "other machines on the network can open it too (no login): use host=127.0.0.1 to keep it local")
    print(f"reviewing {path} ({len(fs)} faces, {fs.size} px) at {srv.url}\n"
          f"bound to {host}: {reach}; removed faces go to {rv.trash}. Ctrl-C to stop.", flush=True)
    for p in rv.problems[:3]:
        print(f"warning: {p}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Reviewer", "ReviewServer", "ReviewError", "start", "serve",
           "default_trash_path"]
