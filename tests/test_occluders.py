"""Pasted occluders in training samples (masks/occluders.py through the datamodule)."""
from __future__ import annotations

import numpy as np
import pytest


def test_pasted_occluders_cut_mask_and_weights_where_the_face_changed(blob_sets):
    from progressive_swap.train.datamodule import CombDataset

    plain = CombDataset(blob_sets, mask="extended", augment=None)
    occl = CombDataset(blob_sets, mask="extended", augment=None, paste_occluders=1.0)
    changed = compared = 0
    for sample in range(6):
        a, b = plain.load(0, 1, 32, sample), occl.load(0, 1, 32, sample)
        again = occl.load(0, 1, 32, sample)
        assert all(np.array_equal(b[k], again[k]) for k in b)  # a function of the sample: resumable
        cut = a["mask"][0] - b["mask"][0]  # (r, r) >= 0 where the occluder covers the face
        assert cut.min() >= -1e-6 and (b["regions"] <= a["regions"] + 1e-6).all()
        # Mask and loss weights are cut by the same alpha: keep = 1 - alpha in both.
        both = (a["mask"][0] > 0.99) & (a["regions"].max(0) > 0.99)
        keep_mask, keep_regions = b["mask"][0][both], b["regions"].max(0)[both] / a["regions"].max(0)[both]
        np.testing.assert_allclose(keep_mask, keep_regions, atol=1e-4)
        compared += int(both.any() and (keep_mask < 0.99).any())
        changed += int((cut > 0.5).sum() > 0 and np.abs(a["image"] - b["image"]).max() > 0.02)
    assert changed >= 3  # most samples got a visible occluder over the face
    assert compared >= 1  # and the mask/weights comparison saw an occluder over an eye or the mouth
    unaugmented = occl.load(0, 1, 32)  # previews and statistics: no sample, no occluder
    assert np.array_equal(unaugmented["mask"], plain.load(0, 1, 32)["mask"])
    with pytest.raises(ValueError, match="probability"):
        CombDataset(blob_sets, paste_occluders=1.5)
