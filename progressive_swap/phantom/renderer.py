"""The phantom: synthetic faces of several identities with exact ground truth.

A phantom frame is ``render(identity, frame_params, size)``. It comes with the exact 68
landmarks, the face mask, the occluder mask and the visible-face mask. The *true swap* of a
frame of identity A is identity B rendered with that frame's params (same pose, expression,
light, placement, background and occluder): :func:`true_swap`. It is the project's default
training data and the yardstick of its quality tests.

How it is made (see ``docs/phantom.md``): a 3D control mesh (the 68 landmarks lifted to 3D
plus forehead, cheek, hair and neck points; :mod:`.phantom_mesh`) is deformed by the
identity's shape and the frame's expression, rotated and projected (weak perspective). Each
identity has a procedural texture painted in template space with 1–3 px skin detail at 1024 px
(:mod:`.phantom_texture`); it is mapped onto the projected triangles (piecewise affine, one
``cv2.remap``) from a mip level that matches the face's size, shaded (Lambert plus a little
specular) with normals of the smooth 3D surface, and composited over a procedural background
with an optional occluder (:mod:`.phantom_scene`). Frames up to 1024 px are rendered at twice
the size and averaged down, so edges are anti-aliased.

Example:
    >>> from progressive_swap.phantom.renderer import sample_identity, sample_frame, render, true_swap
    >>> a, b = sample_identity(0), sample_identity(1)
    >>> f = sample_frame(7)
    >>> r = render(a, f, 128)
    >>> r.image.shape, r.landmarks.shape
    ((128, 128, 3), (68, 2))
    >>> swap = true_swap(b, f, 128)  # what a perfect swap of that frame to B looks like
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from progressive_swap.phantom import mesh as pm
from progressive_swap.phantom import texture as pt
from progressive_swap.phantom.motion import sample_trajectory
from progressive_swap.phantom.params import (
    FrameParams,
    Identity,
    Occluder,
    sample_frame,
    sample_identity,
)
from progressive_swap.phantom.scene import background, draw_occluder, draw_torso

__all__ = [
    "FrameParams",
    "Identity",
    "Occluder",
    "PhantomRender",
    "render",
    "sample_frame",
    "sample_identity",
    "sample_trajectory",
    "true_swap",
    "MAX_SIZE",
]

MAX_SIZE = 4096
"""Largest frame side :func:`render` accepts."""
_SUPERSAMPLE_UP_TO = 1024  # render at 2x and average down up to this size
_SHIFT = 4


@dataclass
class PhantomRender:
    """One rendered phantom frame and its ground truth.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB.
        landmarks: ``(68, 2)`` float64 frame pixels, iBUG-300W order, x right, y down, pixel
            centres at integers. They are the exact projections of the mesh's landmark
            vertices, including self-occluded ones (e.g. the far jaw at strong yaw).
        face_mask: ``(S, S)`` float32 in ``[0, 1]``: the face's skin from the jaw up to the
            hairline, with eyes, brows, lips and mouth; not hair, ears or neck. Not cut by
            occluders.
        occluder_mask: ``(S, S)`` float32 in ``[0, 1]`` (all zero without an occluder).
        visible_mask: ``(S, S)`` float32, ``face_mask * (1 - occluder_mask)``.
    """

    image: np.ndarray
    landmarks: np.ndarray
    face_mask: np.ndarray
    occluder_mask: np.ndarray
    visible_mask: np.ndarray


@lru_cache(maxsize=8)
def identity_assets(identity: Identity) -> pt.IdentityAssets:
    """The identity's mesh and texture pyramid, built on first use (~0.5 s) and cached."""
    return pt.build_assets(identity)


