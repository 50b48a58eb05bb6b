"""How much of each face its crop space clipped (issue 34): ``clipped_share`` in
``footage/colour.py``, reported by ``swap-extract`` and ``swap-export`` (``docs/plates.md``).

Tiny ACEScg crops and one phantom EXR plate with a highlight on the face; nothing runs a
detector, and the export uses a stand-in network that returns its input.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("OpenImageIO")
pytest.importorskip("PyOpenColorIO")

from progressive_swap.footage import colour as C  # noqa: E402

ACESCG = None


def acescg():
    """The path of an ACEScg EXR plate (the default for .exr files)."""
    global ACESCG
    if ACESCG is None:
        ACESCG = C.plate_colour(".exr", "half")
    assert ACESCG.plate == "ACEScg" and ACESCG.scene
    return ACESCG


def from_srgb(rgb8: np.ndarray) -> np.ndarray:
    c = acescg()
    return c.convert(rgb8.astype(np.float32) / 255.0, c.view_space, c.plate)


# ------------------------------------------------------------------------- the pure function


def test_a_crop_with_37_over_white_pixels_of_400_scores_37_over_400_in_srgb_and_0_in_acescct():
    crop = np.full((20, 20, 3), 0.18, np.float32)
    crop.reshape(-1, 3)[:37] = 4.0  # two stops over sRGB white
    assert C.clipped_share(crop, None, acescg(), "srgb") == pytest.approx(37 / 400)
    assert C.clipped_share(crop, None, acescg(), "acescct") == 0.0  # linear 4 is an ordinary ACEScct value
    # Counted in the mask: rows 1-9 (180 pixels) hold 17 of the 37 (all of row 0, the first 17 of row 1).
    mask = np.zeros((20, 20), np.float32)
    mask[1:10] = 1.0
    assert C.clipped_share(crop, mask, acescg(), "srgb") == pytest.approx(17 / 180)
    assert C.clipped_share(crop, (mask * 255).astype(np.uint8), acescg(), "srgb") == pytest.approx(17 / 180)
    mask[1] = 0.5  # a soft edge counts by its weight
    assert C.clipped_share(crop, mask, acescg(), "srgb") == pytest.approx(8.5 / 170)
    assert C.clipped_share(crop, np.zeros((20, 20), bool), acescg(), "srgb") == 0.0  # an empty mask
    # Above ACEScct's top (linear 222) its 16-bit codes clip too.
    crop.reshape(-1, 3)[:5] = 300.0
    assert C.clipped_share(crop, None, acescg(), "acescct") == pytest.approx(5 / 400)


def test_an_in_gamut_crop_scores_0_in_both_spaces_black_and_white_included():
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    pic[0, :] = 0
    pic[1, :] = 255  # sRGB black and white come back as -1e-7 and 1.0000001 through float: not clipped
    crop = from_srgb(pic)
    assert C.clipped_share(crop, None, acescg(), "srgb") == 0.0
    assert C.clipped_share(crop, None, acescg(), "acescct") == 0.0
    assert C.clipped_share(crop, None, None, "srgb") == 0.0  # 8-bit footage: nothing to clip, nothing computed


def test_a_saturated_colour_outside_srgb_is_counted_though_not_over_white():
    crop = np.full((10, 10, 3), 0.18, np.float32)
    crop[:, :4] = (0.0, 0.3, 0.0)  # AP1 green: negative red and blue in sRGB, every channel below 1
    c = acescg()
    as_srgb = c.convert(crop, c.plate, c.view_space)
    assert as_srgb[:, :4].max() < 1.0 and as_srgb[:, :4].min() < -0.01  # out of gamut, not over white
    assert C.clipped_share(crop, None, c, "srgb") == pytest.approx(0.4)
    assert C.clipped_share(crop, None, c, "acescct") == 0.0  # AP1 holds it
    crop[0, 0] = np.nan  # a broken pixel cannot be stored either
    assert C.clipped_share(crop, None, c, "acescct") == pytest.approx(0.01)


def test_bad_input_is_one_line():
    crop = np.zeros((8, 8, 3), np.float32)
    for call, match in ((lambda: C.clipped_share(crop, np.ones((4, 4)), acescg(), "srgb"), r"mask is \(4, 4\)"),
                        (lambda: C.clipped_share(crop, None, acescg(), "linear"), "unknown crop space 'linear'"),
                        (lambda: C.clipped_share(crop[..., :2], None, acescg(), "srgb"), r"\(H, W, 3\)")):
        with pytest.raises(ValueError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_the_line_says_the_share_and_points_srgb_to_acescct():
    s = C.clip_summary([0.0, 0.032 * 2, 0.0], "srgb")
    assert s == {"crop_space": "srgb", "faces": 3, "mean": pytest.approx(0.021333, abs=1e-6), "max": 0.064}
    assert C.clip_line(s) == ("crop space srgb clipped 2.1 % of face pixels (max 6.4 % on one face, 3 faces); "
                              "crop_space=acescct keeps them (up to linear 222, within AP1's gamut)")
    assert C.clip_line(C.clip_summary([0.0], "acescct")) == \
        "crop space acescct clipped 0 % of face pixels (max 0 % on one face, 1 face)"
