"""On-device augmentation: shared affine and flip, encoder-input warp and colour scramble (train/augment.py)."""
from __future__ import annotations

import torch

from progressive_swap.train.augment import apply_affine, random_affine, random_grid_warp


def test_affine_without_motion_is_identity_and_flip_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 16, 16)
    m = random_affine(3, 16, g, rotate=0, scale=0, shift=0, flip=0)
    torch.testing.assert_close(apply_affine(x, m), x, atol=1e-5, rtol=0)
    m = random_affine(3, 16, g, rotate=0, scale=0, shift=0, flip=1.0)
    torch.testing.assert_close(apply_affine(x, m), x.flip(-1), atol=1e-5, rtol=0)


def test_grid_warp_is_seeded_smooth_and_keeps_borders():
    x = torch.rand(2, 3, 32, 32)
    a = random_grid_warp(x, torch.Generator().manual_seed(1), strength=0.05)
    b = random_grid_warp(x, torch.Generator().manual_seed(1), strength=0.05)
    c = random_grid_warp(x, torch.Generator().manual_seed(2), strength=0.05)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - x).abs().mean() > 0.01
    torch.testing.assert_close(random_grid_warp(x, torch.Generator(), strength=0.0), x)
    # The border offsets are pinned to zero: the corners do not move.
    torch.testing.assert_close(a[..., 0, 0], x[..., 0, 0], atol=1e-5, rtol=0)


def test_input_colour_scramble_is_seeded_and_changes_colour_not_shape():
    from progressive_swap.train.augment import random_color_scramble

    x = torch.rand(4, 3, 16, 16) * 0.5 + 0.25
    a = random_color_scramble(x, torch.Generator().manual_seed(3), 0.2)
    assert torch.equal(a, random_color_scramble(x, torch.Generator().manual_seed(3), 0.2))
    assert torch.equal(random_color_scramble(x, torch.Generator(), 0.0), x)
    assert (a - x).abs().mean() > 0.02
    # A per-pixel colour map: pixels equal in the input stay equal in the output.
    x2 = x.clone()
    x2[..., 5, 5] = x2[..., 9, 9]
    b = random_color_scramble(x2, torch.Generator().manual_seed(3), 0.2)
    torch.testing.assert_close(b[..., 5, 5], b[..., 9, 9])
