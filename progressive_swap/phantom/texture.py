"""Per-identity skin texture of the phantom, painted procedurally in template space.

The texture covers template x in ``[TEX_X0, TEX_X0 + 1.9]`` and y in ``[TEX_Y0, TEX_Y0 + 2.8]``
at :data:`PPU` pixels per template unit (about 1460 x 2150 px): enough that 1–3 px pores and
freckles survive in a 1024 px face crop, which a 256 px render upscaled cannot show.
Texture pixel ``(u, v)`` of template point ``(x, y)`` is ``((x - TEX_X0) * PPU - 0.5,
(y - TEX_Y0) * PPU - 0.5)`` (pixel centres at integers).

Channels: RGB (sRGB, uint8) and A = face mask (skin of the face up to the hairline, with eyes,
brows, lips and mouth; not hair or neck). A coarse *shape map* at :data:`AUX_PPU` carries the
surface normals for shading.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from progressive_swap.core import landmarks as L
from progressive_swap.phantom import mesh as pm
from progressive_swap.phantom.params import Identity

TEX_X0, TEX_Y0 = -0.45, -0.95
TEX_W_UNITS, TEX_H_UNITS = 1.9, 2.8
PPU = 768
"""Texture pixels per template unit (level 0)."""
AUX_PPU = 128
"""Pixels per template unit of the shape (normal) map."""
_SHIFT = 4  # sub-pixel bits for cv2 drawing


@dataclass
class IdentityAssets:
    """Everything the renderer needs for one identity (built once, cached).

    Attributes:
        ref: ``(V, 2)`` reference vertices, template units.
        depth: ``(V,)`` reference depth.
        uv: ``(V, 2)`` texture coordinates, template units.
        levels: texture pyramid, level ``k`` is ``(H / 2^k, W / 2^k, 4)`` uint8 RGBA.
        normals: ``(Ha, Wa, 3)`` float32 unit normals of the neutral surface (template frame).
        gloss: ``(Ha, Wa)`` float32 specular weight (skin 1, lips more, hair less).
    """

    ref: np.ndarray
    depth: np.ndarray
    uv: np.ndarray
    levels: list[np.ndarray]
    normals: np.ndarray
    gloss: np.ndarray


def to_tex(points: np.ndarray, ppu: float = PPU) -> np.ndarray:
    """Template points ``(..., 2)`` → texture pixels at ``ppu`` (centres at integers)."""
    return (np.asarray(points, np.float64) - (TEX_X0, TEX_Y0)) * ppu - 0.5


def _fix(points_px: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points_px) * (1 << _SHIFT)).astype(np.int32)


def _fill(mask: np.ndarray, poly: np.ndarray, ppu: float = PPU, value: float = 1.0,
          origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Fill a template-space polygon into a float32 mask (anti-aliased); ``origin`` = the
    mask's top-left texture pixel ``(x0, y0)`` when it is a window."""
    cv2.fillPoly(mask, [_fix(to_tex(poly, ppu) - origin)], value, lineType=cv2.LINE_AA, shift=_SHIFT)
    return mask


class _Win:
    """A rectangular window of the texture around some template points.

    Attributes:
        sl: ``(slice_y, slice_x)`` into the texture.
        gx: ``(1, w)`` template x of the window's columns; gy: ``(h, 1)`` template y of its rows.
    """

    def __init__(self, pts: np.ndarray, margin: float, shape: tuple[int, int]):
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        lo = np.floor(to_tex(pts.min(0) - margin)).astype(int)
        hi = np.ceil(to_tex(pts.max(0) + margin)).astype(int) + 1
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], shape[1]), min(hi[1], shape[0])
        self.origin = (x0, y0)
        self.sl = (slice(y0, y1), slice(x0, x1))
        self.shape = (y1 - y0, x1 - x0)
        self.gx = ((np.arange(x0, x1, dtype=np.float32) + 0.5) / PPU + TEX_X0)[None, :]
        self.gy = ((np.arange(y0, y1, dtype=np.float32) + 0.5) / PPU + TEX_Y0)[:, None]

    @classmethod
    def whole(cls, shape: tuple[int, int], factor: int = 1) -> "_Win":
        """The whole texture, optionally on a grid ``factor`` times coarser (for smooth layers
        that are upsampled with ``cv2.resize``, whose pixel centres this matches)."""
        win = cls.__new__(cls)
        h, w = (shape[0] + factor - 1) // factor, (shape[1] + factor - 1) // factor
        win.origin, win.sl, win.shape = (0, 0), (slice(None), slice(None)), (h, w)
        cx = (np.arange(w, dtype=np.float32) + 0.5) * (shape[1] / w)  # level-0 px + 0.5
        cy = (np.arange(h, dtype=np.float32) + 0.5) * (shape[0] / h)
        win.gx, win.gy = (cx / PPU + TEX_X0)[None, :], (cy / PPU + TEX_Y0)[:, None]
        return win

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, np.float32)

    def fill(self, poly: np.ndarray) -> np.ndarray:
        return _fill(self.zeros(), poly, origin=self.origin)

    def line(self, pts: np.ndarray, width: float) -> np.ndarray:
        """A template-space polyline of ``width`` template units."""
        m = self.zeros()
        cv2.polylines(m, [_fix(to_tex(pts) - self.origin)], False, 1.0,
                      thickness=max(1, int(round(width * PPU))), lineType=cv2.LINE_AA, shift=_SHIFT)
        return m

    def blob(self, c, sx: float, sy: float) -> np.ndarray:
        return np.exp(-(((self.gx - c[0]) / sx) ** 2 + ((self.gy - c[1]) / sy) ** 2)).astype(np.float32)


