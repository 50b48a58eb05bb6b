"""``swap-export``: swap every face of some footage to one identity and write RGBA face layers.

Usage:
    swap-export checkpoint=RUN/last.ckpt input=FOOTAGE_OR_FACESET out=DIR identity=NAME [from_identity=NAME] \\
        [format=png16|png8|exr|tiff|dpx] [layers=merged|per_track] [color=none|reinhard|histogram] \\
        [erode=0] [dilate=0] [feather=0] [preview=false] [composite=false] [comp=blender] [bf16=false] ...

``input`` is either a face set of the footage (its records name the source video or image
folder, read for the plates) or the footage itself (a video, an image folder or pattern, or
one image), which is first extracted into ``out/faces`` by the extractor (face detection, or
``landmarks=given landmarks_file=FILE``; tracking; smoothing), resumably.
A rerun resumes: frames whose layers were made from the same input frame, face records,
checkpoint and options, and still decode, are skipped; the rest are redone (and counted).
Details: ``docs/export.md``.
Exit codes: 0 done, 2 bad input (one line on stderr), 3 I/O error (e.g. disk full), 4 incomplete
(frames of the footage could not be decoded; ``allow_missing=true`` accepts that), 130/143
interrupted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from progressive_swap import faceset
from progressive_swap.cli.common import (
    EXIT_INCOMPLETE,
    UserError,
    parse_overrides,
    run_cli,
    split_deprecated,
    usage,
)
from progressive_swap.core.io import atomic_write_json, locked_dir, remove_debris
from progressive_swap.export import blender_comp
from progressive_swap.export import frames as F
from progressive_swap.export import writers as W
from progressive_swap.export.frames import open_plates
from progressive_swap.export.pipeline import EXPORT_DIRS, Exporter
from progressive_swap.export.settings import ExportSettings, check_previous
from progressive_swap.export.swapper import MODEL_MASKS, Swapper, load_model
from progressive_swap.extract.options import detector_lines
from progressive_swap.extract.pipeline import (
    ExtractOptions,
    extract,
    extraction_options,
    missing_frames,
    precheck,
)
from progressive_swap.faceset.format import HEADER_NAME
from progressive_swap.footage.colour import clip_line, encoding_of
from progressive_swap.footage.sources import aspect_option, footage_exists, is_pattern
from progressive_swap.train import identity_fit

PROG = "swap-export"


@dataclass
class ExportOptions:
    """Options of ``swap-export`` (``key=value``)."""

    checkpoint: str = ""  # last.ckpt or model.safetensors of a run
    input: str = ""  # a face set directory, or footage: video / image / image folder
    out: str = ""  # output directory (created)
    identity: str = ""  # decoder to swap to: a name from the checkpoint, or its index
    from_identity: str = ""  # whose faces the footage shows (name, index or none); default: the other of two
    reconstruct: bool = False  # allow from_identity == identity: decode the footage's own identity (a reconstruction)
    format: Literal["png16", "png8", "exr", "tiff", "dpx"] = "png16"
    """png16/png8: sRGB, straight alpha (video and 8-bit footage); exr: half, premultiplied; tiff: float,
    premultiplied; dpx: 16-bit codes, straight alpha. exr/tiff/dpx hold the plate's colour space (plates only for
    tiff and dpx; docs/plates.md)."""
    layers: Literal["merged", "per_track"] = "merged"  # one layer per frame, or one per face track
    color: Literal["none", "reinhard", "histogram"] = "none"  # match the plate's skin (recorded in metadata)
    mask: Literal["auto", "source", "model", "union", "hull", "stored"] = "auto"  # where alpha comes from
    stored_mask: str = ""  # mask=stored: the face set's stored mask NAME (a user_NAME edit wins)
    erode: float = field(default=0.0, metadata={"min": 0.0})  # fraction of the face crop's side
    dilate: float = field(default=0.0, metadata={"min": 0.0})  # fraction of the face crop's side
    feather: float = field(default=0.0, metadata={"min": 0.0})  # Gaussian sigma, fraction of the crop's side
    crop_size: int = field(default=0, metadata={"min": 0})  # footage only: crop side; 0: the model's stage_res
    landmarks: Literal["fan", "given"] = "fan"  # footage only: detect (fan), or given in landmarks_file
    landmarks_file: str = ""  # footage only, landmarks=given: the truth JSON
    smooth: Literal["auto", "savgol", "one_euro", "none"] = "auto"  # footage only: landmark smoothing
    source: str = ""  # face set input: footage to read plates from (default: the records' source)
    frames: str = ""  # FIRST-LAST: a sequence's frame numbers (1001-1100) or a video's 0-based indices; "" all
    layer: str = ""  # multi-layer EXR plates: the RGB layer to read; "" the beauty (R, G, B)
    colorspace: str = ""  # the plates' OCIO colour space; "" what the file says, else its type's default (plates.md)
    ocio: str = ""  # OCIO config: a file, studio (built-in, camera log spaces) or cg; "" $OCIO, else cg
    colorspace_check: bool = True  # refuse a colorspace that contradicts the file (false: use colorspace anyway)
    pixel_aspect: float = field(default=0.0, metadata={"min": 0.0})
    """Plates: their pixel aspect ratio, 0.1 to 10, for a wrong or missing PixelAspectRatio header: it replaces the
    header's for every frame (the headers are then not checked to agree from frame to frame) and is written on the
    layers; 0 is what the extraction of a face set input was given, else what the first file's header says (1 when
    it says nothing). EXR, DPX and 16-bit/float plates only (docs/plates.md)."""
    layer_space: str = ""
    """Scene-referred plates: the scene-linear space EXR/TIFF layers are premultiplied and composite=true composited
    in; "" the plate's own when scene-linear, else the config's scene_linear (ACEScg). DPX layers stay in the plate's
    space (straight alpha); finished frames go back to it (docs/plates.md)."""
    face_type: Literal["", "full", "whole", "head"] = ""  # footage only, when the checkpoint does not record one
    patches: bool = False  # also write aligned-space RGBA crops
    preview: bool = False  # also write preview.mp4 (with the source's audio) and contact_sheet.png
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = False  # bfloat16 autocast for inference
    batch: int = field(default=8, metadata={"min": 1})  # faces per inference batch
    progress: bool = True  # progress on stderr: a bar on a terminal, plain lines in a log
    progress_every: float = field(default=30.0, metadata={"min": 0.0})  # seconds between lines when not a terminal
    allow_missing: bool = False  # exit 0 although frames of the footage could not be decoded (still listed)
    exr_window: Literal["frame", "face"] = "frame"  # EXR data window: the frame (read right anywhere) or the face box
    composite: bool = False  # also write the finished frames (and a video with the audio) under out/comp/
    comp: Literal["", "blender"] = ""  # blender: also write out/comp.blend, plate and layers wired (needs Blender)
    strict: bool = False  # footage that does not look like from_identity (identity check): an error, not a warning


FOOTAGE_ONLY = ("crop_size", "landmarks", "landmarks_file", "smooth", "face_type")
PLATE_KEYS = ("frames", "layer", "colorspace", "ocio")  # how plates are read: footage and face set input alike
# (and pixel_aspect, a number: plate_options)


def _is_faceset(path: Path) -> bool:
    return path.is_dir() and (path / HEADER_NAME).is_file()


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved; ``path`` need not exist)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _faceset_input(path: Path, footage: str, info, stage_res: int, mask_name: str | None = None):
    """Frames of the footage with the face set's faces; checks face type and resolution."""
    fs = faceset.open(path)
    if info.face_type and fs.face_type != info.face_type:
        raise UserError(
            f"face type mismatch: the checkpoint was trained on {info.face_type!r} faces, "
            f"the face set {str(path)!r} holds {fs.face_type!r} faces"
        )
    if fs.size < stage_res:
        raise UserError(
            f"resolution mismatch: the face set's crops are {fs.size} px but the model runs at "
            f"{stage_res} px; extract at >= {stage_res} px"
        )
    sources = F.faceset_sources(fs)
    if not sources:
        raise UserError(f"face set {str(path)!r} is empty")
    if footage:
        match = [s for s in sources if s == footage or Path(s).name == Path(footage).name]
        if not match:
            raise UserError(f"source={footage!r} is not a source of the face set; it has: {', '.join(sources)}")
        record_source = match[0]
        plates = Path(footage) if footage_exists(footage) else F.resolve_source(record_source, fs.root)
    elif len(sources) > 1:
        raise UserError(
            f"the face set holds faces of {len(sources)} sources; pick one with source=: {', '.join(sources)}"
        )
    else:
        record_source = sources[0]
        plates = F.resolve_source(record_source, fs.root)
    if mask_name and mask_name not in fs.mask_names and f"user_{mask_name}" not in fs.mask_names:
        raise UserError(
            f"mask=stored:{mask_name}: the face set has no {mask_name!r} masks "
            f"(it has: {', '.join(fs.mask_names) or 'none'})"
        )
    return fs, plates, record_source, mask_name


