"""Head pose (yaw, pitch, roll in degrees) from 68 landmarks.

The pose is the rotation that best maps a 3D mean face onto the 2D landmarks under a pinhole
camera (``cv2.solvePnP``): focal length = the larger image side, principal point at the
image centre, no distortion. The 3D mean face is the phantom's neutral identity
(:func:`progressive_swap.phantom.mesh.landmarks_3d`), in template units.

Sign convention (the phantom's, see :mod:`progressive_swap.phantom.params`), image
coordinates x right, y down:

* ``yaw > 0``: the nose turns towards image right, i.e. the subject turns to *their* left;
* ``pitch > 0``: the nose tips down (the subject looks down);
* ``roll > 0``: the face turns clockwise on screen (the eye line's angle ``atan2(dy, dx)``).

The angles decompose the head rotation as ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (the
phantom's :func:`~progressive_swap.phantom.mesh.rotation`), so a phantom rendered with
``(yaw, pitch, roll)`` is estimated back as about those numbers.

The angles are measured relative to the **line of sight** (the ray from the camera to the
head), not the optical axis: a face that looks straight at the camera reads (0, 0, roll)
wherever it sits in the frame. (Against the optical axis, a frontal face in the upper part of a
photo read as pitched down by the angle of its ray, e.g. +16° at a quarter of the frame above
the centre with a normal lens.)

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

import cv2
import numpy as np

from progressive_swap.core import landmarks as L

POSE_POINTS: tuple[int, ...] = (0, 1, 2, 14, 15, 16) + L.NOSE + L.EYES
"""Landmarks used for the fit: the upper jaw (at ear level), nose and eyes. The mouth, chin and
brows move with expression (an open mouth or raised brows would read as pitch), so they are
left out; on the phantom this set gives the smallest pitch error across identities."""

# Flips the model's z (towards the camera) into OpenCV's camera z (away from the camera).
_FLIP = np.diag([1.0, 1.0, -1.0])


# The 3D mean face, (68, 3) in template units, centred on the head's pivot; axes x right, y down,
# z towards the camera. These are the phantom's neutral landmarks (phantom.mesh.landmarks_3d of
# the neutral identity, minus its PIVOT) to 1e-6, written out so that pose needs no renderer;
# tests/test_curate.py checks that the two agree.
_MEAN_SHAPE_3D = np.array([
    (-0.560000, -0.170000, 0.350927),
    (-0.549160, -0.029538, 0.365383),
    (-0.516263, 0.134827, 0.399875),
    (-0.461187, 0.297991, 0.443676),
    (-0.386080, 0.447583, 0.484753),
    (-0.296249, 0.574065, 0.515013),
    (-0.198690, 0.669935, 0.533149),
    (-0.099141, 0.729700, 0.543617),
    (0.000000, 0.750000, 0.546696),
    (0.099141, 0.729700, 0.543617),
    (0.198690, 0.669935, 0.533149),
    (0.296249, 0.574065, 0.515013),
    (0.386080, 0.447583, 0.484753),
    (0.461187, 0.297991, 0.443676),
    (0.516263, 0.134827, 0.399875),
    (0.549160, -0.029538, 0.365383),
    (0.560000, -0.170000, 0.350927),
    (-0.490000, -0.344000, 0.422244),
    (-0.415000, -0.411000, 0.477208),
    (-0.309000, -0.431000, 0.528332),
    (-0.199000, -0.416000, 0.572263),
    (-0.097000, -0.373000, 0.598374),
    (0.097000, -0.373000, 0.598375),
    (0.199000, -0.416000, 0.572263),
    (0.309000, -0.431000, 0.528332),
    (0.415000, -0.411000, 0.477208),
    (0.490000, -0.344000, 0.422244),
    (0.000000, -0.247000, 0.688874),
    (0.000000, -0.143000, 0.724498),
    (0.000000, -0.040000, 0.784955),
    (0.000000, 0.066000, 0.867212),
    (-0.123000, 0.137000, 0.653821),
    (-0.064000, 0.159000, 0.653490),
    (0.000000, 0.178000, 0.687504),
    (0.064000, 0.159000, 0.653490),
    (0.123000, 0.137000, 0.653821),
    (-0.368000, -0.234000, 0.501524),
    (-0.303000, -0.271000, 0.512949),
    (-0.224000, -0.270000, 0.543110),
    (-0.155000, -0.218000, 0.587000),
    (-0.229000, -0.205000, 0.543540),
    (-0.307000, -0.206000, 0.514657),
    (0.156000, -0.218000, 0.586618),
    (0.224000, -0.270000, 0.543249),
    (0.303000, -0.271000, 0.512816),
    (0.369000, -0.234000, 0.501130),
    (0.308000, -0.206000, 0.514327),
    (0.229000, -0.205000, 0.543646),
    (-0.236000, 0.330000, 0.566223),
    (-0.149000, 0.295000, 0.597206),
    (-0.061000, 0.277000, 0.615404),
    (0.000000, 0.293000, 0.627554),
    (0.061000, 0.277000, 0.615412),
    (0.149000, 0.295000, 0.597218),
    (0.236000, 0.330000, 0.566229),
    (0.152000, 0.383500, 0.584786),
    (0.067000, 0.407000, 0.591326),
    (0.000000, 0.412000, 0.593289),
    (-0.066000, 0.407000, 0.591448),
    (-0.152000, 0.383500, 0.584775),
    (-0.200000, 0.335000, 0.580000),
    (-0.062000, 0.329000, 0.634688),
    (0.000000, 0.335000, 0.646938),
    (0.062000, 0.329000, 0.634711),
    (0.200000, 0.335000, 0.580012),
    (0.063000, 0.329000, 0.631950),
    (0.000000, 0.335000, 0.638703),
    (-0.063000, 0.329000, 0.631925)
], np.float64)
_MEAN_SHAPE_3D.setflags(write=False)


def mean_shape_3d() -> np.ndarray:
    """The 3D mean face, ``(68, 3)`` float64, template units, centred on the head's pivot.

    Axes: x right, y down, z towards the camera (the phantom's convention). Read-only.
    """
    return _MEAN_SHAPE_3D


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
    return rotation_to_angles(_FLIP @ _to_line_of_sight(np.asarray(tvec, np.float64).ravel()) @ r_cv @ _FLIP)


def _to_line_of_sight(t: np.ndarray) -> np.ndarray:
    """The smallest rotation (OpenCV camera axes) that turns the ray towards ``t`` onto the optical axis."""
    n = np.linalg.norm(t)
    if not np.isfinite(n) or n <= 0:
        return np.eye(3)
    d = t / n
    axis = np.cross(d, [0.0, 0.0, 1.0])
    s, c = np.linalg.norm(axis), float(d[2])
    if s < 1e-12:
        return np.eye(3)
    r, _ = cv2.Rodrigues(axis / s * np.arctan2(s, c))
    return r


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
