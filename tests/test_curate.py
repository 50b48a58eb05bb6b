"""Face-set curation: head pose vs the phantom's truth, blur and size scores, sort, remove,
merge and their command line."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_blob_faceset

from progressive_swap import faceset as F
from progressive_swap.cli import faceset as cli
from progressive_swap.core import align, pose
from progressive_swap.core.io import TEMP_PREFIX
from progressive_swap.faceset import curate
from progressive_swap.phantom import mesh as pm
from progressive_swap.phantom.params import sample_frame, sample_identity
from progressive_swap.phantom.renderer import render

# ---------------------------------------------------------------------- head pose

YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)
PITCHES = (-20.0, 0.0, 20.0)
ORTHO = 1e6  # the phantom's camera is orthographic: an (almost) infinite focal length


def _pose_grid(n_ids: int = 6, size: int = 256, focal: float | None = ORTHO):
    """(truth, estimate) arrays over a yaw x pitch grid, random identities and expressions."""
    truth, est = [], []
    for seed in range(n_ids):
        idn = sample_identity(seed)
        base = sample_frame(1000 + seed, size)
        for yaw in YAWS:
            for pitch in PITCHES:
                roll = float(np.random.default_rng(seed).uniform(-10, 10))
                f = dataclasses.replace(base, yaw=yaw, pitch=pitch, roll=roll)
                lm = pm.project(pm.landmarks_3d(idn, f), f, size)[0]
                truth.append((yaw, pitch, roll))
                est.append(pose.head_pose(lm, (size, size), focal=focal))
    return np.array(truth), np.array(est)


def test_angle_decomposition_inverts_the_phantom_rotation():
    for angles in [(20, -10, 5), (-35, 15, -20), (0, 0, 0), (40, 25, 25)]:
        np.testing.assert_allclose(pose.rotation_to_angles(pm.rotation(*angles)), angles, atol=1e-9)


def test_pose_mean_shape_is_the_phantoms_neutral_face():
    # core.pose carries the 3D mean face as numbers; they must stay the phantom's neutral landmarks.
    truth = pm.landmarks_3d(pm._neutral_identity()) - pm.PIVOT
    np.testing.assert_allclose(pose.mean_shape_3d(), truth, atol=1e-6)


def test_pose_tracks_phantom_truth_on_renders():
    """The render's true landmarks (small renders: the image is not used, the landmarks are)."""
    idn = sample_identity(3)
    base = sample_frame(7, 96)
    for yaw, pitch in [(-30, 0), (25, -15), (0, 20)]:
        r = render(idn, dataclasses.replace(base, yaw=yaw, pitch=pitch, roll=0.0), 96)
        y, p, ro = pose.head_pose(r.landmarks, (96, 96), focal=ORTHO)
        assert abs(y - yaw) < 6 and abs(p - pitch) < 8 and abs(ro) < 5, (yaw, pitch, y, p, ro)


def test_pose_error_vs_phantom_truth():
    truth, est = _pose_grid()
    err = np.abs(est - truth)
    assert np.isfinite(est).all()
    # yaw: within 6 deg everywhere; pitch: the mean face cannot know the identity's nose and
    # chin, which read as a few degrees of pitch (measured max ~6-7 deg).
    assert err[:, 0].max() < 6.0, err[:, 0].max()
    assert err[:, 1].max() < 8.0 and err[:, 1].mean() < 4.0, (err[:, 1].max(), err[:, 1].mean())
    assert err[:, 2].max() < 5.0, err[:, 2].max()


