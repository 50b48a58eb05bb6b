"""The phantom: determinism, landmark/feature agreement, pose geometry, masks, fine detail,
true swaps, motion, and the ``swap-phantom`` command's input checks."""
from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from progressive_swap.core import landmarks as L
from progressive_swap.phantom import mesh as pm
from progressive_swap.phantom.renderer import (
    FrameParams,
    Occluder,
    render,
    sample_frame,
    sample_identity,
    sample_trajectory,
    true_swap,
)


def frontal(seed: int, **kw) -> FrameParams:
    """A big, frontal, evenly lit face; keyword arguments override."""
    base = dict(yaw=0.0, pitch=0.0, roll=0.0, occluder=None, smile=0.0, blink=0.0, mouth_open=0.3, brow_raise=0.0,
                scale=0.42, cx=0.5, cy=0.42, light_dir=(0.0, -0.3, 0.95), ambient=0.45, light_strength=0.6)
    base.update(kw)
    return replace(sample_frame(seed), **base)


def pixel(img: np.ndarray, p) -> np.ndarray:
    return img[int(round(p[1])), int(round(p[0]))].astype(np.float64)


def patch_median(img: np.ndarray, p) -> np.ndarray:
    x, y = int(round(p[0])), int(round(p[1]))
    return np.median(img[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(np.float64), 0)


def luma(c: np.ndarray) -> float:
    return float(c @ [0.299, 0.587, 0.114])


def redness(c: np.ndarray) -> float:
    return float(c[0] / (c.sum() + 1e-6))


def chroma(c: np.ndarray) -> float:
    return float((c.max() - c.min()) / (c.max() + 1e-6))


# ----------------------------------------------------------------------------- basics


def test_deterministic_and_seed_dependent():
    a, f = sample_identity(3), sample_frame(11, 128, occluders=0.5)
    assert sample_identity(3) == a and sample_frame(11, 128, occluders=0.5) == f
    assert sample_frame(11, 64, 0.5) == f  # params do not depend on the frame size
    r1, r2 = render(a, f, 96), render(a, f, 96)
    for k in ("image", "landmarks", "face_mask", "occluder_mask", "visible_mask"):
        np.testing.assert_array_equal(getattr(r1, k), getattr(r2, k))
    assert r1.image.shape == (96, 96, 3) and r1.image.dtype == np.uint8
    assert r1.landmarks.shape == (68, 2) and r1.landmarks.dtype == np.float64
    assert r1.face_mask.shape == (96, 96) and r1.face_mask.dtype == np.float32
    assert sample_identity(4) != a and sample_frame(12) != f
    assert np.abs(render(sample_identity(4), f, 96).image.astype(int) - r1.image).mean() > 3


def test_resolution_free():
    idn, f = sample_identity(1), sample_frame(5)
    small, big = render(idn, f, 64), render(idn, f, 256)
    # Landmarks scale exactly with the pixel-centre convention x_px = u * size - 0.5.
    np.testing.assert_allclose((small.landmarks + 0.5) * 4 - 0.5, big.landmarks, atol=1e-9)
    down = cv2.resize(big.image, (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(down - small.image).mean() < 6
    assert abs(float(small.face_mask.sum()) * 16 - float(big.face_mask.sum())) < 0.03 * big.face_mask.sum()


def test_mesh_has_no_folds_and_keeps_contours():
    tri = pm.triangles()[: pm.n_front_triangles()]
    edges = {tuple(sorted(e)) for t in tri for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    for loop in (L.RIGHT_EYE, L.LEFT_EYE, L.OUTER_LIPS, L.INNER_LIPS):
        for a, b in zip(loop, loop[1:] + loop[:1]):
            assert tuple(sorted((a, b))) in edges, f"contour edge {a}-{b} is not a mesh edge"
    for s in range(40):
        idn = sample_identity(s)
        ref = pm.reference_vertices(idn)
        assert (pm.signed_areas(ref, tri) > 0).all()
        for mouth, blink, smile in ((0, 1, 1), (1, 0, 0), (1, 1, 1)):
            fr = replace(sample_frame(s), mouth_open=mouth, blink=blink, smile=smile, brow_raise=1)
            v = ref + pm.expression_offsets(ref, fr)
            assert (pm.signed_areas(v, tri) > -1e-12).all(), f"fold for identity {s}"


# ------------------------------------------------------------------- features vs landmarks


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_landmarks_lie_on_rendered_features(seed):
    idn = sample_identity(seed)
    f = frontal(seed)
    r = render(idn, f, 384)
    im, lm = r.image, r.landmarks
    unit = f.scale * 384  # pixels per template unit
    cheek = patch_median(im, (lm[2] + 2 * lm[31]) / 3)
    # Brows are darker than the forehead just above them.
    for k in (18, 19, 20, 23, 24, 25):
        assert luma(patch_median(im, lm[k])) < 0.85 * luma(patch_median(im, lm[k] - (0, 0.08 * unit))), k
    # The pupil sits at the centre of the eye contour; the eye's corners are white.
    for eye in (L.RIGHT_EYE, L.LEFT_EYE):
        e = lm[list(eye)]
        assert luma(pixel(im, e[[1, 2, 4, 5]].mean(0))) < 0.35 * luma(cheek)
        for t in (0.17, 0.83):
            x = e[0, 0] + (e[3, 0] - e[0, 0]) * t
            up = np.interp(x, *zip(*sorted(e[[0, 1, 2, 3]].tolist())))
            lo = np.interp(x, *zip(*sorted(e[[0, 5, 4, 3]].tolist())))
            assert chroma(pixel(im, (x, (up + lo) / 2))) < min(0.2, 0.6 * chroma(cheek))
    # Between the outer and inner lip contours is lip colour; just outside the outer one, skin.
    centre = lm[list(L.MOUTH)].mean(0)
    pairs = ((50, 61), (51, 62), (52, 63), (56, 65), (57, 66), (58, 67))  # outer, inner contour
    body = [redness(patch_median(im, (lm[o] + lm[i]) / 2)) for o, i in pairs]
    away = [(lm[o] - centre) / np.linalg.norm(lm[o] - centre) for o, _ in pairs]
    outside = [redness(pixel(im, lm[o] + 4 * n)) for (o, _), n in zip(pairs, away)]
    assert min(body) > max(outside) + 0.03
    assert redness(cheek) < min(body) - 0.03
    # The jaw contour is the face mask's edge: face inside, not face (neck) outside.
    c = lm[list(L.NOSE_BASE)].mean(0)
    for k in range(5, 12):
        n = (lm[k] - c) / np.linalg.norm(lm[k] - c)
        assert r.face_mask[tuple(np.round(lm[k] - 4 * n).astype(int)[::-1])] > 0.9
        assert r.face_mask[tuple(np.round(lm[k] + 4 * n).astype(int)[::-1])] < 0.1


def test_closed_mouth_and_eyes_leave_no_holes():
    for s in range(6):
        f = frontal(s, mouth_open=0.0, blink=1.0, yaw=float(10 * s - 25))
        m = (render(sample_identity(s), f, 128).face_mask > 0.5).astype(np.uint8)
        flood = m.copy()
        cv2.floodFill(flood, np.zeros((130, 130), np.uint8), (0, 0), 1)
        assert (flood == 0).sum() == 0, "holes in the face mask"


# ------------------------------------------------------------------------------ geometry


def test_yaw_and_pitch_move_the_nose_as_projected():
    idn = sample_identity(2)
    size = 256
    for yaw, pitch in ((30.0, 0.0), (-30.0, 0.0), (0.0, 20.0), (0.0, -20.0)):
        f = frontal(2, yaw=yaw, pitch=pitch)
        lm = render(idn, f, size).landmarks
        p3 = pm.landmarks_3d(idn, f)
        eyes = list(L.EYES)
        d3 = p3[30] - p3[eyes].mean(0)  # nose tip relative to the eyes' centre, template units
        d2 = lm[30] - lm[eyes].mean(0)
        a, b = np.deg2rad(yaw), np.deg2rad(pitch)
        # Weak perspective with R = Rx(pitch) Ry(yaw): x' = x cos a + z sin a, and so on.
        x = d3[0] * np.cos(a) + d3[2] * np.sin(a)
        z = -d3[0] * np.sin(a) + d3[2] * np.cos(a)
        y = d3[1] * np.cos(b) + z * np.sin(b)
        np.testing.assert_allclose(d2, f.scale * size * np.array([x, y]), atol=1e-6)
        # Direction: the nose protrudes, so it leads the turn by a clear margin.
        assert d3[2] > 0.2
        if yaw:
            assert np.sign(d2[0]) == np.sign(yaw) and abs(d2[0]) > 0.1 * f.scale * size
        if pitch:
            ref = render(idn, frontal(2), size).landmarks
            assert np.sign(d2[1] - (ref[30] - ref[eyes].mean(0))[1]) == np.sign(pitch)


@pytest.mark.parametrize("roll", [-20.0, 12.0, 25.0])
def test_roll_rotates_the_eye_line(roll):
    lm = render(sample_identity(4), frontal(4, roll=roll), 128).landmarks
    d = lm[list(L.LEFT_EYE)].mean(0) - lm[list(L.RIGHT_EYE)].mean(0)
    assert np.rad2deg(np.arctan2(d[1], d[0])) == pytest.approx(roll, abs=1e-6)


def test_sampled_poses_cover_the_required_ranges():
    fs = [sample_frame(s) for s in range(400)]
    yaw, pitch, roll = (np.array([getattr(f, k) for f in fs]) for k in ("yaw", "pitch", "roll"))
    assert yaw.min() <= -30 and yaw.max() >= 30
    assert pitch.min() <= -20 and pitch.max() >= 20 and roll.min() <= -20 and roll.max() >= 20


# ------------------------------------------------------------------------------- masks


def test_occluder_masks_are_consistent_with_the_image():
    kinds = set()
    for s in range(12):
        f = sample_frame(100 + s, occluders=1.0)
        kinds.add(f.occluder.kind)
        idn = sample_identity(s)
        r, clean = render(idn, f, 96), render(idn, replace(f, occluder=None), 96)
        np.testing.assert_allclose(r.visible_mask, r.face_mask * (1 - r.occluder_mask), atol=1e-6)
        np.testing.assert_array_equal(r.face_mask, clean.face_mask)  # the face mask is not cut
        assert r.occluder_mask.max() == pytest.approx(1.0) and clean.occluder_mask.max() == 0
        free = r.occluder_mask == 0
        np.testing.assert_array_equal(r.image[free], clean.image[free])  # nothing drawn elsewhere
        covered = r.occluder_mask > 0.99
        assert np.abs(r.image[covered].astype(int) - clean.image[covered]).mean() > 5
    assert kinds == {"hand", "bar", "mic"}
    overlaps = [render(sample_identity(0), sample_frame(100 + s, occluders=1.0), 64) for s in range(12)]
    assert sum((o.face_mask * o.occluder_mask).sum() > 5 for o in overlaps) >= 6  # they do cover faces


def test_identities_are_distinguishable_at_64px():
    """Nearest-neighbour on mean face and hair colour separates identities across poses."""
    feats, labels = [], []
    for i in range(5):
        idn = sample_identity(i)
        for s in range(3):
            r = render(idn, replace(sample_frame(50 + s), occluder=None), 64)
            face = r.face_mask > 0.9
            top = r.landmarks[list(L.BROWS)].mean(0) - 0.42 * (r.landmarks[8] - r.landmarks[27])  # in the hair
            x, y = np.round(top).astype(int)
            hair = np.median(r.image[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3), 0)
            feats.append(np.concatenate([r.image[face].mean(0), hair]) / 255)
            labels.append(i)
    feats, labels = np.array(feats), np.array(labels)
    d = np.linalg.norm(feats[:, None] - feats[None], axis=-1) + np.eye(len(feats)) * 1e9
    assert (labels[d.argmin(1)] == labels).all()


# ------------------------------------------------------------------------------ detail


def test_fine_detail_at_1024_exceeds_upsampled_256():
    idn = sample_identity(3)
    f = frontal(3, scale=0.3, cx=0.5, cy=0.45)
    big, small = render(idn, f, 1024), render(idn, f, 256)
    up = cv2.resize(small.image, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    c = np.round((big.landmarks[3] + big.landmarks[31]) / 2).astype(int)  # cheek
    win = np.hanning(64)[:, None] * np.hanning(64)[None]
    freq = np.abs(np.fft.fftfreq(64))
    above = np.maximum(freq[:, None], freq[None]) > 0.125  # above the 256-px Nyquist, in 1024 px

    def energy(img):
        p = img[c[1] - 32:c[1] + 32, c[0] - 32:c[0] + 32].astype(np.float64).mean(2)
        return (np.abs(np.fft.fft2((p - p.mean()) * win)) ** 2)[above].sum()

    assert energy(big.image) > 10 * energy(up)


# --------------------------------------------------------------------------- true swap


def test_true_swap_keeps_the_frame_and_changes_the_person():
    a, b = sample_identity(0), sample_identity(1)
    bar = Occluder("bar", 0.3, 0.1, 0.15, 60.0, (0.2, 0.6, 0.3))
    f = replace(sample_frame(9), yaw=25.0, pitch=-10.0, roll=15.0, occluder=bar)
    ra, rb = render(a, f, 128), true_swap(b, f, 128)
    np.testing.assert_array_equal(rb.image, render(b, f, 128).image)
    # Same pose: the similarity between the two landmark sets is a near-identity rotation.
    from progressive_swap.core.align import umeyama
    m = umeyama(ra.landmarks[list(L.STABLE_POINTS)], rb.landmarks[list(L.STABLE_POINTS)])
    assert abs(np.rad2deg(np.arctan2(m[1, 0], m[0, 0]))) < 3.0
    assert np.abs(ra.landmarks - rb.landmarks).max() > 1.0  # different face shapes
    # Same scene: the background and occluder are pixel-identical away from both heads.
    # (Pixels that a new background seed does not change are covered by a head or the occluder.)
    g = replace(f, background=f.background + 1)
    covered = (ra.image == render(a, g, 128).image).all(-1) | (rb.image == render(b, g, 128).image).all(-1)
    scene = cv2.dilate(covered.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    assert scene.mean() > 0.3
    np.testing.assert_array_equal(ra.image[scene], rb.image[scene])
    np.testing.assert_array_equal(ra.occluder_mask, rb.occluder_mask)
    both = (ra.visible_mask > 0.99) & (rb.visible_mask > 0.99)
    assert np.abs(ra.image[both].astype(int) - rb.image[both]).mean() > 20  # another person


# ------------------------------------------------------------------------------ motion


def test_trajectory_is_smooth_with_fast_turns_and_blinks():
    fps = 24.0
    traj = sample_trajectory(1, 240, fps)
    assert traj == sample_trajectory(1, 240, fps) and len(traj) == 240
    yaw = np.array([f.yaw for f in traj])
    step = np.abs(np.diff(yaw))
    assert np.median(step) < 1.0  # mostly slow
    assert step.max() > 2.0  # some fast motion
    assert np.abs(np.diff(np.array([f.cx for f in traj]))).max() < 0.01
    blink = np.array([f.blink for f in traj])
    assert blink.max() > 0.9 and (blink > 0.5).mean() < 0.15
    assert len({f.background for f in traj}) == 1 and len({f.light_dir for f in traj}) == 1


# ------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("args", [["size=100"], ["size=4096"], ["face_type=nope"], ["faces=0"], ["occluders=2"],
                                  ["bogus=1"], ["size"]])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args):
    from progressive_swap.cli.phantom import main

    out = tmp_path / "out"
    assert main([f"out={out}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swap-phantom: error:") and "\n" not in err
    assert not out.exists()


def test_cli_unwritable_out_exits_2(tmp_path, capsys):
    from progressive_swap.cli.phantom import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([f"out={blocker}/sub", "faces=1", "videos=0"]) == 2
    assert list(tmp_path.iterdir()) == [blocker]
    assert main([]) == 2  # out= is required


def test_cli_writes_face_sets_and_videos(tmp_path):
    from progressive_swap import faceset
    from progressive_swap.cli.phantom import main
    from progressive_swap.core.landmarks import template_uv

    out = tmp_path / "ph"
    assert main([f"out={out}", "identities=2", "faces=3", "size=32", "videos=1", "frames=3", "progress=false"]) == 0
    for i in range(2):
        fs = faceset.open(out / "faces" / f"id{i}")
        assert len(fs) == 3 and set(fs.mask_names) == {"face", "occluder", "visible"}
        assert fs.image(0).shape == (32, 32, 3)
        # Aligned landmarks sit near the template: the crops really are aligned.
        err = np.abs(fs.landmarks_aligned[:, list(L.STABLE_POINTS)] - template_uv("whole")[list(L.STABLE_POINTS)])
        assert err.mean() < 0.05
        truth = json.loads((out / "videos" / f"id{i}.truth.json").read_text())
        assert truth["size"] == [64, 64] and len(truth["frames"]) == 3
        face = truth["frames"][0]["faces"][0]
        assert face["identity"] == f"id{i}" and len(face["landmarks"]) == 68
    assert not [p for p in (out / "faces").iterdir() if p.name.startswith(".")]  # no temporary dirs left
    # Identity i is sample_identity(seed * 1000 + i); each record keeps its frame params.
    rec = faceset.open(out / "faces" / "id1").record(0)
    meta = rec.extra["phantom"]
    assert meta["identity_seed"] == 1
    params = dict(meta["params"])
    occ = params.pop("occluder")
    f = FrameParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
                    occluder=None if occ is None else Occluder(**{**occ, "color": tuple(occ["color"])}))
    r = render(sample_identity(1), f, 64)
    np.testing.assert_allclose(r.landmarks, rec.landmarks, atol=1e-9)  # reproducible from the record


def test_face_sets_do_not_depend_on_the_number_of_render_workers(tmp_path):
    from progressive_swap import faceset
    from progressive_swap.phantom.dataset import generate_phantom_dataset

    sets = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        generate_phantom_dataset(out, identities=2, faces=40, size=32, videos=0, progress=False, workers=workers)
        sets[workers] = [faceset.open(out / "faces" / f"id{i}") for i in range(2)]
    for a, b in zip(sets[0], sets[2]):
        assert len(a) == len(b) == 40
        for k in (0, 17, 39):
            np.testing.assert_array_equal(a.image(k), b.image(k))
            np.testing.assert_array_equal(a.mask(k, "visible"), b.mask(k, "visible"))
            assert a.record(k).extra == b.record(k).extra
            np.testing.assert_array_equal(a.record(k).landmarks, b.record(k).landmarks)
    # Different identities really differ (the comparison above can fail).
    assert not np.array_equal(sets[2][0].image(0), sets[2][1].image(0))