def _smooth_curve(pts: np.ndarray, n: int = 40) -> np.ndarray:
    """Catmull-Rom resampling of a polyline through ``pts`` (``(K, 2)``) to ``n`` points."""
    k = len(pts)
    t = np.linspace(0, k - 1, n)
    i = np.clip(t.astype(int), 0, k - 2)
    f = (t - i)[:, None]
    p0, p1, p2, p3 = pts[np.clip(i - 1, 0, k - 1)], pts[i], pts[i + 1], pts[np.clip(i + 2, 0, k - 1)]
    return 0.5 * ((2 * p1) + (-p0 + p2) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f**2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * f**3)


def _blend(img: np.ndarray, mask: np.ndarray, colour, opacity: float | np.ndarray = 1.0) -> None:
    """In place: ``img = lerp(img, colour, mask * opacity)``; colour is ``(3,)`` or ``(h, w, 3)``."""
    a = (mask * opacity)[..., None]
    img *= 1.0 - a
    img += a * np.asarray(colour, np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells_x: int, cells_y: int | None = None) -> np.ndarray:
    """Smooth noise, ~N(0, 1): a ``cells_y x cells_x`` random grid upsampled (linear) to ``shape``.

    With many columns and few rows it makes vertical streaks (hair strands).
    """
    h, w = shape
    cells_y = cells_y if cells_y is not None else max(2, cells_x * h // w)
    g = rng.standard_normal((cells_y, cells_x), dtype=np.float32)
    n = cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR if cells_x > 64 else cv2.INTER_CUBIC)
    return n / (n.std() + 1e-6)