def _footage_input(o, info, stage_res: int):
    """Extract the footage into ``out/faces`` (the extractor resumes it); returns that set and the
    lines naming the detector (:func:`~progressive_swap.extract.options.detector_lines`)."""
    opt = _extract_options(o, info, stage_res)
    extract(opt)
    return Path(o.out) / "faces", detector_lines(opt)  # which detector ran: said in the first line


def _extract_options(o, info, stage_res: int) -> ExtractOptions:
    """The extraction of footage input into ``out/faces``."""
    ftype = info.face_type or o.face_type
    if not ftype:
        raise UserError("the checkpoint does not record its face type; pass face_type=full|whole|head")
    if o.face_type and info.face_type and o.face_type != info.face_type:
        raise UserError(
            f"face type mismatch: the checkpoint was trained on {info.face_type!r} faces, not {o.face_type!r}"
        )
    return ExtractOptions(
        input=o.input,
        out=str(Path(o.out) / "faces"),
        size=o.crop_size or stage_res,
        face_type=ftype,
        identity="target",
        landmarks=o.landmarks,
        landmarks_file=o.landmarks_file,
        device=o.device,
        smooth=o.smooth,
        frames=o.frames,
        layer=o.layer,
        colorspace=o.colorspace,
        ocio=o.ocio,
        colorspace_check=o.colorspace_check,
        pixel_aspect=o.pixel_aspect,
        crop_space="srgb",  # the set keeps landmarks and matrices; the layers are cut from the plate itself
        masks=False,
        progress=o.progress,
        progress_every=o.progress_every,
    )


