"""Growth schedule, fade blending, losses and augmentation: unit properties."""
import math

import numpy as np
import pytest
import torch

from progressive_swap.train.augment import apply_affine, random_affine, random_grid_warp
from progressive_swap.model.blocks import downsample2x, upsample2x
from progressive_swap.train.growth import GrowthSchedule
from progressive_swap.train.losses import SwapLoss, masked_dssim, masked_l1
from progressive_swap.train.module import fade_target

STAGES = [dict(res=16, images=100, batch=5), dict(res=32, images=60, fade=40, batch=3), dict(res=64, images=30, fade=30, batch=2)]


def test_phases_cover_the_images_asked_for():
    s = GrowthSchedule(STAGES, identities=2, world_size=1)
    assert [(p.res, p.fading) for p in s.phases] == [(16, False), (32, True), (32, False), (64, True), (64, False)]
    for p, want in zip(s.phases, [100, 40, 60, 30, 30]):
        got = p.batches * p.batch * 2
        assert want <= got < want + p.batch * 2
    assert s.total_batches == sum(p.batches for p in s.phases)


def test_alpha_rises_from_zero_within_fades_and_is_one_otherwise():
    s = GrowthSchedule(STAGES, identities=2)
    alphas = [s.at(b).alpha for b in range(s.total_batches)]
    for p in s.phases:
        a = alphas[p.first_batch : p.end_batch]
        if p.fading:
            assert a[0] == 0.0 and all(x < y for x, y in zip(a, a[1:])) and a[-1] < 1.0
        else:
            assert all(x == 1.0 for x in a)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_samples_are_disjoint_and_contiguous_across_batches_and_ranks(world):
    s = GrowthSchedule(STAGES, identities=2, world_size=world)
    seen = []
    for b in range(s.total_batches):
        for r in range(world):
            idx = list(s.samples(b, r))
            assert len(idx) == s.at(b).phase.batch
            seen += idx
    assert sorted(seen) == list(range(len(seen)))


def test_images_seen_counts_every_process():
    s = GrowthSchedule(STAGES, identities=2, world_size=2)
    assert s.images_seen(0) == 0
    assert s.images_seen(1) == 5 * 2 * 2
    p = s.phases[1]
    assert s.images_seen(p.first_batch + 1) == s.phases[0].batches * 20 + 3 * 2 * 2
    last = s.phases[-1]
    assert s.images_seen(s.total_batches) == s.images_seen(s.total_batches - 1) + last.batch * 2 * 2


def test_bad_schedules_are_rejected():
    with pytest.raises(ValueError, match="double"):
        GrowthSchedule([dict(res=16, images=10), dict(res=48, images=10)])
    with pytest.raises(ValueError):
        GrowthSchedule([])
    with pytest.raises(ValueError):
        GrowthSchedule([dict(res=16, images=0)])


def test_learning_rate_anneals_linearly_over_the_stable_phase_only():
    s = GrowthSchedule([dict(res=16, images=40, batch=2, lr=1e-3, lr_end=1e-4),
                        dict(res=32, images=40, fade=20, batch=2, lr=5e-4, lr_end=5e-5)])
    low, fade, high = s.phases
    assert [p.batches for p in s.phases] == [10, 5, 10]
    lrs = [s.at(b).lr for b in range(s.total_batches)]
    assert lrs[low.end_batch - 1] == pytest.approx(1e-4) and lrs[high.end_batch - 1] == pytest.approx(5e-5)
    assert lrs[0] == pytest.approx(1e-3 - 9e-4 / 10)  # one step along
    assert all(a > b for a, b in zip(lrs[:9], lrs[1:10]))  # falling within the stage
    assert all(lr == 5e-4 for lr in lrs[fade.first_batch:fade.end_batch])  # a fade keeps its rate
    assert all(a > b for a, b in zip(lrs[15:], lrs[16:]))
    constant = GrowthSchedule([dict(res=16, images=40, batch=2, lr=1e-3)])
    assert {constant.at(b).lr for b in range(constant.total_batches)} == {1e-3}
    with pytest.raises(ValueError, match="bad stage"):
        GrowthSchedule([dict(res=16, images=10, lr_end=0.0)])
    # Saved and rebuilt with the schedule (checkpoints carry state()).
    assert GrowthSchedule(**s.state()).at(7).lr == s.at(7).lr