def test_pose_signs_and_monotonic_with_default_camera():
    """The default pinhole camera (focal = image size): same signs and order as the truth."""
    truth, est = _pose_grid(n_ids=3, focal=None)
    per = len(YAWS) * len(PITCHES)
    for k in range(3):
        t, e = truth[k * per:(k + 1) * per], est[k * per:(k + 1) * per]
        grid = e.reshape(len(YAWS), len(PITCHES), 3)
        assert (np.diff(grid[:, :, 0], axis=0) > 0).all()  # yaw grows with true yaw
        assert (np.diff(grid[:, :, 1], axis=1) > 0).all()  # pitch grows with true pitch
        big = np.abs(t[:, 0]) >= 15
        assert (np.sign(e[big, 0]) == np.sign(t[big, 0])).all()
        assert np.abs(e - t)[:, :2].max() < 16  # perspective vs the orthographic phantom
    # yaw > 0 = the nose towards image right: the nose tip lies right of the eye centre
    idn, f = sample_identity(0), dataclasses.replace(sample_frame(0, 256), yaw=25.0, pitch=0.0, roll=0.0)
    lm = pm.project(pm.landmarks_3d(idn, f), f, 256)[0]
    assert lm[30, 0] > lm[36:48, 0].mean() and pose.head_pose(lm, (256, 256))[0] > 10


def test_pose_of_bad_landmarks_is_nan():
    lm = np.full((68, 2), np.nan)
    assert np.isnan(pose.head_pose(lm, (100, 100))).all()
    with pytest.raises(ValueError):
        pose.head_pose(np.zeros((5, 2)))


# ---------------------------------------------------------------------- scores


def test_blur_score_orders_sharp_above_blurred():
    r = render(sample_identity(1), sample_frame(1, 128), 128)
    sharp = r.image
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    assert curate.blur_score(sharp) > 2 * curate.blur_score(blurred)
    assert curate.blur_score(sharp) == pytest.approx(curate.blur_score(sharp.astype(np.float32) / 255), rel=1e-3)


def _scored_set(path: Path, n: int = 6) -> Path:
    """Blob faces whose frame size and sharpness vary (face k: scale 30 + 5k, blur sigma k % 3)."""
    from progressive_swap.core.landmarks import MEAN_FACE

    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    recs, imgs = [], []
    for i in range(n):
        k = int(perm[i])
        scale = 30.0 + 5.0 * k
        frame = np.full((160, 160, 3), 60, np.uint8)
        lm = align.transform_points(MEAN_FACE, np.array([[scale, 0, 40], [0, scale, 30]]))
        cv2.fillPoly(frame, [cv2.convexHull(lm.astype(np.int32))], (200, 160, 120))
        for j in range(17, 68):
            cv2.circle(frame, tuple(int(v) for v in lm[j]), 1, (20, 20, 20), -1)
        m = align.alignment_matrix(lm, "whole")
        img = align.warp_to_crop(frame, m, 64)
        if k % 3:
            img = cv2.GaussianBlur(img, (0, 0), 1.5 * (k % 3))
        recs.append(F.FaceRecord(id=f"k{k}", source="s", frame_index=i, time=0.0, track=0, identity="x",
                                 landmarks=lm, matrix=m, frame_size=(160, 160), extra={"k": k}))
        imgs.append(img)
    with F.create(path, face_type="whole", size=64) as w:
        w.append(recs[:3], imgs[:3], masks={"hull": [np.ones((64, 64), np.float32)] * 3})
        w.append(recs[3:], imgs[3:], masks={"hull": [np.ones((64, 64), np.float32)] * (n - 3)})
    return path


def test_face_scores_and_sort_by_size(tmp_path):
    path = _scored_set(tmp_path / "A")
    fs = F.open(path)
    sc = curate.face_scores(fs)
    assert set(sc) == {"blur", "yaw", "pitch", "size"} and all(len(v) == 6 for v in sc.values())
    assert all(np.isfinite(v).all() for v in sc.values())
    res = curate.sort_faceset(path, "size", out=tmp_path / "B")  # default: largest first
    assert res.ids == [f"k{k}" for k in range(5, -1, -1)] and not res.in_place
    b = F.open(tmp_path / "B")
    assert b.ids == res.ids and F.open(path).ids != res.ids  # input untouched
    assert [b.record(i).extra["k"] for i in range(6)] == [5, 4, 3, 2, 1, 0]  # extra follows its row
    np.testing.assert_array_equal(b.image("k3"), fs.image("k3"))
    assert b.mask("k3", "hull") is not None and b.validate(deep=True) == []
    sizes = curate.face_scores(b, ["size"])["size"]
    assert (np.diff(sizes) < 0).all()
    assert curate.sort_faceset(path, "size", out=tmp_path / "C", descending=False).ids == res.ids[::-1]


