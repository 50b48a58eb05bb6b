"""Face-set building blocks: the record type, the header, names, and the image/mask codecs.

The public API lives in :mod:`progressive_swap.faceset`; this module holds the pieces the
reader and the writer share. Layout and conventions: ``docs/faceset.md``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from progressive_swap.core.io import _UMASK, atomic_write_json, fsync_dir, make_temp, read_regular
from progressive_swap.core.landmarks import face_type as _face_type
from progressive_swap.faceset.index import FaceSetError

FORMAT_VERSION = 1
"""Integer in ``faceset.json``. Readers refuse newer versions; bump it on any layout change."""

KIND = "progressive_swap.faceset"
HEADER_NAME = "faceset.json"
IMAGE_DIR, MASK_DIR, INDEX_DIR, LOCK_NAME = "images", "masks", "index", ".lock"
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg"}
MAX_SIZE = 2048
MIN_JPEG_QUALITY = 95

USER_PREFIX = "user_"
"""Mask names starting with this hold hand-edited masks (e.g. ``user_occlusion`` overrides
``occlusion``); tools must never overwrite them automatically."""

ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
"""A face id: :data:`progressive_swap.core.io.NAME_RE`, matched whole (``\\Z``: a trailing newline fails)."""
MASK_NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_]{0,63}\Z")
TMP_SUFFIX = ".tmp"

CROP_SPACES = ("srgb", "acescct")
"""What the stored crops' values mean (header ``crop_space``; absent in older sets: ``srgb``).
``srgb``: 8-bit sRGB-encoded pictures: the footage itself for 8-bit footage, the plate's sRGB
view (``footage/colour.py``) for scene-referred plates. ``acescct``: **16-bit PNG** crops in
ACEScct, the log working space that holds linear 0 … 222 in [0, 1], so a float plate's
highlights and shadows survive (``swap-extract crop_space=acescct``). A model trained on a set
is fed crops in its space at export (``docs/plates.md``)."""
DEFAULT_CROP_SPACE = "srgb"
CROP_DTYPES = {"srgb": np.uint8, "acescct": np.uint16}
"""The stored sample type of each crop space (8-bit for sRGB pictures, 16-bit for ACEScct)."""


def crop_space_of(header: dict[str, Any]) -> str:
    """The header's ``crop_space`` (:data:`DEFAULT_CROP_SPACE` when a set predates it)."""
    return header.get("crop_space") or DEFAULT_CROP_SPACE


def check_crop_space(value: Any) -> str:
    """``value`` if it names a crop space (:data:`CROP_SPACES`); one-line ``ValueError`` otherwise."""
    if value not in CROP_SPACES:
        raise ValueError(f"crop_space must be one of {', '.join(CROP_SPACES)}, got {value!r}")
    return value


