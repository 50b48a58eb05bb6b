"""Layer files: PNG (8/16-bit, straight alpha, sRGB) and EXR (half, scene-linear, premultiplied).

Every file is written atomically (temporary file, fsync, rename: ``progressive_swap/core/io.py``) and
records its own conventions plus provenance in its metadata:

``alpha``             ``straight`` (PNG) or ``premultiplied`` (EXR); ``none`` for a finished PNG frame
``colorspace``        ``sRGB`` (PNG) or ``scene-linear`` (EXR; Rec.709/sRGB primaries, D65)
``software``          ``progressive_swap <version>``
``checkpoint_sha256`` hash of the checkpoint file the faces came from
``synthetic``         ``true``: the pixels are machine-generated
``progressive_swap``  all of the above plus the format and export settings, as one JSON string

PNG keeps them in ``iTXt`` chunks (and carries an ``sRGB`` chunk); EXR in string header
attributes. Input layers are float32 ``(H, W, 4)`` straight-alpha sRGB in [0, 1]
(``export/composite.py``). The files of scene-referred plates (``export/plate_layers.py``) state
their own: ``colorspace`` the layer space (EXR, TIFF) or the plate's (DPX layers, finished
frames), ``alpha`` ``premultiplied``, ``straight`` (DPX) or ``opaque`` (finished frames), in the
attributes and the ``progressive_swap`` JSON alike.
"""
from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from progressive_swap.core import align
from progressive_swap.core.io import atomic_write_bytes, atomic_write_text

FORMATS = {"png8": ".png", "png16": ".png", "exr": ".exr", "tiff": ".tif", "dpx": ".dpx"}
PLATE_FORMATS = ("exr", "tiff", "dpx")
"""Layer formats of scene-referred plates (``exr``, ``tiff``: the layer space, linear; ``dpx``: the
plate's own space; ``export/plate_layers.py``); ``tiff`` and ``dpx`` are for them only."""
EXR_WINDOWS = ("frame", "face")  # an EXR's data window: the whole frame (read right everywhere) or the face's box
CONVENTIONS = {  # by format; a scene-referred plate's files name their actual space (plate_layers.conventions)
    "png8": {"alpha": "straight", "colorspace": "sRGB", "bit_depth": 8},
    "png16": {"alpha": "straight", "colorspace": "sRGB", "bit_depth": 16},
    "exr": {"alpha": "premultiplied", "colorspace": "scene-linear", "bit_depth": "half"},
    "tiff": {"alpha": "premultiplied", "colorspace": "the layer space", "bit_depth": "float"},
    "dpx": {"alpha": "straight", "colorspace": "the plate's", "bit_depth": 16},
}


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] → linear light (IEC 61966-2-1 piecewise curve)."""
    x = np.asarray(x, np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light → sRGB encoding (inverse of :func:`srgb_to_linear`), clipped to [0, 1]."""
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055).astype(np.float32)