def test_sort_by_blur_in_place(tmp_path):
    path = _scored_set(tmp_path / "A")
    before = F.open(path)
    before_lm = before.landmarks  # load now: sorting replaces the shard it reads from
    res = curate.sort_faceset(path, "blur")  # sharpest first
    assert res.in_place
    after = F.open(path)
    assert after.ids == res.ids and sorted(after.ids) == sorted(before.ids)
    sharp = {f"k{k}" for k in range(6) if k % 3 == 0}
    assert set(after.ids[:2]) == sharp and after.ids[-2:] in (["k5", "k2"], ["k2", "k5"])
    assert (np.diff(res.scores) <= 0).all()
    assert after.shard_count == 1 and after.validate(deep=True) == []
    np.testing.assert_array_equal(after.landmarks[after.index_of("k4")], before_lm[before.index_of("k4")])
    # the writer still works on the sorted set (no stale or superseded shards)
    F.open(path).remove(["k0"])
    assert len(F.open(path)) == 5


def test_remove_removes_exactly_those_ids(tmp_path):
    path = write_blob_faceset(tmp_path / "A", 0, n=8)
    curate.remove_faces(path, ["f001", "f005"])
    fs = F.open(path)
    assert fs.ids == [f"f{i:03d}" for i in (0, 2, 3, 4, 6, 7)]
    assert sorted(os.listdir(path / "images")) == [f"f{i:03d}.png" for i in (0, 2, 3, 4, 6, 7)]
    with pytest.raises(ValueError, match="no face 'f001'"):
        curate.remove_faces(path, ["f002", "f001"])
    assert len(F.open(path)) == 6  # nothing removed


def test_merge_combines_and_rejects_mismatched(tmp_path):
    a = write_blob_faceset(tmp_path / "A", 0, n=4)  # f000..f003
    b = write_blob_faceset(tmp_path / "B", 1, n=6)
    curate.remove_faces(b, ["f000", "f001", "f002", "f003"])  # f004, f005
    m = curate.merge_facesets([a, b], tmp_path / "M")
    assert len(m) == 6 and m.ids == [f"f{i:03d}" for i in range(6)] and m.identities == ["id0", "id1"]
    assert m.identity_counts() == {"id0": 4, "id1": 2} and m.validate(deep=True) == []
    np.testing.assert_array_equal(m.image("f005"), F.open(b).image("f005"))

    dup = write_blob_faceset(tmp_path / "Dup", 1, n=2)  # f000 again
    full = write_blob_faceset(tmp_path / "Full", 0, n=2, face_type="full")
    for inputs, msg in [([a, dup], "appears twice"), ([a, full], "face_type"), ([a], "at least two")]:
        with pytest.raises(ValueError, match=msg):
            curate.merge_facesets(inputs, tmp_path / "M2")
        assert not (tmp_path / "M2").exists()
        assert not [p for p in os.listdir(tmp_path) if p.startswith(TEMP_PREFIX)]
    with pytest.raises(ValueError, match="already exists"):
        curate.merge_facesets([a, b], tmp_path / "M")


