"""The options of an extraction (``swap-extract``) and their checks, made before anything is written."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from progressive_swap.core.landmarks import face_type as _check_face_type
from progressive_swap.core.progress import DEFAULT_EVERY
from progressive_swap.extract.detect import (
    checkpoint_dir,
    dlib_available,
    weight_files,
)
from progressive_swap.extract.smoothing import METHODS
from progressive_swap.footage.sources import aspect_option, parse_frames


@dataclass
class ExtractOptions:
    """Options of ``swap-extract`` (``key=value`` on the command line)."""

    input: str = "???"
    """Video, image folder, image pattern (``f_%04d.png``, ``plate.####.exr``, ``plate.@@@@.dpx``, ``*.png``)
    or one image."""
    frames: str = ""
    """Frames to keep, ``FIRST-LAST``: the file numbers of a numbered sequence (e.g. ``1001-1100``),
    or 0-based frame indices of a video (decoding stops after the last); "" keeps all."""
    layer: str = ""
    """The RGB layer of a multi-layer or multi-part EXR; "" reads the beauty (``R, G, B``)."""
    colorspace: str = ""
    """The plates' OCIO colour space; "" is what the file says (EXR chromaticities, a stated colour space), else
    the file type's default (EXR: scene_linear, DPX: compositing_log, 8/16-bit: sRGB). EXR, DPX and 16-bit/float
    plates only (docs/plates.md)."""
    ocio: str = ""
    """OCIO config: a file, studio (OCIO's built-in ACES studio config: camera log spaces) or cg; "" uses $OCIO,
    else OCIO's built-in CG config."""
    colorspace_check: bool = True
    """Refuse a colorspace that contradicts the file's own description (false: read it as colorspace anyway)."""
    pixel_aspect: float = field(default=0.0, metadata={"min": 0.0})
    """The plates' pixel aspect ratio (a pixel's width over its height: 2 for a 2:1 anamorphic squeeze), 0.1 to 10,
    for a wrong or missing PixelAspectRatio header: it replaces the header's for every frame (the headers are then
    not checked to agree from frame to frame); 0 is what the first file's header says, 1 when it says nothing. EXR,
    DPX and 16-bit/float plates only (docs/plates.md)."""
    out: str = "???"
    """Face set directory (created, or resumed/appended when it exists with the same options)."""
    size: int = field(default=512, metadata={"min": 16})
    """Crop side in pixels: a multiple of 16, at most 2048."""
    face_type: Literal["full", "whole", "head"] = "whole"
    """Crop coverage: full, whole or head."""
    identity: str = ""
    """Identity label of the faces ("" keeps labels from a landmarks file)."""
    landmarks: Literal["fan", "given"] = "fan"
    """``fan`` (the detector's landmarks), or ``given`` (boxes and landmarks from ``landmarks_file``)."""
    landmarks_file: str = ""
    """The JSON file of ``landmarks=given`` (``docs/extract.md``)."""
    boxes: Literal["detect", "given"] = "detect"
    """``detect`` (the detector's boxes) or ``given`` (boxes from ``boxes_file``, landmarks by the detector)."""
    boxes_file: str = ""
    """The JSON file of ``boxes=given``."""
    detector: Literal["auto", "fan", "dlib", "dlib_cnn"] = "auto"
    """``fan`` (face-alignment: S3FD + 2D-FAN), ``dlib`` (offline: dlib HOG + 68-point predictor),
    ``dlib_cnn`` (dlib's MMOD CNN boxes), or ``auto``: fan where its weights are present, else dlib
    when installed, else fan (which downloads its weights)."""
    device: str = "auto"
    """auto (CUDA if available), cpu, cuda, cuda:N."""
    batch_size: int = field(default=16, metadata={"min": 1})
    """Faces per landmark forward pass."""
    flip_input: bool = True
    """FAN on the mirrored crop too (2x slower, a little steadier)."""
    min_score: float = field(default=0.5, metadata={"min": 0.0})
    """Detector confidence threshold."""
    min_face: float = field(default=32.0, metadata={"min": 0.0})
    """Drop faces smaller than this (side of the ``full`` crop, frame px)."""
    track: str = "all"
    """Keep ``all`` tracks, the ``largest`` one, or one track id."""
    smooth: Literal["auto", "savgol", "one_euro", "none"] = "auto"
    """auto (savgol for video and image sequences, none otherwise), savgol, one_euro, none."""
    smooth_window: float = field(default=0.3, metadata={"gt": 0.0})
    """Savitzky–Golay window, seconds."""
    cuts: list[int] = field(default_factory=list, metadata={"min": 0})
    """Frame numbers where a new shot starts (smoothing and tracks restart there)."""
    fps: float = field(default=0.0, metadata={"min": 0.0})
    """Frame rate of image input (0: unknown; smoothing then assumes 24)."""
    image_format: Literal["png", "jpg", "jpeg"] = "png"
    """Crop files: png (lossless) or jpg."""
    crop_space: Literal["auto", "srgb", "acescct"] = "auto"
    """What the stored crops hold: ``srgb``, 8-bit sRGB pictures (a float plate's sRGB view, values
    above its 1.0 clipped); ``acescct``, 16-bit PNG crops in ACEScct, which keep a float plate's
    highlights (up to linear 222) and shadows; ``auto``, ``acescct`` for scene-referred plates (float
    and log files) and ``srgb`` for display-referred footage (a resumed extraction keeps its own;
    chosen by a measurement at 128 px, docs/plates.md). A model of ``acescct`` sets loads ``srgb``
    sets beside them converted."""
    masks: bool = True
    """Write landmark hull masks ``components`` and ``extended``."""
    chunk: int = field(default=64, metadata={"min": 1})
    """Frames per detection-cache file and per face set batch."""
    progress: bool = True
    """Show progress on stderr: a bar on a terminal, plain lines in a log."""
    progress_every: float = field(default=DEFAULT_EVERY, metadata={"min": 0.0})
    """Seconds between progress lines when stderr is not a terminal (0: every frame)."""
    allow_missing: bool = False
    """Accept footage with frames that cannot be decoded (exit 0); by default the faces of the
    other frames are written and the command ends with exit 4 and the count."""

    def __post_init__(self) -> None:
        # The older one-string spelling ``landmarks=given:FILE`` / ``boxes=given:FILE``.
        for key in ("landmarks", "boxes"):
            value = str(getattr(self, key))
            if value.startswith("given:"):
                setattr(self, key, "given")
                setattr(self, key + "_file", value[len("given:"):])


# Options that change pass 1 (the detection cache) / pass 2 (the face set). Resuming with a
# different value would mix two extractions, so it is refused.
DETECT_KEYS = ("landmarks", "landmarks_file", "boxes", "boxes_file", "detector", "flip_input", "min_score", "chunk",
               "frames", "layer", "colorspace", "ocio")


# Values of options that older manifests do not record.
OLD_DEFAULTS = {"detector": "fan", "landmarks_file": "", "boxes_file": "", "frames": "", "layer": "", "colorspace": "",
                "ocio": "", "crop_space": "srgb"}


DETECTORS = ("auto", "fan", "dlib", "dlib_cnn")


CROP_KEYS = ("size", "face_type", "identity", "min_face", "track", "smooth", "smooth_window", "cuts", "fps",
              "image_format", "masks", "crop_space")


CROP_SPACE_CHOICES = ("auto", "srgb", "acescct")


def resolve_crop_space(opt: ExtractOptions, scene: bool, resumed: str | None = None) -> tuple[str, str]:
    """The crop space ``crop_space=auto`` stands for, and why (for the first line): a resumed
    extraction's own (``resumed``); ``acescct`` for a ``scene``-referred plate (float or log
    files), whose highlights and shadows 8-bit sRGB crops would clip, unless ``image_format=jpg``
    (8 bits) is asked for; else ``srgb``. Other values pass through."""
    if opt.crop_space != "auto":
        return opt.crop_space, "crop_space="
    if resumed:
        return resumed, "auto: the extraction being resumed"
    if not scene:
        return "srgb", "auto: display-referred footage"
    if opt.image_format != "png":
        return "srgb", f"auto: a scene-referred plate, but image_format={opt.image_format} holds 8 bits"
    return "acescct", "auto: a scene-referred plate; its highlights and shadows kept"


class ExtractError(ValueError):
    """Extraction cannot proceed (bad options, unusable input): one line, exit code 2."""


def check_options(opt: ExtractOptions) -> None:
    """Validate options before touching any file (one-line ``ExtractError``)."""
    _check_face_type(opt.face_type)
    if not isinstance(opt.size, int) or opt.size % 16 or not 16 <= opt.size <= 2048:
        raise ExtractError(f"size must be a multiple of 16 in [16, 2048], got {opt.size!r}")
    if opt.smooth not in ("auto", *METHODS):
        raise ExtractError(f"smooth must be auto, {', '.join(METHODS)}; got {opt.smooth!r}")
    if opt.chunk < 1:
        raise ExtractError(f"chunk must be >= 1, got {opt.chunk}")
    if str(opt.track) not in ("all", "largest") and not str(opt.track).lstrip("-").isdigit():
        raise ExtractError(f"track must be all, largest or a track id, got {opt.track!r}")
    if opt.detector not in DETECTORS:
        raise ExtractError(f"detector must be {', '.join(DETECTORS)}; got {opt.detector!r}")
    if opt.image_format not in ("png", "jpg", "jpeg"):
        raise ExtractError(f"image_format must be png or jpg, got {opt.image_format!r}")
    if opt.crop_space not in CROP_SPACE_CHOICES:
        raise ExtractError(f"crop_space must be {', '.join(CROP_SPACE_CHOICES)}; got {opt.crop_space!r}")
    if opt.crop_space == "acescct" and opt.image_format != "png":
        raise ExtractError(f"crop_space={opt.crop_space} stores 16-bit PNG crops; image_format={opt.image_format} "
                           "holds 8 bits (drop image_format or use png)")
    if opt.input in ("", "???") or opt.out in ("", "???"):
        raise ExtractError("give input=PATH and out=FACESET")
    for key, choices in (("landmarks", ("fan", "given")), ("boxes", ("detect", "given"))):
        value, path = getattr(opt, key), getattr(opt, key + "_file")
        if value not in choices:
            raise ExtractError(f"{key} must be {' or '.join(choices)}, got {value!r}")
        if value == "given" and not path:
            raise ExtractError(f"{key}=given reads {key}_file=FILE: give it")
        if path and value != "given":
            raise ExtractError(f"{key}_file= is read only with {key}=given")
    if opt.landmarks == "given" and opt.boxes == "given":
        raise ExtractError("landmarks=given already gives the boxes: drop boxes=given")
    if not opt.smooth_window > 0:
        raise ExtractError(f"smooth_window must be > 0 seconds, got {opt.smooth_window!r}")
    if opt.fps < 0:
        raise ExtractError(f"fps must be >= 0, got {opt.fps!r}")
    if any(int(c) < 0 for c in opt.cuts):
        raise ExtractError(f"cuts are frame numbers, >= 0; got {list(opt.cuts)!r}")
    try:
        parse_frames(opt.frames)
        aspect_option(opt.pixel_aspect)
    except ValueError as e:
        raise ExtractError(str(e)) from None
    if opt.min_face < 0 or opt.min_score < 0 or opt.batch_size < 1:
        raise ExtractError("min_face and min_score must be >= 0 and batch_size >= 1")


def resolve_detector(opt: ExtractOptions) -> str:
    """The detector ``detector=auto`` stands for: ``fan`` when face-alignment's weight files are
    in :func:`~progressive_swap.extract.detect.checkpoint_dir`, else ``dlib`` when it is installed,
    else ``fan`` (which then tries to download its weights). Other values pass through."""
    if opt.detector != "auto":
        return opt.detector
    if opt.landmarks == "given":
        return "fan"  # nothing is detected; keep the manifest as it always was
    try:
        names = weight_files("folder" if opt.boxes == "given" else "sfd")
    except ImportError:
        names = {"face-alignment": ""}
    if all((checkpoint_dir() / n).is_file() for n in names):
        return "fan"
    return "dlib" if dlib_available() else "fan"


DLIB_LICENCE = ("dlib's 68-point landmark model was trained on iBUG 300-W, whose licence excludes commercial use "
                "without clearance (docs/extract.md, 'Licence note')")


def detector_lines(opt: ExtractOptions) -> list[str]:
    """What finds the faces, as the commands' first line, and the dlib model's licence note where it is used."""
    if opt.landmarks == "given":
        return [f"landmarks: given in {opt.landmarks_file} (no detector)"]
    det = resolve_detector(opt)
    how = {"fan": "face-alignment (S3FD boxes + 2D-FAN landmarks)", "dlib": "dlib (HOG boxes, CNN fallback, "
           "68-point predictor)", "dlib_cnn": "dlib (MMOD CNN boxes, 68-point predictor)"}[det]
    auto = " (detector=auto)" if opt.detector == "auto" else ""
    boxes = f"; boxes given in {opt.boxes_file}" if opt.boxes == "given" else ""
    lines = [f"detector: {how}{auto}{boxes}"]
    if det.startswith("dlib"):
        lines.append(f"note: {DLIB_LICENCE}")
    return lines
