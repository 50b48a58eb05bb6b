"""Head pose (yaw, pitch, roll in degrees) from 68 landmarks.

The pose is the rotation that best maps a 3D mean face onto the 2D landmarks under a pinhole
camera (``cv2.solvePnP``): focal length = the larger image side, principal point at the
image centre, no distortion. The 3D mean face is the phantom's neutral identity
(:func:`progressive_swap.data.phantom_mesh.landmarks_3d`), in template units.

Sign convention (the phantom's, see :mod:`progressive_swap.data.phantom_params`), image
coordinates x right, y down:

* ``yaw > 0``: the nose turns towards image right, i.e. the subject turns to *their* left;
* ``pitch > 0``: the nose tips down (the subject looks down);
* ``roll > 0``: the face turns clockwise on screen (the eye line's angle ``atan2(dy, dx)``).

The angles decompose the head rotation as ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (the
phantom's :func:`~progressive_swap.data.phantom_mesh.rotation`), so a phantom rendered with
``(yaw, pitch, roll)`` is estimated back as about those numbers.

Only points that move little with expression are fitted (:data:`POSE_POINTS`: upper jaw,
nose, eyes).

Accuracy (``tests/test_curate.py``; 20 phantom identities with random expressions, yaw
±30°, pitch ±20°): with the phantom's own (orthographic) camera, yaw within 2.6° and pitch
within 7° of the truth (mean 0.7° / 2.6°); most of the pitch error is the identity's shape
(nose length, chin) that a mean face cannot know. The default pinhole camera (focal = image
size) assumes real perspective, so on the orthographic phantom it is up to ~14° off (it reads
large yaw closer to frontal: 30° as 17..25°); the order of faces (what sorting needs) is right either way.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from progressive_swap.faces import landmarks as L

POSE_POINTS: tuple[int, ...] = (0, 1, 2, 14, 15, 16) + L.NOSE + L.EYES
"""Landmarks used for the fit: the upper jaw (at ear level), nose and eyes. The mouth, chin and
brows move with expression (an open mouth or raised brows would read as pitch), so they are
left out; on the phantom this set gives the smallest pitch error across identities."""

# Flips the model's z (towards the camera) into OpenCV's camera z (away from the camera).
_FLIP = np.diag([1.0, 1.0, -1.0])


@lru_cache(maxsize=1)
def mean_shape_3d() -> np.ndarray:
    """The 3D mean face, ``(68, 3)`` float64, template units, centred on the head's pivot.

    Axes: x right, y down, z towards the camera (the phantom's convention). Read-only.
    """
    from progressive_swap.data import phantom_mesh as pm  # lazy: pulls in scipy

    pts = pm.landmarks_3d(pm._neutral_identity()) - pm.PIVOT
    pts = np.ascontiguousarray(pts, np.float64)
    pts.setflags(write=False)
    return pts


def rotation_to_angles(r: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` degrees of ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (model axes:
    x right, y down, z towards the camera)."""
    r = np.asarray(r, np.float64)
    pitch = np.arcsin(np.clip(-r[2, 1], -1.0, 1.0))
    yaw = np.arctan2(-r[2, 0], r[2, 2])
    roll = np.arctan2(-r[0, 1], r[1, 1])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int] | None = None,
              focal: float | None = None) -> tuple[float, float, float]:
    """Estimate the head pose of one face.

    Args:
        landmarks: ``(68, 2)`` pixel coordinates (iBUG-300W order, x right, y down).
        image_size: ``(w, h)`` of the image the landmarks are in; sets the camera (focal
            length ``max(w, h)``, principal point at the centre). None: a frame four times
            the landmarks' extent, centred on them.
        focal: focal length in pixels; None: ``max(w, h)`` (a normal lens). Pass a very
            large value for an orthographic camera (e.g. the phantom's).

    Returns:
        ``(yaw, pitch, roll)`` in degrees (signs: module docstring); NaNs if the landmarks
        are not finite or the fit fails.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    nan = (float("nan"),) * 3
    if not np.isfinite(lm).all():
        return nan
    idx = list(POSE_POINTS)
    img = lm[idx]
    if image_size is None or min(image_size) <= 0:
        lo, hi = img.min(0), img.max(0)
        centre = (lo + hi) / 2
        f = 4.0 * float(max(hi - lo))
    else:
        w, h = float(image_size[0]), float(image_size[1])
        centre = np.array([w / 2 - 0.5, h / 2 - 0.5])
        f = max(w, h)
    if focal is not None:
        f = float(focal)
    if not f > 0:
        return nan
    cam = np.array([[f, 0, centre[0]], [0, f, centre[1]], [0, 0, 1]], np.float64)
    obj = mean_shape_3d()[idx] @ _FLIP  # OpenCV camera axes: z away from the camera
    # Start frontal at the distance that matches the landmarks' spread, then refine (LM).
    spread_model = np.sqrt(((obj[:, :2] - obj[:, :2].mean(0)) ** 2).sum(1).mean())
    spread_img = np.sqrt(((img - img.mean(0)) ** 2).sum(1).mean())
    if spread_img <= 1e-6:
        return nan
    z = f * spread_model / spread_img
    c = img.mean(0)
    tvec = np.array([(c[0] - centre[0]) * z / f, (c[1] - centre[1]) * z / f, z], np.float64)
    tvec -= obj.mean(0) * [1, 1, 0]
    tvec[2] -= obj[:, 2].mean()
    rvec = np.zeros(3)
    ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, rvec.reshape(3, 1), tvec.reshape(3, 1),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return nan
    r_cv, _ = cv2.Rodrigues(rvec)
    return rotation_to_angles(_FLIP @ r_cv @ _FLIP)


def head_poses(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """:func:`head_pose` for many faces: ``(N, 68, 2)`` landmarks, optional ``(N, 2)`` (w, h)
    image sizes; returns ``(N, 3)`` float64 ``(yaw, pitch, roll)`` degrees (NaN where it fails)."""
    lm = np.asarray(landmarks, np.float64)
    out = np.full((len(lm), 3), np.nan)
    for i in range(len(lm)):
        size = None if image_sizes is None else tuple(int(v) for v in image_sizes[i])
        out[i] = head_pose(lm[i], size)
    return out


__all__ = ["POSE_POINTS", "mean_shape_3d", "rotation_to_angles", "head_pose", "head_poses"]