# ---------------------------------------------------------------------- command line


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_sort_remove_merge(tmp_path, capsys):
    path = _scored_set(tmp_path / "A")
    rc, out, err = _run(capsys, "sort", path, "by=size", f"out={tmp_path / 'B'}", "order=asc", f"view={tmp_path / 'V'}")
    assert rc == 0, err
    assert "sorted 6 faces" in out and "ascending" in out
    assert F.open(tmp_path / "B").ids == [f"k{k}" for k in range(6)]
    view = sorted(os.listdir(tmp_path / "V"))
    assert view[:2] == ["000000_k0.png", "000001_k1.png"] and "view.json" in view
    os.unlink(tmp_path / "V" / "000001_k1.png")  # the user deletes a bad face while browsing
    rc, out, err = _run(capsys, "remove", tmp_path / "B", f"view={tmp_path / 'V'}")
    assert rc == 0, err
    assert "removed 1 face(s)" in out and F.open(tmp_path / "B").ids == ["k0", "k2", "k3", "k4", "k5"]

    rc, out, err = _run(capsys, "remove", tmp_path / "B", "ids=[k0,k3]")
    assert rc == 0 and F.open(tmp_path / "B").ids == ["k2", "k4", "k5"]
    (tmp_path / "ids.txt").write_text("k2\n\n# a comment\n")
    assert _run(capsys, "remove", tmp_path / "B", f"ids_file={tmp_path / 'ids.txt'}")[0] == 0
    assert F.open(tmp_path / "B").ids == ["k4", "k5"]

    rc, out, err = _run(capsys, "sort", path, "by=blur")  # in place
    assert rc == 0 and "in place" in out

    a = write_blob_faceset(tmp_path / "C", 0, n=2)
    d = write_blob_faceset(tmp_path / "D", 1, n=3, seed=4)
    F.open(d).remove(["f000", "f001"])
    rc, out, err = _run(capsys, "merge", a, d, f"out={tmp_path / 'M'}")
    assert rc == 0, err
    assert "merged into" in out and len(F.open(tmp_path / "M")) == 3


@pytest.mark.parametrize("argv, msg", [
    (["sort", "{A}"], "by= is required"),
    (["sort", "{A}", "by=sharpness"], "unknown by='sharpness'"),
    (["sort", "{A}", "by=size", "colour=red"], "unknown key 'colour'"),
    (["sort", "{A}", "by=size", "order=up"], "order must be asc or desc"),
    (["sort", "{A}", "by=size", "out={A}x"], None),  # fine: a new folder
    (["sort", "{A}", "by=size", "out={C}"], "already exists"),
    (["sort", "{tmp}/nowhere", "by=size"], "nowhere"),
    (["remove", "{A}", "ids=[k0,zz]"], "no face 'zz'"),
    (["remove", "{A}"], "exactly one of"),
    (["remove", "{A}", "ids=[k0]", "ids_file=x"], "exactly one of"),
    (["remove", "{A}", "ids_file={tmp}/none.txt"], "none.txt"),
    (["merge", "{A}", "out={tmp}/M"], "at least two"),
    (["merge", "{A}", "{C}"], "out= is required"),
    (["merge", "{A}", "{C}", "out={tmp}/M"], "face_type"),
    (["merge", "{A}", "{A}", "out={C}"], "already exists"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, msg):
    a = _scored_set(tmp_path / "A")
    write_blob_faceset(tmp_path / "C", 0, n=2, face_type="full")
    before = sorted(os.listdir(tmp_path))
    ids = F.open(a).ids
    rc, out, err = _run(capsys, *[s.format(A=a, C=tmp_path / "C", tmp=tmp_path) for s in argv])
    if msg is None:
        assert rc == 0, err
        return
    assert rc == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("swap-faceset: error:") and msg in err, err
    assert sorted(os.listdir(tmp_path)) == before and F.open(a).ids == ids  # nothing written


def test_cli_help(capsys):
    assert cli.main(["sort", "--help"]) == 0
    assert "by=blur|yaw|pitch|size" in capsys.readouterr().out
    assert cli.main(["merge", "-h"]) == 0
