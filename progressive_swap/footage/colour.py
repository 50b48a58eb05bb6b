"""Colour management of plates through OpenColorIO: the plate's space, the detector's view and the
network's working space.

Three spaces meet here (``docs/plates.md``):

* the **plate space**: what the plate's values mean. The file's own description comes first
  (:func:`file_colour`: an EXR's ``chromaticities``, the colour space OpenImageIO reads from an EXR
  or DPX header, a DPX's transfer); ``colorspace=`` names it when the file does not, and is refused
  when it contradicts the file (``colorspace_check=false`` overrides); the file type is the last
  resort: the config's ``scene_linear`` role for EXR and float TIFF, its ``compositing_log`` role
  for DPX, and sRGB for 8/16-bit PNG, integer TIFF and video;
* the **view**: what the detector and the landmark model see: the plate converted to the
  config's sRGB space (sRGB primaries and transfer curve, values above 1 clipped), as uint8 RGB.
  A plain conversion rather than the config's display view (ACES 2.0 SDR tone-maps): a plate made
  from an sRGB picture gives that picture back, which is what detectors trained on photographs
  expect, and an sRGB plate's view is its own values, as for 8-bit footage;
* the **working space**: what the network learns and outputs, the space its face set's crops
  are in (the set's ``crop_space``, carried into the model's metadata). For display-referred
  plates (sRGB) it is the plate's own sRGB encoding, exactly as for 8-bit footage. For
  scene-referred plates it is the model's crop space (:meth:`PlateColour.for_crops`): ``srgb``,
  what every face set holds today, is the view's conversion (the crops the extractor stored,
  without the 8-bit step), so highlights above the view's range are clipped there;
  ``acescct`` (:data:`WORKING_SPACE`, a log encoding that holds 0 … 222 in [0, 1]) only for a
  model whose face sets say their crops are ACEScct.

The config comes from ``ocio=``, else ``$OCIO``, else OCIO's built-in CG config
(:data:`BUILTIN_CONFIG`, part of the library: nothing is downloaded).

Convention: pixel arrays are float32 ``(H, W, 3)`` RGB, not clipped (scene-linear values may
exceed 1 or be slightly negative); alpha never passes through a colour transform.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

BUILTIN_CONFIG = "ocio://cg-config-latest"  # OCIO's built-in ACES CG config
WORKING_SPACE = "ACEScct"  # the network's space for models of crop_space=acescct face sets (log, keeps highlights)
SRGB = "sRGB Encoded Rec.709 (sRGB)"  # the CG config's name; other configs: an alias or role below
SRGB_NAMES = (SRGB, "srgb_tx", "sRGB - Texture", "Utility - sRGB - Texture", "sRGB", "srgb", "color_picking")
DEFAULT_BY_KIND = {"scene": "scene_linear", "log": "compositing_log", "display": "sRGB"}
CROP_SPACE_NAMES = {"srgb": "sRGB", "acescct": WORKING_SPACE}  # a face set's crop_space → this config's name
NO_OCIO = "colour management needs OpenColorIO: pip install 'progressive-swap[plates]' (OpenImageIO and OpenColorIO)"


# CIE xy of red, green, blue and white (OpenEXR's ``chromaticities``), by primaries.
PRIMARIES = {
    "AP0": (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767),
    "AP1": (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767),
    "Rec.709": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
    "Rec.2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
    "P3-D65": (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290),
}
# The linear space of each set of primaries, as the CG/studio configs, their interop ids and ACES 1.x configs name it.
LINEAR_SPACES = {
    "AP0": ("ACES2065-1", "lin_ap0_scene", "ACES - ACES2065-1"),
    "AP1": ("ACEScg", "lin_ap1_scene", "ACES - ACEScg"),
    "Rec.709": ("Linear Rec.709 (sRGB)", "lin_rec709_scene", "Utility - Linear - sRGB"),
    "Rec.2020": ("Linear Rec.2020", "lin_rec2020_scene", "Utility - Linear - Rec.2020"),
    "P3-D65": ("Linear P3-D65", "lin_p3d65_scene", "Utility - Linear - P3-D65"),
}
# The chromaticities a layer in each linear space carries (``export/plate_layers.py``). Only linear
# spaces: a reader takes an EXR's chromaticities for linear values of those primaries.
CHROMATICITIES = {name: PRIMARIES[p] for p, names in LINEAR_SPACES.items() for name in names}
# The primaries of spaces by name, log and display encodings included (a colorspace= with the file's
# primaries does not contradict it: ACEScct for an AP1 file).
FAMILY = {
    **{name: p for p, names in LINEAR_SPACES.items() for name in names},
    "ACEScct": "AP1", "acescct_ap1": "AP1", "ACES - ACEScct": "AP1", "ACEScc": "AP1", "acescc_ap1": "AP1",
    "ACES - ACEScc": "AP1", SRGB: "Rec.709", "srgb_rec709_scene": "Rec.709",
}
CHROMATICITY_TOLERANCE = 2e-3  # files round their xy to 4 decimals or to float16


class ColourError(ValueError):
    """A colour space or config that cannot be used: one line, exit code 2."""


def _ocio():
    try:
        import PyOpenColorIO  # optional dependency: opencolorio
    except ImportError:
        raise ColourError(NO_OCIO) from None
    return PyOpenColorIO


BUILTIN_CONFIGS = {  # short names for the configs built into OpenColorIO (nothing is downloaded)
    "cg": BUILTIN_CONFIG,
    "studio": "ocio://studio-config-latest",  # the ACES studio config: camera log spaces (ARRI, Sony, RED, ...)
}


def config_source(ocio: str = "") -> str:
    """Which config is used: ``ocio`` if given (a file, an ``ocio://`` name, or ``studio`` / ``cg``
    for OpenColorIO's built-in configs), else ``$OCIO``, else :data:`BUILTIN_CONFIG`."""
    source = ocio or os.environ.get("OCIO", "") or BUILTIN_CONFIG
    return BUILTIN_CONFIGS.get(source, source)


@lru_cache(maxsize=4)
def load_config(source: str):
    """The OCIO config at ``source`` (a ``.ocio`` file or an ``ocio://`` built-in name)."""
    lib = _ocio()
    if not source.startswith("ocio://") and not Path(source).is_file():
        raise ColourError(f"OCIO config {source!r} not found (ocio= or $OCIO)")
    try:
        return lib.Config.CreateFromFile(source)
    except Exception as e:  # noqa: BLE001 - OCIO raises its own Exception type
        raise ColourError(f"cannot read OCIO config {source!r}: {str(e).splitlines()[0]}") from None


def resolve_space(config, name: str) -> str:
    """The config's colour space for ``name`` (a space, an alias or a role; ``sRGB`` also tries
    the usual names of the sRGB texture space). One-line :class:`ColourError` when it has none."""
    names = SRGB_NAMES if name.lower() in ("srgb", SRGB.lower()) else (name,)
    for n in names:
        cs = config.getColorSpace(n)
        if cs is not None:
            return cs.getName()
    some = ", ".join(sorted(c.getName() for c in config.getColorSpaces())[:8])
    raise ColourError(f"colorspace {name!r} is not in the OCIO config {config.getName()!r} (it has e.g. {some}, ...)")


def default_space(ext: str, dtype: str) -> str:
    """The documented default plate space for a file: ``scene_linear`` for EXR and float TIFF,
    ``compositing_log`` for DPX and Cineon, ``sRGB`` for everything else (PNG, integer TIFF, video)."""
    ext = ext.lower()
    if ext in (".exr", ".hdr") or (ext in (".tif", ".tiff") and dtype in ("half", "float", "double")):
        return DEFAULT_BY_KIND["scene"]
    if ext in (".dpx", ".cin"):
        return DEFAULT_BY_KIND["log"]
    return DEFAULT_BY_KIND["display"]


def primaries_of(chromaticities) -> str:
    """The name of a known set of primaries (``AP0``, ``AP1``, ``Rec.709``, ...) for 8 CIE xy
    values (red, green, blue, white), or ``""``."""
    try:
        xy = np.asarray(chromaticities, np.float64).reshape(8)
    except (TypeError, ValueError):
        return ""
    for name, ref in PRIMARIES.items():
        if np.all(np.abs(xy - np.asarray(ref)) <= CHROMATICITY_TOLERANCE):
            return name
    return ""


@dataclass(frozen=True)
class FileColour:
    """What a plate file says about its colour space (:func:`file_colour`).

    Attributes:
        names: the spaces it names, best first (a config has one of them, or none);
            empty when the file says nothing a config can look up.
        reason: how it says so, for the first line (``"its EXR chromaticities are AP0"``).
        file: the file's name, for messages.
        firm: the file states it (EXR chromaticities or colour space), so a ``colorspace=`` that
            contradicts it is refused; False where a reader infers it (OpenImageIO's space for a
            DPX transfer: its primaries are a guess), which ``colorspace=`` simply overrides.
    """

    names: tuple[str, ...] = ()
    reason: str = ""
    file: str = ""
    firm: bool = True


def file_colour(attributes: dict, ext: str, file: str = "") -> FileColour:
    """The colour space a plate's own header describes, from its attributes
    (``footage/plates.py``: :func:`~progressive_swap.footage.plates.colour_attributes`).

    In order: an EXR's ``chromaticities`` (AP0 → ACES2065-1, AP1 → ACEScg, Rec.709, Rec.2020 and
    P3-D65 primaries → that linear space: EXR holds linear values); the colour space OpenImageIO
    reads from an EXR header (``oiio:ColorSpace``, stored by OpenImageIO and others as a
    ``colorInteropID`` such as ``lin_ap1_scene``) or derives from a DPX's transfer; a DPX's
    transfer alone (printing density, log) is reported but names no space. Other formats' readers
    guess (a PNG is "sRGB" to OpenImageIO whatever it holds), so they say nothing here.
    """
    ext = ext.lower()
    chroma = attributes.get("chromaticities")
    stated = str(attributes.get("oiio:ColorSpace") or "")
    if ext == ".exr" and chroma is not None:
        prim = primaries_of(chroma)
        if prim:  # a stated space of those primaries is more precise (an ACEScct EXR): it goes first
            first = (stated,) if stated and FAMILY.get(stated) == prim else ()
            return FileColour((*first, *LINEAR_SPACES[prim]), f"its EXR chromaticities are {prim}", file)
    transfer = str(attributes.get("dpx:Transfer") or "")
    if ext == ".exr" and stated:
        return FileColour((stated,), f"its header says {stated!r}", file)
    if ext == ".dpx" and stated:
        return FileColour((stated,), f"its DPX transfer {transfer!r} ({stated} to OpenImageIO)", file, firm=False)
    if ext in (".dpx", ".cin") and transfer and transfer.lower() not in ("undefined", "user defined", "unspecified"):
        hint = " (a film scan: ocio=studio colorspace=ADX10 reads it as one)" if "density" in transfer.lower() else ""
        return FileColour((), f"its DPX transfer is {transfer!r}{hint}", file)
    return FileColour((), "", file)


def _same_primaries(a: str, b: str) -> bool:
    return FAMILY.get(a) is not None and FAMILY.get(a) == FAMILY.get(b)


@dataclass(frozen=True)
class PlateColour:
    """The colour path of one plate: plate space ↔ working space, and plate space → view.

    Args:
        config: the config's source (:func:`config_source`).
        plate: the plate's colour space (resolved name).
        working: the network's space: the plate's own for display-referred plates, else the
            view's sRGB space (:func:`plate_colour`) or the model's crop space (:meth:`for_crops`).
        view_space: the config's sRGB space, what the detector sees (:meth:`view`).
        scene: the plate is scene-referred (EXR, float TIFF, DPX): its layers are written in its
            own space (``export/plate_layers.py``). False for display-referred (sRGB) plates.
        reason: why the plate space is what it is (the file's description, ``colorspace=`` or the
            file type's default), for the commands' first line. Not part of :meth:`as_dict`.
        layer: the space EXR and TIFF layers are written, premultiplied and composited in: a
            scene-linear space (:meth:`for_layers`); ``""`` is the plate's own.
    """

    config: str
    plate: str
    working: str
    view_space: str = SRGB
    scene: bool = False
    reason: str = ""
    layer: str = ""

    @property
    def identity(self) -> bool:
        """Plate and working space are the same: no transform (display-referred plates)."""
        return self.plate == self.working

    @property
    def clipped(self) -> bool:
        """The working space is the view's sRGB (a scene-referred plate, a model of ``srgb``
        crops): values are clipped to [0, 1] before any resampling, as in the view the extractor
        cropped its faces from."""
        return self.scene and self.working == self.view_space

    def for_crops(self, crop_space: str) -> PlateColour:
        """This plate's path with the working space a model's crops are in (its face sets'
        ``crop_space``): ``srgb`` → the view's sRGB space, ``acescct`` → ACEScct. Display-referred
        plates keep their own sRGB values (their crops are sRGB already) whatever is asked.

        Raises:
            ColourError: an unknown crop space, or one the config lacks (one line).
        """
        if crop_space not in CROP_SPACE_NAMES:
            raise ColourError(f"unknown crop space {crop_space!r} (known: {', '.join(CROP_SPACE_NAMES)})")
        if not self.scene:
            return self
        working = resolve_space(load_config(self.config), CROP_SPACE_NAMES[crop_space])
        return replace(self, working=working, scene=True)

    def for_layers(self, layer_space: str = "") -> PlateColour:
        """This path with the space layers are premultiplied and composited in: ``layer_space`` if
        given, else the plate's own when the config calls it scene-linear (or says nothing), else
        the config's ``scene_linear`` role (ACEScg in the ACES configs). Alpha only means coverage
        in linear light: premultiplied log codes, or log codes mixed by ``composite=true``, are
        not what a compositor's *over* computes. Display-referred plates keep their own space.

        Raises:
            ColourError: the config lacks the space, or it is not scene-linear (one line).
        """
        if not self.scene:
            return self
        config = load_config(self.config)
        if layer_space:
            name = resolve_space(config, layer_space)
        elif _encoding(config, self.plate) in ("scene-linear", ""):
            name = self.plate
        else:
            name = resolve_space(config, DEFAULT_BY_KIND["scene"])
        if _encoding(config, name) not in ("scene-linear", ""):
            raise ColourError(f"layer_space={layer_space or name} is {_encoding(config, name)}, not scene-linear: "
                              "layers are premultiplied and composited in linear light; name a scene-linear space "
                              "(e.g. ACEScg)")
        return replace(self, layer="" if name == self.plate else name)

    @property
    def layer_space(self) -> str:
        """The space of EXR and TIFF layers (:meth:`for_layers`): the plate's unless it is not linear."""
        return self.layer or self.plate

    def as_dict(self) -> dict:
        layer = {"layer": self.layer} if self.layer else {}  # absent when the plate's own (older exports)
        return {"config": self.config, "plate": self.plate, "working": self.working, "view": self.view_space,
                "crop_space": self.crop_space, **layer}

    def line(self) -> str:
        """One line for the commands' first output: the plate space and why."""
        return f"colour {self.plate} ({self.reason})" if self.reason else f"colour {self.plate}"

    @property
    def crop_space(self) -> str:
        """The face-set ``crop_space`` this path's working space is: ``srgb`` or ``acescct``."""
        return "acescct" if self.scene and self.working != self.view_space else "srgb"

    def _cpu(self, src: str, dst: str):
        return _processor(self.config, src, dst)

    def to_working(self, rgb: np.ndarray) -> np.ndarray:
        """Plate values → working space, float32 ``(..., 3)``; clipped to [0, 1] (NaN → 0) when the
        working space is the view's sRGB (:attr:`clipped`), as :meth:`view` before its 8-bit step."""
        out = _apply(None if self.identity else self._cpu(self.plate, self.working), rgb)
        if self.clipped:
            out = np.clip(np.nan_to_num(out), 0.0, 1.0, out=out)
        return out

    def to_plate(self, rgb: np.ndarray) -> np.ndarray:
        """Working space → plate values, float32 ``(..., 3)`` (inverse of :meth:`to_working`)."""
        return _apply(None if self.identity else self._cpu(self.working, self.plate), rgb)

    def view(self, rgb: np.ndarray, space: str = "") -> np.ndarray:
        """Plate values (or values in ``space``) → the display view the detector sees, uint8 ``(H, W, 3)`` sRGB."""
        src = space or self.plate
        out = _apply(None if src == self.view_space else self._cpu(src, self.view_space), rgb)
        return _to_uint8(out)

    def convert(self, rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
        """Values in ``src`` → ``dst`` (two spaces of this path's config), float32 ``(..., 3)``; a copy when equal."""
        return _apply(None if src == dst else self._cpu(src, dst), rgb)


def _described_space(config, described: FileColour | None) -> str:
    """The config's space for what the file says, or ``""`` (the config has none of its names)."""
    for name in described.names if described is not None else ():
        cs = config.getColorSpace(name)
        if cs is not None:
            return cs.getName()
    return ""


def plate_colour(ext: str, dtype: str, colorspace: str = "", ocio: str = "", described: FileColour | None = None,
                 check: bool = True) -> PlateColour:
    """Resolve the colour path of a plate: the file's own description (``described``, from
    :func:`file_colour`) first, then ``colorspace=``, then the file type's default.

    Args:
        ext, dtype: the file's extension and stored type (the default's inputs).
        colorspace: the space the user named (``""``: none).
        ocio: the config (``""``: ``$OCIO``, else the built-in one).
        described: what the file's header says.
        check: refuse a ``colorspace`` that contradicts the file (``colorspace_check=``); a
            space with the same primaries (ACEScct for an AP1 file) is no contradiction.

    Raises:
        ColourError: the config cannot be read or has no such space, or ``colorspace``
            contradicts the file (one line naming both).
    """
    source = config_source(ocio)
    config = load_config(source)
    said = _described_space(config, described)
    if colorspace:
        plate = resolve_space(config, colorspace)
        agree = not said or plate == said or _same_primaries(plate, said)
        if not agree and check and described.firm:  # type: ignore[union-attr]
            raise ColourError(
                f"colorspace={colorspace} contradicts {described.file or 'the plate'}: {described.reason}, so it is "
                f"{said}; leave colorspace= out to read it as {said}, or add colorspace_check=false to read it as "
                f"{plate} anyway")
        firm = described is not None and described.firm
        reason = "colorspace=" + ("" if agree else f", overriding the file's {said}"
                                  + (" (colorspace_check=false)" if firm else f" ({described.reason})"))
    elif said:
        plate, reason = said, described.reason  # type: ignore[union-attr]
    else:
        role = default_space(ext, dtype)
        plate = resolve_space(config, role)
        said_how = f"{described.reason}, which names no space of the config; " if described and described.reason else ""
        reason = f"{said_how}the default for {ext.lower()} files, the config's {role}"
    srgb = resolve_space(config, "sRGB")
    lib = _ocio()
    scene = plate != srgb and config.getColorSpace(plate).getReferenceSpaceType() == lib.REFERENCE_SPACE_SCENE
    working = srgb if scene else plate  # the crops of every face set written so far; see for_crops
    return PlateColour(source, plate, working, srgb, scene, reason)


@lru_cache(maxsize=16)
def _processor(source: str, src: str, dst: str):
    """The CPU processor ``src`` → ``dst``; a config whose transform cannot be built (a missing
    or unreadable LUT, a LUT too large) is one-line :class:`ColourError`, not OCIO's traceback."""
    config = load_config(source)
    try:
        return config.getProcessor(src, dst).getDefaultCPUProcessor()
    except Exception as e:  # noqa: BLE001 - OCIO raises its own Exception types
        reason = " ".join(str(e).split())[:300]
        raise ColourError(f"OCIO config {source!r} cannot convert {src!r} to {dst!r}: {reason}") from None


_POOL: ThreadPoolExecutor | None = None
PARALLEL_PIXELS = 1 << 18  # frames above this many pixels are converted in one slice per core


def _apply(cpu, rgb: np.ndarray) -> np.ndarray:
    out = np.array(rgb, np.float32, order="C", copy=True)
    if cpu is None:
        return out
    if out.shape[-1] != 3:
        raise ValueError(f"colour transforms take (..., 3) RGB, got {out.shape}")
    flat = out.reshape(-1, 3)
    n = min(os.cpu_count() or 1, 8)
    if n < 2 or flat.shape[0] < PARALLEL_PIXELS:
        cpu.applyRGB(flat)  # in place on the contiguous buffer
        return out
    # OCIO releases the GIL while it converts: a 2K frame's slices convert side by side
    # (90 → 61 ms on 2 cores), each pixel exactly as in one call.
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(n, thread_name_prefix="ocio")
    bounds = np.linspace(0, flat.shape[0], n + 1).astype(int)
    list(_POOL.map(cpu.applyRGB, [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
    return out


def _to_uint8(out: np.ndarray) -> np.ndarray:
    """float32 values (a fresh array, changed in place) → uint8 codes: NaN → 0, clipped to [0, 1], rounded."""
    np.nan_to_num(out, copy=False)
    np.clip(out, 0.0, 1.0, out=out)
    out *= 255.0
    np.rint(out, out=out)
    return out.astype(np.uint8)


def crop_view(values: np.ndarray, crop_space: str) -> np.ndarray:
    """Crop values in ``crop_space`` (float32 ``(..., 3)`` in [0, 1]) → the uint8 sRGB picture a
    person, a detector or an embedding looks at. ``acescct`` goes through the built-in config
    (ACEScct → sRGB, values above the view's 1 clipped); ``srgb`` values are the picture."""
    if crop_space == "srgb":
        out = np.array(values, np.float32, copy=True)
    else:
        out = _apply(_processor(BUILTIN_CONFIG, CROP_SPACE_NAMES[crop_space], SRGB), values)
    return _to_uint8(out)


def frame_in_crop_space(image: np.ndarray, colour: PlateColour | None, crop_space: str,
                        plate: np.ndarray | None = None) -> np.ndarray:
    """A whole frame's values in a face set's ``crop_space``, float32 ``(H, W, 3)``, not clipped.

    Args:
        image: the frame's uint8 sRGB picture (8-bit footage, or a plate's view).
        colour: the plate's colour path (None for 8-bit footage: sRGB).
        crop_space: ``srgb`` (the picture, /255) or ``acescct``.
        plate: the plate's own float values (high-precision files), converted from the plate's
            space, so nothing is lost to the 8-bit view.
    """
    if crop_space == "srgb":
        return np.asarray(image, np.float32) / 255.0
    if plate is not None and colour is not None:
        if colour.scene:
            return colour.for_crops(crop_space).to_working(plate)
        target = resolve_space(load_config(colour.config), CROP_SPACE_NAMES[crop_space])
        return _apply(_processor(colour.config, colour.plate, target), plate)
    return _apply(_processor(BUILTIN_CONFIG, SRGB, CROP_SPACE_NAMES[crop_space]),
                  np.asarray(image, np.float32) / 255.0)


def _encoding(config, name: str) -> str:
    cs = config.getColorSpace(name)
    return (cs.getEncoding() or "") if cs is not None else ""


def encoding_of(colour: PlateColour | None) -> str:
    """The OCIO encoding of a plate's space (``scene-linear``, ``log``, ``sdr-video``, …; "" when
    the config does not say, or for 8-bit footage)."""
    if colour is None:
        return ""
    cs = load_config(colour.config).getColorSpace(colour.plate)
    return (cs.getEncoding() or "") if cs is not None else ""


# ---------------------------------------------------------------------- what a crop space clips

CLIP_TOLERANCE = {"srgb": 0.5 / 255.0, "acescct": 0.5 / 65535.0}
"""How far past 0 or 1 a crop-space value may be and still count as held: half a stored code
(8-bit ``srgb``, 16-bit ``acescct``), which rounds to the end code anyway. Float conversions of
an sRGB picture give 1.0000001 or -1e-7 for its own white and black; those are not clipped."""


def out_of_range(values: np.ndarray, crop_space: str) -> np.ndarray:
    """Which pixels a crop space cannot hold: bool ``(...)`` for float ``(..., 3)`` values already
    in ``crop_space``'s encoding and not yet clipped. A pixel is out of range when any channel is
    below 0 or above 1 by more than half a stored code (:data:`CLIP_TOLERANCE`), or is NaN or inf.
    For ``srgb`` (after the sRGB transfer) that is a colour outside sRGB's gamut or brighter than
    its white; for ``acescct`` linear light above 222 or below about -0.0069 (AP1)."""
    if crop_space not in CLIP_TOLERANCE:
        raise ColourError(f"unknown crop space {crop_space!r} (known: {', '.join(CLIP_TOLERANCE)})")
    v = np.asarray(values, np.float32)
    if v.ndim < 1 or v.shape[-1] != 3:
        raise ValueError(f"crop values must be (..., 3) RGB, got {v.shape}")
    tol = CLIP_TOLERANCE[crop_space]
    inside = (v >= -tol) & (v <= 1.0 + tol)  # False for NaN
    return ~inside.all(axis=-1)


def _weights(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A face mask as float weights in [0, 1] of ``shape`` (uint8 / uint16 codes scaled, bool as 0/1)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape != shape:
        raise ValueError(f"face mask is {m.shape}, the crop is {shape}")
    if m.dtype == bool:
        return m.astype(np.float32)
    if m.dtype.kind in "ui":
        return np.clip(m.astype(np.float32) / float(np.iinfo(m.dtype).max), 0.0, 1.0)
    return np.clip(np.nan_to_num(m.astype(np.float32)), 0.0, 1.0)


def clipped_share(crop: np.ndarray, mask: np.ndarray | None, colour: PlateColour | None, crop_space: str) -> float:
    """The share of a face's pixels that storing it in ``crop_space`` clips, in [0, 1].

    Args:
        crop: an aligned face crop of the plate's own values (float ``(H, W, 3)``, the plate's
            space, before any conversion or clipping).
        mask: the face mask ``(H, W)`` (float in [0, 1], uint8/uint16 codes or bool); each pixel
            counts by its weight, so a hard mask gives the share of its pixels. ``None``: every
            pixel of the crop.
        colour: the plate's colour path; ``None`` for 8-bit footage, whose sRGB pictures every
            crop space holds: 0 at once, nothing converted.
        crop_space: ``srgb`` or ``acescct``.

    Returns:
        The mask-weighted share of pixels :func:`out_of_range` after converting ``crop`` from the
        plate's space to ``crop_space`` (0.0 for an empty mask).
    """
    if crop_space not in CLIP_TOLERANCE:
        raise ColourError(f"unknown crop space {crop_space!r} (known: {', '.join(CLIP_TOLERANCE)})")
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[-1] != 3:
        raise ValueError(f"a face crop must be (H, W, 3) RGB, got {crop.shape}")
    w = _weights(mask, crop.shape[:2])
    if colour is None:
        return 0.0
    target = resolve_space(load_config(colour.config), CROP_SPACE_NAMES[crop_space])
    bad = out_of_range(colour.convert(crop, colour.plate, target), crop_space)
    if w is None:
        return float(bad.mean()) if bad.size else 0.0
    total = float(w.sum(dtype=np.float64))
    return float(w[bad].sum(dtype=np.float64) / total) if total > 0 else 0.0


def clip_summary(shares: list[float], crop_space: str) -> dict:
    """Per-face :func:`clipped_share` figures → ``{"crop_space", "faces", "mean", "max"}`` (the
    shares rounded to 6 decimals; 0 for no faces), what the commands record as ``clipped_share``."""
    a = np.asarray(shares, np.float64)
    return {"crop_space": crop_space, "faces": int(a.size),
            "mean": round(float(a.mean()), 6) if a.size else 0.0, "max": round(float(a.max()), 6) if a.size else 0.0}


def clip_line(summary: dict) -> str:
    """One line for the commands' output: ``crop space srgb clipped 3.2 % of face pixels (max 41 %
    on one face, 120 faces)``, with a pointer to ``acescct`` when ``srgb`` clipped anything."""
    cs, mean, top, n = summary["crop_space"], summary["mean"], summary["max"], summary["faces"]
    faces = f"{n} face" + ("" if n == 1 else "s")
    line = f"crop space {cs} clipped {_pct(mean)} of face pixels (max {_pct(top)} on one face, {faces})"
    if cs == "srgb" and top > 0:
        line += "; crop_space=acescct keeps them (up to linear 222, within AP1's gamut)"
    return line


def _pct(share: float) -> str:
    p = 100.0 * share
    return "0 %" if p == 0 else f"{p:.2g} %" if p < 1 else f"{p:.1f} %"
