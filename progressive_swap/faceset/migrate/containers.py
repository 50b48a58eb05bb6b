"""Where DeepFaceLab and FaceSwap hide metadata in image files: JPEG segments and PNG chunks,
parsed by hand (never by the peers' loaders), and image decoding with a size cap.

Facts (``shared/fixtures/migration/FORMATS.md``): a DeepFaceLab aligned JPG carries its pickle
in one APP15 segment (``FF EF``, at most 65,533 bytes, never split); a legacy DeepFaceLab PNG
in one private ``fcWp`` chunk; a FaceSwap face PNG its Python-literal text in one ``iTXt``
chunk with the keyword ``faceswap``, uncompressed.
"""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

from progressive_swap.faceset.embedded import png_intact
from progressive_swap.faceset.migrate.safe_load import DamagedMetadataError, UnsafeMetadataError

MAX_FILE_BYTES = 256 << 20
"""Largest face image read (a 2048 px PNG is about 12 MB)."""
MAX_IMAGE_SIDE = 8192
"""Largest side of an image decoded from another tool's files (decompression bombs)."""

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def jpeg_app15(data: bytes) -> tuple[bytes | None, int]:
    """The payload of a JPEG's APP15 segments: ``(payload or None, count)``.

    Walks the markers from SOI to SOS. More than one APP15 is returned as ``(None, count)``:
    DeepFaceLab writes exactly one, and its reader lets the last of several win, so a second one
    can hide a payload behind a benign first.
    """
    if data[:2] != b"\xff\xd8":
        raise DamagedMetadataError("not a JPEG file")
    i, found = 2, []
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise DamagedMetadataError(f"bad JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more metadata segments
            break
        (n,) = struct.unpack(">H", data[i + 2:i + 4])
        if n < 2 or i + 2 + n > len(data):
            raise DamagedMetadataError(f"truncated JPEG segment at byte {i}")
        if marker == 0xEF:
            found.append(data[i + 4:i + 2 + n])
        i += 2 + n
    if len(found) == 1:
        return found[0], 1
    return None, len(found)


def png_chunks(data: bytes, wanted: set[bytes]) -> list[tuple[bytes, bytes]]:
    """``[(type, payload)]`` of the chunks of ``wanted`` types, CRC-checked, in file order."""
    if data[:8] != _PNG_SIG:
        raise DamagedMetadataError("not a PNG file")
    i, out = 8, []
    while i + 12 <= len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        if i + 12 + n > len(data):
            raise DamagedMetadataError(f"truncated PNG chunk {kind!r}")
        if kind in wanted:
            body = data[i + 8:i + 8 + n]
            (crc,) = struct.unpack(">I", data[i + 8 + n:i + 12 + n])
            if zlib.crc32(kind + body) != crc:
                raise DamagedMetadataError(f"PNG chunk {kind.decode('latin-1')} fails its CRC")
            out.append((kind, body))
        if kind == b"IEND":
            break
        i += 12 + n
    return out


def png_itxt(payload: bytes) -> tuple[str, bytes]:
    """``(keyword, text)`` of an uncompressed ``iTXt`` chunk (a compressed one is refused)."""
    try:
        keyword, rest = payload.split(b"\0", 1)
        flag, method = rest[0], rest[1]
        _lang, rest = rest[2:].split(b"\0", 1)
        _translated, text = rest.split(b"\0", 1)
    except (ValueError, IndexError):
        raise DamagedMetadataError("malformed iTXt chunk") from None
    if flag != 0 or method != 0:
        raise UnsafeMetadataError("a compressed iTXt text (FaceSwap never compresses it)")
    return keyword.decode("latin-1"), text


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR or a JPEG's SOFn, without decoding pixels."""
    if data[:8] == _PNG_SIG:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise DamagedMetadataError("PNG without IHDR")
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (n,) = struct.unpack(">H", data[i + 2:i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            if marker == 0xDA:
                break
            i += 2 + n
        raise DamagedMetadataError("JPEG without a frame header")
    raise DamagedMetadataError("neither PNG nor JPEG")


def decode_image(data: bytes, *, gray: bool = False, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Decode PNG/JPEG bytes after checking the declared size: RGB uint8 ``(H, W, 3)``, or
    ``(H, W)`` uint8/uint16 when ``gray``."""
    w, h = image_size(data)
    if not (0 < w <= max_side and 0 < h <= max_side):
        raise UnsafeMetadataError(f"an image of {w}x{h} px (cap {max_side})")
    if data[:8] == _PNG_SIG:
        # libpng reports damage on the process's stderr before OpenCV returns: check CRCs first.
        if not png_intact(data):
            raise DamagedMetadataError("damaged PNG (a chunk is cut short or fails its CRC)")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if gray else cv2.IMREAD_COLOR)
        if img is None:
            raise DamagedMetadataError("image data does not decode")
        if gray:
            return img[..., 0] if img.ndim == 3 else img
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    # JPEG through Pillow: libjpeg's warnings on damaged data become an exception, not stderr lines.
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.asarray(im.convert("L" if gray else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DamagedMetadataError(f"damaged JPEG ({why[:120]})") from None
    return np.ascontiguousarray(arr)