def file_metadata(fmt: str, provenance: dict[str, Any]) -> dict[str, str]:
    """String key/values written into a layer file of format ``fmt``.

    Args:
        fmt: ``png8``, ``png16`` or ``exr``.
        provenance: at least ``software`` and ``checkpoint_sha256``; everything is also stored
            under the ``progressive_swap`` key as JSON.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    conv = CONVENTIONS[fmt]
    full = {"alpha": conv["alpha"], "colorspace": conv["colorspace"], "format": fmt, "synthetic": True, **provenance}
    return {
        "alpha": conv["alpha"],
        "colorspace": conv["colorspace"],
        "software": str(provenance.get("software", "progressive_swap")),
        "checkpoint_sha256": str(provenance.get("checkpoint_sha256", "")),
        "synthetic": "true",
        "progressive_swap": json.dumps(full, sort_keys=True),
    }


# ----------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _itxt(key: str, text: str) -> bytes:
    # keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
    return _chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def add_png_text(png: bytes, text: dict[str, str], srgb: bool = True) -> bytes:
    """Insert ``iTXt`` chunks (and an ``sRGB`` chunk) right after a PNG's IHDR chunk.

    OpenCV cannot write text chunks; this small splice keeps its fast 16-bit encoder.
    """
    sig = b"\x89PNG\r\n\x1a\n"
    if png[:8] != sig or png[12:16] != b"IHDR":
        raise ValueError("not a PNG stream")
    end_ihdr = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    extra = _chunk(b"sRGB", b"\x00") if srgb else b""  # rendering intent: perceptual
    extra += b"".join(_itxt(k, v) for k, v in text.items())
    return png[:end_ihdr] + extra + png[end_ihdr:]


def encode_png(layer: np.ndarray, bits: int, text: dict[str, str], compression: int = 1) -> bytes:
    """Straight-alpha RGBA float layer → PNG bytes (8 or 16 bits per channel, sRGB)."""
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise ValueError(f"layer must be (H, W, 4), got {layer.shape}")
    scale, dtype = {8: (255.0, np.uint8), 16: (65535.0, np.uint16)}[bits]
    q = np.zeros(layer.shape, dtype)
    box = alpha_box(layer[..., 3])  # colour is 0 wherever alpha is (composite.face_layer_roi)
    q[box] = np.rint(np.clip(layer[box][..., [2, 1, 0, 3]], 0.0, 1.0) * scale)  # RGBA -> BGRA for OpenCV
    ok, buf = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise ValueError("PNG encoding failed")
    return add_png_text(buf.tobytes(), text)


# ----------------------------------------------------------------------------- EXR


def alpha_box(alpha: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns holding every non-zero alpha (empty slices for a transparent layer)."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if not len(rows):
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def encode_exr(layer: np.ndarray, text: dict[str, str], window: str = "frame") -> bytes:
    """Straight-alpha sRGB float layer → half-float EXR bytes, scene-linear, premultiplied.

    The display window is the whole frame. The data window is the whole frame too by default
    (``window="frame"``): every reader places the face right, also those that ignore the display
    window, and ZIP stores the transparent rows nearly for free. ``window="face"`` cuts it to the
    face's bounding box (every pixel with alpha > 0), for readers that honour data windows; a
    transparent layer then stores one transparent pixel at the origin.

    Args:
        layer: ``(H, W, 4)`` float32 straight-alpha sRGB in [0, 1].
        text: string header attributes (:func:`file_metadata`).
        window: ``frame`` or ``face`` (:data:`EXR_WINDOWS`).
    """
    import OpenEXR

    if layer.ndim != 3 or layer.shape[2] != 4:
        raise ValueError(f"layer must be (H, W, 4), got {layer.shape}")
    if window not in EXR_WINDOWS:
        raise ValueError(f"unknown EXR data window {window!r}; choose one of {', '.join(EXR_WINDOWS)}")
    h, w = layer.shape[:2]
    a = np.clip(layer[..., 3], 0.0, 1.0)
    rows, cols = alpha_box(a)
    if rows.stop == rows.start:
        rows, cols = slice(0, 1), slice(0, 1)
    # The transfer curve is costly: it runs on the face's box only.
    lin = srgb_to_linear(np.clip(layer[rows, cols, :3], 0.0, 1.0)) * a[rows, cols, None]
    box = np.concatenate([lin, a[rows, cols, None]], axis=-1).astype(np.float16)
    if window == "frame":
        full = np.zeros((h, w, 4), np.float16)
        full[rows, cols] = box
        box, rows, cols = full, slice(0, h), slice(0, w)
    # OpenEXR reads the buffer as is: a strided view (box[..., 0]) would be written as garbage.
    channels = {name: np.ascontiguousarray(box[..., c]) for c, name in enumerate("RGBA")}
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
        "displayWindow": ((0, 0), (w - 1, h - 1)),
        "dataWindow": ((cols.start, rows.start), (cols.stop - 1, rows.stop - 1)),  # inclusive (x, y)
        **text,
    }
    buf = io.BytesIO()
    OpenEXR.File(header, channels).write(buf)
    return buf.getvalue()


def read_exr(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An EXR's channels as float32 arrays over its whole display window (zero outside the data window)."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        h = f.header()
        (dx0, dy0), (dx1, dy1) = (np.asarray(v, int) for v in h["displayWindow"])
        (x0, y0), _ = (np.asarray(v, int) for v in h["dataWindow"])
        out = {}
        for name, ch in f.channels().items():
            full = np.zeros((dy1 - dy0 + 1, dx1 - dx0 + 1), np.float32)
            px = ch.pixels.astype(np.float32)
            full[y0 - dy0 : y0 - dy0 + px.shape[0], x0 - dx0 : x0 - dx0 + px.shape[1]] = px
            out[name] = full
    return out


# ----------------------------------------------------------------------------- files


def encode_layer(layer: np.ndarray, fmt: str, text: dict[str, str], exr_window: str = "frame") -> bytes:
    """Encode a straight-alpha sRGB layer ``(H, W, 4)`` as ``png8``, ``png16`` or ``exr`` bytes.

    PNG layers are always frame-sized; ``exr_window`` is the EXR's data window (:func:`encode_exr`).
    """
    if fmt == "png8":
        return encode_png(layer, 8, text)
    if fmt == "png16":
        return encode_png(layer, 16, text)
    if fmt == "exr":
        return encode_exr(layer, text, exr_window)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_layer(
    path: str | os.PathLike, layer: np.ndarray, fmt: str, text: dict[str, str], exr_window: str = "frame"
) -> Path:
    """Encode and write one layer file atomically; returns the path (``exr_window``: :func:`encode_exr`)."""
    path = Path(path)
    atomic_write_bytes(path, encode_layer(layer, fmt, text, exr_window))
    return path


def comp_metadata(provenance: dict[str, Any]) -> dict[str, str]:
    """String key/values of a finished (composited) frame: opaque sRGB, the rest as a layer's."""
    text = file_metadata("png8", {**provenance, "space": "composite over the plate"})
    full = {**json.loads(text["progressive_swap"]), "alpha": "none"}
    return {**text, "alpha": "none", "progressive_swap": json.dumps(full, sort_keys=True)}


