"""Colour management of plates through OpenColorIO: the plate's space, the detector's view and the
network's working space.

Three spaces meet here (``docs/plates.md``):

* the **plate space**: what the plate's values mean (``colorspace=``; by default the config's
  ``scene_linear`` role for EXR and float TIFF, its ``compositing_log`` role for DPX, and sRGB
  for 8/16-bit PNG, integer TIFF and video);
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
from dataclasses import dataclass
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


class ColourError(ValueError):
    """A colour space or config that cannot be used: one line, exit code 2."""


def _ocio():
    try:
        import PyOpenColorIO  # optional dependency: opencolorio
    except ImportError:
        raise ColourError(NO_OCIO) from None
    return PyOpenColorIO


def config_source(ocio: str = "") -> str:
    """Which config is used: ``ocio`` if given, else ``$OCIO``, else :data:`BUILTIN_CONFIG`."""
    return ocio or os.environ.get("OCIO", "") or BUILTIN_CONFIG


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
    """

    config: str
    plate: str
    working: str
    view_space: str = SRGB
    scene: bool = False

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
        return PlateColour(self.config, self.plate, working, self.view_space, True)

    def as_dict(self) -> dict:
        return {"config": self.config, "plate": self.plate, "working": self.working, "view": self.view_space,
                "crop_space": self.crop_space}

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

    def view(self, rgb: np.ndarray) -> np.ndarray:
        """Plate values → the display view the detector sees, uint8 ``(H, W, 3)`` sRGB."""
        out = _apply(None if self.plate == self.view_space else self._cpu(self.plate, self.view_space), rgb)
        return _to_uint8(out)


def plate_colour(ext: str, dtype: str, colorspace: str = "", ocio: str = "") -> PlateColour:
    """Resolve the colour path of a plate file type (``colorspace=`` wins over the default).

    Raises:
        ColourError: the config cannot be read or has no such space (one line).
    """
    source = config_source(ocio)
    config = load_config(source)
    plate = resolve_space(config, colorspace or default_space(ext, dtype))
    srgb = resolve_space(config, "sRGB")
    lib = _ocio()
    scene = plate != srgb and config.getColorSpace(plate).getReferenceSpaceType() == lib.REFERENCE_SPACE_SCENE
    working = srgb if scene else plate  # the crops of every face set written so far; see for_crops
    return PlateColour(source, plate, working, srgb, scene)


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


def encoding_of(colour: PlateColour | None) -> str:
    """The OCIO encoding of a plate's space (``scene-linear``, ``log``, ``sdr-video``, …; "" when
    the config does not say, or for 8-bit footage)."""
    if colour is None:
        return ""
    cs = load_config(colour.config).getColorSpace(colour.plate)
    return (cs.getEncoding() or "") if cs is not None else ""
