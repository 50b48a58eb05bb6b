"""The phantom's 3D control mesh: identity shape, expressions, depth, pose and projection.

The mesh has the 68 landmarks of :data:`~progressive_swap.core.landmarks.MEAN_FACE` as its
first 68 vertices, plus points on the forehead, cheeks, chin, the hair's outline and the neck,
and a ring behind the silhouette that gives the head its side. Its triangulation is computed
once (Delaunay on the mean face, kept inside the head's silhouette, plus the side band) and
shared by every identity and expression, so the landmark contours (eyes, lips) are mesh edges
and a blink or an open mouth is just a vertex displacement.

Convention: template units (see :mod:`progressive_swap.phantom.params`), x right,
y down, z towards the camera. Projection is weak-perspective (orthographic + scale): a frame
pixel is ``(c + scale * (R @ (v - PIVOT))[:2]) * size - 0.5`` with ``c = (cx, cy)``, i.e.
pixel centres at integers (OpenCV).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy.spatial import Delaunay

from progressive_swap.core import landmarks as L
from progressive_swap.phantom.params import FrameParams, Identity

PIVOT = np.array([0.49, 0.45, -0.5])
"""Point the head turns about (template units): between the ears, behind the face."""

# The head's rounded front: an ellipsoid-like height field (see :func:`head_height`).
_Z0, _ZA, _RX, _CY, _RY_UP, _RY_DOWN = -0.5, 0.62, 0.68, 0.35, 1.05, 1.75
_FOREHEAD_CENTRE_Y, _FOREHEAD_RY = 0.28, 0.70
_NECK_Z, _NECK_RX = 0.28, 0.37

# Extra vertices for the neutral identity, template units.
_FACE_INNER = [
    (0.20, 0.34), (0.78, 0.34),  # under the eyes
    (0.10, 0.52), (0.88, 0.52),  # mid cheeks
    (0.24, 0.62), (0.74, 0.62),  # beside the nose wings
    (0.14, 0.82), (0.84, 0.82),  # lower cheeks
    (0.35, 1.00), (0.49, 1.04), (0.63, 1.00),  # chin
]
# The neck ends below the collar of the torso (drawn by the scene at 1.3 units below the pivot).
_NECK = [(0.14, 1.25), (0.13, 1.75), (0.13, 2.3), (0.49, 1.62), (0.49, 2.0), (0.49, 2.3),
         (0.84, 1.25), (0.85, 1.75), (0.85, 2.3)]
N_ARC, N_HAIR = 7, 17

# Vertex index ranges.
ARC = tuple(range(68, 68 + N_ARC))  # forehead outline, image left to right
FOREHEAD = tuple(range(ARC[-1] + 1, ARC[-1] + 1 + 6))
HAIR = tuple(range(FOREHEAD[-1] + 1, FOREHEAD[-1] + 1 + N_HAIR))  # hair outline, left to right
FACE_INNER = tuple(range(HAIR[-1] + 1, HAIR[-1] + 1 + len(_FACE_INNER)))
NECK = tuple(range(FACE_INNER[-1] + 1, FACE_INNER[-1] + 1 + len(_NECK)))
# The side of the head: the silhouette from the neck up over the hair and down again, extruded
# backwards to a second ring (BACK). Edge-on in a frontal view, it shows when the head turns.
BAND_CHAIN = (NECK[1], NECK[0], 4, 3, 2) + HAIR + (14, 13, 12, NECK[6], NECK[7])
BACK = tuple(range(NECK[-1] + 1, NECK[-1] + 1 + len(BAND_CHAIN)))
N_VERTS = BACK[-1] + 1
_BAND_OUT = np.array([0.0, 0.0, 0.02, 0.02, 0.02] + [0.04] * N_HAIR + [0.02, 0.02, 0.02, 0.0, 0.0])
_BAND_DEPTH = np.array([0.3, 0.3, 0.5, 0.55, 0.55] + [0.55] * N_HAIR + [0.55, 0.55, 0.5, 0.3, 0.3])
NECK_BOTTOM = (NECK[2], NECK[5], NECK[8])
CHIN_INNER = FACE_INNER[8:11]
CHEEKS_NASOLABIAL = FACE_INNER[4:6]
UNDER_EYES = FACE_INNER[0:2]
LOWER_CHEEKS = FACE_INNER[6:8]

# Closed outlines (vertex indices, in drawing order).
FACE_OUTLINE = L.JAW + ARC[::-1]
SILHOUETTE = HAIR + (14, 13, 12) + (NECK[6], NECK[7], NECK[8], NECK[5], NECK[2], NECK[1], NECK[0]) + (4, 3, 2)
NECK_OUTLINE = tuple(range(3, 14)) + (NECK[6], NECK[7], NECK[8], NECK[5], NECK[2], NECK[1], NECK[0])

# Landmark pairs, upper eyelid → lower eyelid and upper inner lip → lower inner lip.
_LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
_OUTER_LOWER_FOR_INNER = {55: 65, 56: 65, 57: 66, 58: 67, 59: 67}


def _jaw_scale(y: np.ndarray, face_width: float, jaw_width: float) -> np.ndarray:
    """Horizontal scale of the face outline at height y: upper face → jaw."""
    t = np.clip((y - 0.45) / 0.45, 0.0, 1.0)
    return face_width + (jaw_width - face_width) * t


def reference_vertices(idn: Identity) -> np.ndarray:
    """The identity's neutral vertex positions in template units, ``(N_VERTS, 2)``.

    These are also the texture coordinates: the identity's texture is painted in this frame.
    """
    lm = np.array(L.MEAN_FACE, np.float64)
    cx = 0.49
    # Face outline: jaw width, cheeks, chin.
    jaw = lm[:17]
    s = _jaw_scale(jaw[:, 1], idn.face_width, idn.jaw_width)
    jaw[:, 0] = cx + (jaw[:, 0] - cx) * s
    side = np.sign(jaw[:, 0] - cx)
    cheek_w = np.array([0, 0.3, 0.8, 1, 1, 0.6, 0, 0, 0, 0, 0, 0.6, 1, 1, 0.8, 0.3, 0])
    jaw[:, 0] += side * idn.cheeks * cheek_w
    chin_w = np.array([0, 0, 0, 0, 0.1, 0.25, 0.5, 0.8, 1.0, 0.8, 0.5, 0.25, 0.1, 0, 0, 0, 0])
    jaw[:, 1] += idn.chin * chin_w
    # Eyes: spacing and size about each eye's centre.
    for eye, sgn in ((L.RIGHT_EYE, -1.0), (L.LEFT_EYE, 1.0)):
        e = list(eye)
        c = lm[e].mean(0)
        lm[e] = c + (lm[e] - c) * idn.eye_size
        lm[e, 0] += sgn * idn.eye_spacing
    # Brows: follow the eyes half-way, arch and height.
    arch = np.array([0.0, 0.6, 1.0, 0.7, 0.2])
    for brow, sgn, a in ((L.RIGHT_BROW, -1.0, arch), (L.LEFT_BROW, 1.0, arch[::-1])):
        b = list(brow)
        lm[b, 0] += sgn * idn.eye_spacing * 0.5
        lm[b, 1] += idn.brow_height - idn.brow_arch * a
    # Nose: length from the bridge top, width of the base.
    nose = list(L.NOSE[1:])
    lm[nose, 1] = lm[27, 1] + (lm[nose, 1] - lm[27, 1]) * idn.nose_length
    base = list(L.NOSE_BASE)
    lm[base, 0] = cx + (lm[base, 0] - cx) * idn.nose_width
    # Mouth: width about the centre line, lip thickness about the inner contour.
    mouth = list(L.MOUTH)
    lm[mouth, 0] = cx + (lm[mouth, 0] - cx) * idn.mouth_width
    shift = (idn.nose_length - 1.0) * 0.3  # a long nose pushes the mouth down a little
    lm[mouth, 1] += shift
    upper_outer, lower_outer = [49, 50, 51, 52, 53], [55, 56, 57, 58, 59]
    ref_up, ref_lo = lm[[61, 61, 62, 63, 63], 1], lm[[65, 65, 66, 67, 67], 1]
    lm[upper_outer, 1] = ref_up + (lm[upper_outer, 1] - ref_up) * idn.lip_thickness
    lm[lower_outer, 1] = ref_lo + (lm[lower_outer, 1] - ref_lo) * idn.lip_thickness

    # Extra points, placed relative to the deformed landmarks where it matters.
    fw = idn.face_width
    # The temples stand a little wider than the jaw top and clear of the brow tails.
    phi = np.linspace(np.pi - 0.3, 0.3, N_ARC)
    arc = np.stack([cx + (0.56 * fw + 0.03) * np.cos(phi), _FOREHEAD_CENTRE_Y - _FOREHEAD_RY * np.sin(phi)], 1)
    # Forehead: a row on a smaller copy of the outline, plus the glabella.
    phi = np.array([2.35, 1.95, np.pi / 2, np.pi - 1.95, np.pi - 2.35])
    fore = np.concatenate([
        np.stack([cx + 0.85 * (0.56 * fw + 0.03) * np.cos(phi),
                  _FOREHEAD_CENTRE_Y - 0.85 * _FOREHEAD_RY * np.sin(phi)], 1),
        [[cx, 0.0]],
    ])
    fore[-1, 1] = 0.5 * (lm[21, 1] + lm[22, 1]) + 0.005  # glabella, between the brows
    hv = idn.hair_volume
    phi = np.linspace(np.pi + 0.35, -0.35, N_HAIR)
    hair = np.stack(
        [cx + (0.56 * fw + 0.05 + hv) * np.cos(phi),
         _FOREHEAD_CENTRE_Y - (_FOREHEAD_RY + 0.03 + 1.3 * hv) * np.sin(phi)], 1
    )
    inner = np.array(_FACE_INNER)
    s = _jaw_scale(inner[:, 1], fw, idn.jaw_width)
    inner[:, 0] = cx + (inner[:, 0] - cx) * s
    inner[CHIN_INNER[0] - FACE_INNER[0]:, 1] += idn.chin * np.array([0.6, 0.8, 0.6])
    # Cheek points beside the mouth follow its corners, so a wide smile cannot cross them.
    inner[4, 0], inner[5, 0] = lm[48, 0] - 0.015, lm[54, 0] + 0.015
    inner[6] = 0.5 * lm[48] + 0.25 * (lm[3] + lm[4])  # between the corner and the jaw
    inner[7] = 0.5 * lm[54] + 0.25 * (lm[13] + lm[12])
    neck = np.array(_NECK)
    top = [0, 6]
    neck[top, 0] = cx + (neck[top, 0] - cx) * (0.5 + 0.5 * idn.jaw_width)
    neck[3, 1] += max(idn.chin, 0.0)
    front = np.concatenate([lm, arc, fore, hair, inner, neck], 0)
    back = front[list(BAND_CHAIN)] + _BAND_OUT[:, None] * _outward(front)
    return np.concatenate([front, back], 0)


def _outward(verts: np.ndarray) -> np.ndarray:
    """Unit 2D normals of the band chain pointing away from the head, ``(len(BAND_CHAIN), 2)``."""
    c = verts[list(BAND_CHAIN)]
    t = np.gradient(c, axis=0)
    n = np.stack([t[:, 1], -t[:, 0]], 1)
    centre = np.stack([np.full(len(c), 0.49), np.maximum(c[:, 1], 0.45)], 1)
    n *= np.sign(((c - centre) * n).sum(1, keepdims=True))
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def texture_coords(ref: np.ndarray) -> np.ndarray:
    """Template-space texture coordinates of the vertices, ``(N_VERTS, 2)``.

    Equal to the reference positions except below y = 1.3 on the neck, which is squeezed by
    half so the texture need not cover the whole (plain) neck.
    """
    uv = ref.copy()
    neck = list(NECK)
    y = uv[neck, 1]
    uv[neck, 1] = np.where(y > 1.3, 1.3 + 0.5 * (y - 1.3), y)
    # The head's side takes its texture from just outside the silhouette, which the texture
    # paints as hair (hair falling behind the ears and down the neck).
    uv[list(BACK)] = uv[list(BAND_CHAIN)] + 0.12 * _outward(ref)
    return uv


def head_height(lm: np.ndarray, idn: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth ``z`` of the face and skull surface at template points ``(x, y)`` (any shape).

    A rounded head plus bumps for the nose, brow ridge, cheekbones, lips and chin, and dips for
    the eye sockets; ``lm`` is the identity's reference landmarks ``(68, 2)``.
    """
    dx = (x - 0.49) / (_RX * idn.face_width)
    dy = y - _CY
    dy = dy / np.where(dy < 0, _RY_UP, _RY_DOWN)
    z = _Z0 + _ZA * np.sqrt(np.clip(1 - dx**2, 0, 1)) * np.sqrt(np.clip(1 - dy**2, 0, 1))

    def bump(c, sx, sy, h):
        return h * np.exp(-(((x - c[0]) / sx) ** 2 + ((y - c[1]) / sy) ** 2))

    # Nose ridge from the bridge top (27) to the tip (30), widening and rising to the tip.
    p0, p1 = lm[27], lm[30]
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d), 0.0, 1.0)
    r = np.hypot(x - (p0[0] + t * d[0]), y - (p0[1] + t * d[1]))
    w = (0.045 + 0.035 * t) * idn.nose_width
    z = z + idn.nose_depth * (0.3 + 0.7 * t**1.6) * np.exp(-((r / w) ** 2))
    z = z + bump(lm[33] - (0, 0.02), 0.045 * idn.nose_width, 0.03, 0.25 * idn.nose_depth)
    for k in (31, 35):  # nose wings
        z = z + bump(lm[k] - (0, 0.015), 0.035, 0.03, 0.05)
    for eye in (L.RIGHT_EYE, L.LEFT_EYE):
        c = lm[list(eye)].mean(0)
        z = z - bump(c, 0.09, 0.07, 0.06) + bump(c, 0.05, 0.03, 0.025)  # socket, eyeball
    for brow in (L.RIGHT_BROW, L.LEFT_BROW):
        c = lm[list(brow)].mean(0)
        z = z + bump(c + (0, 0.02), 0.16, 0.04, 0.03)
    z = z + bump((0.20, 0.42), 0.1, 0.07, 0.03) + bump((0.78, 0.42), 0.1, 0.07, 0.03)  # cheekbones
    mc = lm[list(L.MOUTH)].mean(0)
    z = z + bump(mc, 0.14, 0.07, 0.05)
    z = z + bump((0.49, lm[8, 1] - 0.12), 0.1, 0.08, 0.045)  # chin
    return z