def _shading(assets: pt.IdentityAssets, frame: FrameParams, rot: np.ndarray) -> np.ndarray:
    """Diffuse gain and specular term on the shape-map grid, ``(Ha, Wa, 2)`` float32.

    Shading is computed in template space: rotating the light into the head's frame
    (``R^T l``) is the same as rotating every normal into the camera's.
    """
    l_cam = np.asarray(frame.light_dir, np.float64)
    l_cam = l_cam / (np.linalg.norm(l_cam) + 1e-12)
    l_loc = rot.T @ l_cam
    h_loc = rot.T @ (l_cam + (0.0, 0.0, 1.0))  # Blinn half-vector with the camera on +z
    h_loc = h_loc / (np.linalg.norm(h_loc) + 1e-12)
    n = assets.normals
    lam = np.clip(n @ l_loc.astype(np.float32), 0.0, 1.0)
    spec = np.clip(n @ h_loc.astype(np.float32), 0.0, 1.0) ** 24
    out = np.empty(n.shape[:2] + (2,), np.float32)
    out[..., 0] = frame.ambient + frame.light_strength * lam
    out[..., 1] = 0.12 * frame.light_strength * assets.gloss * spec
    return out


def _triangle_affines(p: np.ndarray, uv_px: np.ndarray, tri: np.ndarray, ok: np.ndarray,
                      flat: np.ndarray) -> np.ndarray:
    """Per-triangle affine maps frame px → texture px, as ``(T + 1, 6)`` float32 rows
    ``(a, b, c, d, e, f)`` with ``u = a x + b y + c``, ``v = d x + e y + f``.

    Row 0 is for "no triangle": it maps everything far outside the texture (→ transparent).
    ``ok`` triangles get their exact map; ``flat`` (collapsed) ones map to their centroid.
    """
    src = np.concatenate([p[tri], np.ones(tri.shape + (1,))], -1)  # (T, 3, 3)
    src[~ok] = np.eye(3)  # culled or collapsed: any invertible stand-in
    sol = np.linalg.solve(src, uv_px[tri])  # (T, 3, 2): [x y 1] @ sol = [u v]
    coef = np.empty((len(tri) + 1, 6), np.float64)
    coef[0] = (0, 0, -1e5, 0, 0, -1e5)
    coef[1:, 0:3] = sol[:, :, 0]
    coef[1:, 3:6] = sol[:, :, 1]
    centroid = uv_px[tri[flat]].mean(1)
    coef[1:][flat] = np.stack([0 * centroid[:, 0], 0 * centroid[:, 0], centroid[:, 0],
                               0 * centroid[:, 0], 0 * centroid[:, 0], centroid[:, 1]], 1)
    return coef.astype(np.float32)


