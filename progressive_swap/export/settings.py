"""What an export is asked to do (:class:`ExportSettings`), and the check that an output folder
holds nothing of another export."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from progressive_swap.export import composite as C
from progressive_swap.export import writers as W
from progressive_swap.faceset.format import software_version

LAYER_MODES = ("merged", "per_track")


MASK_SOURCES = ("source", "model", "union", "hull")


@dataclass
class ExportSettings:
    """What to write (the options that change the pixels are fingerprinted for resume).

    Args:
        format: ``png8``, ``png16`` (straight alpha, sRGB) or ``exr`` (half, linear, premultiplied).
        layers: ``merged`` (one layer per frame) or ``per_track`` (one per face track).
        color: colour matching to the plate: ``none``, ``reinhard`` or ``histogram``.
        mask: alpha source: ``source`` (the mask of the footage's own identity's decoder),
            ``model`` (the mask of the decoder swapped to), ``union`` (the larger of the two),
            ``hull`` (landmark hull) or ``stored:NAME`` (the face set's stored mask NAME, e.g. a
            segmenter's ``segment``; a user-edited ``user_NAME`` wins; face-set input only).
            The first three come from the swap function (a Swapper built with that ``mask_from``).
        erode, dilate, feather: mask refinement, fractions of the face crop's side.
        crop_size: aligned crop side the swap is composited from (the model's output is
            resized to it).
        patches: also write aligned-space RGBA crops.
        preview: also write ``preview.mp4`` and ``contact_sheet.png``.
        batch: faces per inference batch.
        exr_window: an EXR layer's data window: ``frame`` (every reader places it right) or
            ``face`` (the face's bounding box, for readers that honour data windows).
        composite: also write the finished frames, the written layers composited over the plate
            in linear light (:func:`composite.over`, as the preview), under ``comp/``, and
            ``comp/comp.mp4`` (with the source's audio).
    """

    format: str = "png16"
    layers: str = "merged"
    color: str = "none"
    mask: str = "model"
    erode: float = 0.0
    dilate: float = 0.0
    feather: float = 0.0
    crop_size: int = 256
    patches: bool = False
    preview: bool = False
    batch: int = 8
    exr_window: str = "frame"
    composite: bool = False

    def __post_init__(self) -> None:
        if self.format not in W.FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose one of {', '.join(W.FORMATS)}")
        if self.layers not in LAYER_MODES:
            raise ValueError(f"unknown layers {self.layers!r}; choose one of {', '.join(LAYER_MODES)}")
        if self.color not in C.COLOR_METHODS:
            raise ValueError(f"unknown color {self.color!r}; choose one of {', '.join(C.COLOR_METHODS)}")
        if self.mask not in MASK_SOURCES and not (self.mask.startswith("stored:") and len(self.mask) > 7):
            raise ValueError(f"unknown mask {self.mask!r}; choose one of {', '.join(MASK_SOURCES)} or stored:NAME")
        if not 16 <= int(self.crop_size) <= 4096:
            raise ValueError(f"crop_size must be in [16, 4096], got {self.crop_size}")
        if int(self.batch) < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.exr_window not in W.EXR_WINDOWS:
            raise ValueError(f"unknown exr_window {self.exr_window!r}; choose one of {', '.join(W.EXR_WINDOWS)}")
        self.mask_options  # validates erode/dilate/feather

    @property
    def mask_options(self) -> C.MaskOptions:
        return C.MaskOptions(self.erode, self.dilate, self.feather)

    def pixel_settings(self) -> dict:
        """The settings that change the layers (``preview``, ``batch`` and ``composite`` do not;
        ``exr_window`` only for EXR)."""
        d = asdict(self)
        d.pop("preview"), d.pop("batch"), d.pop("composite")
        if self.format != "exr":
            d.pop("exr_window")
        return d


def software() -> str:
    return software_version()


def check_previous(out: str | os.PathLike, source: str, input_fingerprint: dict | None) -> None:
    """Refuse to resume into ``out`` when it holds an export of other footage (another path, or
    the same path whose file changed since): its layers and the new ones would mix.

    Raises:
        ValueError: one line naming what ``out`` holds.
    """
    try:
        old = json.loads((Path(out) / "export.json").read_text("utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(old, dict):
        return
    if old.get("input") not in (None, source):
        raise ValueError(
            f"{str(out)!r} holds an export of {old['input']!r}, not {source!r}; choose another out= or remove it"
        )
    was = old.get("input_fingerprint")
    if was is not None and input_fingerprint is not None and was != input_fingerprint:
        raise ValueError(
            f"{source!r} changed since it was exported into {str(out)!r}; choose another out= or remove it"
        )
