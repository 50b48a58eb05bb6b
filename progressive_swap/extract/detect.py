"""Face detection and 68-point landmarks: a thin wrapper around the ``face-alignment`` package,
and a reader for landmarks given in a file (phantom truth, or another tool's output).

Convention: images are uint8 ``(H, W, 3)`` RGB; boxes ``[x0, y0, x1, y1]`` and landmarks
``(68, 2)`` are frame pixels (x right, y down), iBUG-300W order.

The network weights download once (to ``$TORCH_HOME/hub/checkpoints/``, by default
``~/.cache/torch/hub/checkpoints/``). Without network access, place the files named by
:func:`weight_files` there by hand; a missing file gives one :class:`WeightsMissingError`
that says which file, from where, and into which directory.

Example:
    >>> det = LandmarkDetector(device="auto")  # doctest: +SKIP
    >>> faces = det.detect(frame)                                   # S3FD boxes + FAN landmarks
    >>> lms = det.landmarks_batch([frame1, frame2], [boxes1, boxes2])   # given boxes, batched
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np


@dataclass
class Face:
    """One face found in one frame.

    Attributes:
        box: ``(4,)`` float64 ``[x0, y0, x1, y1]`` frame pixels.
        landmarks: ``(68, 2)`` float64 frame pixels.
        score: detector confidence (1.0 for given faces).
        identity: label from a landmarks file, "" when detected.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0
    identity: str = ""
    extra: dict = field(default_factory=dict)