def neck_height(x: np.ndarray) -> np.ndarray:
    """Depth of the neck (a cylinder behind the jaw) at template x."""
    return _Z0 + _NECK_Z * np.sqrt(np.clip(1 - ((x - 0.49) / _NECK_RX) ** 2, 0, 1))


def reference_depth(idn: Identity, ref: np.ndarray) -> np.ndarray:
    """Depth of every reference vertex, ``(N_VERTS,)``."""
    z = head_height(ref[:68], idn, ref[:, 0], ref[:, 1])
    z[list(HAIR)] += 0.5 * idn.hair_volume
    z[list(NECK)] = neck_height(ref[list(NECK), 0])
    z[list(BACK)] = z[list(BAND_CHAIN)] - _BAND_DEPTH
    return z


def expression_offsets(ref: np.ndarray, frame: FrameParams) -> np.ndarray:
    """Vertex displacements (template units, ``(N_VERTS, 2)``) for the frame's expression.

    At ``mouth_open = 0`` the inner lips meet (the reference mouth is slightly open so the
    texture has a mouth interior to stretch); ``blink = 1`` puts the upper lids exactly on
    the lower ones.
    """
    off = np.zeros_like(ref)
    # Mouth: close the reference gap, then open by up to 0.2 units (jaw drop).
    gap = 0.20 * frame.mouth_open
    w_inner = {61: 0.9, 62: 1.0, 63: 0.9}
    for up, lo in _INNER_LIP_PAIRS:
        off[lo, 1] = ref[up, 1] - ref[lo, 1] + gap * w_inner[up]
    for outer, inner in _OUTER_LOWER_FOR_INNER.items():
        off[outer, 1] = off[inner, 1] * (0.7 if outer in (55, 59) else 1.0)
    for k in (48, 54, 60, 64):
        off[k, 1] = 0.3 * gap
    jaw_w = np.array([0.1, 0.25, 0.5, 0.75, 0.9, 0.75, 0.5, 0.25, 0.1])
    off[4:13, 1] += 0.9 * gap * jaw_w
    off[list(CHIN_INNER), 1] += 0.9 * gap * np.array([0.8, 0.95, 0.8])
    off[list(LOWER_CHEEKS), 1] += 0.2 * gap
    # Smile: mouth corners out and up, cheeks up, lower lids up a little.
    s = frame.smile
    for k, sgn, w in ((48, -1, 1.0), (60, -1, 1.0), (54, 1, 1.0), (64, 1, 1.0),
                      (49, -1, 0.5), (59, -1, 0.5), (61, -1, 0.4), (67, -1, 0.4),
                      (53, 1, 0.5), (55, 1, 0.5), (63, 1, 0.4), (65, 1, 0.4)):
        off[k] += (sgn * 0.045 * s * w, -0.04 * s * w)
    for k, sgn in zip(CHEEKS_NASOLABIAL, (-1, 1)):
        off[k] += (sgn * 0.025 * s, -0.03 * s)
    for k, sgn in zip(LOWER_CHEEKS, (-1, 1)):
        off[k] += (sgn * 0.02 * s, -0.015 * s)
    for k in (40, 41, 46, 47):
        off[k, 1] -= 0.012 * s
    for k in UNDER_EYES:
        off[k, 1] -= 0.015 * s
    # Brow raise.
    r = frame.brow_raise
    off[list(L.BROWS), 1] -= 0.05 * r
    off[list(FOREHEAD), 1] -= 0.02 * r
    # Blink: upper lids onto the lower lids (after the smile moved the lower lids).
    b = frame.blink
    for up, lo in _LID_PAIRS:
        off[up] = b * (ref[lo] + off[lo] - ref[up]) + (1 - b) * off[up]
    return off


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)``, ``(3, 3)``; angles in degrees.

    Signs: yaw > 0 moves the nose (+z) to +x, pitch > 0 moves it to +y (down), roll > 0
    turns +x towards +y (clockwise on screen, y down).
    """
    a, b, c = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(verts3d: np.ndarray, frame: FrameParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pose and project vertices into a ``size``-pixel frame.

    Args:
        verts3d: ``(N, 3)`` template units.
        frame: pose (yaw, pitch, roll), pivot position ``(cx, cy)`` and ``scale``.
        size: frame side in pixels.

    Returns:
        ``(N, 2)`` float64 frame pixels (centres at integers) and ``(N,)`` depth (larger is
        nearer the camera, template units).
    """
    q = (verts3d - PIVOT) @ rotation(frame.yaw, frame.pitch, frame.roll).T
    xy = (np.array([frame.cx, frame.cy]) + frame.scale * q[:, :2]) * size - 0.5
    return xy, q[:, 2]


