"""Losses: masked L1/DSSIM, priority regions, the optional patch-GAN term (train/losses.py, train/gan.py)."""
from __future__ import annotations

import math

import pytest
import torch

from progressive_swap.train.losses import SwapLoss, masked_dssim, masked_l1, ssim_map


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


@pytest.mark.parametrize("window,side", [(3, 32), (5, 48), (11, 64)])
def test_fused_ssim_map_matches_kornia_values_and_gradients(window, side):
    """The stacked-moment SSIM is an independent computation of kornia's map (same window,
    padding and constants): values and gradients agree to float rounding, also for
    channels-last inputs and under bfloat16 autocast (where ours stays float32)."""
    import kornia

    g = torch.Generator().manual_seed(window)
    x = torch.rand(2, 3, side, side + 8, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = ssim_map(a.float(), y.float(), window), kornia.metrics.ssim(b.float(), y.float(), window)
    assert ours.shape == ref.shape and (ours - ref).abs().max().item() < 2e-5
    ours.square().sum().backward()
    ref.square().sum().backward()
    assert (a.grad - b.grad).abs().max().item() < 1e-4 * b.grad.abs().max().item()
    cl = ssim_map(x.float().contiguous(memory_format=torch.channels_last), y.float(), window)
    assert (cl - ref).abs().max().item() < 2e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ssim_map(x.float(), y.float(), window)
    assert auto.dtype == torch.float32 and (auto - ref).abs().max().item() < 2e-5


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
    total, parts = on(
        t.clone().requires_grad_(), torch.zeros(2, 1, 32, 32), t, torch.ones(2, 1, 32, 32), torch.zeros(2, 2, 32, 32)
    )
    assert "gan" in parts and torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in on.discriminator.parameters())


def test_the_latent_adversary_trains_its_critic_on_stopped_latents_and_pushes_the_encoder_to_confuse_it():
    """One backward: the critic descends its cross-entropy on the latents (their gradient
    stopped), the latent gets latent_adversary x the gradient of the critic's cross-entropy
    against the uniform guess (the critic held); off, nothing is built."""
    assert SwapLoss().latent_critic is None
    loss = SwapLoss(latent_adversary=0.5, latent_channels=8, identities=2)
    critic = loss.latent_critic
    latent = torch.randn(6, 8, 4, 4, requires_grad=True)
    source = torch.tensor([0, 0, 0, 1, 1, 1])
    loss.latent_term(latent, source).backward()

    ref = {k: v.detach().clone().requires_grad_(True) for k, v in critic.named_parameters()}
    ce = torch.nn.functional.cross_entropy(torch.func.functional_call(critic, ref, (latent.detach(),)), source)
    ce.backward()
    for name, p in critic.named_parameters():
        assert torch.allclose(p.grad, ref[name].grad, atol=1e-7), name  # the critic: its CE alone
    plain = latent.detach().clone().requires_grad_(True)
    (-torch.log_softmax(critic(plain), 1).mean()).backward()
    assert latent.grad.abs().sum() > 0 and torch.allclose(latent.grad, 0.5 * plain.grad, atol=1e-7)
    # at the uniform guess the encoder's term is at its floor, log 2: it cannot run away
    flat = SwapLoss(latent_adversary=1.0, latent_channels=8, identities=2)
    torch.nn.init.zeros_(flat.latent_critic.head.weight)
    torch.nn.init.zeros_(flat.latent_critic.head.bias)
    assert float(flat.latent_term(latent, source)) == pytest.approx(2 * math.log(2), abs=1e-6)


def test_the_swap_identity_critic_learns_from_real_faces_only_and_reads_structure_not_colour():
    """One backward: the critic descends its cross-entropy on the real faces alone (the swaps
    never train it), the swaps get swap_identity x the gradient of the critic's cross-entropy
    against their decoder's identity; the critic's answer ignores a face's brightness and contrast;
    off, nothing is built."""
    assert SwapLoss().swap_critic is None
    loss = SwapLoss(swap_identity=0.25, identities=2)
    critic = loss.swap_critic
    real = torch.rand(4, 3, 48, 48)
    real_id = torch.tensor([0, 0, 1, 1])
    swapped = torch.rand(4, 3, 48, 48, requires_grad=True)
    swapped_id = (real_id + 1) % 2
    loss.swap_term(real, real_id, swapped, swapped_id).backward()

    ref = {k: v.detach().clone().requires_grad_(True) for k, v in critic.named_parameters()}
    torch.nn.functional.cross_entropy(torch.func.functional_call(critic, ref, (real,)), real_id).backward()
    for name, p in critic.named_parameters():
        assert torch.allclose(p.grad, ref[name].grad, atol=1e-7), name
    plain = swapped.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(critic(plain), swapped_id).backward()
    assert swapped.grad.abs().sum() > 0 and torch.allclose(swapped.grad, 0.25 * plain.grad, atol=1e-7)
    with torch.no_grad():  # colour and exposure say nothing: a decoder paints its identity's colours
        torch.testing.assert_close(critic(real * 0.5 + 0.2), critic(real), atol=2e-3, rtol=0)
        assert not torch.allclose(critic(real.flip(-1)), critic(real), atol=1e-4)