def software_version() -> str:
    """``"progressive_swap <version>"`` for the ``created_by`` header field."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        v = version("progressive-swap")
    except (ImportError, PackageNotFoundError):
        v = "unknown"
    return f"progressive_swap {v}"


@dataclass
class FaceRecord:
    """Metadata of one face in a set.

    Convention: ``landmarks`` and ``landmarks_raw`` are ``(68, 2)`` pixel coordinates in the
    source frame (x right, y down, pixel centres at integers). ``matrix`` is a ``(2, 3)``
    similarity mapping frame pixels to *normalised crop coordinates* ``u`` in [0, 1]; in a
    crop of size S the pixel coordinate is ``u * S - 0.5``. For an anamorphic plate
    (``extra["pixel_aspect"]`` = its ``PixelAspectRatio`` ``a``, written only when not 1) all
    three stay in the plate's own, squeezed pixels, and ``matrix`` is the similarity fitted on
    de-squeezed pixels ``x' = a x + (a - 1) / 2`` composed with that de-squeeze: an affine that
    cuts an undistorted crop from the plate as it is (``core/align.py``).

    Attributes:
        id: unique in the set; also the file stem, so ``[A-Za-z0-9][A-Za-z0-9._-]*`` (<= 128).
        source: source file path or name.
        frame_index: frame number in the source.
        time: seconds from the stream's pts; NaN if unknown.
        track: track id within the source; -1 if none.
        identity: identity label (e.g. ``"A"``); "" takes the writer's default identity.
        landmarks: ``(68, 2)`` smoothed landmarks the crop was made from (frame px).
        matrix: ``(2, 3)`` float64 frame px -> crop [0, 1].
        frame_size: source frame ``(w, h)`` in pixels.
        landmarks_raw: ``(68, 2)`` unsmoothed detector output, or None.
        extra: small JSON-able per-face info (e.g. phantom parameters).
    """

    id: str
    source: str
    frame_index: int
    time: float
    track: int
    identity: str
    landmarks: np.ndarray
    matrix: np.ndarray
    frame_size: tuple[int, int]
    landmarks_raw: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaceRecord):
            return NotImplemented

        def same(a: Any, b: Any) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)

        return (
            (self.id, self.source, int(self.frame_index), int(self.track), self.identity)
            == (other.id, other.source, int(other.frame_index), int(other.track), other.identity)
            and (self.time == other.time or (math.isnan(self.time) and math.isnan(other.time)))
            and tuple(self.frame_size) == tuple(other.frame_size)
            and same(self.landmarks, other.landmarks)
            and same(self.matrix, other.matrix)
            and same(self.landmarks_raw, other.landmarks_raw)
            and self.extra == other.extra
        )


def check_record(r: FaceRecord) -> None:
    """Raise a one-line ``ValueError`` if a record cannot be stored."""
    if not isinstance(r.id, str) or not ID_RE.match(r.id):
        raise ValueError(f"bad face id {r.id!r}: use letters, digits, '.', '_', '-' (max 128)")
    for name, a in (("landmarks", r.landmarks), ("landmarks_raw", r.landmarks_raw)):
        if a is None and name == "landmarks_raw":
            continue
        a = np.asarray(a)
        if a.shape != (68, 2) or not np.all(np.isfinite(a)):
            raise ValueError(f"face {r.id}: {name} must be finite (68, 2), got {a.shape}")
    m = np.asarray(r.matrix)
    if m.shape != (2, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"face {r.id}: matrix must be a finite (2, 3) array, got {m.shape}")
    if len(tuple(r.frame_size)) != 2 or min(int(v) for v in r.frame_size) <= 0:
        raise ValueError(f"face {r.id}: frame_size must be (w, h) > 0, got {r.frame_size!r}")
    if not isinstance(r.source, str) or not isinstance(r.identity, str):
        raise ValueError(f"face {r.id}: source and identity must be strings")
    try:
        json.dumps(r.extra, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"face {r.id}: extra is not JSON-able: {e}") from None


def check_mask_name(name: str) -> str:
    if not isinstance(name, str) or not MASK_NAME_RE.match(name):
        raise ValueError(f"bad mask name {name!r}: use lower-case letters, digits and '_'")
    return name


# --------------------------------------------------------------------------- header


def make_header(face_type: str, size: int, image_format: str, jpeg_quality: int,
                png_compression: int, identity: str | None,
                crop_space: str = DEFAULT_CROP_SPACE) -> dict[str, Any]:
    """Validate creation options and build the ``faceset.json`` dict."""
    _face_type(face_type)
    check_crop_space(crop_space)
    if not isinstance(size, int) or isinstance(size, bool) or size % 16 or not 16 <= size <= MAX_SIZE:
        raise ValueError(f"size must be a multiple of 16 in [16, {MAX_SIZE}], got {size!r}")
    fmt = {"jpeg": "jpg"}.get(str(image_format).lower(), str(image_format).lower())
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if fmt == "jpg" and crop_space != DEFAULT_CROP_SPACE:
        raise ValueError(f"crop_space={crop_space} crops are 16-bit PNG; image_format=jpg holds 8 bits only")
    if fmt == "jpg" and not MIN_JPEG_QUALITY <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in [{MIN_JPEG_QUALITY}, 100], got {jpeg_quality!r}")
    if not 0 <= int(png_compression) <= 9:
        raise ValueError(f"png_compression must be in [0, 9], got {png_compression!r}")
    if identity is not None and not isinstance(identity, str):
        raise ValueError(f"identity must be a string, got {identity!r}")
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "face_type": face_type,
        "crop_space": crop_space,
        "size": size,
        "image_format": fmt,
        "jpeg_quality": int(jpeg_quality),
        "png_compression": int(png_compression),
        "mask_encoding": "png16",
        "identity": identity,
        "created_by": software_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_header(root: Path, header: dict[str, Any]) -> None:
    atomic_write_json(root / HEADER_NAME, header)


def read_header(root: Path) -> dict[str, Any]:
    """Read and validate ``faceset.json``.

    Raises:
        FaceSetError: one line: missing/corrupt header, unknown or newer version, bad fields.
    """
    path = root / HEADER_NAME
    if not root.is_dir():
        raise FaceSetError(f"face set {str(root)!r} does not exist or is not a directory")
    try:
        header = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        if (root / IMAGE_DIR).is_dir():  # the files of a set whose header is gone
            raise FaceSetError(f"face set {str(root)!r}: {HEADER_NAME} is missing; "
                               f"run swap-faceset repair {root}") from None
        raise FaceSetError(f"{str(root)!r} is not a face set: {HEADER_NAME} is missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FaceSetError(f"corrupt face set header {str(path)!r}: {str(e).splitlines()[0]}; "
                           f"run swap-faceset repair {root}") from None
    if not isinstance(header, dict) or header.get("kind") != KIND:
        raise FaceSetError(f"corrupt face set header {str(path)!r}: not a {KIND} header; "
                           f"run swap-faceset repair {root}")
    v = header.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise FaceSetError(f"face set {str(root)!r}: unknown format_version {v!r}")
    if v > FORMAT_VERSION:
        raise FaceSetError(
            f"face set {str(root)!r} has format_version {v}, newer than this progressive_swap "
            f"reads ({FORMAT_VERSION}); upgrade progressive_swap"
        )
    try:
        make_header(header["face_type"], header["size"], header["image_format"],
                    header.get("jpeg_quality", 95), header.get("png_compression", 1),
                    header.get("identity"), crop_space_of(header))
    except KeyError as e:
        raise FaceSetError(f"corrupt face set header {str(path)!r}: missing {e.args[0]!r}; "
                           f"run swap-faceset repair {root}") from None
    except ValueError as e:
        raise FaceSetError(f"face set {str(root)!r}: {e}") from None
    return header


# --------------------------------------------------------------------------- codecs


def check_image(image: np.ndarray, size: int, crop_space: str = DEFAULT_CROP_SPACE) -> np.ndarray:
    """A face crop as the set stores it: uint8 ``(S, S, 3)`` RGB for ``srgb`` sets; uint16 for
    ``acescct`` sets, which also take float32 values in [0, 1] (quantised to 1/65535)."""
    image = np.asarray(image)
    want = CROP_DTYPES[crop_space]
    if want is np.uint16 and image.dtype.kind == "f" and image.shape == (size, size, 3):
        if not np.isfinite(image).all():
            raise ValueError("face image has non-finite values")
        image = np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    if image.dtype != want or image.shape != (size, size, 3):
        raise ValueError(f"face image must be {np.dtype(want).name} ({size}, {size}, 3) RGB"
                         f"{' (or float in [0, 1])' if want is np.uint16 else ''}, got {image.dtype}{image.shape}")
    return image


def encode_image(image: np.ndarray, size: int, header: dict[str, Any]) -> bytes:
    """uint8 (uint16 for ``acescct`` sets) ``(S, S, 3)`` RGB -> PNG/JPEG bytes (cv2; BGR on the wire)."""
    bgr = cv2.cvtColor(check_image(image, size, crop_space_of(header)), cv2.COLOR_RGB2BGR)
    if header["image_format"] == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(header["jpeg_quality"])]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(header.get("png_compression", 1))]
    ok, buf = cv2.imencode(IMAGE_FORMATS[header["image_format"]], bgr, params)
    if not ok:
        raise ValueError("image encoding failed")
    return buf.tobytes()


MAX_FILE_BYTES = 256 << 20
"""Face image and mask files larger than this are not read (a 2048 px 16-bit PNG is about 25 MB)."""


def read_face_file(path: Path, what: str = "face image") -> bytes:
    """The bytes of an image or mask file of a set: a regular file (a symlink to one is fine),
    at most :data:`MAX_FILE_BYTES`; never a device, FIFO or socket (``/dev/zero`` would be read
    until memory runs out, a FIFO would hang). ``FileNotFoundError`` passes through; anything
    else is a one-line :class:`FaceSetError`."""
    try:
        return read_regular(path, MAX_FILE_BYTES, what)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FaceSetError(str(e) if e.filename is None and not e.strerror else
                           f"{what} {str(path)!r} is unreadable: {e.strerror or e}") from None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` a PNG's IHDR or a JPEG's SOF declares, read without decoding (None:
    neither, or cut short)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    pos = 2 if data.startswith(b"\xff\xd8") else len(data)
    while pos + 9 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        if data[pos + 1] in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return w, h
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return None


def decode_image(data: bytes, size: int, where: str) -> np.ndarray:
    """PNG/JPEG bytes -> ``(S, S, 3)`` RGB as stored (uint8; uint16 for a 16-bit PNG); one-line
    FaceSetError if unreadable. The size in the file's header (PNG IHDR, JPEG SOF) is checked
    first, so a small file declaring a huge picture is never decoded."""
    wh = _header_size(data)
    if wh is not None and wh != (size, size):
        raise FaceSetError(f"corrupt face image {where} (its header says {wh[0]}x{wh[1]}, expected {size}x{size})")
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if bgr is None or bgr.shape != (size, size, 3):
        shape = None if bgr is None else bgr.shape
        raise FaceSetError(f"corrupt face image {where} (decoded shape {shape}, expected {size}x{size}x3)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def mask_to_u16(mask: np.ndarray, size: int) -> np.ndarray:
    """Check a ``(S, S)`` mask and convert it to uint16 (65535 = 1).

    Accepts float (values in [0, 1], soft allowed; quantised to 1/65535), bool, uint8
    (0..255, scaled exactly by 257) or uint16 (kept as is).
    """
    m = np.asarray(mask)
    if m.shape != (size, size):
        raise ValueError(f"mask must be ({size}, {size}), got {m.shape}")
    if m.dtype == np.bool_:
        return m.astype(np.uint16) * np.uint16(65535)
    if m.dtype == np.uint8:
        return m.astype(np.uint16) * np.uint16(257)
    if m.dtype == np.uint16:
        return np.ascontiguousarray(m)
    if np.issubdtype(m.dtype, np.floating):
        if not np.all(np.isfinite(m)) or m.min() < -1e-6 or m.max() > 1 + 1e-6:
            raise ValueError("float mask values must be finite and in [0, 1]")
        return np.rint(np.clip(m.astype(np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
    raise ValueError(f"mask dtype must be float, bool, uint8 or uint16, got {m.dtype}")


def encode_mask(mask: np.ndarray, size: int) -> bytes:
    """A ``(S, S)`` mask (see :func:`mask_to_u16`) -> lossless 16-bit grayscale PNG bytes."""
    ok, buf = cv2.imencode(".png", mask_to_u16(mask, size), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("mask encoding failed")
    return buf.tobytes()


def decode_mask(data: bytes, size: int, where: str) -> np.ndarray:
    """16-bit (or 8-bit) grayscale PNG bytes -> float32 ``(S, S)`` in [0, 1] (header size checked first)."""
    wh = _header_size(data)
    if wh is not None and wh != (size, size):
        raise FaceSetError(f"corrupt mask {where} (its header says {wh[0]}x{wh[1]}, expected {size}x{size})")
    m = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if m is None or m.shape != (size, size) or m.dtype not in (np.uint8, np.uint16):
        raise FaceSetError(f"corrupt mask {where}")
    scale = 65535.0 if m.dtype == np.uint16 else 255.0
    return m.astype(np.float32) / np.float32(scale)


# --------------------------------------------------------------------------- files


def image_path(root: Path, header: dict[str, Any], face_id: str) -> Path:
    return root / IMAGE_DIR / (face_id + IMAGE_FORMATS[header["image_format"]])


def mask_path(root: Path, name: str, face_id: str) -> Path:
    return root / MASK_DIR / name / (face_id + ".png")


def write_file_durable(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to a fresh temporary file beside ``path`` (created exclusively under
    :data:`~progressive_swap.core.io.TEMP_PREFIX`, never through a planted symlink), fsync
    (unless ``fsync`` is False: the caller flushes later), rename over ``path``.

    Unlike :func:`progressive_swap.core.io.atomic_write` the directory is not fsynced here: the
    writer fsyncs each directory once per batch, before committing the batch's index shard.
    A crash leaves at most one stray temporary file per target, removed by the next writer.
    """
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_file_atomic(path: Path, data: bytes) -> None:
    """:func:`write_file_durable` plus a directory fsync: one durable, atomic file."""
    write_file_durable(path, data)
    fsync_dir(path.parent)
