"""Layers for scene-referred plates (EXR, float TIFF, DPX): cropped from the plate's own values,
written in linear light (the frame's layer space: the plate's own when it is scene-linear, else
the config's scene_linear; DPX layers in the plate's space, straight), finished frames back in
the plate's space.

The colour path (``footage/colour.py``): plate values → working space, the model's crop space
(``srgb``: the sRGB view the extractor cropped its faces from, clipped to [0, 1] as there;
``acescct`` only for a model whose face sets say so) → aligned crop (float32, no 8-bit step) →
the network → un-warped layer in the working space → layer space → a half-float EXR,
premultiplied, with the plate's data and display windows, its own attributes (timecode, frame
rate, pixel aspect, …) and ``chromaticities``.

Convention: layers here are float32 ``(H, W, 4)`` over the plate's data window, colour in the
named space, alpha straight until :func:`to_plate_layer` premultiplies it; compositing is
``layer + plate * (1 - a)`` on premultiplied values in the layer space (linear light), as a
compositor's *over* (:func:`finished_frame`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from progressive_swap.core import align
from progressive_swap.core.io import atomic_path
from progressive_swap.export.writers import alpha_box
from progressive_swap.footage.colour import CHROMATICITIES  # noqa: F401 - re-exported: layers' chromaticities
from progressive_swap.footage.plates import oiio

_NOT_COPIED = ("chromaticities", "oiio:ColorSpace", "compression", "PixelAspectRatio", "name")


def scene_referred(frame) -> bool:
    """Whether a frame's layers take the plate path (a scene-referred plate: EXR, float TIFF, DPX)."""
    return getattr(frame, "plate", None) is not None and frame.colour is not None and frame.colour.scene


def working_plate(frame) -> np.ndarray:
    """The frame's plate in the working space, float32 ``(H, W, 3)`` (cached on the frame)."""
    cached = getattr(frame, "_working", None)
    if cached is None:
        # NaN and inf in a plate (a bad render, a broken pixel) are set to 0 (+inf to 1) here, as
        # the extractor does: a crop with one NaN makes the network's whole face NaN.
        cached = np.nan_to_num(frame.colour.to_working(frame.plate), nan=0.0, posinf=1.0, neginf=0.0)
        frame._working = cached
    return cached


def crop_working(frame, matrix: np.ndarray, size: int) -> np.ndarray:
    """An aligned crop of the plate in the working space, float32 ``(S, S, 3)`` in [0, 1].

    In the sRGB view's space (models of ``srgb`` crops) it is the crop the extractor stores for
    this face, before its 8-bit rounding: the view clipped to [0, 1], then
    :func:`progressive_swap.core.align.warp_to_crop` with the extractor's interpolation
    (bilinear). In ACEScct, cubic where the crop enlarges the face; values outside [0, 1] (linear
    above 222) are clipped, as the network's input range.
    """
    up = align.matrix_scale(align.crop_matrix(matrix, size)) >= 1.0
    interpolation = cv2.INTER_CUBIC if up and not frame.colour.clipped else cv2.INTER_LINEAR
    crop = align.warp_to_crop(working_plate(frame), matrix, size, interpolation)
    return np.clip(crop, 0.0, 1.0).astype(np.float32)


def layer_space(frame, fmt: str = "exr") -> str:
    """The colour space a layer file of ``fmt`` holds: the frame's layer space (scene-linear,
    ``PlateColour.for_layers``) for EXR and TIFF; the plate's own for DPX, whose 16-bit codes hold
    0–1 and whose straight alpha is right in a log space too."""
    return frame.colour.plate if fmt == "dpx" else frame.colour.layer_space


def to_plate_layer(layer: np.ndarray, frame, fmt: str = "exr") -> np.ndarray:
    """Straight-alpha working-space layer ``(H, W, 4)`` → premultiplied layer in the space of a
    ``fmt`` file (:func:`layer_space`), float32."""
    out = np.zeros_like(layer, dtype=np.float32)
    box = alpha_box(layer[..., 3])
    a = layer[box][..., 3:4]
    col = frame.colour.convert(layer[box][..., :3], frame.colour.working, layer_space(frame, fmt))
    out[box] = np.concatenate([col * a, a], -1)
    return out


