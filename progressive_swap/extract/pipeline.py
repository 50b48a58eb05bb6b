"""Extraction: footage → an aligned face set (crops, raw and smoothed landmarks, hull masks).

Two passes, both resumable after a crash or a kill at any moment:

1. **Detect.** Frames are decoded in order; faces are detected (S3FD + 2D-FAN through
   :class:`progressive_swap.extract.detect.LandmarkDetector`) or read from a file
   (``landmarks=given landmarks_file=FILE``).
   Results go to a detection cache, ``OUT/.extract/<source-key>/det_<start>.npz``, one file
   per ``chunk`` frames, each written atomically. A rerun continues at the first missing
   chunk. The last chunk is marked ``eof`` and records where decoding stopped.
2. **Crop.** With the whole video's faces known: drop faces smaller than ``min_face``, link
   faces into tracks, keep the chosen tracks, smooth each track offline (zero-phase
   Savitzky–Golay by default, restarting at cuts and gaps), then decode the frames again and
   write crops and masks to the face set in atomic batches. Face ids are deterministic
   (``<source>-<hash>_<frame>_t<track>``), so a rerun skips the faces already committed.

Since both passes are deterministic functions of the input and the options (which the
manifest pins), an interrupted-and-resumed run gives the same face set as an uninterrupted
one: same ids, same records, no duplicates, no gaps.

Example:
    >>> from progressive_swap.extract.pipeline import ExtractOptions, extract  # doctest: +SKIP
    >>> summary = extract(ExtractOptions(input="shot.mp4", out="faces/B", size=512))
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from progressive_swap import faceset
from progressive_swap.core import align
from progressive_swap.core.io import atomic_write_json, loads_json, locked_dir, remove_debris
from progressive_swap.core.progress import Progress
from progressive_swap.extract.cache import read_chunk, read_chunks, write_chunk
from progressive_swap.extract.detect import (
    DlibDetector,
    DlibMissingError,
    Face,
    GivenLandmarks,
    LandmarkDetector,
)
from progressive_swap.extract.options import (
    CROP_KEYS,
    DETECT_KEYS,
    OLD_DEFAULTS,
    ExtractError,
    ExtractOptions,
    check_options,
    resolve_crop_space,
    resolve_detector,
)
from progressive_swap.extract.smoothing import smooth_track
from progressive_swap.extract.tracks import keep_tracks, link_tracks, min_size_filter
from progressive_swap.faceset.format import HEADER_NAME, crop_space_of
from progressive_swap.footage.colour import (
    clip_line,
    clip_summary,
    clipped_share,
    default_space,
    frame_in_crop_space,
    load_config,
    resolve_space,
)
from progressive_swap.footage.sources import Frame, FrameSource, open_source, parse_frames
from progressive_swap.masks.hull import LANDMARK_MASKS, landmark_mask

WORK_DIR = ".extract"
MASK_KINDS = LANDMARK_MASKS  # the hull masks written with every face
CLIP_MASK = "components"  # the face mask the share of clipped pixels is counted in
# Test hook: seconds to sleep per frame, so a test can kill an extraction part-way.
_DELAY_ENV = "PROGRESSIVE_SWAP_EXTRACT_DELAY"


# ---------------------------------------------------------------------- faces per frame


class _FaceFinder:
    """Finds faces in batches of frames, by the configured method."""

    def __init__(self, opt: ExtractOptions):
        self.given = self.given_boxes = None
        self.detector: LandmarkDetector | DlibDetector | None = None
        if opt.landmarks == "given":
            self.given = GivenLandmarks(opt.landmarks_file)
        if opt.boxes == "given":
            self.given_boxes = GivenLandmarks(opt.boxes_file)
        if self.given is None and opt.detector in ("dlib", "dlib_cnn"):
            try:
                self.detector = DlibDetector("mmod" if opt.detector == "dlib_cnn" else "hog", min_score=opt.min_score)
            except DlibMissingError as e:
                raise ExtractError(str(e)) from None
        elif self.given is None:
            self.detector = LandmarkDetector(
                device=opt.device, face_detector="folder" if self.given_boxes else "sfd",
                batch_size=opt.batch_size, flip_input=opt.flip_input, min_score=opt.min_score,
            )

    @property
    def fps(self) -> float | None:
        g = self.given or self.given_boxes
        return g.fps if g else None

    def __call__(self, frames: list[Frame], pixel_aspect: float = 1.0) -> list[list[Face]]:
        """Each frame's faces, boxes and landmarks in the frame's own pixels. With a
        ``pixel_aspect`` other than 1 (an anamorphic plate) the detector sees the frame
        de-squeezed (:func:`~progressive_swap.core.align.desqueeze_image`), as faces look, and
        what it finds is mapped back; given landmarks and boxes are the plate's own pixels."""
        if self.given is not None:
            return [self.given.faces(f.index, f.name) for f in frames]
        assert self.detector is not None
        a = pixel_aspect
        images = [align.desqueeze_image(f.image, a) for f in frames]
        if self.given_boxes is not None:
            boxes = [_box_points(self.given_boxes.boxes(f.index, f.name), a, align.desqueeze_points) for f in frames]
            scores = [np.ones(len(b)) for b in boxes]
        else:
            found = [self.detector.detect_boxes(im) for im in images]
            boxes, scores = [b[:, :4] for b in found], [b[:, 4] for b in found]
        lms = self.detector.landmarks_batch(images, boxes)
        return [[Face(box=_box_points(b, a, align.squeeze_points), landmarks=align.squeeze_points(lm, a),
                      score=float(s)) for b, lm, s in zip(bb, ll, ss)]
                for bb, ll, ss in zip(boxes, lms, scores)]


