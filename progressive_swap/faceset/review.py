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
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from progressive_swap import faceset as F
from progressive_swap.core.io import loads_json
from progressive_swap.faceset.reviewer import CONTENT_TYPES, Reviewer, ReviewError, default_trash_path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
"""Thumbnail side in pixels."""
STATIC = Path(__file__).with_name("review_static")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


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
        # No other page may frame this one (clickjacking: a hidden frame clicking Remove or Move).
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        if self.command in ("PUT", "POST"):  # its body may be unread: never parse it as the next request
            self.close_connection = True
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
        """The request body, read by its ``Content-Length``, which must be there and be a
        non-negative integer: ``rfile.read(-1)`` would wait for the client to hang up."""
        length = (self.headers.get("Content-Length") or "").strip()
        if not (length.isascii() and length.isdigit()):  # missing, negative, not a number (chunked bodies too)
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"a request with a body needs a Content-Length >= 0, "
                                                      f"got {length[:20]!r}")
        n = int(length)
        if n > 64 * 2**20:
            raise ReviewError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
        return self.rfile.read(n) if n else b""

    def _json_body(self) -> dict[str, Any]:
        """The body as a JSON object (``{}`` when empty)."""
        try:
            body = loads_json(self._body() or b"{}")  # nesting capped: a deep body is 400, not a crash
        except (ValueError, UnicodeDecodeError):
            raise ReviewError(HTTPStatus.BAD_REQUEST, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise ReviewError(HTTPStatus.BAD_REQUEST, f"request body must be a JSON object, not {type(body).__name__}")
        return body

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
                return self._send(200, html.encode(), CONTENT_TYPES[".html"])
            if method == "GET" and len(parts) == 2 and parts[0] == "static":
                f = STATIC / parts[1]
                if "/" in parts[1] or parts[1].startswith(".") or not f.is_file():
                    raise ReviewError(HTTPStatus.NOT_FOUND, "no such file")
                return self._send(200, f.read_bytes(), CONTENT_TYPES.get(f.suffix, "application/octet-stream"))
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
            if method == "GET" and len(parts) == 3 and parts[:2] == ["api", "polygons"]:
                return self._json(rv.polygons(parts[2]))
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
                body = self._json_body()
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
