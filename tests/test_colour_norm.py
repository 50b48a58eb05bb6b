"""Identity colour normalisation: statistics measured against known answers, and carried from
the face sets through training into the weights export reads."""
from __future__ import annotations

import numpy as np
import pytest

from progressive_swap import faceset as fs
from progressive_swap.core import align
from progressive_swap.core.landmarks import MEAN_FACE
from progressive_swap.train.datamodule import CombDataset


def _two_tone_set(path, inside=((200, 100, 50), (100, 60, 30)), outside=(0, 255, 0), n=5, size=32):
    """Faces whose stored mask ``skin`` covers two equal halves of known colours; outside is loud."""
    w = fs.create(path, face_type="whole", size=size)
    lm = align.transform_points(MEAN_FACE, np.array([[10.0, 0, 16], [0, 10.0, 16]]))
    m = align.alignment_matrix(lm, "whole")
    imgs, masks, recs = [], [], []
    for i in range(n):
        img = np.empty((size, size, 3), np.uint8)
        img[:] = outside
        img[8:24, 8:16] = inside[0]
        img[8:24, 16:24] = inside[1]
        mask = np.zeros((size, size), np.float32)
        mask[8:24, 8:24] = 1.0
        imgs.append(img)
        masks.append(mask)
        recs.append(fs.FaceRecord(id=f"f{i}", source="synthetic", frame_index=i, time=i / 25.0, track=0,
                                  identity="A", landmarks=lm, matrix=m, frame_size=(32, 32)))
    w.append(recs, imgs, masks={"skin": masks})
    w.close()
    return str(path)


def test_colour_stats_are_the_masked_mean_and_deviation(tmp_path):
    a, b = np.array([200, 100, 50]) / 255, np.array([100, 60, 30]) / 255
    ds = CombDataset(
        [_two_tone_set(tmp_path / "a"), _two_tone_set(tmp_path / "b", inside=((90, 90, 90), (90, 90, 90)))], mask="skin"
    )
    mean, std = ds.colour_stats(0, res=32)
    np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6)  # the green outside does not count
    np.testing.assert_allclose(std, np.abs(a - b) / 2, atol=1e-6)
    mean, std = ds.colour_stats(1, res=32)
    np.testing.assert_allclose(mean, np.full(3, 90 / 255), atol=1e-6)
    np.testing.assert_allclose(std, np.full(3, 1e-2))  # a flat set is floored, never divides by zero


def test_an_empty_training_mask_is_a_clear_error(tmp_path):
    p = _two_tone_set(tmp_path / "a")
    ds = CombDataset([p, p], mask="skin")
    ds.load = lambda k, f, res, sample=None: {
        "image": np.zeros((3, res, res), np.float32),
        "mask": np.zeros((1, res, res), np.float32),
    }
    with pytest.raises(ValueError, match="mask 'skin' is empty"):
        ds.colour_stats(0)


@pytest.mark.slow
def test_training_stores_each_identitys_colour_with_the_weights(blob_sets, tmp_path):
    from conftest import tiny

    from progressive_swap.cli import train as train_cli
    from progressive_swap.export.swapper import load_model

    run = tmp_path / "run"
    assert train_cli.main(tiny(blob_sets, run, "max_steps=2")) == 0
    mean, std = (np.stack(x) for x in zip(*(CombDataset(blob_sets, mask="extended").colour_stats(k) for k in range(2))))
    model, _ = load_model(run / "model.safetensors", "cpu")
    assert model.colour_norm
    np.testing.assert_allclose(model.identity_colour[:, 0].numpy(), mean, atol=1e-6)
    np.testing.assert_allclose(model.identity_colour[:, 1].numpy(), std, atol=1e-6)
    assert not np.allclose(mean[0], mean[1], atol=0.05)  # the blob identities differ in colour