def _neutral_identity() -> Identity:
    z = 0.0
    g = (0.5, 0.5, 0.5)
    return Identity(seed=0, face_width=1, jaw_width=1, chin=z, cheeks=z, skin=g, lips=g, hair=g, iris=g,
                    eye_spacing=z, eye_size=1, brow_arch=z, brow_height=z, brow_thickness=0.04,
                    nose_length=1, nose_width=1, nose_depth=0.25, mouth_width=1, lip_thickness=1,
                    hairline=-0.3, hair_volume=0.1, beard=z, freckles=z, pores=1)


NEUTRAL = _neutral_identity()
"""The mean identity (used to build the shared triangulation)."""

# Neutral frame: no expression, no pose.
_ZERO_FRAME = FrameParams(yaw=0, pitch=0, roll=0, mouth_open=0, smile=0, blink=0, brow_raise=0,
                          light_dir=(0, 0, 1), light_strength=0.7, ambient=0.4, light_color=(1, 1, 1),
                          cx=0.5, cy=0.5, scale=0.3, background=0)


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, ``(M,)`` bool."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-300) + x0)
    return crosses.sum(1) % 2 == 1


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """The shared triangulation, ``(T, 3)`` int vertex indices.

    The face surface is a Delaunay triangulation of the neutral face kept inside the head's
    silhouette; every one of its triangles has a positive :func:`signed_areas` in the
    reference (front-facing). The head's side band follows, wound so that its triangles are
    front-facing exactly when they turn towards the camera.
    """
    ref = reference_vertices(NEUTRAL)
    front = ref[:BACK[0]]
    # Triangulate with the mouth open: the reference mouth is so thin that plain Delaunay
    # would cut across its corners, and the lip contours must be mesh edges.
    opened = front + expression_offsets(ref, replace(_ZERO_FRAME, mouth_open=0.6))[:BACK[0]]
    tri = Delaunay(opened).simplices
    tri = tri[_inside(front[list(SILHOUETTE)], front[tri].mean(1))]
    flip = signed_areas(front, tri) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    band = []
    for i in range(len(BAND_CHAIN) - 1):
        f0, f1, b0, b1 = BAND_CHAIN[i], BAND_CHAIN[i + 1], BACK[i], BACK[i + 1]
        band += [(f0, f1, b0), (f1, b1, b0)]
    band = np.array(band)
    # Orient each band triangle so its normal (b - a) x (c - a) points away from the head's
    # axis: then its projected signed area is positive exactly when it faces the camera.
    v3 = np.concatenate([ref, reference_depth(NEUTRAL, ref)[:, None]], 1)
    a, b, c = v3[band[:, 0]], v3[band[:, 1]], v3[band[:, 2]]
    normal = np.cross(b - a, c - a)
    centroid = (a + b + c) / 3
    axis = np.stack([np.full(len(band), 0.49), np.maximum(centroid[:, 1], 0.45), centroid[:, 2]], 1)
    flip = (normal * (centroid - axis)).sum(1) < 0
    band[flip] = band[flip][:, [0, 2, 1]]
    out = np.concatenate([tri, band], 0)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def n_front_triangles() -> int:
    """How many of :func:`triangles` form the face surface (the rest are the side band)."""
    return int((triangles() < BACK[0]).all(1).sum())


def signed_areas(xy: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Signed areas of triangles ``tri`` over points ``xy`` (x right, y down), ``(T,)``."""
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def posed_vertices(idn: Identity, frame: FrameParams, ref: np.ndarray | None = None,
                   depth: np.ndarray | None = None) -> np.ndarray:
    """Reference vertices with the frame's expression applied, ``(N_VERTS, 3)``, before pose."""
    ref = reference_vertices(idn) if ref is None else ref
    depth = reference_depth(idn, ref) if depth is None else depth
    xy = ref + expression_offsets(ref, frame)
    return np.concatenate([xy, depth[:, None]], 1)


def landmarks_3d(idn: Identity, frame: FrameParams | None = None) -> np.ndarray:
    """The 68 landmarks in 3D template units, ``(68, 3)``, with the frame's expression (or
    neutral when ``frame`` is None). Projecting them with :func:`project` gives the render's
    landmarks exactly."""
    ref = reference_vertices(idn)
    if frame is None:
        frame = _ZERO_FRAME
    return posed_vertices(idn, frame, ref)[:68]