def _export(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("options: " + usage(ExportOptions()))
        return 0
    argv = split_deprecated(argv, "mask", "stored", "stored_mask", PROG)
    argv = split_deprecated(argv, "landmarks", "given", "landmarks_file", PROG)
    o = parse_overrides(argv, ExportOptions(), PROG)
    for k in ("checkpoint", "input", "out", "identity"):
        if not str(o[k]).strip():
            raise UserError(f"{k}= is required (usage: {PROG} checkpoint=CKPT input=FOOTAGE out=DIR identity=NAME)")
    if (o.mask == "stored") != bool(o.stored_mask):
        raise UserError("mask=stored takes the mask's name: give mask=stored stored_mask=NAME (and only then)")
    if (o.landmarks == "given") != bool(o.landmarks_file):
        raise UserError("landmarks=given reads landmarks_file=FILE: give both (and landmarks_file only then)")
    try:
        aspect_option(o.pixel_aspect)
    except ValueError as e:
        raise UserError(str(e)) from None

    from rich.console import Console

    console = Console(file=sys.stderr)
    settings_kw = {k: o[k] for k in ("format", "layers", "color", "mask", "erode", "dilate", "feather", "patches",
                                      "preview", "batch", "exr_window", "composite")}
    if o.mask == "stored":  # the settings (and the resume fingerprint) keep the one-string form
        settings_kw["mask"] = f"stored:{o.stored_mask}"
    ExportSettings(
        **{**settings_kw, "mask": "model" if o.mask == "auto" else settings_kw["mask"]}
    )  # validate the cheap options before loading anything
    if o.comp == "blender":
        if o.layers != "merged":
            raise UserError("comp=blender wires the merged layer: use layers=merged")
        if o.format in ("tiff", "dpx"):
            raise UserError(f"comp=blender wires EXR and PNG layers, not format={o.format}")
        if blender_comp.find_blender() is None:
            raise UserError(blender_comp.NO_BLENDER)
    inp = Path(o.input)
    if not inp.exists() and not is_pattern(inp):
        raise FileNotFoundError(f"input not found: {o.input!r}")
    if not _is_faceset(inp):  # footage: a pattern matching nothing or a folder without images is refused here
        footage_plates = open_plates(o.input, **plate_options(o))
        check_plate_format(footage_plates, o.format)
        colour = footage_plates.colour
        if colour is not None:
            colour = colour.for_layers(o.layer_space)  # an unknown or non-linear layer space: refused here
        if o.comp == "blender":
            try:
                blender_comp.plate_job(footage_plates.kind, footage_plates.path, footage_plates.files)
            except ValueError as e:
                raise UserError(f"comp=blender: {e}") from None
            blender_spaces(colour)  # a plate space Blender's config lacks: refused before anything is written
    model, info = load_model(o.checkpoint, o.device)
    if not _is_faceset(inp):
        check_crop_space(footage_plates, info)  # before the faces are extracted into out
    identity = info.identity_index(o.identity)
    from_identity = info.from_identity(o.from_identity, identity)
    if from_identity == identity and not o.reconstruct:
        name = info.identities[identity]
        raise UserError(
            f"from_identity={name} is the identity swapped to: that reconstructs the footage's own face "
            f"instead of swapping it; pass reconstruct=true if that is what you want"
        )
    assumed = from_identity  # recorded and shown even where it changes no pixel
    if o.mask == "auto":
        settings_kw["mask"] = "source" if from_identity is not None else "model"
    if settings_kw["mask"] in ("source", "union") and from_identity is None:
        raise UserError(
            f"mask={settings_kw['mask']} takes the mask of the footage's own identity: name it with from_identity=NAME"
        )
    if not (getattr(model, "colour_norm", False) or settings_kw["mask"] in ("source", "union")):
        from_identity = None  # it changes nothing: keep it out of the records and the resume fingerprint
    fset, footage = inp, o.source
    mask_name = o.stored_mask if o.mask == "stored" else None
    defaults = ExportOptions()
    if _is_faceset(fset):  # check everything about the input before creating out
        if _inside(Path(o.out), fset):  # its layers, meta and lock would land among the set's files
            raise UserError(f"out={o.out!r} is inside the input face set {o.input!r}; choose an out= outside it")
        given = [k for k in FOOTAGE_ONLY if o[k] != getattr(defaults, k)]
        if given:  # they would change nothing: say so rather than ignore them
            raise UserError(f"{given[0]}= is for footage input; a face set input was extracted already")
        _, plates_path, record_source, _ = _faceset_input(fset, footage, info, info.stage_res, mask_name)
        if o.comp == "blender":  # a plate space Blender's config lacks: refused before out exists
            set_plates = open_plates(plates_path, **plate_options(o, fset, record_source))
            if set_plates.colour is not None:
                blender_spaces(set_plates.colour.for_layers(o.layer_space))
        check_previous(o.out, str(F.resolve_source(F.faceset_sources(faceset.open(fset))[0], fset))
                       if not footage else footage, None)
    else:
        if o.source:
            raise UserError("source= is for face set input; with footage input it is the input itself")
        if mask_name:
            raise UserError("mask=stored reads a face set's masks: pass the face set as input=")
        precheck(_extract_options(o, info, info.stage_res))  # options, plates, landmark file: before out exists
        check_previous(o.out, o.input, None)
    lock = locked_dir(o.out)  # one writer per out=: a second export here stops at once, naming this one
    with lock:
        # temporary files of a killed run's writes: our names only, in the folders an export writes
        for p in remove_debris(o.out, subdirs=EXPORT_DIRS, manifest="export.json"):
            console.print(f"removed {p.name}, an unfinished write of an earlier run", soft_wrap=True)
        return _export_locked(o, console, info, model, identity, from_identity, assumed, settings_kw, fset, footage,
                              mask_name)


def _export_locked(o, console, info, model, identity, from_identity, assumed, settings_kw, fset, footage, mask_name):
    """The export proper, with ``out`` locked."""
    detector = []
    if not _is_faceset(fset):
        (fset, detector), footage = _footage_input(o, info, info.stage_res), o.input
    fs, plates_path, record_source, mask_name = _faceset_input(fset, footage, info, info.stage_res, mask_name)
    plates = open_plates(plates_path, **plate_options(o, fset, record_source))
    check_plate_format(plates, o.format)
    if plates.colour is not None:  # layers are premultiplied and composited in linear light
        plates.colour = plates.colour.for_layers(o.layer_space)
    check_crop_space(plates, info)
    check_previous(o.out, str(plates_path), plates.fingerprint())
    frames = F.faceset_frames(fs, plates, record_source, mask_name)
    footage, size, tracks, ftype = plates_path, fs.size, F.faceset_tracks(fs, record_source), fs.face_type
    settings = ExportSettings(**settings_kw, crop_size=size)
    plate_job = blend_spaces = None
    if o.comp == "blender":
        try:
            plate_job = blender_comp.plate_job(plates.kind, plates.path, plates.files)
        except ValueError as e:
            raise UserError(f"comp=blender: {e}") from None
        blend_spaces = blender_spaces(plates.colour)

    check = identity_check(model, info, fs, record_source, assumed)
    if check["status"] == "mismatch":
        line = (f"the footage's faces do not look like {info.identities[assumed]}, whom the model was trained on: "
                + "; ".join(check["reasons"]))
        if o.strict:
            raise UserError(line + " (strict=true; name the right person with from_identity=, or leave strict off)")
        console.print(f"{PROG}: warning: {line}; the layers may be washed out (recorded in export.json)",
                      soft_wrap=True, highlight=False, markup=False)
    elif o.strict and check["status"] != "match":
        raise UserError(f"strict=true cannot check who the footage shows: {check['why']}")

    fps = plates.fps or float("nan")
    audio = footage if plates.kind == "video" else None
    device = next(model.parameters()).device
    mask_from = settings.mask if settings.mask in MODEL_MASKS else "model"
    swap = Swapper(
        model,
        identity,
        info.stage_res,
        info.alpha,
        device=device,
        bf16=o.bf16,
        source=from_identity,
        mask_from=mask_from,
    )
    if assumed is None:
        whose = "  from_identity=none (someone the model does not know)"
    else:
        whose = f"  from_identity={info.identities[assumed]}" + ("" if o.from_identity.strip() else " (assumed)")
        whose += " (reconstruction)" if assumed == identity else ""
    console.print(
        f"swap-export: {footage} -> {o.out}  identity={info.identities[identity]}{whose}  mask={settings.mask}  "
        f"model {info.stage_res} px ({ftype})  crop {size} px  {o.format}  on {device}"
        + (f"  {plates.colour.line()}" if plates.colour is not None else "")
        + (f"  {plates.aspect_line()}" if plates.aspect_line() else "")
        + (f"  layers in {plates.colour.layer}" if plates.colour is not None and plates.colour.layer
           and o.format != "dpx" else "")
        + "".join(f"  {line}" for line in detector[:1]),
        soft_wrap=True,
    )
    for line in detector[1:]:  # dlib's licence note
        console.print(f"{PROG}: {line}", soft_wrap=True, highlight=False, markup=False)
    exporter = Exporter(
        o.out,
        swap,
        info,
        identity,
        settings,
        from_identity=from_identity,
        assumed_identity=assumed,
        source=str(footage),
        tracks=tracks,
        fps=fps,
        audio_from=audio,
        total=plates.expected_frames or None,
        progress=o.progress,
        progress_every=o.progress_every,
        input_fingerprint=plates.fingerprint(),
        digits=plates.digits,
        notes={"identity_check": check,
               **({"pixel_aspect": plates.pixel_aspect} if plates.pixel_aspect != 1.0 else {})},  # anamorphic
    )
    stats = exporter.run(frames)
    redone = f", {stats['redone']} redone (made from other input, settings or damaged)" if stats["redone"] else ""
    console.print(
        f"done: {stats['frames']} frames ({stats['written']} written, {stats['skipped']} already complete{redone}), "
        f"{stats['faces']} faces, {stats['frames_per_s']} frames/s",
        soft_wrap=True,
    )
    console.print(clip_line(stats["clipped_share"]), soft_wrap=True, highlight=False, markup=False)
    if plate_job is not None:
        first = Path(o.out) / exporter.layer_relpath(plates.numbers[0] if plates.numbers else 0)
        try:
            blend = blender_comp.write_blend(o.out, plate_job, first, o.format, stats["frames"], plates_size(o.out),
                                             fps, spaces=blend_spaces)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise OSError(f"comp=blender: {e}") from None
        console.print(f"comp: {blend} (plate and layers over it, frames 0-{stats['frames'] - 1})", soft_wrap=True)
    missing = missing_frames(plates.problems, plates, stats["frames"])
    if missing:
        manifest = json.loads((Path(o.out) / "export.json").read_text("utf-8"))
        manifest.update(status="incomplete", frames_missing=missing, problems=list(plates.problems))
        atomic_write_json(Path(o.out) / "export.json", manifest)
        for line in plates.problems:
            console.print(f"problem: {line}", soft_wrap=True, highlight=False)
        if not o.allow_missing:
            print(f"{PROG}: error: incomplete: {missing} frame(s) of {footage} could not be decoded (listed above); "
                  "the others are written; allow_missing=true accepts that", file=sys.stderr)
            return EXIT_INCOMPLETE
    return 0


def identity_check(model, info, fs, record_source: str, whose: int | None, sample: int = 32) -> dict:
    """Do the footage's faces look like ``whose``, the identity the model reads them as? Up to
    ``sample`` faces, evenly spread, are reconstructed by every decoder and compared with the
    reference the model's training stored (:mod:`progressive_swap.train.identity_fit`).

    Returns:
        ``{"status": "match" | "mismatch" | "not checked", ...}``, the figures, and ``why`` when
        not checked (someone the model does not know, or no reference in the checkpoint).
    """
    ref = info.extra.get("identity_fit")
    if whose is None:
        return {"status": "not checked", "why": "from_identity=none: someone the model does not know"}
    if not isinstance(ref, dict) or info.face_type is None:
        return {"status": "not checked", "why": f"{Path(info.path).name} records no reference figures "
                                                "(a run's final model.safetensors does)"}
    rows = [i for i, s in enumerate(fs.sources) if s == record_source]
    rows = [rows[int(k)] for k in np.linspace(0, len(rows) - 1, min(sample, len(rows))).round()]
    crops = torch.from_numpy(np.stack([fs.values(i) for i in rows])).permute(0, 3, 1, 2)  # the network's values
    if crops.shape[-1] != info.stage_res:
        crops = torch.nn.functional.interpolate(crops, size=(info.stage_res,) * 2, mode="area")  # (B, 3, r, r)
    fit = identity_fit.decoder_fit(model, crops, whose, info.stage_res, info.alpha, info.face_type)
    verdict = identity_fit.mismatch(fit, whose, ref)
    return {"status": "match" if verdict.pop("looks_like") else "mismatch", "identity": info.identities[whose],
            "faces": len(rows), **verdict}


def plate_options(o, fset: Path | None = None, record_source: str = "") -> dict:
    """How the plates are read (``frames``, ``layer``, ``colorspace``, ``ocio``, ``pixel_aspect``):
    as given, else as the face set's extraction of ``record_source`` read them."""
    given = {k: str(o[k]) for k in PLATE_KEYS}
    was = extraction_options(fset, record_source) if fset is not None else {}
    out: dict = {k: given[k] or str(was.get(k) or "") for k in PLATE_KEYS}
    was_aspect = was.get("pixel_aspect")
    out["pixel_aspect"] = float(o.pixel_aspect) or (float(was_aspect) if isinstance(was_aspect, (int, float))
                                                    and not isinstance(was_aspect, bool) else 0.0)
    # an extraction that overrode the file's colour space (colorspace_check=false) is read the same way
    inherited = not given["colorspace"] and was.get("colorspace_check", True) is False
    out["colorspace_check"] = bool(o.colorspace_check) and not inherited
    return out


def check_plate_format(plates, fmt: str) -> None:
    """Scene-referred plates (EXR, DPX, float TIFF) get EXR or float TIFF layers in the layer space
    (the plate's own when it is scene-linear, else the config's scene_linear), or DPX layers in
    the plate's own space (code values 0–1: not for a scene-linear space). TIFF and DPX layers are
    for them only."""
    scene = plates.colour is not None and plates.colour.scene
    if scene and fmt not in W.PLATE_FORMATS:
        raise UserError(f"{plates.path.name} is scene-referred ({plates.colour.plate}): format={fmt} cannot hold its "
                        f"values; use format=exr or tiff (linear, premultiplied: in the plate's space when it is "
                        f"scene-linear, else the config's scene_linear) or dpx (the plate's own space) "
                        f"(docs/plates.md)")
    if not scene and fmt in W.PLATE_FORMATS and fmt != "exr":
        raise UserError(f"format={fmt} is for scene-referred plates (EXR, DPX, float TIFF); {plates.path.name} is "
                        f"sRGB footage: use format=png16 or exr")
    if fmt == "dpx" and encoding_of(plates.colour) == "scene-linear":
        raise UserError(f"format=dpx holds code values 0-1; {plates.colour.plate} is scene-linear (values above 1 "
                        f"would be clipped): use format=exr or tiff")


def blender_spaces(colour) -> dict[str, str] | None:
    """``comp=blender`` on a scene-referred plate: Blender's names for the plate's space and its
    EXR layers' (``export/blender_comp.py``, :func:`~progressive_swap.export.blender_comp.comp_spaces`);
    None for sRGB footage. A space Blender's OCIO config lacks is refused in one line."""
    if colour is None or not colour.scene:
        return None
    try:
        return blender_comp.comp_spaces(colour, blender_comp.find_blender() or "blender")
    except ValueError as e:
        raise UserError(f"comp=blender: {e}") from None
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise OSError(f"comp=blender: {e}") from None


def check_crop_space(plates, info) -> None:
    """A model of ACEScct crops is fed the working space of scene-referred plates; other footage
    (8-bit, sRGB) has only sRGB values to give it (docs/plates.md)."""
    if info.crop_space != "srgb" and (plates.colour is None or not plates.colour.scene):
        raise UserError(f"the checkpoint was trained on {info.crop_space} crops (scene-referred plates); "
                        f"{plates.path.name} is display-referred sRGB footage: export on EXR, DPX or float plates")


def plates_size(out: str | Path) -> tuple[int, int]:
    """The frame size ``(w, h)`` the export recorded (in its first sidecar)."""
    first = min((Path(out) / "meta").glob("face.*.json"))
    return tuple(json.loads(first.read_text("utf-8"))["frame_size"])


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _export(list(sys.argv[1:] if argv is None else argv)), PROG)


if __name__ == "__main__":
    sys.exit(main())