def write_comp(path: str | os.PathLike, rgb: np.ndarray, text: dict[str, str]) -> Path:
    """Write a finished frame, uint8 ``(H, W, 3)`` RGB (the plate's bit depth), as an sRGB PNG atomically."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"a finished frame must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    path = Path(path)
    atomic_write_bytes(path, add_png_text(buf.tobytes(), text))
    return path


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (a plate attribute that is NaN) as ``None``, so it
    writes as strict JSON (``JSON.parse`` and most non-Python readers refuse a bare ``NaN``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_sidecar(path: str | os.PathLike, info: dict[str, Any]) -> None:
    """Per-frame JSON (matrices, landmarks, tracks, identity, files), written atomically, strict
    (non-finite numbers as ``null``; ``allow_nan=False``)."""
    atomic_write_text(path, json.dumps(strict_json(info), indent=1, allow_nan=False) + "\n")


def inverse_matrix_px(m_norm: np.ndarray, size: int) -> np.ndarray:
    """``(2, 3)`` crop pixels → frame pixels for a crop of side ``size`` (the patch's un-warp)."""
    return align.invert(align.crop_matrix(m_norm, size))


def read_layer(path: str | os.PathLike) -> np.ndarray:
    """Read a layer file back as float32 ``(H, W, 4)`` straight-alpha sRGB (resume and previews).

    PNG is read with OpenCV (16-bit safe); EXR is un-premultiplied and converted to sRGB.
    """
    path = Path(path)
    if path.suffix.lower() == ".exr":
        ch = read_exr(path)
        a = ch["A"]
        lin = np.stack([ch[c] for c in "RGB"], axis=-1)
        rgb = np.divide(lin, a[..., None], out=np.zeros_like(lin), where=a[..., None] > 0)
        return np.concatenate([linear_to_srgb(rgb), a[..., None]], axis=-1)
    q = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if q is None or q.ndim != 3 or q.shape[2] != 4:
        raise ValueError(f"cannot read layer {str(path)!r}")
    scale = 65535.0 if q.dtype == np.uint16 else 255.0
    return q[..., [2, 1, 0, 3]].astype(np.float32) / np.float32(scale)
