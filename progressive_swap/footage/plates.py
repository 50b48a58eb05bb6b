"""High-precision plates through OpenImageIO: EXR (half/float, multi-part and multi-layer), DPX
(10/12/16-bit), TIFF (16-bit, float) and 16-bit PNG.

:func:`read_plate` returns the plate's values as float32 ``(H, W, 3)`` RGB, untouched (no colour
transform, no clipping): scene-linear EXR values may exceed 1; DPX and integer files come as
their code values divided by the largest code (a 10-bit 1023 is 1.0). The pixel grid is the
file's **data window**; where it lies in the **display window**, the file's own attributes
(timecode, frame rate, pixel aspect, chromaticities, anything a renderer or camera wrote) and
the channel layout come with it in :class:`PlateInfo`, so a layer can be written back with the
same windows and attributes (``export/plate_layers.py``). An anamorphic plate's
``PixelAspectRatio`` (:func:`pixel_aspect`, 1.0 when absent; the commands' ``pixel_aspect=`` replaces
it) makes extraction detect and align on de-squeezed pixels (``core/align.py``); the pixels read
here stay the file's own.

8-bit files never come here: they keep the OpenCV path of ``footage/sources.py``, unchanged.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from progressive_swap.core.align import check_pixel_aspect

HIGH_PRECISION_EXTS = {".exr", ".dpx", ".tif", ".tiff", ".png"}  # read here unless 8-bit (PNG, TIFF)
ALWAYS_OIIO_EXTS = {".exr", ".dpx"}  # never 8-bit: OpenCV does not read them by default
NO_OIIO = ("EXR, DPX and 16-bit/float TIFF and PNG plates need OpenImageIO: pip install 'progressive-swap[plates]' "
           "(OpenImageIO and OpenColorIO)")
# Attributes that describe the file, not the picture: not copied onto layers.
_FILE_ATTRS = re.compile(r"^(compression|oiio:|openexr:(chunkCount|lineOrder|dwaCompressionLevel|roundingmode)"
                         r"|tiff:(Compression|PhotometricInterpretation|RowsPerStrip|Predictor|PlanarConfiguration)"
                         r"|dpx:(Packing|Encoding|EndOfLinePadding|EndOfImagePadding)|png:|planarconfig|name$"
                         r"|channelNames|BitsPerSample|ImageDescription$|Software$)")


class PlateError(ValueError):
    """A plate file or layer that cannot be read: one line."""


def oiio():
    """The OpenImageIO module, or one :class:`PlateError` line saying how to install it."""
    try:
        import OpenImageIO  # optional dependency: openimageio
    except ImportError:
        raise PlateError(NO_OIIO) from None
    return OpenImageIO


@dataclass
class PlateInfo:
    """What a plate file says about itself.

    Attributes:
        data_window: ``(x, y, w, h)``: where the pixels lie (the array's origin is ``(x, y)``).
        display_window: ``(x, y, w, h)``: the frame a viewer shows.
        dtype: the stored type (``uint8``, ``uint16``, ``half``, ``float``, ...).
        bits: bits per sample (10 for a 10-bit DPX).
        layer: the layer read (``""``: the beauty ``R, G, B[, A]``).
        part: the EXR part (subimage) it came from.
        attributes: the file's own metadata, ``{name: value}`` (JSON-friendly values).
    """

    data_window: tuple[int, int, int, int]
    display_window: tuple[int, int, int, int]
    dtype: str
    bits: int
    layer: str = ""
    part: int = 0
    attributes: dict = field(default_factory=dict)

    @property
    def overscan(self) -> bool:
        """The data window differs from the display window."""
        return self.data_window != self.display_window

    @property
    def pixel_aspect(self) -> float:
        """The file's ``PixelAspectRatio`` (a pixel's width over its height; 2.0 for a 2:1
        anamorphic squeeze), 1.0 when it does not say; one :class:`PlateError` line when unusable."""
        return _aspect(self.attributes.get("PixelAspectRatio", 1.0), "")


def _jsonable(v):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, bytes):
        return v.hex()
    return v


def _rgb_indices(names: list[str], layer: str) -> list[int] | None:
    """Channel indices of ``layer``'s R, G, B (and A if present) among ``names``, or None."""
    prefix = f"{layer}." if layer else ""
    want = [f"{prefix}{c}" for c in "RGB"]
    lower = [n.lower() for n in names]
    idx = []
    for w in want:
        if w in names:
            idx.append(names.index(w))
        elif w.lower() in lower:
            idx.append(lower.index(w.lower()))
        else:
            return None
    return idx