def _rasterise(p: np.ndarray, depth: np.ndarray, S: int, ss: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangle-id buffer ``(S, S)`` int32 (0 = no triangle, else index + 1), drawn far to
    near (painter's algorithm) with back faces culled; also the ``ok`` (drawn) and ``flat``
    (collapsed) flags per triangle.

    Collapsed triangles (a closed eye or mouth) are still drawn, as a line of pixels with one
    colour, so the seam between the lips or lids has no holes.
    """
    tri = pm.triangles()
    area = pm.signed_areas(p, tri)
    eps = 0.05 * ss * ss  # px²: below this a triangle is collapsed, whatever its sign
    ok = area > -eps
    flat = ok & (area < eps)
    ids = np.zeros((S, S), np.int32)
    pts = np.round(p * (1 << _SHIFT)).astype(np.int32)
    for t in np.argsort(depth[tri].mean(1), kind="stable"):
        if ok[t]:
            cv2.fillConvexPoly(ids, pts[tri[t]], int(t) + 1, cv2.LINE_8, _SHIFT)
    return ids, ok, flat


def _shade_head(assets: pt.IdentityAssets, frame: FrameParams, p: np.ndarray, ok: np.ndarray, flat: np.ndarray,
                tid: np.ndarray, lo: np.ndarray, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour and face alpha of the head in a window of the id buffer.

    Args:
        p: ``(V, 2)`` projected vertices, frame pixels at the render's internal size ``S``.
        tid: ``(h, w)`` window of the triangle-id buffer whose top-left pixel is ``lo``.

    Returns:
        ``(h, w, 3)`` float32 RGB in [0, 1] and ``(h, w)`` float32 face alpha (texture A).
    """
    # Mip level: about 1..2 texture pixels per frame pixel.
    density = pt.PPU / max(frame.scale * S, 1e-6)
    level = int(np.clip(np.floor(np.log2(max(density, 1.0))), 0, len(assets.levels) - 1))
    coef = _triangle_affines(p, pt.to_tex(assets.uv), pm.triangles(), ok & ~flat, flat)
    coef[1:] /= 2.0**level  # pyrDown keeps pixel k of level l at pixel 2k of level l-1
    h, w = tid.shape
    x = np.arange(lo[0], lo[0] + w, dtype=np.float32)[None, :]
    y = np.arange(lo[1], lo[1] + h, dtype=np.float32)[:, None]
    c = coef[tid]  # (h, w, 6)
    mx = c[..., 0] * x + c[..., 1] * y + c[..., 2]
    my = c[..., 3] * x + c[..., 4] * y + c[..., 5]
    tex = cv2.remap(assets.levels[level], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # The same points on the coarse shape-map grid: level-l px → level-0 px → aux px.
    k = 2.0**level * pt.AUX_PPU / pt.PPU
    o = 0.5 * pt.AUX_PPU / pt.PPU - 0.5
    rot = pm.rotation(frame.yaw, frame.pitch, frame.roll)
    sh = cv2.remap(_shading(assets, frame, rot), mx * k + o, my * k + o, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)
    rgb = tex[..., :3].astype(np.float32) * (1.0 / 255.0)
    rgb *= sh[..., :1]  # diffuse gain
    rgb += sh[..., 1:]  # specular
    rgb *= np.asarray(frame.light_color, np.float32)
    return np.clip(rgb, 0.0, 1.0), tex[..., 3] * np.float32(1.0 / 255.0)


def render(identity: Identity, frame: FrameParams, size: int) -> PhantomRender:
    """Render one phantom frame with its ground truth.

    Deterministic: the same ``(identity, frame, size)`` gives the same pixels. The params are
    resolution-free, so different sizes give the same picture at different resolutions.

    Args:
        identity: who (from :func:`sample_identity`).
        frame: pose, expression, light, placement, background, occluder (from
            :func:`sample_frame` or :func:`sample_trajectory`).
        size: frame side in pixels (square frames), 8 .. :data:`MAX_SIZE`.

    Returns:
        A :class:`PhantomRender`.
    """
    size = int(size)
    if not 8 <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [8, {MAX_SIZE}], got {size}")
    ss = 2 if size <= _SUPERSAMPLE_UP_TO else 1
    S = size * ss
    assets = identity_assets(identity)
    v3 = pm.posed_vertices(identity, frame, assets.ref, assets.depth)
    p, depth = pm.project(v3, frame, S)
    landmarks = pm.project(v3[:68], frame, size)[0]

    ids, ok, flat = _rasterise(p, depth, S, ss)
    img = background(frame.background, S)
    face_mask = np.zeros((S, S), np.float32)
    lo = np.clip(np.floor(p.min(0)).astype(int), 0, S)
    hi = np.clip(np.ceil(p.max(0)).astype(int) + 2, 0, S)
    if (hi > lo).all():  # some of the head is in the frame
        win = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        tid = ids[win]
        rgb, alpha = _shade_head(assets, frame, p, ok, flat, tid, lo, S)
        cover = (tid > 0).astype(np.float32)[..., None]
        sub = img[win]
        sub *= 1.0 - cover
        sub += cover * rgb
        face_mask[win] = alpha * cover[..., 0]

    torso = draw_torso(img, frame)
    face_mask *= 1.0 - torso  # never more than a sliver (see TORSO_TOP), but keep masks exact
    occ = draw_occluder(img, frame.occluder, frame) if frame.occluder is not None else np.zeros((S, S), np.float32)
    if ss > 1:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        face_mask = cv2.resize(face_mask, (size, size), interpolation=cv2.INTER_AREA)
        occ = cv2.resize(occ, (size, size), interpolation=cv2.INTER_AREA)
    image = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    face_mask = np.clip(face_mask, 0.0, 1.0)
    occ = np.clip(occ, 0.0, 1.0)
    return PhantomRender(image=image, landmarks=landmarks, face_mask=face_mask, occluder_mask=occ,
                         visible_mask=face_mask * (1.0 - occ))


def true_swap(identity_b: Identity, frame_of_a: FrameParams, size: int) -> PhantomRender:
    """The ground-truth swap of a frame of A to identity B.

    It is exactly ``render(identity_b, frame_of_a, size)``: B with A's pose, expression,
    lighting, placement, background and occluder. The landmarks differ from A's only through
    the identities' face shapes.
    """
    return render(identity_b, frame_of_a, size)