class WeightsMissingError(FileNotFoundError):
    """A face-alignment weight file is missing and could not be downloaded."""


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_dir() -> Path:
    """Where torch (and face-alignment) keep downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_files(face_detector: str = "sfd") -> dict[str, str]:
    """``{file name: URL}`` of the weights :class:`LandmarkDetector` loads.

    Read from the installed face-alignment package, so the names always match what it expects:
    the 2D FAN (``2DFAN4-….pth.tar``) and, for ``face_detector="sfd"``, S3FD (``s3fd-….pth``).
    """
    from face_alignment.api import models_urls

    urls = [models_urls["2DFAN-4"]]
    if face_detector == "sfd":
        from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls

        urls.append(sfd_urls["s3fd"])
    return {os.path.basename(urlparse(u).path): u for u in urls}


def _missing_error(name: str, url: str, reason: str) -> WeightsMissingError:
    return WeightsMissingError(
        f"face-alignment weights {name} are missing and could not be downloaded ({reason}); "
        f"download {url} and put it in {checkpoint_dir()}/ (set TORCH_HOME to use another cache)"
    )


class LandmarkDetector:
    """S3FD face detection and 2D-FAN landmarks through ``face_alignment.FaceAlignment``.

    Args:
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``…
        face_detector: face-alignment detector module: ``sfd`` (default), ``blazeface``, …, or
            ``folder`` when boxes are always given (no detector weights needed).
        batch_size: faces per FAN forward pass.
        flip_input: also run the mirrored crop and average (2x slower, a little steadier).
        min_score: detections below this confidence are dropped.
        allow_download: fetch missing weights from the internet (else fail at once).
        compile: ``torch.compile`` the FAN (slow first start; worthwhile for long GPU runs).
    """

    def __init__(
        self,
        device: str = "auto",
        face_detector: str = "sfd",
        batch_size: int = 16,
        flip_input: bool = True,
        min_score: float = 0.5,
        allow_download: bool = True,
        compile: bool = False,
    ):
        import face_alignment

        self.device = resolve_device(device)
        self.batch_size = max(1, int(batch_size))
        self.min_score = float(min_score)
        files = weight_files(face_detector)
        missing = {n: u for n, u in files.items() if not (checkpoint_dir() / n).is_file()}
        if missing and not allow_download:
            name, url = next(iter(missing.items()))
            raise _missing_error(name, url, "downloads disabled")
        try:
            self.fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=self.device, face_detector=face_detector,
                flip_input=flip_input, compile=compile, max_batch_size=self.batch_size,
            )
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            still = [n for n in missing if not (checkpoint_dir() / n).is_file()]
            if still:
                raise _missing_error(still[0], files[still[0]], str(e).splitlines()[0] if str(e) else type(e).__name__) from None
            raise

    # ------------------------------------------------------------------ detection

    def detect_boxes(self, image: np.ndarray) -> np.ndarray:
        """Face boxes in one RGB frame: ``(N, 5)`` ``[x0, y0, x1, y1, score]``, best first."""
        boxes = self.fa.face_detector.detect_from_image(np.ascontiguousarray(image))
        b = np.asarray(boxes, np.float64).reshape(-1, 5) if len(boxes) else np.zeros((0, 5))
        b = b[b[:, 4] >= self.min_score]
        return b[np.argsort(-b[:, 4], kind="stable")]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect faces and their landmarks in one uint8 RGB frame."""
        b = self.detect_boxes(image)
        lms = self.landmarks_batch([image], [b[:, :4]])[0]
        return [Face(box=bb[:4].copy(), landmarks=lm, score=float(bb[4])) for bb, lm in zip(b, lms)]

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        """Landmarks for given boxes in one frame (``face_alignment``'s own path).

        Args:
            image: uint8 ``(H, W, 3)`` RGB.
            boxes: ``(N, 4)`` ``[x0, y0, x1, y1]``.

        Returns:
            ``N`` arrays ``(68, 2)`` float64.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return []
        out = self.fa.get_landmarks_from_image(np.ascontiguousarray(image), detected_faces=list(boxes))
        return [np.asarray(p, np.float64)[:, :2] for p in out]

    def landmarks_batch(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Landmarks for given boxes in several frames, with faces of all frames batched.

        Same pre- and post-processing as ``FaceAlignment.get_landmarks_from_image`` (the
        package's ``crop`` and ``get_preds_fromhm``), but one forward pass serves faces from
        many frames, which keeps a GPU busy.

        Args:
            images: uint8 ``(H, W, 3)`` RGB frames.
            boxes: per frame, ``(N_i, 4)`` ``[x0, y0, x1, y1]``.

        Returns:
            Per frame, ``N_i`` arrays ``(68, 2)`` float64.
        """
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop, flip

        fa = self.fa
        jobs, crops = [], []
        for k, (img, bb) in enumerate(zip(images, boxes)):
            img = np.ascontiguousarray(img)
            for d in np.asarray(bb, np.float64).reshape(-1, 4):
                center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
                center[1] -= (d[3] - d[1]) * CENTER_Y_OFFSET
                scale = (d[2] - d[0] + d[3] - d[1]) / fa.face_detector.reference_scale
                jobs.append((k, center, scale))
                crops.append(crop(img, center, scale).transpose((2, 0, 1)).astype(np.float32) / 255.0)
        out: list[list[np.ndarray]] = [[] for _ in images]
        if not crops:
            return out
        heat = []
        with torch.no_grad():
            x_all = torch.from_numpy(np.stack(crops))
            for s in range(0, len(crops), self.batch_size):
                x = x_all[s:s + self.batch_size].to(fa.device, dtype=fa.dtype)
                h = fa.face_alignment_net(x)
                h = (h[-1] if isinstance(h, list) else h).detach()
                if fa.flip_input:
                    hf = fa.face_alignment_net(flip(x))
                    h = h + flip((hf[-1] if isinstance(hf, list) else hf).detach(), is_label=True)
                heat.append(h.to(device="cpu", dtype=torch.float32).numpy())
        pts = heatmap_points(np.concatenate(heat), np.stack([c for _, c, _ in jobs]), np.array([s for _, _, s in jobs]))
        for (k, _, _), p in zip(jobs, pts):
            out[k].append(p)
        return out