def plate_layers(path: str | os.PathLike) -> list[str]:
    """The RGB layers a file holds (``""`` for the beauty ``R, G, B``), in file order."""
    lib = oiio()
    inp = lib.ImageInput.open(str(path))
    if inp is None:
        raise PlateError(f"{Path(path).name}: {lib.geterror().strip() or 'cannot open'}")
    try:
        found = []
        sub = 0
        while inp.seek_subimage(sub, 0):
            spec = inp.spec()
            names = list(spec.channelnames)
            part = spec.get_string_attribute("name", "")
            for n in names:
                head, _, tail = n.rpartition(".")
                if tail.upper() == "R" and _rgb_indices(names, head) is not None:
                    found.append(head or (part if part.lower() not in ("", "rgba", "beauty") else ""))
            sub += 1
        return list(dict.fromkeys(found))
    finally:
        inp.close()


def _pick(inp, path: Path, layer: str) -> tuple[int, list[int]]:
    """The subimage and channel indices of the layer asked for (``""``: the beauty)."""
    sub = 0
    while inp.seek_subimage(sub, 0):
        spec = inp.spec()
        names = list(spec.channelnames)
        part = spec.get_string_attribute("name", "")
        if spec.nchannels < 3 and not layer:
            idx = [0, 0, 0] if spec.nchannels >= 1 else None  # grayscale: replicated
        elif layer and part == layer:
            idx = _rgb_indices(names, "") or _rgb_indices(names, layer)
        else:
            idx = _rgb_indices(names, layer)
        if idx is not None:
            return sub, idx
        sub += 1
    try:
        have = ", ".join(repr(x) for x in plate_layers(path)) or "none"
    except PlateError:
        have = "none"
    what = f"layer {layer!r}" if layer else "an R, G, B beauty layer"
    raise PlateError(f"{path.name} has no {what} (its RGB layers: {have}); pick one with layer=NAME")


def read_plate(path: str | os.PathLike, layer: str = "", with_info: bool = True) -> tuple[np.ndarray, PlateInfo]:
    """Read a plate's RGB values as float32 ``(H, W, 3)`` over its data window.

    Args:
        path: an EXR, DPX, TIFF or PNG file.
        layer: the RGB layer of a multi-layer or multi-part EXR (``diffuse`` reads
            ``diffuse.R/G/B``, or the part named ``diffuse``); ``""``: the beauty ``R, G, B``.
        with_info: also collect the file's attributes.

    Returns:
        ``(rgb, info)``: values as stored (integers divided by their largest code), and
        :class:`PlateInfo`.

    Raises:
        PlateError: one line, when the file cannot be read or has no such layer.
    """
    lib = oiio()
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        raise PlateError(f"{p.name}: empty file (0 bytes)")
    inp = lib.ImageInput.open(str(p))
    if inp is None:
        line = (lib.geterror() or "cannot open").strip().splitlines()[0]
        raise PlateError(f"{p.name}: cannot decode image ({size} bytes): {line}")
    try:
        sub, idx = _pick(inp, p, layer)
        spec = inp.spec()
        px = inp.read_image(sub, 0, 0, spec.nchannels, "float")
        if px is None or (isinstance(px, np.ndarray) and px.size == 0):
            line = (inp.geterror() or "read failed").strip().splitlines()[0]
            raise PlateError(f"{p.name}: cannot decode image ({size} bytes): {line}")
        px = np.asarray(px, np.float32).reshape(spec.height, spec.width, spec.nchannels)
        rgb = np.ascontiguousarray(px[..., idx])
        info = PlateInfo(
            data_window=(spec.x, spec.y, spec.width, spec.height),
            display_window=(spec.full_x, spec.full_y, spec.full_width, spec.full_height),
            dtype=str(spec.format),
            bits=int(spec.get_int_attribute("oiio:BitsPerSample", 0) or spec.format.size() * 8),
            layer=layer,
            part=sub,
        )
        if with_info:
            info.attributes = {a.name: _jsonable(a.value) for a in spec.extra_attribs
                               if not _FILE_ATTRS.match(a.name)}
        return rgb, info
    finally:
        inp.close()


