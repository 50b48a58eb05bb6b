"""Self-describing face images: each image file carries its face's record.

The index (``index/shard_*.npz``) is the face set's table of contents; if it is lost or damaged,
the images still say what they are. Every writer of face images embeds the face's record:

- **PNG**: a ``tEXt`` chunk with keyword :data:`KEY` right after ``IHDR``, holding UTF-8-safe
  (ASCII) JSON. Any PNG tool shows it (``exiftool``, Pillow's ``Image.text``).
- **JPEG**: a comment segment (``COM``, ``FF FE``) right after ``SOI``: ``KEY``, a NUL, the JSON.

The JSON (:func:`record_to_json`) holds every per-face field of the index, with the floats
written by ``repr`` so they read back bit for bit, plus the set's face type:

``{"v": 1, "id", "source", "frame_index", "time" (null = unknown), "track", "identity",
"landmarks" (68 x [x, y], frame pixels), "matrix" (2 x 3, frame pixels -> crop [0, 1]),
"frame_size" ([w, h]), "landmarks_raw" (68 x [x, y] or null), "extra", "face_type"}``

Because the record sits at the front of the file, reading the first few kilobytes of an image
(:func:`read_head`) gives its size and its record without decoding pixels: the quick
consistency check (:mod:`progressive_swap.faceset.verify`) reads only that. Sets written before
records existed (format 0.1) have none; they still read and verify, and ``repair`` can rebuild
their index only from a readable index.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from progressive_swap.core.io import loads_json
from progressive_swap.faceset.format import ID_RE, FaceRecord

KEY = "progressive_swap.face"
VERSION = 1
HEAD_BYTES = 16384
"""Bytes :func:`read_head` reads first; a record is about 6 KB, so one read usually suffices."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR data, CRC
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def record_to_json(r: FaceRecord, face_type: str) -> bytes:
    """The record as compact ASCII JSON (floats exact; NaN time as null)."""
    def arr(a: Any) -> list | None:
        return None if a is None else np.asarray(a, np.float64).tolist()

    t = float(r.time)
    doc = {
        "v": VERSION, "id": r.id, "source": r.source, "frame_index": int(r.frame_index),
        "time": None if math.isnan(t) else t, "track": int(r.track), "identity": r.identity,
        "landmarks": arr(r.landmarks), "matrix": arr(r.matrix),
        "frame_size": [int(v) for v in r.frame_size], "landmarks_raw": arr(r.landmarks_raw),
        "extra": r.extra, "face_type": face_type,
    }
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def record_from_json(data: bytes) -> tuple[FaceRecord, str]:
    """``(record, face_type)`` from :func:`record_to_json`'s bytes.

    Raises:
        ValueError: one line, for JSON that is not a complete, finite record.
    """
    try:
        d = loads_json(data.decode("ascii"))  # depth-capped: a record nests 3 levels
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise ValueError("not a version 1 face record")
        lm = np.asarray(d["landmarks"], np.float64)
        m = np.asarray(d["matrix"], np.float64)
        raw = None if d["landmarks_raw"] is None else np.asarray(d["landmarks_raw"], np.float64)
        fw, fh = (int(v) for v in d["frame_size"])
        rec = FaceRecord(
            id=str(d["id"]), source=str(d["source"]), frame_index=int(d["frame_index"]),
            time=float("nan") if d["time"] is None else float(d["time"]), track=int(d["track"]),
            identity=str(d["identity"]), landmarks=lm, matrix=m, frame_size=(fw, fh),
            landmarks_raw=raw, extra=dict(d["extra"] or {}),
        )
        face_type = str(d["face_type"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable face record: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not ID_RE.fullmatch(rec.id):
        raise ValueError(f"face record has a bad id {rec.id!r}")
    for name, a, shape in (("landmarks", lm, (68, 2)), ("matrix", m, (2, 3)), ("landmarks_raw", raw, (68, 2))):
        if a is not None and (a.shape != shape or not np.isfinite(a).all()):
            raise ValueError(f"face record {rec.id}: {name} is not a finite {shape} array")
    if fw <= 0 or fh <= 0:
        raise ValueError(f"face record {rec.id}: frame_size must be positive")
    return rec, face_type


# --------------------------------------------------------------------------- file bytes


def embed(data: bytes, payload: bytes) -> bytes:
    """Insert ``payload`` (record JSON) into encoded PNG or JPEG bytes (see the module doc)."""
    if data.startswith(PNG_SIGNATURE):
        body = KEY.encode("latin-1") + b"\0" + payload
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        return data[:_IHDR_END] + chunk + data[_IHDR_END:]
    if data.startswith(b"\xff\xd8"):
        body = KEY.encode("latin-1") + b"\0" + payload
        if len(body) + 2 > 0xFFFF:
            raise ValueError("face record too large for a JPEG comment")
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + data[2:]
    raise ValueError("not PNG or JPEG data")


def strip(data: bytes) -> bytes:
    """PNG or JPEG bytes without their face record (damaged or not); other bytes unchanged."""
    prefix = KEY.encode("latin-1") + b"\0"
    if data.startswith(PNG_SIGNATURE):
        out, pos = [data[:8]], 8
        while pos + 12 <= len(data):
            n = struct.unpack(">I", data[pos:pos + 4])[0]
            end = min(pos + 12 + n, len(data))
            if not (data[pos + 4:pos + 8] == b"tEXt" and data[pos + 8:end].startswith(prefix)):
                out.append(data[pos:end])
            pos = end
        return b"".join(out) + data[pos:]
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
            n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
            if data[pos + 1] == 0xFE and data[pos + 4:pos + 2 + n].startswith(prefix):
                return data[:pos] + data[pos + 2 + n:]
            pos += 2 + n
    return data


def read_head(path: Path) -> bytes:
    """The first bytes of an image file: enough for its size and its record (the record chunk
    is read whole even when it runs past :data:`HEAD_BYTES`). Only a regular file is read (a
    device, FIFO or socket is an ``OSError``: a FIFO would block, ``/dev/zero`` never ends)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        head = f.read(HEAD_BYTES)
        first_chunk = head[_IHDR_END + 4:_IHDR_END + 8]
        if head.startswith(PNG_SIGNATURE) and first_chunk == b"tEXt":
            need = _IHDR_END + 12 + struct.unpack(">I", head[_IHDR_END:_IHDR_END + 4])[0]
            if need > len(head) and need < 1 << 24:
                head += f.read(need - len(head))
    return head


def parse_head(head: bytes) -> tuple[tuple[int, int] | None, bytes | None]:
    """``((width, height) or None, record payload or None)`` from the start of a PNG or JPEG.

    The size is None when the bytes are neither format or are cut short. A record chunk whose
    CRC does not match is returned as None (damaged), like a missing one.
    """
    if head.startswith(PNG_SIGNATURE):
        return _parse_png(head)
    if head.startswith(b"\xff\xd8"):
        return _parse_jpeg(head)
    return None, None


def _parse_png(head: bytes) -> tuple[tuple[int, int] | None, bytes | None]:
    if len(head) < _IHDR_END or head[12:16] != b"IHDR":
        return None, None
    w, h = struct.unpack(">II", head[16:24])
    payload = None
    pos = _IHDR_END
    while pos + 8 <= len(head):  # text chunks before the image data
        n = struct.unpack(">I", head[pos:pos + 4])[0]
        kind = head[pos + 4:pos + 8]
        if kind == b"IDAT" or pos + 12 + n > len(head):
            break
        body = head[pos + 8:pos + 8 + n]
        if kind == b"tEXt" and body.startswith(KEY.encode("latin-1") + b"\0"):
            crc = struct.unpack(">I", head[pos + 8 + n:pos + 12 + n])[0]
            if crc == zlib.crc32(kind + body):
                payload = body[len(KEY) + 1:]
            break
        pos += 12 + n
    return (w, h), payload


def _parse_jpeg(head: bytes) -> tuple[tuple[int, int] | None, bytes | None]:
    pos, size, payload = 2, None, None
    prefix = KEY.encode("latin-1") + b"\0"
    while pos + 4 <= len(head) and head[pos] == 0xFF:
        marker = head[pos + 1]
        if marker == 0xDA:  # start of scan: no more headers
            break
        n = struct.unpack(">H", head[pos + 2:pos + 4])[0]
        seg = head[pos + 4:pos + 2 + n]
        if marker == 0xFE and seg.startswith(prefix):
            payload = seg[len(prefix):]
        elif marker in _JPEG_SOF and len(seg) >= 5:
            h, w = struct.unpack(">HH", seg[1:5])
            size = (w, h)
        pos += 2 + n
    return size, payload


def png_intact(data: bytes) -> bool:
    """Whether PNG bytes are whole: every chunk's CRC matches and ``IEND`` is reached. Checked
    before decoding a file suspected of damage, because libpng reports a damaged file on the
    process's stderr (extra lines under a one-line error) before OpenCV returns."""
    if not data.startswith(PNG_SIGNATURE):
        return False
    pos = 8
    while pos + 12 <= len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + n
        if end > len(data):
            return False
        kind = data[pos + 4:pos + 8]
        if struct.unpack(">I", data[end - 4:end])[0] != zlib.crc32(data[pos + 4:end - 4]):
            return False
        if kind == b"IEND":
            return True
        pos = end
    return False


def file_record(path: Path) -> FaceRecord | None:
    """The record embedded in an image file, or None if it has none (or it is damaged)."""
    _, payload = parse_head(read_head(path))
    if payload is None:
        return None
    try:
        return record_from_json(payload)[0]
    except ValueError:
        return None
