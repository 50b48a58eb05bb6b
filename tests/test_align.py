"""Alignment: similarity fit, crop matrices and warps (numpy and kornia agree)."""
import cv2
import numpy as np
import pytest
import torch

from progressive_swap.core import align
from progressive_swap.core.landmarks import FACE_TYPES, MEAN_FACE, STABLE_POINTS, face_type, template_uv


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def _textured_frame(seed: int, hw=(240, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (hw[0] // 12, hw[1] // 12, 3), dtype=np.uint8)
    return cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


def test_umeyama_recovers_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 2)) * 50
    t = _similarity(33.0, 1.7, 12.0, -4.0)
    dst = align.transform_points(src, t)
    np.testing.assert_allclose(align.umeyama(src, dst), t, atol=1e-9)


def test_umeyama_never_reflects():
    src = np.array([[0, 0], [1, 0], [0, 1], [1, 1.5]], float)
    dst = src * np.array([-1, 1])  # a mirror image
    m = align.umeyama(src, dst)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_maps_to_its_own_crop():
    for name in FACE_TYPES:
        # Put the mean face in a frame at a known similarity; the fit must invert it exactly.
        t = _similarity(10.0, 180.0, 200.0, 150.0)
        lm = align.transform_points(MEAN_FACE, t)
        m = align.alignment_matrix(lm, name)
        np.testing.assert_allclose(align.transform_points(lm, m), template_uv(name), atol=1e-9)


def test_face_types_nest():
    # whole covers more than full, head more than whole: the face occupies less of the crop.
    spans = [np.ptp(template_uv(n)[list(STABLE_POINTS)], axis=0)[0] for n in ("full", "whole", "head")]
    assert spans[0] > spans[1] > spans[2]
    with pytest.raises(ValueError, match="unknown face_type"):
        face_type("torso")


def test_crop_matrix_pixel_centres():
    # u = 0 is the crop's left edge: pixel 0's centre is u = 0.5 / S.
    m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    p = align.transform_points(np.array([[0.5 / 64, 0.5 / 64], [1 - 0.5 / 64, 0.5]]), align.crop_matrix(m, 64))
    np.testing.assert_allclose(p, [[0, 0], [63, 31.5]], atol=1e-12)


@pytest.mark.parametrize("face_type_name", ["full", "whole", "head"])
def test_same_crop_from_rotated_scaled_shifted_frame(face_type_name):
    frame = _textured_frame(1)
    lm = align.transform_points(MEAN_FACE, _similarity(5.0, 60.0, 130.0, 100.0))
    crop = align.warp_to_crop(frame, align.alignment_matrix(lm, face_type_name), 96)
    # Move the whole frame (and its landmarks) by a similarity.
    t = _similarity(-25.0, 1.3, 40.0, 150.0)
    frame2 = cv2.warpAffine(frame, t, (560, 520), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    lm2 = align.transform_points(lm, t)
    crop2 = align.warp_to_crop(frame2, align.alignment_matrix(lm2, face_type_name), 96)
    inner = (slice(16, 80), slice(16, 80))
    err = np.abs(crop.astype(float) - crop2.astype(float))[inner].mean()
    assert err < 4.0, err
    # A wrong matrix must not pass the same check.
    crop_bad = align.warp_to_crop(frame2, align.alignment_matrix(lm, face_type_name), 96)
    assert np.abs(crop.astype(float) - crop_bad.astype(float))[inner].mean() > 20


def test_warp_to_crop_and_back_reproduces_frame_inside_face():
    frame = _textured_frame(2)
    lm = align.transform_points(MEAN_FACE, _similarity(12.0, 80.0, 120.0, 70.0))
    m = align.alignment_matrix(lm, "whole")
    size = 256  # larger than the face in the frame: no information lost
    crop = align.warp_to_crop(frame, m, size)
    back = align.warp_from_crop(crop, m, (frame.shape[1], frame.shape[0]))
    hull = cv2.convexHull(lm.astype(np.float32)).astype(np.int32)
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    err = np.abs(frame.astype(float) - back.astype(float))[mask]
    assert err.mean() < 2.0 and mask.sum() > 1000


def test_kornia_and_opencv_warps_agree():
    frame = _textured_frame(3).astype(np.float32) / 255
    lm = align.transform_points(MEAN_FACE, _similarity(-8.0, 70.0, 140.0, 80.0))
    m = align.alignment_matrix(lm, "full")
    ref = align.warp_to_crop(frame, m, 64, border=cv2.BORDER_REFLECT101)
    t = torch.from_numpy(frame).permute(2, 0, 1)[None]
    out = align.warp_to_crop_tensor(t, m[None], 64)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - ref)[4:-4, 4:-4].max() < 2e-3

    back_ref = align.warp_from_crop(ref, m, (frame.shape[1], frame.shape[0]))
    back = align.warp_from_crop_tensor(torch.from_numpy(ref).permute(2, 0, 1)[None], m[None], frame.shape[:2])
    back = back[0].permute(1, 2, 0).numpy()
    hull = cv2.convexHull(lm.astype(np.float32)).astype(np.int32)
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    assert np.abs(back - back_ref)[mask > 0].max() < 2e-3


def test_face_size_is_frame_pixels_per_crop():
    lm = align.transform_points(MEAN_FACE, _similarity(0.0, 100.0, 0.0, 0.0))
    m = align.alignment_matrix(lm, "full")
    assert align.face_size(m) == pytest.approx(100 * 2 * FACE_TYPES["full"].extent)


def test_bad_landmarks_are_rejected():
    with pytest.raises(ValueError):
        align.alignment_matrix(np.zeros((5, 2)), "full")
    with pytest.raises(ValueError):
        align.alignment_matrix(np.full((68, 2), np.nan), "full")
    with pytest.raises(ValueError):
        align.alignment_matrix(np.zeros((68, 2)), "full")