def _open_header(path: str | os.PathLike):
    """An OpenImageIO ``ImageInput`` on ``path`` (the caller closes it), or one line why not."""
    lib = oiio()
    inp = lib.ImageInput.open(str(path))
    if inp is None:
        line = (lib.geterror() or "cannot open").strip().splitlines()[0]
        raise PlateError(f"{Path(path).name}: cannot decode image: {line}")
    return inp


def _aspect(value, name: str) -> float:
    try:
        a = check_pixel_aspect(value, "PixelAspectRatio")
    except ValueError as e:
        raise PlateError(f"{name + ': ' if name else ''}{e}") from None
    return 1.0 if abs(a - 1.0) < 1e-6 else a  # a float's rounding of 1 is square pixels


def header_pixel_aspect(path: str | os.PathLike):
    """The ``PixelAspectRatio`` a plate's header states, as it states it (unchecked), or None
    when it states none."""
    inp = _open_header(path)
    try:
        return _jsonable(inp.spec().getattribute("PixelAspectRatio"))
    finally:
        inp.close()


def pixel_aspect(path: str | os.PathLike) -> float:
    """A plate's ``PixelAspectRatio`` from its header (1.0 when absent; one :class:`PlateError`
    line when it is not a usable ratio: not finite, or outside 0.1 to 10)."""
    value = header_pixel_aspect(path)
    return _aspect(1.0 if value is None else value, Path(path).name)


def probe_plate(path: str | os.PathLike) -> tuple[str, int]:
    """``(stored type, bits per sample)`` of an image file, from its header alone."""
    inp = _open_header(path)
    try:
        spec = inp.spec()
        return str(spec.format), int(spec.get_int_attribute("oiio:BitsPerSample", 0) or spec.format.size() * 8)
    finally:
        inp.close()


def colour_attributes(path: str | os.PathLike) -> dict:
    """The header attributes that describe a plate's colour (``chromaticities``, ``oiio:ColorSpace``,
    ``dpx:Transfer``, ``dpx:Colorimetric``), read from the header alone; absent ones are left out.
    ``footage/colour.py``'s :func:`~progressive_swap.footage.colour.file_colour` reads them."""
    inp = _open_header(path)
    try:
        spec = inp.spec()
        out = {}
        for name in ("chromaticities", "oiio:ColorSpace", "dpx:Transfer", "dpx:Colorimetric"):
            value = spec.getattribute(name)
            if value is not None:
                out[name] = _jsonable(value)
        return out
    finally:
        inp.close()


def is_high_precision(path: str | os.PathLike) -> bool:
    """Whether an image file is read here (EXR, DPX, or PNG/TIFF above 8 bits), not by OpenCV."""
    ext = Path(path).suffix.lower()
    if ext in ALWAYS_OIIO_EXTS:
        return True
    if ext not in HIGH_PRECISION_EXTS:
        return False
    try:
        dtype, bits = probe_plate(path)
    except PlateError:
        return False  # unreadable: the 8-bit path reports it as it always has
    return bits > 8