def _luma(c) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def paint_texture(idn: Identity, ref: np.ndarray) -> np.ndarray:
    """Paint the identity's RGBA texture (level 0), ``(H, W, 4)`` uint8.

    Large smooth layers are painted at a quarter of the resolution and upsampled; features are
    painted at full resolution inside small windows, which keeps this to a fraction of a second.

    Args:
        idn: the identity (colours, feature sizes, texture seed).
        ref: its reference vertices ``(V, 2)`` (from :func:`phantom_mesh.reference_vertices`).
    """
    rng = np.random.default_rng([idn.seed, 0x7E47])
    W, H = int(round(TEX_W_UNITS * PPU)), int(round(TEX_H_UNITS * PPU))
    lm = ref[:68]
    skin = np.asarray(idn.skin, np.float32)
    hair = np.asarray(idn.hair, np.float32)
    full = _Win.whole((H, W))

    # --- regions ------------------------------------------------------------------------
    outline = full.fill(ref[list(pm.FACE_OUTLINE)])
    neck = full.fill(ref[list(pm.NECK_OUTLINE)]) * (1.0 - outline)
    # Hairline: a curve that drops towards the temples, made irregular by a little noise.
    wobble = 0.012 * _noise(rng, (1, W), 48, 1)[0]
    y_hair = idn.hairline + 0.55 * (full.gx[0] - 0.49) ** 2 + wobble
    below = np.clip((full.gy - y_hair[None, :]) * (PPU / 6.0) + 0.5, 0.0, 1.0)  # ~6 px soft edge
    face = outline * below

    # --- smooth colour layers at quarter resolution ---------------------------------------
    q = _Win.whole((H, W), 4)
    colour = np.ones(q.shape + (3,), np.float32)
    rosy = q.blob((0.18, 0.5), 0.12, 0.09) + q.blob((0.80, 0.5), 0.12, 0.09) + 0.7 * q.blob(lm[30], 0.05, 0.04)
    colour += (0.03 * rosy)[..., None] * np.array([1.0, -0.4, -0.4], np.float32)
    shade = 1.0 - 0.12 * q.blob(lm[57] + (0, 0.045), 0.09, 0.025)  # under the lower lip
    for eye in (L.RIGHT_EYE, L.LEFT_EYE):
        shade -= 0.07 * q.blob(lm[list(eye)].mean(0) + (0, 0.035), 0.08, 0.03)
    neck_q = cv2.resize(neck, q.shape[::-1], interpolation=cv2.INTER_AREA)
    shade -= 0.15 * neck_q * np.clip(1.0 - (q.gy - lm[8, 1]) / 0.35, 0, 1)  # shadow under the jaw
    colour *= shade[..., None]
    colour = cv2.resize(colour, (W, H), interpolation=cv2.INTER_LINEAR)

    # --- skin with fine, identity-specific detail: pores (1-2 px noise and dots) -------------
    tone = 1.0 + 0.05 * _noise(rng, (H, W), 12)
    pores = cv2.GaussianBlur(rng.standard_normal((H, W), dtype=np.float32), (0, 0), 0.8)
    tone += (0.045 * idn.pores / (pores.std() + 1e-6)) * pores
    dots = np.zeros((H, W), np.float32)
    n_dots = int(0.004 * H * W)
    dots[rng.integers(0, H, n_dots), rng.integers(0, W, n_dots)] = 1.0
    tone -= (0.9 * idn.pores) * cv2.GaussianBlur(dots, (0, 0), 0.7)
    img = colour
    img *= tone[..., None]
    img *= skin

    # Freckles (1-3.5 texture px, around the nose and cheeks) and a few moles.
    fw = _Win(ref[list(pm.FACE_OUTLINE)], 0.0, (H, W))
    freck = fw.zeros()
    n_freck = int(1800 * idn.freckles)
    c = to_tex(np.stack([rng.normal(0.49, 0.25, n_freck), rng.normal(0.45, 0.13, n_freck)], 1)) - fw.origin
    for (x, y), r, a in zip(_fix(c), rng.uniform(1.2, 3.5, n_freck), rng.uniform(0.3, 0.8, n_freck)):
        cv2.circle(freck, (int(x), int(y)), int(r * (1 << _SHIFT)), float(a), -1, cv2.LINE_AA, _SHIFT)
    for _ in range(int(rng.integers(0, 4))):
        p = to_tex([rng.uniform(0.05, 0.95), rng.uniform(0.15, 1.0)]) - fw.origin
        cv2.circle(freck, tuple(int(v) for v in _fix(p)), int(rng.uniform(4, 8) * (1 << _SHIFT)), 1.0, -1,
                   cv2.LINE_AA, _SHIFT)
    sub = img[fw.sl]
    sub *= (1.0 - 0.8 * np.minimum(freck, 1.0)[..., None] * (1.0 - np.array([0.72, 0.55, 0.45], np.float32)))

    # --- hair: everything in the head that is neither face nor neck -------------------------
    strands = 1.0 + 0.22 * _noise(rng, (H, W), W // 2, H // 24) + 0.08 * _noise(rng, (H, W), 8)
    hair_mask = np.clip(1.0 - face - neck, 0.0, 1.0)
    _blend(img, hair_mask, np.clip(strands[..., None] * hair, 0, 1))
    if idn.beard > 0:
        bw = _Win(lm[list(L.JAW[2:15]) + [33]], 0.02, (H, W))
        beard = outline[bw.sl] * bw.blob((0.49, lm[57, 1] + 0.05), 0.42, 0.28) * (bw.gy > lm[33, 1] + 0.02)
        stubble = np.clip(0.5 + 0.5 * _noise(rng, bw.shape, bw.shape[1] // 2, bw.shape[0] // 4), 0, 1)
        _blend(img[bw.sl], beard * stubble, hair * 0.8, 0.85 * idn.beard)

    # --- brows: darker than the forehead whatever the hair colour ------------------------
    brow_c = hair * 0.7
    limit = 0.5 * _luma(skin)
    if _luma(brow_c) > limit:
        brow_c = brow_c * (limit / _luma(brow_c))
    for idx in (L.RIGHT_BROW, L.LEFT_BROW[::-1]):  # both run outer → inner
        bw = _Win(lm[list(idx)], 0.06, (H, W))
        c = _smooth_curve(lm[list(idx)], 40)
        t = np.linspace(0.0, 1.0, len(c))[:, None]
        d = np.gradient(c, axis=0)
        nrm = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)
        half = 0.5 * idn.brow_thickness * (0.55 + 0.45 * t)
        brow = cv2.GaussianBlur(bw.fill(np.concatenate([c + nrm * half, (c - nrm * half)[::-1]])), (0, 0), 1.5)
        hairs = np.clip(0.8 + 0.25 * _noise(rng, bw.shape, bw.shape[1] // 2, bw.shape[0] // 6), 0, 1)
        _blend(img[bw.sl], brow, brow_c, hairs)

    # --- eyes ---------------------------------------------------------------------------
    iris = np.asarray(idn.iris, np.float32)
    for eye in (L.RIGHT_EYE, L.LEFT_EYE):
        e = lm[list(eye)]
        ew = _Win(e, 0.06, (H, W))
        out = img[ew.sl]
        m = ew.fill(e)
        lid_shadow = 1 - 0.12 * ew.blob(e[[1, 2]].mean(0), 0.12, 0.025)
        _blend(out, m, np.array([0.93, 0.90, 0.86], np.float32) * lid_shadow[..., None])
        centre = e[[1, 2, 4, 5]].mean(0)
        r = 0.21 * np.linalg.norm(e[3] - e[0])
        rr = np.hypot(ew.gx - centre[0], ew.gy - centre[1]) / r
        ang = np.arctan2(ew.gy - centre[1], ew.gx - centre[0])
        streak = (1.0 + 0.15 * np.sin(ang * 23.0 + 3.0 * rr)) * (1.0 - 0.45 * np.clip((rr - 0.8) / 0.2, 0, 1))
        _blend(out, m * np.clip((1.0 - rr) * 30.0, 0, 1), iris * streak[..., None])
        _blend(out, m * np.clip((0.38 - rr) * 20.0, 0, 1), (0.02, 0.02, 0.02))  # pupil
        glint = np.hypot(ew.gx - centre[0] + 0.3 * r, ew.gy - centre[1] + 0.3 * r) / r
        _blend(out, m * np.clip((0.15 - glint) * 20, 0, 1), (1.0, 1.0, 1.0), 0.9)
        # Lash line just outside the upper lid (its lower edge is the lid contour), a fainter
        # line under the lower lid, and the lid crease above.
        upper = _smooth_curve(e[[0, 1, 2, 3]], 24)
        _blend(out, ew.line(upper - (0, 0.006), 0.012) * (1 - m), hair * 0.25, 0.95)
        _blend(out, ew.line(_smooth_curve(e[[3, 4, 5, 0]], 24) + (0, 0.003), 0.005) * (1 - m), skin * 0.55, 0.5)
        out *= (1.0 - 0.12 * cv2.GaussianBlur(ew.line(upper - (0, 0.035), 0.01), (0, 0), 4.0))[..., None]

    # --- nose and folds -----------------------------------------------------------------
    nw = _Win(lm[list(L.NOSE_BASE) + [48, 54]], 0.08, (H, W))
    for k, tilt in ((32, 20.0), (34, -20.0)):
        p = to_tex(lm[k] - (0, 0.012)) - nw.origin
        ax = (0.011 * idn.nose_width * PPU * (1 << _SHIFT), 0.0055 * PPU * (1 << _SHIFT))
        nostril = nw.zeros()
        cv2.ellipse(nostril, tuple(int(v) for v in _fix(p)), tuple(int(v) for v in ax), tilt, 0, 360, 1.0, -1,
                    cv2.LINE_AA, _SHIFT)
        _blend(img[nw.sl], cv2.GaussianBlur(nostril, (0, 0), 2.0), skin * 0.3, 0.9)
    folds = nw.zeros()
    for wing, corner, sgn in ((31, 48, -1), (35, 54, 1)):
        pts = np.array([lm[wing] + (sgn * 0.03, -0.01), lm[wing] + (sgn * 0.06, 0.08),
                        lm[corner] + (sgn * 0.035, 0.02)])
        folds = np.maximum(folds, nw.line(_smooth_curve(pts, 16), 0.012))
    img[nw.sl] *= (1.0 - 0.1 * cv2.GaussianBlur(folds, (0, 0), 3.0))[..., None]

    # --- mouth --------------------------------------------------------------------------
    mw = _Win(lm[list(L.MOUTH)], 0.03, (H, W))
    out = img[mw.sl]
    inner = mw.fill(lm[list(L.INNER_LIPS)])
    lips = np.clip(mw.fill(lm[list(L.OUTER_LIPS)]) - inner, 0, 1)
    mid_y = lm[[61, 62, 63, 65, 66, 67], 1].mean()
    lip_lines = _noise(rng, mw.shape, mw.shape[1] // 2, mw.shape[0] // 10)  # fine vertical creases
    lip_tone = (1.0 + 0.06 * lip_lines) * np.where(mw.gy < mid_y, 0.9, 1.0)  # upper lip a little darker
    lip_img = np.asarray(idn.lips, np.float32) * lip_tone[..., None]
    lip_img += (0.12 * mw.blob(lm[57] - (0, 0.03), 0.06, 0.015))[..., None]  # lower-lip sheen
    _blend(out, lips, np.clip(lip_img, 0, 1))
    top, bottom = lm[[61, 62, 63], 1].mean(), lm[[65, 66, 67], 1].mean()
    f = np.clip((mw.gy - top) / max(bottom - top, 1e-3), 0, 1) * np.ones_like(mw.gx)
    gaps = np.abs(np.sin((mw.gx - 0.49) * np.pi / 0.035)) > 0.12
    teeth = (f < 0.45) * (0.85 + 0.15 * gaps)
    mouth_c = np.where((f < 0.45)[..., None], teeth[..., None] * np.array([0.93, 0.9, 0.82], np.float32),
                       np.array([0.25, 0.07, 0.07], np.float32) * (1 + f)[..., None])
    _blend(out, inner, mouth_c.astype(np.float32))

    rgba = np.empty((H, W, 4), np.uint8)
    np.multiply(img, 255.0, out=img)
    rgba[..., :3] = np.clip(img, 0, 255)
    rgba[..., 3] = np.clip(face * 255.0 + 0.5, 0, 255)
    return rgba


def shape_maps(idn: Identity, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals ``(Ha, Wa, 3)`` and gloss ``(Ha, Wa)`` of the neutral surface at :data:`AUX_PPU`."""
    W, H = int(round(TEX_W_UNITS * AUX_PPU)), int(round(TEX_H_UNITS * AUX_PPU))
    xs = (np.arange(W) + 0.5) / AUX_PPU + TEX_X0
    ys = (np.arange(H) + 0.5) / AUX_PPU + TEX_Y0
    gx, gy = np.meshgrid(xs, ys)
    z_head = pm.head_height(ref[:68], idn, gx, gy)
    neck = _fill(np.zeros((H, W), np.float32), ref[list(pm.NECK_OUTLINE)], AUX_PPU)
    outline = _fill(np.zeros((H, W), np.float32), ref[list(pm.FACE_OUTLINE)], AUX_PPU)
    neck = cv2.GaussianBlur(neck * (1 - outline), (0, 0), 3.0)
    z = z_head * (1 - neck) + pm.neck_height(gx) * neck
    dzdy, dzdx = np.gradient(z, 1.0 / AUX_PPU)
    n = np.stack([-dzdx, -dzdy, np.ones_like(z)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    # Outside the silhouette the texture is seen only on the head's side band, whose surface
    # faces outwards: away from the skull's centre, or sideways level with the neck.
    out = 1.0 - cv2.GaussianBlur(_fill(np.zeros((H, W), np.float32), ref[list(pm.SILHOUETTE)], AUX_PPU), (0, 0), 2.0)
    side = np.stack([gx - 0.49, np.minimum(gy - 0.45, 0.0), np.full_like(gx, 0.15)], -1)
    side /= np.linalg.norm(side, axis=-1, keepdims=True)
    n = n * (1 - out[..., None]) + side * out[..., None]
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    lips = _fill(np.zeros((H, W), np.float32), ref[list(L.OUTER_LIPS)], AUX_PPU)
    gloss = np.clip(outline + neck, 0, 1) * 0.8 + 0.25 + 0.8 * lips
    for eye in (L.RIGHT_EYE, L.LEFT_EYE):
        gloss += 1.5 * _fill(np.zeros((H, W), np.float32), ref[list(eye)], AUX_PPU)
    return n.astype(np.float32), gloss.astype(np.float32)


def build_assets(idn: Identity) -> IdentityAssets:
    """Mesh, texture pyramid and shape maps of one identity (about 0.5 s; cache the result)."""
    ref = pm.reference_vertices(idn)
    tex = paint_texture(idn, ref)
    levels = [tex]
    while min(levels[-1].shape[:2]) > 48:
        levels.append(cv2.pyrDown(levels[-1]))
    normals, gloss = shape_maps(idn, ref)
    return IdentityAssets(ref=ref, depth=pm.reference_depth(idn, ref), uv=pm.texture_coords(ref),
                          levels=levels, normals=normals, gloss=gloss)