def composite(plate: np.ndarray, layers: list[np.ndarray]) -> np.ndarray:
    """Premultiplied layers over the plate (all in one space), the first at the bottom: ``L + P (1 - a)``."""
    out = np.array(plate, np.float32, copy=True)
    for layer in layers:
        a = layer[..., 3:4]
        out = layer[..., :3] + out * (1.0 - a)
    return out


def finished_frame(frame, layers: list[np.ndarray]) -> np.ndarray:
    """The finished frame in the plate's space: premultiplied layers in the frame's layer space
    (linear light) over the plate converted to that space, then converted back; the plain
    :func:`composite` when the plate is that space."""
    c = frame.colour
    if c.layer_space == c.plate:
        return composite(frame.plate, layers)
    return c.convert(composite(c.convert(frame.plate, c.plate, c.layer_space), layers), c.layer_space, c.plate)


def _attributes(info) -> dict:
    return {k: v for k, v in (info.attributes if info is not None else {}).items() if k not in _NOT_COPIED}


LAYER_FILES = {  # format → (extension, stored type, alpha): what :func:`encode_plate_exr` writes
    "exr": (".exr", "half", "premultiplied"),
    "tiff": (".tif", "float", "premultiplied"),
    "dpx": (".dpx", "uint16", "straight"),
}
OPAQUE = "opaque"  # a finished frame's ``alpha``: an alpha channel of 1 everywhere (nothing to premultiply)


def conventions(fmt: str, space: str, opaque: bool = False) -> dict:
    """What a file :func:`encode_plate_exr` writes holds, as sidecars and ``export.json`` record it
    (``alpha``, ``colorspace``, ``bit_depth``): a layer of ``fmt`` in ``space``, or (``opaque``) a
    finished frame."""
    _, stored, alpha = LAYER_FILES[fmt]
    return {"alpha": OPAQUE if opaque else alpha, "colorspace": space, "bit_depth": {"uint16": 16}.get(stored, stored)}


def file_text(text: dict[str, str], fmt: str, space: str, alpha: str) -> dict[str, str]:
    """``text`` (:func:`~progressive_swap.export.writers.file_metadata`, made for the export's
    format) stating what this file is: ``alpha``, ``colorspace`` and, in the ``progressive_swap``
    JSON, ``format`` too, so the embedded conventions agree with the file's own attributes."""
    out = {**text, "alpha": alpha, "colorspace": space}
    if "progressive_swap" in text:
        full = {**json.loads(text["progressive_swap"]), "alpha": alpha, "colorspace": space, "format": fmt}
        out["progressive_swap"] = json.dumps(full, sort_keys=True)
    return out