def _box_points(boxes: np.ndarray, pixel_aspect: float, how) -> np.ndarray:
    """``(..., 4)`` boxes ``[x0, y0, x1, y1]`` with both corners mapped by ``how`` (de-squeeze or squeeze)."""
    b = np.asarray(boxes, np.float64)
    if pixel_aspect == 1.0:
        return b
    return how(b.reshape(*b.shape[:-1], 2, 2), pixel_aspect).reshape(b.shape)


# ---------------------------------------------------------------------- detection cache


# ---------------------------------------------------------------------- helpers


def _source_key(src: FrameSource) -> str:
    h = hashlib.sha1(str(src.path.resolve()).encode()).hexdigest()[:6]
    return f"{src.name}-{h}"


def _face_id(key: str, frame: int, track: int) -> str:
    return f"{key}_{frame:06d}_t{track}"


def _crop_values(values: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """An aligned crop of a frame's crop-space values (float32, clipped to [0, 1]): cubic where the
    crop enlarges the face, linear with pre-reduction where it shrinks it, exactly as the export
    crops a plate for a model of these crops (``export/plate_layers.py: crop_working``)."""
    up = align.matrix_scale(align.crop_matrix(matrix, size)) >= 1.0
    crop = align.warp_to_crop(values, matrix, size, cv2.INTER_CUBIC if up else cv2.INTER_LINEAR)
    return np.clip(crop, 0.0, 1.0).astype(np.float32)


def _delay() -> float:
    try:
        return float(os.environ.get(_DELAY_ENV, "0") or 0)
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------- the passes


def _detect_pass(
    src: FrameSource, finder: _FaceFinder, work: Path, opt: ExtractOptions, progress: Progress
) -> list[dict]:
    chunks, done = read_chunks(work, opt.chunk)
    if done:
        return chunks
    start = len(chunks) * opt.chunk
    faces_before = sum(len(c["face_frame"]) for c in chunks)
    task = progress.task("extract detect", src.expected_frames or None, "frames", done=start, faces=faces_before)

    def update(n: int, f: int) -> None:
        task.advance(n, faces=f)
    frames_meta: list[tuple[int, float, int, int]] = []
    found: list[tuple[int, Face]] = []
    pending: list[Frame] = []
    batch = max(1, min(opt.batch_size, 8))  # frames per detector call
    delay = _delay()
    chunk_start = start
    p0 = len(src.problems)

    def flush_pending() -> None:
        if not pending:
            return
        for fr, faces in zip(pending, finder(pending, src.pixel_aspect)):
            found.extend((fr.index, f) for f in faces)
            update(1, len(faces))
        pending.clear()

    given = finder.given or finder.given_boxes
    first_size = None
    for fr in src.frames(start):  # chunks hold `chunk` positions; a frame's number is its identity
        size = (fr.image.shape[1], fr.image.shape[0])
        if given is not None and given.size is not None and tuple(given.size) != size:
            raise ExtractError(
                f"{given.path.name} was made for {given.size[0]}x{given.size[1]} frames, but frame {fr.index} of "
                f"{src.path.name} is {size[0]}x{size[1]}"
            )
        if src.is_sequence and first_size is not None and size != first_size:
            raise ExtractError(
                f"the frames of {src.path.name} change size at frame {fr.index} ({first_size[0]}x{first_size[1]} -> "
                f"{size[0]}x{size[1]}); extract each size separately"
            )
        first_size = first_size or size
        if fr.info is not None and not src.aspect_given and fr.info.pixel_aspect != src.pixel_aspect:
            raise ExtractError(
                f"the frames of {src.path.name} change pixel aspect at frame {fr.index} ({src.pixel_aspect:g} -> "
                f"{fr.info.pixel_aspect:g}); extract each separately, or give pixel_aspect= if a header is wrong"
            )
        while fr.pos >= chunk_start + opt.chunk:  # close the chunk(s) before this frame
            flush_pending()
            write_chunk(work, chunk_start, frames_meta, found, False, src.problems[p0:])
            p0 = len(src.problems)
            chunks.append(read_chunk(work, chunk_start))
            frames_meta, found = [], []
            chunk_start += opt.chunk
        frames_meta.append((fr.index, fr.time, fr.image.shape[1], fr.image.shape[0]))
        pending.append(fr)
        if len(pending) >= batch:
            flush_pending()
        if delay:
            time.sleep(delay)
    flush_pending()
    write_chunk(work, chunk_start, frames_meta, found, True, src.problems[p0:])
    chunks.append(read_chunk(work, chunk_start))
    task.close()
    return chunks


@dataclass
class _Plan:
    """Every face to write, in order, plus per-frame statistics."""

    frame: np.ndarray  # (K,) frame index
    track: np.ndarray  # (K,)
    raw: np.ndarray  # (K, 68, 2)
    smooth: np.ndarray  # (K, 68, 2)
    identity: list[str]
    extra: list[dict]
    stats: dict[str, Any]


def _plan(chunks: list[dict], src: FrameSource, opt: ExtractOptions, fps: float) -> _Plan:
    fi = np.concatenate([c["frame_index"] for c in chunks]) if chunks else np.zeros(0, np.int64)
    ff = np.concatenate([c["face_frame"] for c in chunks])
    box = np.concatenate([c["box"] for c in chunks]).reshape(-1, 4)
    score = np.concatenate([c["score"] for c in chunks])
    lms = np.concatenate([c["landmarks"] for c in chunks]).reshape(-1, 68, 2)
    ids = np.array(sum((list(c["identity"]) for c in chunks), []), object)
    # Sizes, tracks and smoothing measure faces as they look: an anamorphic plate's landmarks
    # and boxes (its own pixels, as detected and cached) are de-squeezed here and squeezed back
    # at the end (the plan, like the face set, keeps the plate's own pixels).
    aspect = src.pixel_aspect
    lms = align.desqueeze_points(lms, aspect)
    box = _box_points(box, aspect, align.desqueeze_points)
    times = dict(zip(fi.tolist(), np.concatenate([c["time"] for c in chunks]).tolist()))
    per_frame = np.bincount(np.searchsorted(fi, ff), minlength=len(fi)) if len(fi) else np.zeros(0, int)
    stats = {
        "frames": int(len(fi)),
        "faces_detected": int(len(ff)),
        "frames_no_face": int((per_frame == 0).sum()),
        "frames_several_faces": int((per_frame > 1).sum()),
    }
    keep = min_size_filter(lms, opt.min_face) if len(ff) else np.zeros(0, bool)
    stats["faces_too_small"] = int((~keep).sum())
    ff, box, score, lms, ids = ff[keep], box[keep], score[keep], lms[keep], ids[keep]
    # A shot cut closes every track: offset frame numbers so no match can bridge a cut.
    cut_pos = np.searchsorted(np.sort(np.asarray(opt.cuts, np.int64)), ff, side="right")
    if src.is_sequence:
        track = link_tracks(ff + cut_pos * 10**9, box, lms, ids) if len(ff) else np.zeros(0, np.int64)
    else:  # a folder of images is not a shot: a face in one photo is never linked to another photo's
        track = np.arange(len(ff), dtype=np.int64)
    sel = keep_tracks(track, lms, opt.track)
    ff, box, score, lms, ids, track = ff[sel], box[sel], score[sel], lms[sel], ids[sel], track[sel]
    method = opt.smooth
    if method == "auto":
        method = "savgol" if src.is_sequence else "none"
    smooth = lms.copy()
    if method != "none":
        params = {"window": opt.smooth_window} if method == "savgol" else {}
        for t in np.unique(track):
            rows = np.flatnonzero(track == t)
            smooth[rows] = smooth_track(
                lms[rows],
                fps,
                method,
                frame_index=ff[rows],
                times=np.array([times[int(i)] for i in ff[rows]]),
                cuts=opt.cuts,
                **params,
            )
    order = np.lexsort((track, ff))
    stats["tracks"] = int(len(np.unique(track)))
    stats["faces_kept"] = int(len(order))
    stats["smoothing"] = method
    label = [opt.identity or str(i) for i in ids[order]]
    box = _box_points(box[order], aspect, align.squeeze_points)
    extra = [
        {"box": [round(float(v), 3) for v in b], "score": round(float(s), 4)} for b, s in zip(box, score[order])
    ]
    raw, smooth = align.squeeze_points(lms[order], aspect), align.squeeze_points(smooth[order], aspect)
    return _Plan(ff[order], track[order], raw, smooth, label, extra, stats)


def _face_clip(fr: Frame, colour, m: np.ndarray, lm_crop: np.ndarray, opt: ExtractOptions,
               mask: np.ndarray | None = None) -> float | None:
    """The share of this face's pixels its crop space clips
    (:func:`~progressive_swap.footage.colour.clipped_share`): the plate's own values cropped as
    the face (bilinear, as the ``srgb`` crops), weighted by the face's hull mask (``mask``, else
    drawn from ``lm_crop``). ``None`` for 8-bit footage, which every crop space holds: nothing
    is computed."""
    if fr.plate is None or colour is None:
        return None
    if mask is None:
        mask = landmark_mask(lm_crop, opt.size, CLIP_MASK)
    share = clipped_share(align.warp_to_crop(fr.plate, m, opt.size), mask, colour, opt.crop_space)
    return round(share, 6)  # as the record keeps it, so a resumed run sums the same figures


def _recorded_clip(out: str | os.PathLike, ids: list[str]) -> list[float]:
    """The ``clipped_share`` an earlier run recorded for these faces (``extra``), where it did."""
    fs = faceset.open(out)
    found = []
    for i in ids:
        try:
            v = fs.record(fs.index_of(i)).extra.get("clipped_share")
        except (KeyError, ValueError):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            found.append(float(v))
    return found


def _crop_pass(
    src: FrameSource, plan: _Plan, key: str, opt: ExtractOptions, progress: Progress, writer_factory,
    notes: list[str] | None = None, clipped: list[float] | None = None,
) -> int:
    """Crop and write the planned faces; ``notes`` gets one line per frame whose crop-space
    values held NaN or inf (zeroed, +inf set to 1, as the sRGB path does through its view);
    ``clipped`` gets each face's share of pixels its crop space clipped (plates only; faces
    committed by an earlier run give the figure they recorded, ``extra["clipped_share"]``)."""
    ids = [_face_id(key, int(f), int(t)) for f, t in zip(plan.frame, plan.track)]
    writer = None
    written = 0
    if not ids:
        return 0
    writer = writer_factory()
    try:
        todo = np.array([i not in writer for i in ids], bool)
        if clipped is not None and not todo.all():
            clipped.extend(_recorded_clip(opt.out, [i for i, t in zip(ids, todo) if not t]))
        if not todo.any():
            return 0
        rows_by_frame: dict[int, list[int]] = {}
        for k in np.flatnonzero(todo):
            rows_by_frame.setdefault(int(plan.frame[k]), []).append(int(k))
        frames_todo = sorted(rows_by_frame)
        task = progress.task("extract crop", len(frames_todo), "frames", faces=0)

        def update(n: int, f: int) -> None:
            task.advance(n, faces=f)

        batch: tuple[list, list, dict[str, list]] = ([], [], {k: [] for k in MASK_KINDS})
        batch_frames = 0
        delay = _delay()

        def flush() -> None:
            nonlocal written, batch_frames
            recs, imgs, masks = batch
            if recs:
                writer.append(recs, imgs, masks if opt.masks else None)
                written += len(recs)
            batch[0].clear(), batch[1].clear()
            for v in masks.values():
                v.clear()
            batch_frames = 0

        last = frames_todo[-1]
        for fr in src.frames(src.position(frames_todo[0])):
            if fr.index > last:
                break
            rows = rows_by_frame.get(fr.index)
            if not rows:
                continue
            h, w = fr.image.shape[:2]
            values = None if opt.crop_space == "srgb" else frame_in_crop_space(
                fr.image, src.colour, opt.crop_space, fr.plate)
            if values is not None:
                bad = int(values.size - np.count_nonzero(np.isfinite(values)))
                if bad:  # before warping: interpolation would spread a NaN over its neighbours
                    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
                    if notes is not None:
                        notes.append(f"frame {fr.index}: {bad} non-finite plate value(s) (NaN, inf) set to 0 "
                                     f"(+inf to 1) before cropping")
            for k in rows:
                # frame px -> crop; fitted on de-squeezed pixels for an anamorphic plate (core/align.py)
                m = align.alignment_matrix(plan.smooth[k], opt.face_type, src.pixel_aspect)
                if values is None:
                    crop = align.warp_to_crop(fr.image, m, opt.size)
                else:
                    crop = _crop_values(values, m, opt.size)
                lm_crop = align.transform_points(plan.smooth[k], align.crop_matrix(m, opt.size))
                masks = {kind: landmark_mask(lm_crop, opt.size, kind) for kind in MASK_KINDS} if opt.masks else {}
                share = _face_clip(fr, src.colour, m, lm_crop, opt, masks.get(CLIP_MASK))
                extra = plan.extra[k] if share is None else {**plan.extra[k], "clipped_share": share}
                if src.pixel_aspect != 1.0:  # landmarks and matrix are the plate's own (squeezed) pixels
                    extra = {**extra, "pixel_aspect": src.pixel_aspect}
                if share is not None and clipped is not None:
                    clipped.append(share)
                rec = faceset.FaceRecord(
                    id=ids[k],
                    source=str(src.path),
                    frame_index=int(fr.index),
                    time=float(fr.time),
                    track=int(plan.track[k]),
                    identity=plan.identity[k],
                    landmarks=plan.smooth[k],
                    matrix=m,
                    frame_size=(w, h),
                    landmarks_raw=plan.raw[k],
                    extra=extra,
                )
                batch[0].append(rec)
                batch[1].append(crop)
                for kind, mask in masks.items():
                    batch[2][kind].append(mask)
            batch_frames += 1
            update(1, len(rows))
            if batch_frames >= opt.chunk:
                flush()
            if delay:
                time.sleep(delay)
        flush()
        task.close()
    finally:
        writer.close()
    return written


# ---------------------------------------------------------------------- entry point


def _check_given_frames(finder: _FaceFinder, chunks: list[dict], src: FrameSource) -> None:
    """A landmarks or boxes file must describe this footage: no frame beyond its last one."""
    given = finder.given or finder.given_boxes
    if given is None or not given.frames or not chunks:
        return
    if src.numbers is not None:  # checked before the passes (check_given_numbers)
        return
    decoded = max((int(c["frame_index"].max()) for c in chunks if len(c["frame_index"])), default=-1)
    last = max(given.frames)
    eof = bool(chunks[-1].get("eof"))
    known = max(decoded + 1, src.expected_frames)
    if eof and last >= known and not any(c["problems"] for c in chunks):
        raise ExtractError(
            f"{given.path.name} lists frame {last}, but {src.path.name} has {known} frames; "
            "is it the file of another clip?"
        )


def _skipped_count(problem: str) -> int:
    """Frames a ``frame N skipped: …`` / ``frames A-B skipped: …`` problem line stands for (else 0)."""
    m = re.match(r"frames? (-?\d+)(?:-(-?\d+))? skipped: ", problem)
    if not m:
        return 0
    return int(m.group(2)) - int(m.group(1)) + 1 if m.group(2) else 1


def check_given_numbers(given: GivenLandmarks | None, src: FrameSource) -> None:
    """A landmarks or boxes file for a numbered sequence names its frames by their file numbers."""
    if given is not None and given.names and src.files:  # another tool's file: frames by file name
        if not set(given.names) & {f.name for f in src.files}:
            some = ", ".join(sorted(given.names)[:3])
            raise ExtractError(f"{given.path.name} names frames ({some}, ...) that {src.path.name} does not hold")
        return
    if given is None or not given.frames or src.numbers is None:
        return
    if not set(given.frames) & set(src.numbers):
        raise ExtractError(
            f"{given.path.name} lists frames {min(given.frames)}-{max(given.frames)}, but the frames of "
            f"{src.path.name} are numbered {src.numbers[0]}-{src.numbers[-1]} (the numbers in the file names)"
        )


def precheck(opt: ExtractOptions) -> FrameSource:
    """The checks of :func:`extract` that need no detector and write nothing: options, the input
    (patterns, layers, colour spaces) and a given landmarks or boxes file's frame numbers.

    Returns:
        The opened source. Raises ExtractError / ValueError / FileNotFoundError in one line.
    """
    check_options(opt)
    src = open_source(opt.input, fps=opt.fps or None, frames=parse_frames(opt.frames), layer=opt.layer,
                      colorspace=opt.colorspace, ocio=opt.ocio, colorspace_check=opt.colorspace_check,
                      pixel_aspect=opt.pixel_aspect)
    for key in ("landmarks", "boxes"):
        if getattr(opt, key) == "given":
            check_given_numbers(GivenLandmarks(getattr(opt, key + "_file")), src)
    return src


# Plates whose space an older version took from the file type alone (before it read the file's
# own description): for these, an extraction it began may have read them in another space.
_TYPE_DEFAULT_EXTS = (".exr", ".hdr", ".dpx", ".cin")


def check_resumed_colour(old: dict[str, Any], src: FrameSource, opt: ExtractOptions, work: Path) -> None:
    """Refuse (one-line ``ExtractError``) to resume an extraction whose plates were read in another
    colour space than they are now: the face set would mix crops of two readings.

    A manifest records the plate space it read (``plate_space``). One written before that was
    recorded came from a version that took a plate's space from its file type alone (an EXR was
    the config's scene-linear space, ACEScg, whatever its chromaticities); where this plate's own
    description now says otherwise (an AP0 EXR is ACES2065-1) and ``colorspace=`` named none, the
    faces extracted so far were read wrongly.
    """
    now = src.colour.plate if src.colour is not None else None
    if "plate_space" in old:
        was, why = old["plate_space"], ""
    elif now is not None and not opt.colorspace and src.path.suffix.lower() in _TYPE_DEFAULT_EXTS:
        was = resolve_space(load_config(src.colour.config), default_space(src.path.suffix, "half"))
        why = " (by a version that took a plate's colour space from its file type alone)"
    else:
        return
    if was != now:
        raise ExtractError(
            f"{opt.out!r} holds an extraction of {src.path.name} that read it as {was}{why}, but it is {now} "
            f"({src.colour.reason if src.colour is not None else 'an 8-bit file'}); delete {str(work)!r} to extract "
            "it again, or use another out="
        )


def missing_frames(problems: list[str], src: FrameSource, decoded: int) -> int:
    """How many frames of the input could not be decoded (0 when all were)."""
    if not problems:
        return 0
    skipped = sum(_skipped_count(p) for p in problems)
    short = max(0, src.expected_frames - decoded - skipped) if src.expected_frames else 0
    stopped = any("decoding stopped" in p for p in problems)
    return skipped + (short or (1 if stopped else 0))


MAX_MANIFEST_BYTES = 1 << 20


def read_manifest(path: Path) -> dict[str, Any]:
    """An extraction record (``.extract/<key>/manifest.json``) checked against its schema: a JSON
    object with ``options`` (an object), ``input``, ``source`` (a string) and ``complete`` (a
    boolean), at most 1 MB and nesting capped. One-line ``ValueError`` otherwise."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"over {MAX_MANIFEST_BYTES} bytes")
        doc = loads_json(path.read_bytes())
    except UnicodeDecodeError as e:
        raise ValueError(f"extraction record {str(path)!r} is damaged ({e.reason})") from None
    except ValueError as e:
        raise ValueError(f"extraction record {str(path)!r} is damaged ({e})") from None
    ok = (isinstance(doc, dict) and isinstance(doc.get("options"), dict) and "input" in doc
          and isinstance(doc.get("source"), str) and isinstance(doc.get("complete"), bool))
    if not ok:
        raise ValueError(f"extraction record {str(path)!r} is damaged (not an object with options, input, "
                         f"source and complete)")
    return doc


def extraction_problems(out: str | os.PathLike) -> list[str]:
    """One line per extraction into the face set ``out`` that was interrupted and never finished
    (its manifest still says ``complete: false``): the set then holds only part of that footage."""
    found = []
    for m in sorted(Path(out).glob(f"{WORK_DIR}/*/manifest.json")):
        try:
            doc = read_manifest(m)
        except (OSError, ValueError):
            found.append(f"extraction record {m.parent.name} is unreadable; rerun the same swap-extract command, "
                         f"or delete {str(m.parent)!r} to start that footage over")
            continue
        if not doc["complete"]:
            found.append(
                f"the extraction of {doc.get('source', m.parent.name)} was interrupted: the set holds part of it; "
                "rerun the same swap-extract command to finish it"
            )
    return found


def extraction_options(out: str | os.PathLike, source: str) -> dict[str, Any]:
    """The options the extraction of ``source`` into the face set ``out`` ran with ({} if unknown)."""
    for m in sorted(Path(out).glob(f"{WORK_DIR}/*/manifest.json")):
        try:
            doc = read_manifest(m)
        except (OSError, ValueError):
            continue
        if doc["source"] == source:
            return doc["options"]
    return {}


def crop_space_for(opt: ExtractOptions, src: FrameSource) -> tuple[str, str]:
    """The crop space an extraction of ``src`` into ``opt.out`` writes, and why
    (:func:`~progressive_swap.extract.options.resolve_crop_space`): ``crop_space=auto`` keeps the
    one of an extraction being resumed, or of the face set being added to."""
    kept, why = None, ""
    if opt.crop_space == "auto":
        manifest = Path(opt.out) / WORK_DIR / _source_key(src) / "manifest.json"
        header = Path(opt.out) / "faceset.json"
        try:
            if manifest.is_file():
                kept = read_manifest(manifest)["options"].get("crop_space", OLD_DEFAULTS["crop_space"])
            elif header.is_file():
                kept, why = crop_space_of(loads_json(header.read_bytes())), "auto: the face set being added to"
        except (OSError, ValueError, TypeError, KeyError):
            kept = None  # a damaged manifest or header is named by the checks that read it
    space, reason = resolve_crop_space(opt, src.colour is not None and src.colour.scene, kept)
    return space, (why or reason)


def extract(opt: ExtractOptions) -> dict[str, Any]:
    """Extract faces from ``opt.input`` into the face set ``opt.out`` (resuming if it exists).

    Returns:
        A summary dict: frames, faces written, frames with no / several faces, problems…

    Raises:
        ExtractError: bad options, changed options on resume, or nothing usable in the input.
    """
    src = precheck(opt)
    out = Path(opt.out)
    if out.exists() and not out.is_dir():
        raise ExtractError(f"out {opt.out!r} exists and is not a directory")
    opt = replace(opt, detector=resolve_detector(opt), crop_space=crop_space_for(opt, src)[0])
    key = _source_key(src)
    work = out / WORK_DIR / key
    created_out = not out.exists()
    options = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(opt).items()}
    manifest_path = work / "manifest.json"
    if manifest_path.is_file():
        try:
            old = read_manifest(manifest_path)
            old_options = asdict(ExtractOptions(**{k: v for k, v in old["options"].items() if k in options}))
        except (OSError, ValueError, TypeError) as e:
            raise ExtractError(f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; delete {str(work)!r} "
                               f"to extract {src.path.name} again") from None
        for k in DETECT_KEYS + CROP_KEYS:  # (older manifests spell landmarks=given:FILE; read as the new keys)
            was = old_options.get(k) if k in old["options"] or k.endswith("_file") else OLD_DEFAULTS.get(k)
            was = list(was) if isinstance(was, tuple) else was
            if was != options.get(k):
                raise ExtractError(
                    f"{opt.out!r} holds an extraction of {src.path.name} with {k}={was!r}, "
                    f"not {options.get(k)!r}; use another out= or delete {str(work)!r}"
                )
        was_aspect = old.get("pixel_aspect", 1.0)  # absent: made before PixelAspectRatio was read
        if was_aspect != src.pixel_aspect:
            was = f"{was_aspect:g}" if isinstance(was_aspect, (int, float)) else repr(was_aspect)
            why = "" if "pixel_aspect" in old else " (by a version that read no PixelAspectRatio)"
            given = old["options"].get("pixel_aspect")
            why += f" (given as pixel_aspect={given:g})" if isinstance(given, (int, float)) and given else ""
            raise ExtractError(
                f"{opt.out!r} holds an extraction of {src.path.name} aligned at pixel aspect {was}{why}, "
                f"not {src.pixel_aspect:g}; use another out= or delete {str(work)!r}"
            )
        check_resumed_colour(old, src, opt, work)
        if old["input"] != src.fingerprint():
            raise ExtractError(
                f"{src.path.name} changed since its extraction into {opt.out!r} began; "
                f"delete {str(work)!r} to start over"
            )
    finder = _FaceFinder(opt)  # before creating files: weights and landmark files are checked here
    fps = float(src.fps or finder.fps or opt.fps or 24.0)
    t0 = time.perf_counter()
    try:
        with locked_dir(out):  # one writer per face set: a second run stops at once, naming the first
            # temporary files of a killed run's writes: our names only, in out and its .extract/
            # (the face set's own folders are the writer's to clean); a user's files are never looked at
            remove_debris(out, subdirs=(WORK_DIR,), manifest="faceset.json")
            work.mkdir(parents=True, exist_ok=True)
            if not manifest_path.is_file():
                atomic_write_json(
                    manifest_path,
                    {"input": src.fingerprint(), "source": str(src.path), "options": options, "complete": False,
                     "pixel_aspect": src.pixel_aspect, "plate_space": src.colour.plate if src.colour else None},
                )
            with Progress(opt.progress_every, enabled=opt.progress) as progress:
                chunks = _detect_pass(src, finder, work, opt, progress)
                t_detect = time.perf_counter() - t0
                _check_given_frames(finder, chunks, src)
                plan = _plan(chunks, src, opt, fps)
                problems = sorted(set(sum((list(c["problems"]) for c in chunks), [])) | set(src.problems))
                if src.kind == "video" and plan.stats["frames"] == 1 and src.expected_frames <= 1:
                    problems.append(f"{src.path.name} holds one frame: a still in a video container, not a shot")
                if plan.stats["frames"] == 0:
                    raise ExtractError(
                        f"no frame of {src.path.name} could be decoded" + (f": {problems[0]}" if problems else "")
                    )
                if plan.stats["faces_kept"] == 0:
                    raise ExtractError(
                        f"no faces found in {plan.stats['frames']} frames of {src.path.name}"
                        + (
                            f" ({plan.stats['faces_too_small']} smaller than min_face={opt.min_face:g})"
                            if plan.stats["faces_too_small"]
                            else ""
                        )
                    )

                def writer_factory() -> faceset.FaceSetWriter:
                    return faceset.create(
                        out,
                        face_type=opt.face_type,
                        crop_space=opt.crop_space,
                        size=opt.size,
                        image_format=opt.image_format,
                        identity=opt.identity or None,
                        exist_ok=True,
                        threads=2,
                    )

                nonfinite: list[str] = []
                clipped: list[float] = []
                written = _crop_pass(src, plan, key, opt, progress, writer_factory, nonfinite, clipped)
                problems = problems + nonfinite
    except (ExtractError, FileNotFoundError):
        if created_out and not (out / HEADER_NAME).exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing usable: leave nothing behind
        raise
    seconds = time.perf_counter() - t0
    summary = {
        "input": str(src.path),
        "out": str(out),
        "kind": src.kind,
        **plan.stats,
        "faces_written": written,
        "faces_in_set": len(faceset.open(out)),
        "problems": problems,
        "frames_missing": missing_frames(problems, src, plan.stats["frames"]),
        "seconds": round(seconds, 2),
        "detect_frames_per_s": round(plan.stats["frames"] / max(t_detect, 1e-9), 2),
        "frames_per_s": round(plan.stats["frames"] / max(seconds, 1e-9), 2),
        # 8-bit footage is sRGB pictures, which every crop space holds: 0 for each face, nothing computed
        "pixel_aspect": src.pixel_aspect,
        "clipped_share": clip_summary(clipped if src.colour is not None else [0.0] * plan.stats["faces_kept"],
                                      opt.crop_space),
    }
    atomic_write_json(
        manifest_path,
        {"input": src.fingerprint(), "source": str(src.path), "options": options, "complete": True,
         "pixel_aspect": src.pixel_aspect, "plate_space": src.colour.plate if src.colour else None,
         "frames_missing": summary["frames_missing"], "summary": summary},
    )
    return summary


def format_summary(s: dict[str, Any]) -> str:
    """The closing summary, a few lines of text."""
    lines = [
        f"{s['input']} -> {s['out']}",
        f"  frames {s['frames']}  faces detected {s['faces_detected']}  "
        f"kept {s['faces_kept']} in {s['tracks']} track(s)"
        f"  written {s['faces_written']} (set now holds {s['faces_in_set']})",
        f"  frames with no face {s['frames_no_face']}  frames with several faces {s['frames_several_faces']}"
        f"  too small {s['faces_too_small']}  smoothing {s['smoothing']}",
        f"  {s['seconds']:.1f} s, {s['frames_per_s']:.1f} frames/s",
    ]
    if s.get("clipped_share"):
        lines.append(f"  {clip_line(s['clipped_share'])}")
    lines += [f"  problem: {p}" for p in s["problems"]]
    if s.get("frames_missing"):
        lines.append(f"  incomplete: {s['frames_missing']} frame(s) of the input could not be decoded (listed above)")
    return "\n".join(lines)