def test_fade_target_matches_network_blending():
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(fade_target(x, 1.0), x)
    torch.testing.assert_close(fade_target(x, 0.0), upsample2x(downsample2x(x)))
    mid = fade_target(x, 0.25)
    torch.testing.assert_close(mid, 0.75 * upsample2x(downsample2x(x)) + 0.25 * x)


def test_losses_vanish_on_perfect_reconstruction_and_grow_with_error():
    t = torch.rand(2, 3, 32, 32)
    w = torch.ones(2, 1, 32, 32)
    assert masked_l1(t, t, w).item() == 0.0
    assert masked_dssim(t, t, w).item() < 1e-5
    noisy = (t + 0.2 * torch.randn_like(t)).clamp(0, 1)
    assert masked_l1(noisy, t, w) > 0.05 and masked_dssim(noisy, t, w) > 0.05
    # Errors outside a zero weight do not count.
    w2 = torch.zeros_like(w)
    w2[..., :16] = 1
    off = t.clone()
    off[..., 16:] = 0
    assert masked_l1(off, t, w2).item() == 0.0


def test_eye_priority_raises_the_loss_of_errors_in_the_eyes():
    t = torch.rand(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32)
    regions = torch.zeros(1, 2, 32, 32)
    regions[:, 0, 8:12, 8:24] = 1
    bad_eyes = t.clone()
    bad_eyes[..., 8:12, 8:24] = 1 - bad_eyes[..., 8:12, 8:24]
    logit = torch.zeros(1, 1, 32, 32)
    plain = SwapLoss(eyes=0.0, ssim=0.0, mask=0.0)(bad_eyes, logit, t, mask, regions)[0]
    prior = SwapLoss(eyes=4.0, ssim=0.0, mask=0.0)(bad_eyes, logit, t, mask, regions)[0]
    assert prior > 2.0 * plain


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


def test_patch_gan_trains_both_sides_in_one_backward():
    from progressive_swap.train.gan import PatchDiscriminator, grad_reverse, patch_gan_loss

    torch.manual_seed(0)
    x = torch.randn(3, requires_grad=True)
    grad_reverse(x, 2.0).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))

    disc = PatchDiscriminator(8, layers=2)
    real = torch.rand(4, 3, 16, 16)
    fake = torch.rand(4, 3, 16, 16, requires_grad=True)
    loss = patch_gan_loss(disc, real, fake)
    loss.backward()
    lr = 0.05
    with torch.no_grad():
        # One step along each side's gradient: the discriminator's lowers its loss, the
        # generator's (reversed) raises it.
        for p in disc.parameters():
            p -= lr * p.grad
        after_d = patch_gan_loss(disc, real, fake).item()
    assert after_d < loss.item()
    with torch.no_grad():
        fake2 = fake - 5.0 * fake.grad
        for p in disc.parameters():
            p += lr * p.grad  # undo the discriminator step
        assert patch_gan_loss(disc, real, fake2).item() > loss.item()


def test_gan_term_is_off_by_default_and_adds_a_discriminator_when_on():
    assert SwapLoss().discriminator is None
    on = SwapLoss(gan=0.1, gan_channels=8)
    t = torch.rand(2, 3, 32, 32)
    total, parts = on(t.clone().requires_grad_(), torch.zeros(2, 1, 32, 32), t, torch.ones(2, 1, 32, 32), torch.zeros(2, 2, 32, 32))
    assert "gan" in parts and torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in on.discriminator.parameters())


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
