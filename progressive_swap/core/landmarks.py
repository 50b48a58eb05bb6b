"""68-point landmark layout (iBUG-300W order), the mean face template and face types.

Convention: landmarks are ``(68, 2)`` float arrays in pixel coordinates, x right, y down,
pixel centres at integer coordinates (the OpenCV convention).

The mean face ``MEAN_FACE`` is given in *template units*: the outer brow corners sit near
x = 0 and x = 1, the brow line near y = 0 and the lower lip near y = 0.91. Face types map
template units to the aligned crop (see :data:`FACE_TYPES`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Index groups, iBUG-300W order.
JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))  # subject's right, image left
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSE_BASE = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
MOUTH = OUTER_LIPS + INNER_LIPS
EYES = RIGHT_EYE + LEFT_EYE
BROWS = RIGHT_BROW + LEFT_BROW
NOSE = NOSE_BRIDGE + NOSE_BASE

# Points that move little with expression: used to fit the alignment.
STABLE_POINTS = BROWS + NOSE + EYES

# Inner points 17..67 of the mean face, template units.
_INNER = np.array(
    [
        [0.000, 0.106], [0.075, 0.039], [0.181, 0.019], [0.291, 0.034], [0.393, 0.077],
        [0.587, 0.077], [0.689, 0.034], [0.799, 0.019], [0.905, 0.039], [0.980, 0.106],
        [0.490, 0.203], [0.490, 0.307], [0.490, 0.410], [0.490, 0.516],
        [0.367, 0.587], [0.426, 0.609], [0.490, 0.628], [0.554, 0.609], [0.613, 0.587],
        [0.122, 0.216], [0.187, 0.179], [0.266, 0.180], [0.335, 0.232], [0.261, 0.245], [0.183, 0.244],
        [0.646, 0.232], [0.714, 0.180], [0.793, 0.179], [0.859, 0.216], [0.798, 0.244], [0.719, 0.245],
        [0.254, 0.780], [0.341, 0.745], [0.429, 0.727], [0.490, 0.743], [0.551, 0.727],
        [0.639, 0.745], [0.726, 0.780], [0.642, 0.865], [0.557, 0.902], [0.490, 0.909],
        [0.424, 0.902], [0.338, 0.865],
        [0.290, 0.785], [0.428, 0.779], [0.490, 0.785], [0.552, 0.779], [0.690, 0.785],
        [0.553, 0.824], [0.490, 0.832], [0.427, 0.824],
    ],
    dtype=np.float64,
)


def _jaw(n: int = 17) -> np.ndarray:
    """Jaw contour 0..16: a U from the right temple (ear level) round the chin to the left."""
    t = np.linspace(np.pi, 0.0, n)  # pi: subject's right side (image left)
    cx, cy = 0.490, 0.28
    rx, ry = 0.56, 0.92
    # Flatten the upper part (the sides of the face) and round the chin.
    x = cx + rx * np.cos(t) * (1.0 - 0.10 * np.sin(t) ** 4)
    y = cy + ry * np.sin(t) ** 1.15
    return np.stack([x, y], axis=1)


MEAN_FACE: np.ndarray = np.concatenate([_jaw(), _INNER], axis=0)
"""(68, 2) float64 mean face in template units."""
MEAN_FACE.setflags(write=False)


@dataclass(frozen=True)
class FaceType:
    """How much of the head an aligned crop covers.

    The crop is the square of half-width ``extent`` (template units) centred at ``center``.
    Crop coordinates ``u = (p - center) / (2 * extent) + 0.5`` lie in [0, 1] across the crop.
    """

    name: str
    center: tuple[float, float]
    extent: float


FACE_TYPES: dict[str, FaceType] = {
    # Brows to chin, cheek to cheek.
    "full": FaceType("full", (0.490, 0.58), 0.78),
    # Adds the forehead and the hairline (its coverage is measured in docs/architecture.md).
    "whole": FaceType("whole", (0.490, 0.43), 1.065),
    # Whole head with hair and ears.
    "head": FaceType("head", (0.490, 0.38), 1.30),
}


def face_type(name: str) -> FaceType:
    """Look up a face type by name, with a one-line error for unknown names."""
    try:
        return FACE_TYPES[name]
    except KeyError:
        raise ValueError(
            f"unknown face_type {name!r}; choose one of {', '.join(FACE_TYPES)}"
        ) from None


def template_uv(name: str) -> np.ndarray:
    """Mean face in crop coordinates ``[0, 1]`` for a face type, ``(68, 2)``."""
    ft = face_type(name)
    return (MEAN_FACE - np.asarray(ft.center)) / (2.0 * ft.extent) + 0.5
