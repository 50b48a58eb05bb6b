"""The export loop: frames in, swapped-face layers (plus sidecars and previews) out.

Frames stream through one at a time; faces are swapped in batches across consecutive frames,
so memory is bounded by ``batch`` frames whatever the clip's length. Each frame's outputs are
written atomically and its sidecar JSON last: the sidecar is the frame's commit record, so a
rerun skips exactly the frames whose sidecar exists, matches the settings, was made from the same
input frame (its plate, face records, crops and masks: the sidecar's ``input_key``) and lists
files that all still decode at the frame's size; every other frame is redone and counted
(``redone``). A crash or a full disk never leaves a truncated file under a final name.

Layout of ``out/`` (``NNNNNN`` is the footage's frame index, from 0, for video; a numbered image
sequence's own frame numbers and padding, ``face.1001.exr`` for ``plate.1001.exr``)::

    export.json                      settings, checkpoint facts and (at the end) a summary
    layers/face.NNNNNN.png|exr       merged layer (layers=merged)
    layers/track<T>/face.NNNNNN.*    one layer per face track, every frame (layers=per_track)
    meta/face.NNNNNN.json            sidecar: time, matrices, landmarks, tracks, identity, files
    patches/face.NNNNNN.t<T>.png     aligned-space RGBA crops (patches=true)
    preview.mp4, contact_sheet.png   composites over the plate (preview=true)
    comp/comp.NNNNNN.png, comp.mp4   finished frames: the written layers over the plate (composite=true)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time as _time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from progressive_swap.core import align
from progressive_swap.core.io import atomic_write_json, check_inside, check_writable_dir, loads_json
from progressive_swap.core.progress import DEFAULT_EVERY, Progress
from progressive_swap.export import composite as C
from progressive_swap.export import plate_layers as PL
from progressive_swap.export import writers as W
from progressive_swap.export.frames import FaceIn, FrameIn
from progressive_swap.export.preview import ContactSheet, PreviewWriter
from progressive_swap.export.settings import (
    ExportSettings,
    software,
)
from progressive_swap.export.swapper import MODEL_MASKS, CheckpointInfo
from progressive_swap.footage.colour import clip_summary, clipped_share
from progressive_swap.masks.hull import landmark_mask


def stack_layers(layers: list[np.ndarray]) -> np.ndarray:
    """Straight-alpha layers stacked with *over*, the first at the bottom (per-track layers as
    one; a single layer is returned as is)."""
    out = layers[0]
    for layer in layers[1:]:
        a = layer[..., 3:4]
        pre = layer[..., :3] * a + out[..., :3] * out[..., 3:4] * (1 - a)
        alpha = a + out[..., 3:4] * (1 - a)
        out = np.concatenate([np.divide(pre, alpha, out=np.zeros_like(pre), where=alpha > 0), alpha], -1)
    return out


EXPORT_DIRS = ("meta", "layers", "comp", "patches")
"""The folders an export writes inside ``out=`` (the only ones its debris sweep looks in, with
``out`` itself; ``out/faces`` is a face set, swept by the extractor)."""


@dataclass
class _Pending:
    frame: FrameIn
    crops: list[np.ndarray] = field(default_factory=list)
    key: str = ""
    rgb: list[np.ndarray] = field(default_factory=list)
    mask: list[np.ndarray] = field(default_factory=list)
    clipped: list[float | None] = field(default_factory=list)  # per face: the share its crop space clipped


class Exporter:
    """Swap every face of a frame stream and write layers, sidecars and previews.

    Args:
        out: output directory (created; must be writable).
        swap: ``swap(crops uint8 (B, S, S, 3)) -> (rgb (B, S, S, 3), mask (B, S, S))`` floats in
            [0, 1] (a :class:`~progressive_swap.export.swapper.Swapper`).
        info: the checkpoint's facts (provenance and the identity's name).
        identity: decoder index the faces are swapped to.
        settings: what to write.
        from_identity: identity the input's faces belong to, when the swap depends on it (a model
            with ``colour_norm``); recorded, and part of the resume fingerprint.
        assumed_identity: whose faces the input is taken to show where that changes no pixel
            (recorded as ``from_identity`` when ``from_identity`` is None; not fingerprinted).
        source: description of the input (recorded).
        tracks: face tracks known in advance (``per_track`` writes every one of them on every
            frame, transparent where the face is absent).
        fps: nominal frame rate (preview timing for frames without timestamps).
        audio_from: media file whose audio the preview keeps.
        total: expected frame count (progress bar, contact sheet spacing).
        progress: show progress on stderr (a bar on a terminal, plain lines in a log).
        progress_every: seconds between progress lines when stderr is not a terminal.
        workers: threads that composite, encode and write frames (0: up to 4, one per core).
        input_fingerprint: what identifies the footage (recorded; see :func:`check_previous`).
        notes: more entries for ``export.json`` (e.g. ``identity_check``).
        digits: zero padding of the frame numbers in file names (6 for video; a numbered
            sequence's own, so ``plate.1001.exr`` gives ``face.1001.exr``).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        swap: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        info: CheckpointInfo,
        identity: int,
        settings: ExportSettings,
        from_identity: int | None = None,
        assumed_identity: int | None = None,
        source: str = "",
        tracks: Iterable[int] = (),
        fps: float = float("nan"),
        audio_from: str | os.PathLike | None = None,
        total: int | None = None,
        progress: bool = True,
        progress_every: float = DEFAULT_EVERY,
        workers: int = 0,
        input_fingerprint: dict | None = None,
        notes: dict | None = None,
        digits: int = 6,
    ) -> None:
        self.out = check_writable_dir(out)
        self.notes = dict(notes or {})
        self.swap, self.info, self.identity, self.s = swap, info, int(identity), settings
        self.identity_name = info.identities[self.identity]
        whose = from_identity if from_identity is not None else assumed_identity
        self.from_identity = None if whose is None else info.identities[int(whose)]
        self.source, self.tracks = source, sorted(set(int(t) for t in tracks))
        self.fps, self.audio_from, self.total, self.progress = fps, audio_from, total, progress
        self.progress_every = progress_every
        self.input_fingerprint = input_fingerprint
        self.digits = max(1, int(digits))
        self.ext = W.FORMATS[settings.format]
        self.workers = int(workers) if workers > 0 else max(1, min(4, os.cpu_count() or 1))
        px = settings.pixel_settings()
        swap_key = {"checkpoint_sha256": info.sha256, "identity": self.identity}
        if from_identity is not None:
            swap_key["from_identity"] = int(from_identity)
        self.fingerprint = hashlib.sha256(json.dumps({**px, **swap_key}, sort_keys=True).encode()).hexdigest()[:16]
        self.provenance = {
            "software": software(),
            "checkpoint": Path(info.path).name,
            "checkpoint_sha256": info.sha256,
            "identity": self.identity_name,
            "from_identity": self.from_identity,
            "stage_res": info.stage_res,
            "model_alpha": info.alpha,
            "face_type": info.face_type,
            "crop_space": info.crop_space,
            "settings": px,
        }
        self.text = W.file_metadata(settings.format, self.provenance)
        self.patch_text = W.file_metadata("png16", {**self.provenance, "space": "aligned crop"})
        self.comp_text = W.comp_metadata(self.provenance)
        self.stats = {"frames": 0, "faces": 0, "skipped": 0, "written": 0, "redone": 0,
                      "nonfinite_layer_values": 0, "nonfinite_comp_values": 0}
        self.colour: dict | None = None  # the colour path of scene-referred plates, once one is seen
        self.clipped: list[float] = []  # per face, the share of its pixels the crop space clipped (clipped_share)

    # ------------------------------------------------------------------ paths

    def _track_dir(self, track: int) -> str:
        return f"track{track}" if track >= 0 else "untracked"

    def layer_relpath(self, index: int, track: int | None = None) -> str:
        sub = "layers" if track is None else f"layers/{self._track_dir(track)}"
        return f"{sub}/face.{self.number(index)}{self.ext}"

    def number(self, index: int) -> str:
        """A frame's number as file names spell it (``1001``; ``000012`` for video)."""
        return f"{index:0{self.digits}d}"

    def comp_relpath(self, index: int) -> str:
        return f"comp/comp.{self.number(index)}.png"

    def sidecar_path(self, index: int) -> Path:
        return self.out / "meta" / f"face.{self.number(index)}.json"

    @staticmethod
    def input_key(fr: FrameIn) -> str:
        """What a frame's outputs were made from: the plate's pixels and every face's record,
        crop and stored mask. A re-extracted face set or replaced footage changes it."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(fr.image).tobytes())
        if fr.colour is not None and fr.colour.scene:  # layers made in another working space are redone
            h.update(json.dumps(fr.colour.as_dict(), sort_keys=True).encode())
        for f in fr.faces:
            h.update(json.dumps([f.face_id, f.track]).encode())
            for a in (f.matrix, f.landmarks, f.crop, f.mask):
                h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def is_done(self, index: int, key: str | None = None) -> dict | None:
        """The sidecar of a complete frame exported with these settings (and, with ``key``, from
        the same input frame) whose files still decode, else None."""
        p = self.sidecar_path(index)
        try:
            meta = loads_json(p.read_bytes())
            files = list(meta.get("files", {}).values()) + list(meta.get("patches", {}).values())
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            return None
        if meta.get("fingerprint") != self.fingerprint:
            return None
        if key is not None and meta.get("input_key") != key:
            return None
        if self.s.composite:  # a frame exported without its composite is done again, with it
            if not meta.get("comp"):
                return None
            files.append(meta["comp"])
        if not all(self._own_file(f) for f in files):  # a sidecar's paths are data: ours, inside out, or redo
            return None
        if key is not None:  # a file damaged under its final name (disk, copy, hand edit) is redone
            size = tuple(meta.get("frame_size") or ())
            for f in meta.get("files", {}).values():
                try:
                    layer = self._layer_pixels(self.out / f, meta)
                except Exception:  # noqa: BLE001 - any decoder error means "redo this frame"
                    return None
                if size and (layer.shape[1], layer.shape[0]) != size:
                    return None
            if self.s.composite:
                comp = self._comp_pixels(self.out / meta["comp"])
                if comp is None or (size and (comp.shape[1], comp.shape[0]) != size):
                    return None
        return meta

    def _own_file(self, rel: object) -> bool:
        """Whether a path a sidecar names is a regular file inside ``out`` under one of the
        folders an export writes (never ``..``, an absolute path, or a link out of ``out``)."""
        if not isinstance(rel, str) or os.path.isabs(rel) or ".." in Path(rel).parts:
            return False
        parts = Path(rel).parts
        if len(parts) < 2 or parts[0] not in EXPORT_DIRS:
            return False
        path = self.out / rel
        try:
            check_inside(self.out, path)
        except ValueError:
            return False
        return path.is_file() and not path.is_symlink()

    # ------------------------------------------------------------------ running

    def run(self, frames: Iterable[FrameIn]) -> dict:
        """Export every frame; returns counts (frames, faces, skipped, written)."""
        (self.out / "meta").mkdir(exist_ok=True)
        (self.out / "layers").mkdir(exist_ok=True)
        manifest = {
            "kind": "progressive_swap.export", "version": 1, "status": "running", "software": software(),
            "input": self.source, "checkpoint": self.provenance["checkpoint"], "checkpoint_sha256": self.info.sha256,
            "identity": self.identity_name, "from_identity": self.from_identity,
            "stage_res": self.info.stage_res, "face_type": self.info.face_type, "crop_space": self.info.crop_space,
            "conventions": W.CONVENTIONS[self.s.format], "synthetic": True, "settings": self.s.pixel_settings(),
            "fingerprint": self.fingerprint, "input_fingerprint": self.input_fingerprint, **self.notes,
        }
        if self.s.composite:
            manifest["composite"] = {"frames": "comp/comp.NNNNNN.png", "video": "comp/comp.mp4",
                                     "how": "the written layers over the plate in linear light, as the preview"}
            (self.out / "comp").mkdir(exist_ok=True)
        atomic_write_json(self.out / "export.json", manifest)
        preview = PreviewWriter(self.out / "preview.mp4", self.fps, self.audio_from) if self.s.preview else None
        sheet = ContactSheet(self.total) if self.s.preview else None
        self._sinks = (preview, sheet)
        # The finished frames' video: the same writer as the preview, at a higher quality.
        comp_video = PreviewWriter(self.out / "comp" / "comp.mp4", self.fps, self.audio_from, crf=12) \
            if self.s.composite else None
        self._comp_video = comp_video
        # Compositing, encoding and writing run in worker threads (OpenCV, zlib and OpenEXR
        # release the GIL) while the next batch is inferred; results are taken in frame order.
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="export-write")
        self._inflight: deque[tuple[FrameIn, Future]] = deque()
        t0 = _time.perf_counter()
        try:
            with Progress(self.progress_every, enabled=self.progress) as bar:
                task = bar.task("export", self.total, "frames", faces=0)
                self._advance = advance = task.advance
                pending: list[_Pending] = []
                n_faces = 0
                for fr in frames:
                    self.stats["frames"] += 1
                    self._crop_space(fr, manifest)
                    key = self.input_key(fr)
                    done = self.is_done(fr.index, key)
                    if done is not None:
                        self._flush(pending)
                        pending, n_faces = [], 0
                        self._drain(0)
                        self.stats["skipped"] += 1
                        self.clipped.extend(self._recorded_clip(fr, done))
                        if preview is not None:
                            self._preview(fr, self._read_back(fr))
                        if comp_video is not None and not PL.scene_referred(fr):  # EXR frames: no video
                            comp_video.write(self._read_comp(fr.index), fr.index, fr.time)
                        advance(1, skipped=1)
                        continue
                    if self.sidecar_path(fr.index).exists():  # stale: other input, settings or a damaged file
                        self.stats["redone"] += 1
                    p = _Pending(fr, [self._crop(fr, f) for f in fr.faces], key=key)
                    p.clipped = [self._clip_share(fr, f) for f in fr.faces]
                    self.clipped.extend(0.0 if c is None else c for c in p.clipped)
                    pending.append(p)
                    n_faces += len(p.crops)
                    if n_faces >= self.s.batch or len(pending) >= 2 * self.s.batch:
                        self._flush(pending)
                        pending, n_faces = [], 0
                self._flush(pending)
                self._drain(0)
            if preview is not None:
                preview.close()
                sheet.save(self.out / "contact_sheet.png")
            if comp_video is not None:
                if comp_video._video is None:  # scene-referred plates: finished frames are EXRs, no video
                    comp_video.abort()
                else:
                    comp_video.close()
        except BaseException as e:
            # Let running writes finish (each is atomic), drop queued ones, then report.
            self._pool.shutdown(wait=True, cancel_futures=True)
            if preview is not None:
                preview.abort()
            if comp_video is not None:
                comp_video.abort()
            status = "failed" if isinstance(e, Exception) else "interrupted"
            try:  # never left saying "running"
                atomic_write_json(self.out / "export.json", {**manifest, "status": status, "summary": self.stats})
            except OSError:
                pass
            raise
        finally:
            self._pool.shutdown(wait=True)
        dt = _time.perf_counter() - t0
        self.stats["clipped_share"] = clip_summary(self.clipped, self.info.crop_space)
        self.stats["seconds"] = round(dt, 3)
        self.stats["frames_per_s"] = round(self.stats["frames"] / dt, 3) if dt > 0 else None
        atomic_write_json(self.out / "export.json", {**manifest, "status": "complete", "summary": self.stats})
        return dict(self.stats)

    def _crop_space(self, fr: FrameIn, manifest: dict) -> None:
        """Give a scene-referred plate's frame the model's crop space as its working space (the
        network is fed crops in the space it learned, its output is read back from it), and
        record that path in ``export.json`` the first time."""
        if fr.colour is None or not fr.colour.scene:
            return
        fr.colour = fr.colour.for_crops(self.info.crop_space)
        if self.colour is None:
            self.colour = manifest["colour"] = fr.colour.as_dict()
            # what the files are, as the sidecars say: the layer space (DPX: the plate's), and
            # finished frames in the plate's space, opaque
            manifest["conventions"] = PL.conventions(self.s.format, PL.layer_space(fr, self.s.format))
            if self.s.composite:
                manifest["composite"] = {"frames": f"comp/comp.{'N' * self.digits}.exr", "video": None,
                                         "conventions": PL.conventions("exr", fr.colour.plate, opaque=True),
                                         "how": "the written layers over the plate in the layer space (linear "
                                                "light), converted back to the plate's space"}
            atomic_write_json(self.out / "export.json", manifest)

    def _clip_share(self, fr: FrameIn, face: FaceIn) -> float | None:
        """The share of this face's pixels the model's crop space clips
        (:func:`~progressive_swap.footage.colour.clipped_share`): the plate's own values cropped as
        the face (bilinear), counted in its hull mask (the whole crop without landmarks). ``None``
        for 8-bit footage, which every crop space holds: nothing is computed."""
        if fr.plate is None or fr.colour is None:
            return None
        size = self.s.crop_size
        mask = None
        if face.landmarks is not None:
            mask = landmark_mask(align.transform_points(face.landmarks, align.crop_matrix(face.matrix, size)), size,
                                 "components")
        share = clipped_share(align.warp_to_crop(fr.plate, face.matrix, size), mask, fr.colour, self.info.crop_space)
        return round(share, 6)  # as the sidecar records it, so a resumed run sums the same figures

    @staticmethod
    def _recorded_clip(fr: FrameIn, meta: dict) -> list[float]:
        """A finished frame's faces' ``clipped_share`` from its sidecar (0 for 8-bit footage; a
        plate frame written before the figure existed adds nothing)."""
        faces = meta.get("faces") if isinstance(meta.get("faces"), list) else []
        if fr.plate is None:
            return [0.0] * len(faces)
        vals = [f.get("clipped_share") for f in faces if isinstance(f, dict)]
        return [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def _crop(self, fr: FrameIn, face: FaceIn) -> np.ndarray:
        if fr.plate is not None and fr.colour is not None:  # a float plate: crop its values, no 8-bit step
            return PL.crop_working(fr, face.matrix, self.s.crop_size)
        if face.crop is not None:
            return face.crop
        size = self.s.crop_size
        # Cubic keeps detail when the crop enlarges the face; where it shrinks it, linear with
        # warp_to_crop's pre-reduction avoids aliasing.
        up = align.matrix_scale(align.crop_matrix(face.matrix, size)) >= 1.0
        return align.warp_to_crop(fr.image, face.matrix, size, cv2.INTER_CUBIC if up else cv2.INTER_LINEAR)

    def _flush(self, pending: list[_Pending]) -> None:
        """Swap the pending frames' faces in batches and queue their writes."""
        if not pending:
            return
        crops = [c for p in pending for c in p.crops]
        rgb_all, mask_all = [], []
        b = self.s.batch
        for k in range(0, len(crops), b):
            rgb, mask = self.swap(np.stack(crops[k : k + b]))
            rgb_all.extend(rgb)
            mask_all.extend(mask)
        k = 0
        for p in pending:
            n = len(p.crops)
            p.rgb, p.mask = rgb_all[k : k + n], mask_all[k : k + n]
            k += n
            self._inflight.append((p.frame, self._pool.submit(self._write_frame, p)))
            self._drain(self.workers)  # bounded: at most `workers` frames held in memory
        pending.clear()

    def _drain(self, keep: int) -> None:
        """Wait for queued frames, oldest first, until at most ``keep`` remain; feed previews."""
        preview, sheet = self._sinks
        while len(self._inflight) > keep:
            frame, fut = self._inflight.popleft()
            layer, n_faces, comp = fut.result()  # re-raises a worker's error (e.g. disk full)
            self.stats["faces"] += n_faces
            self.stats["written"] += 1
            if preview is not None:
                self._preview(frame, layer)
            if comp is not None:
                self._comp_video.write(comp, frame.index, frame.time)
            self._advance(1, faces=n_faces)

    def _face_mask(self, face: FaceIn, model_mask: np.ndarray) -> np.ndarray:
        if self.s.mask in MODEL_MASKS:  # the swapper returned the one asked for
            return model_mask
        if self.s.mask.startswith("stored:"):
            if face.mask is None:
                raise ValueError(f"mask={self.s.mask}: face {face.face_id} has no such stored mask")
            s = model_mask.shape[0]
            m = face.mask if face.mask.shape[0] == s else cv2.resize(face.mask, (s, s), interpolation=cv2.INTER_LINEAR)
            return np.clip(m, 0.0, 1.0).astype(np.float32)
        if face.landmarks is None:
            raise ValueError("mask=hull needs landmarks, and this input has none for a face")

        s = model_mask.shape[0]
        lm = align.transform_points(face.landmarks, align.crop_matrix(face.matrix, s))
        # The forehead extension reaches above a "whole" crop; only "head" crops hold all of it.
        return landmark_mask(lm, s, kind="extended" if self.info.face_type == "head" else "components")

    def _write_frame(self, p: _Pending) -> tuple[np.ndarray | None, int]:
        """Composite, write and commit one frame (in a worker thread).

        Returns:
            ``(merged layer or None without preview, number of faces, composite frame or None)``.
        """
        fr, s = p.frame, self.s
        opts = s.mask_options
        swapped: list[C.SwappedFace] = []
        faces_meta = []
        patches: dict[str, str] = {}
        clipped = p.clipped or [None] * len(p.crops)
        for face, crop, rgb, mmask, share in zip(fr.faces, p.crops, p.rgb, p.mask, clipped):
            mask = self._face_mask(face, mmask)
            if s.color != "none":
                ref = crop if crop.dtype == np.float32 else crop.astype(np.float32) / np.iinfo(crop.dtype).max
                rgb = C.color_match(rgb, ref, mask, s.color)
            sf = C.SwappedFace(rgb=rgb, mask=mask, matrix=face.matrix, track=face.track)
            swapped.append(sf)
            size = rgb.shape[0]
            meta = {
                "track": face.track, "face_id": face.face_id, "identity": self.identity_name,
                "matrix": np.asarray(face.matrix).tolist(), "crop_size": size,
                "landmarks": None if face.landmarks is None else np.round(face.landmarks, 4).tolist(),
                "box": C.crop_bbox(face.matrix, fr.size),
                **({} if share is None else {"clipped_share": share}),
            }
            if s.patches:
                rel = f"patches/face.{self.number(fr.index)}.t{face.track}.png"
                (self.out / "patches").mkdir(exist_ok=True)
                a = C.refine_mask(mask, opts)
                rgba = np.concatenate([rgb * (a > 0)[..., None], a[..., None]], -1)
                W.write_layer(self.out / rel, self._finite(rgba, "layer"), "png16", self.patch_text)
                patches[f"t{face.track}"] = rel
                meta["patch"] = rel
                meta["patch_inverse_matrix"] = W.inverse_matrix_px(face.matrix, size).tolist()
            faces_meta.append(meta)

        files: dict[str, str] = {}
        merged = C.merged_layer(swapped, fr.size, opts)
        if PL.scene_referred(fr):  # layers in the layer space, on the plate's windows (export/plate_layers.py)
            return self._write_plate_frame(p, swapped, faces_meta, patches, merged)
        if s.layers == "merged":
            rel = self.layer_relpath(fr.index)
            W.write_layer(self.out / rel, self._finite(merged, "layer"), s.format, self.text, s.exr_window)
            files["merged"] = rel
        else:
            by_track: dict[int, list[C.SwappedFace]] = {t: [] for t in self.tracks}
            for f in swapped:
                by_track.setdefault(f.track, []).append(f)
            for t, fs in sorted(by_track.items()):
                rel = self.layer_relpath(fr.index, t)
                (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
                layer = C.merged_layer(fs, fr.size, opts)
                W.write_layer(self.out / rel, self._finite(layer, "layer"), s.format, self.text, s.exr_window)
                files[f"track{t}"] = rel
        comp = None
        if s.composite:  # from the layers as written, so the two never disagree
            comp = self.composite(fr.image, [W.read_layer(self.out / f) for f in files.values()])
            rel = self.comp_relpath(fr.index)
            W.write_comp(self.out / rel, self._finite(comp, "comp"), self.comp_text)
            comp_rel = rel
        W.write_sidecar(self.sidecar_path(fr.index), {
            "frame_index": fr.index,
            "time": fr.time if math.isfinite(fr.time) else None,
            "frame_size": list(fr.size),
            "source": self.source,
            "identity": self.identity_name,
            "fingerprint": self.fingerprint,
            "input_key": p.key,
            "format": s.format,
            "conventions": W.CONVENTIONS[s.format],
            "files": files,
            "patches": patches,
            **({"comp": comp_rel} if s.composite else {}),
            "faces": faces_meta,
        })
        return (merged if self.s.preview else None), len(swapped), comp

    def _write_plate_frame(self, p: _Pending, swapped: list, faces_meta: list, patches: dict,
                           merged: np.ndarray) -> tuple:
        """:meth:`_write_frame` for a scene-referred plate: premultiplied EXR (TIFF) layers in the
        layer space (DPX: the plate's, straight), finished frames composited in the layer space and
        written back in the plate's, opaque (``comp/comp.N.exr``)."""
        fr, s, opts = p.frame, self.s, self.s.mask_options
        layers = {"merged": merged} if s.layers == "merged" else {
            f"track{t}": C.merged_layer([f for f in swapped if f.track == t], fr.size, opts) for t in
            sorted(set(self.tracks) | {f.track for f in swapped})}
        files, linear = {}, []
        space = PL.layer_space(fr, s.format)
        for key, layer in layers.items():
            rel = self.layer_relpath(fr.index, None if key == "merged" else int(key[5:]))
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            premult = self._finite(PL.to_plate_layer(layer, fr, s.format), "layer")
            PL.encode_plate_exr(self.out / rel, premult, fr, self.text, s.format, space)
            files[key] = rel
            # the finished frame is composited in linear light: the layer as written, or (a DPX's
            # plate-space codes) the same layer in the layer space
            linear.append(premult if space == fr.colour.layer_space else
                          self._finite(PL.to_plate_layer(layer, fr, "exr"), "comp"))
        extra = {}
        if s.composite:
            rel = f"comp/comp.{self.number(fr.index)}.exr"
            opaque = np.concatenate([PL.finished_frame(fr, linear), np.ones_like(fr.plate[..., :1])], -1)
            PL.encode_plate_exr(self.out / rel, self._finite(opaque, "comp"), fr, self.comp_text, opaque=True)
            extra["comp"] = rel
            extra["comp_conventions"] = PL.conventions("exr", fr.colour.plate, opaque=True)
        W.write_sidecar(self.sidecar_path(fr.index), {
            "frame_index": fr.index, "time": fr.time if math.isfinite(fr.time) else None,
            "frame_size": list(fr.size), "source": self.source, "identity": self.identity_name,
            "fingerprint": self.fingerprint, "input_key": p.key, "format": s.format,
            "conventions": PL.conventions(s.format, space),
            "colour": fr.colour.as_dict(),
            "plate": {"data_window": list(fr.info.data_window), "display_window": list(fr.info.display_window),
                      "attributes": fr.info.attributes,  # the file's own; pixel_aspect: the one given instead
                      **({"pixel_aspect": fr.pixel_aspect} if getattr(fr, "pixel_aspect", None) is not None
                         else {})} if fr.info is not None else None,
            "files": files, "patches": patches, **extra, "faces": faces_meta,
        })
        return (merged if s.preview else None), len(swapped), None

    def _finite(self, a: np.ndarray, kind: str) -> np.ndarray:
        """``a`` with every NaN or inf set to 0, counted in the summary (``nonfinite_<kind>_values``):
        no layer or composite is ever written with a non-finite value (a plate's own NaN, or a
        model's output on one), which would poison every comp that uses it."""
        a = np.asarray(a)
        if a.dtype.kind != "f":
            return a
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if not bad:
            return a
        self.stats[f"nonfinite_{kind}_values"] += bad
        return np.where(np.isfinite(a), a, 0).astype(a.dtype)

    def _read_back(self, fr: FrameIn) -> np.ndarray:
        """A finished frame's layers, read back for the preview: straight-alpha sRGB (plate
        layers converted from the plate's space to its view)."""
        meta = self.is_done(fr.index) or {}
        layers = []
        for f in meta.get("files", {}).values():
            if meta.get("colour") and PL.scene_referred(fr):
                pre = PL.read_plate_layer(self.out / f)[0]
                a = pre[..., 3:4]
                rgb = np.divide(pre[..., :3], a, out=np.zeros_like(pre[..., :3]), where=a > 0)
                space = PL.layer_space(fr, meta.get("format", self.s.format))
                layers.append(np.concatenate([fr.colour.view(rgb, space).astype(np.float32) / 255.0, a], -1))
            else:
                layers.append(W.read_layer(self.out / f))
        if not layers:
            raise ValueError(f"frame {fr.index}: no layer files to preview")
        return stack_layers(layers)

    @staticmethod
    def _layer_pixels(path: Path, meta: dict) -> np.ndarray:
        """A written layer's pixels, to check it decodes: plate layers (a scene-referred plate's
        sidecar has ``colour``) through OpenImageIO, the others as :func:`writers.read_layer`."""
        if meta.get("colour"):
            return PL.read_plate_layer(path)[0]
        return W.read_layer(path)

    @staticmethod
    def _comp_pixels(path: Path) -> np.ndarray | None:
        """A finished frame's pixels (PNG; EXR in a scene-referred plate's space), None if unreadable."""
        if path.suffix == ".exr":
            try:
                return PL.read_plate_layer(path)[0]
            except Exception:  # noqa: BLE001 - any decoder error means "redo this frame"
                return None
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)

    def _read_comp(self, index: int) -> np.ndarray:
        meta = self.is_done(index) or {}
        comp = cv2.imread(str(self.out / meta.get("comp", self.comp_relpath(index))), cv2.IMREAD_COLOR)
        if comp is None:
            raise ValueError(f"frame {index}: cannot read its composite frame")
        return comp[..., ::-1]

    @staticmethod
    def composite(plate: np.ndarray, layers: list[np.ndarray]) -> np.ndarray:
        """The finished frame: layers (per-track ones stacked as written) over the uint8 plate,
        in linear light as the preview (:func:`composite.over`), rounded to uint8 RGB."""
        if not layers:
            return np.array(plate, np.uint8, copy=True)
        return np.rint(C.over(stack_layers(layers), plate, linear=True) * 255.0).astype(np.uint8)

    def _preview(self, fr: FrameIn, layer: np.ndarray) -> None:
        preview, sheet = self._sinks
        comp = np.rint(C.over(layer, fr.image, linear=True) * 255.0).astype(np.uint8)  # as the comp will blend it
        preview.write(comp, fr.index, fr.time)
        sheet.add(fr.index, comp)