def heatmap_points(hm: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Landmarks from FAN heatmaps, vectorised: face-alignment's ``get_preds_fromhm``.

    The arg-max of each heatmap, moved a quarter pixel towards the higher neighbour, mapped
    back to the frame through the crop's centre and scale. Unlike the package (whose numba
    version costs ~10 s of compilation per process) it keeps sub-pixel precision instead of
    truncating to integers.

    Args:
        hm: ``(B, 68, R, R)`` heatmaps.
        centers: ``(B, 2)`` crop centres (frame px).
        scales: ``(B,)`` crop scales (face-alignment units: the crop spans ``200 * scale`` px).

    Returns:
        ``(B, 68, 2)`` float64 frame pixels.
    """
    b, c, h, w = hm.shape
    flat = hm.reshape(b, c, h * w)
    idx = flat.argmax(-1)
    px, py = idx % w, idx // w
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    bi, ci = np.nonzero(inner)
    x, y = px[inner], py[inner]
    dx = np.sign(hm[bi, ci, y, x + 1] - hm[bi, ci, y, x - 1])
    dy = np.sign(hm[bi, ci, y + 1, x] - hm[bi, ci, y - 1, x])
    pts = np.stack([px, py], -1).astype(np.float64) + 0.5
    pts[bi, ci, 0] += 0.25 * dx
    pts[bi, ci, 1] += 0.25 * dy
    side = 200.0 * np.asarray(scales, np.float64)[:, None, None]  # crop side in frame px
    return pts * side / w + np.asarray(centers, np.float64)[:, None, :] - side / 2


# ---------------------------------------------------------------------- given landmarks


class GivenLandmarks:
    """Faces read from a JSON file instead of detected: ``landmarks=given:FILE``.

    Format (the phantom's ``<name>.truth.json``; see ``docs/extract.md``)::

        {"fps": 24.0, "size": [w, h],
         "frames": [{"index": 0, "faces": [{"identity": "A", "box": [x0, y0, x1, y1],
                                            "landmarks": [[x, y], ... 68 pairs]}]}]}

    ``fps``, ``size``, ``identity`` and ``box`` are optional (a missing box is the landmarks'
    bounding box); frames without faces may be left out. Extra keys are ignored.

    Raises:
        ValueError: one line naming the file and the first problem.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no such landmarks file: {str(self.path)!r}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"landmarks file {str(self.path)!r} is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
            raise ValueError(f"landmarks file {str(self.path)!r} has no 'frames' list")
        self.fps = float(doc["fps"]) if doc.get("fps") else None
        self.size = tuple(int(v) for v in doc["size"]) if doc.get("size") else None
        self.frames: dict[int, list[Face]] = {}
        for fr in doc["frames"]:
            try:
                idx = int(fr["index"])
                faces = []
                for f in fr.get("faces", []):
                    lm = np.asarray(f["landmarks"], np.float64)
                    if lm.shape != (68, 2) or not np.isfinite(lm).all():
                        raise ValueError(f"landmarks must be 68 finite [x, y] pairs, got shape {lm.shape}")
                    box = np.asarray(f["box"], np.float64) if f.get("box") is not None else np.r_[lm.min(0), lm.max(0)]
                    if box.shape != (4,):
                        raise ValueError(f"box must be [x0, y0, x1, y1], got {f['box']!r}")
                    faces.append(Face(box=box, landmarks=lm, score=float(f.get("score", 1.0)),
                                      identity=str(f.get("identity") or "")))
            except (KeyError, TypeError, ValueError) as e:
                where = fr.get("index", "?") if isinstance(fr, dict) else "?"
                raise ValueError(f"landmarks file {str(self.path)!r}, frame {where}: {e}") from None
            self.frames.setdefault(idx, []).extend(faces)

    def faces(self, frame_index: int) -> list[Face]:
        """Faces given for a frame (empty when the file lists none)."""
        return [Face(f.box.copy(), f.landmarks.copy(), f.score, f.identity) for f in self.frames.get(frame_index, [])]

    def boxes(self, frame_index: int) -> np.ndarray:
        """``(N, 4)`` boxes given for a frame."""
        fs = self.frames.get(frame_index, [])
        return np.stack([f.box for f in fs]) if fs else np.zeros((0, 4))