def encode_plate_exr(path: str | os.PathLike, layer: np.ndarray, frame, text: dict[str, str],
                     fmt: str = "exr", space: str = "", opaque: bool = False) -> Path:
    """Write a premultiplied plate-space layer as a half-float EXR (ZIP), atomically; or, asked
    for, a float TIFF (ZIP, premultiplied: associated alpha) or a 16-bit DPX (**straight**
    alpha, values clipped to the code range 0–1: for log plates, where premultiplying the codes
    would be wrong).

    TIFF and DPX keep the data window's origin but not the display window; DPX keeps the
    timecode; both lose other attributes, which the frame's sidecar (``meta/face.N.json``,
    ``plate``) holds for every format.

    The data and display windows are the plate's (an overscan plate keeps both), its own
    attributes are copied (timecode, frame rate, pixel aspect, ...; ``PixelAspectRatio`` is the
    value given in its place where ``frame.pixel_aspect`` holds one), ``chromaticities`` names the
    plate space's primaries where known, ``oiio:ColorSpace`` and ``colorspace`` name it, and
    ``text`` adds this project's provenance; its ``alpha``, ``colorspace`` and the ``progressive_swap``
    JSON's ``format`` are set to this file's (:func:`file_text`).

    Args:
        path: the ``.exr`` to write.
        layer: float32 ``(H, W, 4)`` premultiplied RGBA over the plate's data window.
        frame: the :class:`~progressive_swap.export.frames.FrameIn` (plate info and colour).
        text: string attributes (:func:`~progressive_swap.export.writers.file_metadata`).
        space: the colour space ``layer`` is in (named on the file); ``""``: the plate's.
        opaque: a finished frame (alpha 1 everywhere): ``alpha`` says ``opaque``.
    """
    lib = oiio()
    path = Path(path)
    h, w = layer.shape[:2]
    info, space = frame.info, space or frame.colour.plate
    ext, stored, alpha = LAYER_FILES[fmt]
    stamp = OPAQUE if opaque else alpha
    spec = lib.ImageSpec(w, h, 4, stored)
    spec.channelnames = ("R", "G", "B", "A")
    spec.alpha_channel = 3
    if info is not None:
        spec.x, spec.y = info.data_window[:2]
        spec.full_x, spec.full_y, spec.full_width, spec.full_height = info.display_window
    for k, v in _attributes(info).items():
        _set(spec, lib, k, v)
    given = getattr(frame, "pixel_aspect", None)  # pixel_aspect=: the aspect the layer was made at
    if given is not None:
        spec.attribute("PixelAspectRatio", float(given))
    elif info is not None and "PixelAspectRatio" in info.attributes:
        spec.attribute("PixelAspectRatio", float(info.attributes["PixelAspectRatio"]))
    chroma = CHROMATICITIES.get(space)
    if chroma is not None:
        spec.attribute("chromaticities", lib.TypeDesc("float[8]"), chroma)
    if fmt == "dpx":
        spec.attribute("oiio:BitsPerSample", 16)
    else:
        spec.attribute("compression", "zip")
    spec.attribute("oiio:ColorSpace", space)
    for k, v in file_text(text, fmt, space, stamp).items():
        spec.attribute(k, str(v))
    px = np.ascontiguousarray(layer.astype(np.float32))
    if alpha == "straight":
        a = px[..., 3:4]
        px[..., :3] = np.clip(np.divide(px[..., :3], a, out=np.zeros_like(px[..., :3]), where=a > 0), 0.0, 1.0)
    with atomic_path(path, suffix=ext) as tmp:  # the suffix picks OpenImageIO's writer
        out = lib.ImageOutput.create(str(tmp))
        if out is None or not out.open(str(tmp), spec):
            raise OSError(f"cannot write {path.name}: {lib.geterror() or (out and out.geterror())}")
        ok = out.write_image(px)
        err = out.geterror()
        out.close()
        if not ok:
            raise OSError(f"cannot write {path.name}: {err}")
    return path


def _set(spec, lib, key: str, value) -> None:
    """Copy one plate attribute (JSON-friendly value) onto a layer's spec, keeping its type where it matters."""
    if key == "smpte:TimeCode" and isinstance(value, list):
        spec.attribute(key, lib.TypeDesc("timecode"), [int(v) for v in value])
    elif key in ("FramesPerSecond",) and isinstance(value, list):
        spec.attribute(key, lib.TypeDesc("rational"), [int(v) for v in value])
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        spec.attribute(key, value)
    elif isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        spec.attribute(key, lib.TypeDesc(f"float[{len(value)}]"), value)
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        spec.attribute(key, lib.TypeDesc(f"int[{len(value)}]"), value)
    else:
        spec.attribute(key, json.dumps(value))


def read_plate_layer(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """A layer written by :func:`encode_plate_exr`: premultiplied RGBA float32 over its data window
    (a DPX's straight alpha is premultiplied here), and its attributes."""
    lib = oiio()
    buf = lib.ImageBuf(str(path))
    if buf.has_error:
        raise ValueError(f"cannot read layer {str(path)!r}: {buf.geterror()}")
    spec = buf.spec()
    px = np.asarray(buf.get_pixels(lib.FLOAT), np.float32).reshape(spec.height, spec.width, spec.nchannels)
    attrs = {a.name: a.value for a in spec.extra_attribs}
    if Path(path).suffix.lower() == ".dpx":  # written with straight alpha (LAYER_FILES)
        px = np.concatenate([px[..., :3] * px[..., 3:4], px[..., 3:4]], -1)
    attrs["dataWindow"] = (spec.x, spec.y, spec.width, spec.height)
    attrs["displayWindow"] = (spec.full_x, spec.full_y, spec.full_width, spec.full_height)
    return px, attrs
