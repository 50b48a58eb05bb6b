"""Import a DeepFaceLab or FaceSwap face set as one of our face sets.

Each face is placed in its source frame (their crop -> frame through the stored or recomputed
matrix) and cut again in our geometry (:func:`progressive_swap.core.align.alignment_matrix` of
the frame landmarks, our ``face_type`` and ``size``):

* **with the source frames** (``frames=`` a folder holding the frames by the names the faces
  record): the crop is made from the frame, exactly as our extractor makes it;
* **without them**: their pixels are warped into our crop; what their crop does not cover is
  filled by reflection and the covered share is recorded in the face's ``extra["covered"]``.
  A ``size`` above what their pixels hold is refused unless ``upscale=True``. FaceSwap PNGs do
  not store where their crop sits (it depends on a pose model), so they need ``frames=``.

Their masks become user masks warped to our crop (DeepFaceLab ``xseg_mask`` -> ``user_xseg``,
its hand-drawn polygons -> ``user_xseg_polys`` and ``extra["ie_polys"]``; FaceSwap masks ->
``user_fs_<name>``). Metadata is read only through :mod:`.safe_load`: a file asking for anything
else is refused in one line, nothing is written for it, and the import goes on.

Convention: see :mod:`progressive_swap.core.align` (frame px -> normalised crop ``[0, 1]``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from progressive_swap.core.align import (
    alignment_matrix,
    compose,
    invert,
    matrix_scale,
    transform_points,
    warp_to_crop,
)
from progressive_swap.core.landmarks import face_type as check_face_type
from progressive_swap.faceset.format import ID_RE, FaceRecord, read_header
from progressive_swap.faceset.migrate.containers import MAX_FILE_BYTES, decode_image, png_chunks
from progressive_swap.faceset.migrate.dfl import read_dfl, read_pak
from progressive_swap.faceset.migrate.faceswap import read_alignments, read_faceswap_png
from progressive_swap.faceset.migrate.peer_face import PeerFace
from progressive_swap.faceset.migrate.safe_load import DamagedMetadataError, UnsafeMetadataError
from progressive_swap.faceset.writer import create
from progressive_swap.footage.sources import footage_exists, open_source

FORMATS = ("auto", "dfl", "faceswap")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BATCH = 16


@dataclass
class ImportResult:
    """What an import did: face ids written, ids already in the set, and refused files with
    their one-line reasons."""

    out: str
    size: int
    face_type: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    from_frames: int = 0


def _face_id(face: PeerFace, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(face.file.split(":")[-1]).stem).strip("._-")[:100] or "face"
    base = stem if ID_RE.match(stem) else f"f{stem}"
    fid, k = base, 2
    while fid in taken:
        fid, k = f"{base}_{k}", k + 1
    taken.add(fid)
    return fid


def _kind(path: Path, data: bytes) -> str:
    """``dfl`` or ``faceswap`` for a face image, from its metadata container."""
    if data[:2] == b"\xff\xd8":
        return "dfl"
    try:
        chunks = png_chunks(data, {b"fcWp", b"iTXt"})
    except DamagedMetadataError:
        return "faceswap"
    return "dfl" if any(k == b"fcWp" for k, _ in chunks) else "faceswap"


def _read_file(path: Path) -> bytes:
    n = path.stat().st_size
    if n > MAX_FILE_BYTES:
        raise UnsafeMetadataError(f"a file of {n} bytes")
    if n == 0:
        raise DamagedMetadataError("empty file")
    return path.read_bytes()


def _pak_reload(path: Path, name: str, label: str, identity: str, start: int, end: int) -> Callable[[], PeerFace]:
    def reload() -> PeerFace:
        with open(path, "rb") as f:
            f.seek(start)
            face = read_dfl(Path(Path(name).name), f.read(end - start))
        face.file, face.identity = label, identity
        return face

    return reload


def _file_reload(path: Path, kind: str, alignments: dict | None) -> Callable[[], PeerFace]:
    def reload() -> PeerFace:
        data = _read_file(path)
        return read_dfl(path, data) if kind == "dfl" else read_faceswap_png(path, data, alignments)

    return reload


def _read_pak_faces(path: Path, refuse: Callable[[str, str], None]) -> list[PeerFace]:
    """The faces packed in a DeepFaceLab ``faceset.pak``; a bad member is refused alone."""
    try:
        configs, ranges = read_pak(path)
    except (UnsafeMetadataError, DamagedMetadataError, OSError) as e:
        refuse(path.name, str(e))
        return []
    faces = []
    with open(path, "rb") as f:
        for k, (cfg, (start, end)) in enumerate(zip(configs, ranges)):
            name = cfg.get("filename") if isinstance(cfg.get("filename"), str) else f"{k:06d}.jpg"
            label = f"{path.name}:{Path(name).name}"
            try:
                if end - start > MAX_FILE_BYTES:
                    raise UnsafeMetadataError(f"a packed face of {end - start} bytes")
                f.seek(start)
                face = read_dfl(Path(Path(name).name), f.read(end - start), pixels=False)
            except (UnsafeMetadataError, DamagedMetadataError) as e:
                refuse(label, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - an unknown peer version: one line, never a traceback
                refuse(label, f"unreadable ({type(e).__name__})")
                continue
            face.file = label
            person = cfg.get("person_name")
            face.identity = person if isinstance(person, str) else ""
            face.reload = _pak_reload(path, name, label, face.identity, start, end)
            faces.append(face)
    return faces


def read_peer_faces(src: Path, fmt: str, refuse: Callable[[str, str], None]) -> list[PeerFace]:
    """Every face of a DeepFaceLab or FaceSwap folder, metadata only (each face's ``reload()``
    reads its pixels); each refused file reported via ``refuse``."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    alignments = None
    for p in (p for p in files if p.suffix.lower() == ".fsa" and fmt != "dfl"):
        try:
            found = read_alignments(_read_file(p))
            alignments = {**(alignments or {}), **found}
        except (UnsafeMetadataError, DamagedMetadataError) as e:
            refuse(p.name, str(e))
    faces = []
    for p in (p for p in files if p.suffix.lower() == ".pak" and fmt != "faceswap"):
        faces += _read_pak_faces(p, refuse)
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            data = _read_file(p)
            kind = _kind(p, data) if fmt == "auto" else fmt
            face = read_dfl(p, data, pixels=False) if kind == "dfl" else read_faceswap_png(
                p, data, alignments, pixels=False)
            face.reload = _file_reload(p, kind, alignments)
            faces.append(face)
        except (UnsafeMetadataError, DamagedMetadataError) as e:
            refuse(p.name, str(e))
        except Exception as e:  # noqa: BLE001 - an unknown peer version: one line, never a traceback
            refuse(p.name, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"[:200])
    return faces


def held_size(face: PeerFace, m_norm: np.ndarray) -> float:
    """Our crop side at which one of our pixels takes one of their pixels (no upscaling)."""
    if face.crop_from_frame is None:
        return math.inf
    return matrix_scale(face.crop_from_frame) / matrix_scale(m_norm)


class Frames:
    """The source frames of ``frames=``: a folder (faces find their frame by the file name they
    record) or a video or numbered image sequence (by frame number: the trailing digits of the name
    they record, minus ``frame_base``, is the 0-based frame of a video or the sequence's number).

    A video is decoded once, in order: ask for faces sorted by :meth:`key`.
    """

    def __init__(self, path: str | Path, frame_base: int = 1) -> None:
        self.path = Path(path)
        self.base = frame_base
        self.folder = self.path.is_dir()
        self.source = None
        if not self.folder:
            if not footage_exists(self.path):
                raise FileNotFoundError(f"frames={self.path} is not a folder, a video or an image sequence")
            self.source = open_source(self.path)
            self._stream = None
            self._current = None
            self._numbers: set[int] | None = None

    def key(self, face: PeerFace) -> int:
        return 0 if self.folder else face.frame_index - (self.base if self.source.kind == "video" else 0)

    def has(self, face: PeerFace) -> bool:
        if self.folder:
            return (self.path / Path(face.source).name).is_file()
        k = self.key(face)
        if self.source.kind == "video":
            return k >= 0 and (not self.source.expected_frames or k < self.source.expected_frames)
        if self._numbers is None:
            self._numbers = set(self.source.numbers or ())
        return k in self._numbers

    def get(self, face: PeerFace) -> np.ndarray | None:
        if self.folder:
            p = self.path / Path(face.source).name
            return decode_image(_read_file(p), max_side=16384) if p.is_file() else None
        want = self.key(face)
        if self._current is not None and self._current.index == want:
            return self._current.image
        if self._stream is None or (self._current is not None and self._current.index > want):
            self._stream = self.source.frames(self.source.position(want) if self.source.numbers else 0)
        for fr in self._stream:
            self._current = fr
            if fr.index >= want:
                break
        return self._current.image if self._current is not None and self._current.index == want else None


def convert_face(face: PeerFace, face_type: str, size: int, frame: np.ndarray | None, face_id: str,
                 identity: str) -> tuple[FaceRecord, np.ndarray, dict[str, np.ndarray]]:
    """One peer face -> our record, our crop (RGB uint8) and its masks (float32, our crop)."""
    m = alignment_matrix(face.landmarks, face_type)
    extra: dict = {"imported_from": face.origin, "peer_file": face.file, "peer_face_type": face.peer_face_type}
    if frame is not None:
        image = warp_to_crop(frame, m, size)
        frame_size = (frame.shape[1], frame.shape[0])
        inside = warp_to_crop(np.ones(frame.shape[:2], np.float32), m, size, border=cv2.BORDER_CONSTANT)
        extra["covered"] = round(float((inside > 0.5).mean()), 4)  # by the frame
        extra["pixels"] = "frame"
    else:
        if face.crop_from_frame is None:
            raise DamagedMetadataError(
                f"{face.origin} crops do not store where they sit in the frame: give frames= (a folder "
                f"holding {Path(face.source).name})")
        # their crop px -> our normalised crop: through the frame
        theirs_to_ours = compose(m, invert(face.crop_from_frame))
        image = warp_to_crop(face.image, theirs_to_ours, size)
        ones = np.ones(face.image.shape[:2], np.float32)
        cover = warp_to_crop(ones, theirs_to_ours, size, border=cv2.BORDER_CONSTANT)
        extra["covered"] = round(float((cover > 0.5).mean()), 4)
        extra["pixels"] = "peer crop"
        frame_size = face.frame_size
        if frame_size is None:  # DeepFaceLab does not store it: the extent its crop and landmarks reach
            h, w = face.image.shape[:2]
            corners = transform_points(np.array([[0, 0], [w, 0], [0, h], [w, h]], float), invert(face.crop_from_frame))
            reach = np.concatenate([corners, face.landmarks]).max(0)
            frame_size = (max(1, int(math.ceil(reach[0]))), max(1, int(math.ceil(reach[1]))))
            extra["frame_size_known"] = False
    masks = {}
    for name, pm in face.masks.items():
        masks[name] = np.clip(warp_to_crop(pm.mask, compose(m, invert(pm.from_frame)), size,
                                           border=cv2.BORDER_CONSTANT), 0.0, 1.0)
    if face.polygons:
        extra["ie_polys"] = [
            {"type": kind, "uv": np.round(transform_points(pts, m), 5).tolist()} for kind, pts in face.polygons
        ]
    if face.note:
        extra["note"] = face.note
    record = FaceRecord(
        id=face_id, source=face.source, frame_index=face.frame_index, time=float("nan"), track=-1,
        identity=identity or face.identity, landmarks=face.landmarks, matrix=m,
        frame_size=tuple(int(v) for v in frame_size), extra=extra,
    )
    return record, image, masks


@dataclass
class ImportPlan:
    """What :func:`plan_import` decided, for :func:`write_import`: the faces to write, each with
    whether its frame is there and what its pixels hold, and the set's options."""

    out: Path
    face_type: str
    size: int
    identity: str
    faces: list[tuple[PeerFace, bool, float]]
    frames: Frames | None
    result: ImportResult
    refused: Callable[[str, str], None]
    exists: bool
    identity_given: bool = False


def plan_import(
    src: str | Path,
    out: str | Path,
    *,
    fmt: str = "auto",
    face_type: str = "whole",
    size: int | None = None,
    frames: str | Path | None = None,
    frame_base: int = 1,
    upscale: bool = False,
    identity: str | None = None,
    refuse: Callable[[str, str], None] | None = None,
) -> ImportPlan:
    """Read every face's metadata, check the options and the size; write nothing.

    Args:
        fmt: ``auto`` (from each file's container), ``dfl`` or ``faceswap``.
        face_type: our crop type (``full``, ``whole``, ``head``).
        size: our crop side (multiple of 16). None: the largest that every face's pixels hold
            (the frames' when ``frames`` is given), or the existing set's size.
        frames: the source frames (a folder, a video or a numbered sequence, :class:`Frames`);
            faces whose frame is there are cut from it.
        frame_base: the number both tools give a video's first frame in the names they record (1).
        upscale: allow a ``size`` above what their pixels hold.
        identity: identity label of every face (default: a pak's person_name, else the name of ``out``).
        refuse: called with ``(name, reason)`` for each file refused.

    Raises:
        ValueError, FileNotFoundError, NotADirectoryError: bad options (one line), or ``size``
            above what the pixels hold without ``upscale``.
    """
    src, out = Path(src), Path(out)
    check_face_type(face_type)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder of aligned faces")
    source = Frames(frames, frame_base) if frames else None
    result = ImportResult(out=str(out), size=0, face_type=face_type)

    def refused(name: str, why: str) -> None:
        result.refused.append((name, why))
        if refuse is not None:
            refuse(name, why)

    exists = (out / "faceset.json").exists()
    if exists:
        header = read_header(out)
        face_type, size = header["face_type"], size or header["size"]
        result.face_type = face_type
    faces = read_peer_faces(src, fmt, refused)
    # What each face's pixels hold in our geometry; faces with their frame are held by the frame.
    plans = []
    for f in faces:
        try:
            m = alignment_matrix(f.landmarks, face_type)
        except ValueError as e:
            refused(f.file, str(e))
            continue
        has_frame = source is not None and source.has(f)
        if f.crop_from_frame is None and not has_frame:
            refused(f.file, f"{f.origin} crops do not store where they sit in the frame: give frames= "
                            f"(a folder holding {Path(f.source).name})")
            continue
        plans.append((f, has_frame, 1.0 / matrix_scale(m) if has_frame else held_size(f, m)))
    if size is None:
        holds = [h for _, _, h in plans]
        size = min(2048, max(16, int(min(holds) // 16) * 16)) if holds else 256
    if not upscale:
        short = [(f.file, h) for f, _, h in plans if h < size * 0.99]
        if short:
            name, h = min(short, key=lambda t: t[1])
            raise ValueError(f"size={size} is above what {len(short)} face(s) hold ({name}: {int(h)} px); "
                             f"use size={max(16, int(h // 16) * 16)} or upscale=true")
    result.size = size
    ident = identity if identity is not None else (out.resolve().name or "imported")  # DFL folders are all "aligned"
    return ImportPlan(out, face_type, size, ident, plans, source, result, refused, exists, identity is not None)


def write_import(plan: ImportPlan, progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Write the planned faces in atomic batches, skipping those already in the set (resume)."""
    result, refused, source = plan.result, plan.refused, plan.frames
    if not plan.faces and not plan.exists:
        return result  # nothing to import: no empty set is left behind
    writer = create(plan.out, face_type=plan.face_type, size=plan.size, identity=plan.identity, exist_ok=True)
    try:
        taken: set[str] = set()
        ids = [_face_id(f, taken) for f, _, _ in plan.faces]  # deterministic: a rerun finds the same ids
        already = {fid for fid in ids if fid in writer}
        todo = [(p, fid) for p, fid in zip(plan.faces, ids) if fid not in already]
        if source is not None:  # a video is decoded once, in order
            todo.sort(key=lambda t: source.key(t[0][0]) if t[0][1] else -1)
        result.skipped = [fid for fid in ids if fid in already]
        done = len(result.skipped)
        for start in range(0, len(todo), BATCH):
            records, images, masks = [], [], {}
            batch = todo[start:start + BATCH]
            for (f, has_frame, _), fid in batch:
                frame = source.get(f) if has_frame else None
                if has_frame and frame is None and f.crop_from_frame is None:
                    refused(f.file, f"frame {f.frame_index} of {source.path} could not be read")
                    continue
                try:
                    full = f.reload() if f.reload is not None else f
                    r, im, ms = convert_face(full, plan.face_type, plan.size, frame, fid,
                                             plan.identity if plan.identity_given else "")
                except (ValueError, cv2.error) as e:
                    refused(f.file, str(e).splitlines()[0] if str(e) else type(e).__name__)
                    continue
                result.from_frames += frame is not None
                k = len(records)
                records.append(r)
                images.append(im)
                for name in ms:
                    masks.setdefault(name, [None] * k)
                for name in masks:
                    masks[name].append(ms.get(name))
            writer.append(records, images, masks)
            result.written += [r.id for r in records]
            done += len(batch)
            if progress is not None:
                progress(done, len(plan.faces))
    finally:
        writer.close()
    return result


def import_faceset(
    src: str | Path,
    out: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> ImportResult:
    """Import ``src`` (a folder of DeepFaceLab aligned faces or FaceSwap face PNGs) into ``out``:
    :func:`plan_import` with ``options`` (``fmt``, ``face_type``, ``size``, ``frames``,
    ``frame_base``, ``upscale``, ``identity``, ``refuse``: see there), then :func:`write_import`.

    Resumable: faces whose ids are already in ``out`` are skipped, so rerunning after a crash
    finishes the job. Files that are refused are reported through ``refuse(name, reason)`` and
    listed in the result; nothing is written for them.

    Raises:
        ValueError: bad options, or ``size`` above what the pixels hold without ``upscale``.
    """
    return write_import(plan_import(src, out, **options), progress)
