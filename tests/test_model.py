"""Contracts of the progressive comb autoencoder (tiny sizes, CPU, seconds)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.model.blocks import (
    BLOCK_KINDS,
    DecoderBlock,
    EncoderBlock,
    SeparableConv,
    ToRGB,
    downsample2x,
    upsample2x,
)
from progressive_swap.model.stacks import ProgressiveDecoder, ProgressiveEncoder, channels_at, stage_resolutions
from progressive_swap.model.summary import format_summary, summarize

# Stages 8 -> 16 -> 32 (two transitions), bottleneck 4x4; channels 4..16.
TINY = dict(
    final_res=32, start_res=8, latent_res=4, latent_channels=8,
    channel_base=128, channel_max=16, channel_min=4,
)
# Edge case: the first stage is the bottleneck side itself.
TINY_FLAT = {**TINY, "final_res": 16, "start_res": 4}
N_ID = 3


def make(num_identities: int = N_ID, seed: int = 0, **overrides) -> CombAutoencoder:
    torch.manual_seed(seed)
    return CombAutoencoder(CombArch(num_identities, **{**TINY, **overrides}))


def stage_alphas(model: CombAutoencoder) -> list[tuple[int, float]]:
    """Every stage, at the fade's ends and middle (alpha is ignored at the first stage)."""
    return [
        (s, a)
        for s in model.stages
        for a in ((0.0, 0.3, 1.0) if s > model.start_res else (1.0,))
    ]


def routed_ids(batch: int) -> torch.Tensor:
    return torch.arange(batch) % N_ID


# -- structure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCK_KINDS)
@pytest.mark.parametrize("arch", [TINY, {}], ids=["tiny", "default-1024"])
def test_convolution_only(arch, block):
    with torch.device("meta"):
        model = CombAutoencoder(CombArch(2, **arch, block=block))
    dense = (nn.Linear, nn.Bilinear, nn.LazyLinear)
    convs = 0
    for name, module in model.named_modules():
        assert not isinstance(module, dense), f"dense layer at {name}"
        if isinstance(module, nn.modules.conv._ConvNd):
            convs += 1
            # No kernel may cover the whole bottleneck map (a dense layer in disguise).
            assert all(k < model.latent_res for k in module.kernel_size), name
    assert convs > 0


def test_channel_schedule_and_block_names():
    assert channels_at(1024, 32768, 512) == 32
    assert channels_at(16, 32768, 512) == 512
    assert channels_at(1024, 1024, 64, channel_min=16) == 16
    assert stage_resolutions(256, 1024) == [256, 512, 1024]
    model = make()
    assert model.stages == [8, 16, 32]
    assert set(model.encoder.blocks) == {"b8", "b16", "b32"}
    assert set(model.decoders[0].blocks) == {"b8", "b16", "b32"}
    assert set(model.encoder.from_rgb) == set(model.decoders[1].to_rgb) == {"r8", "r16", "r32"}
    assert all(isinstance(b, EncoderBlock) for b in model.encoder.blocks.values())
    assert all(isinstance(b, DecoderBlock) for b in model.decoders[2].blocks.values())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_identities=1),
        dict(final_res=48),  # not start_res * 2**k
        dict(start_res=12),  # not latent_res * 2**m
        dict(latent_res=2, start_res=8),  # a 3x3 kernel would cover the bottleneck
        dict(block="dense"),  # not a block kind
    ],
)
def test_bad_geometry_is_rejected(kwargs):
    n = kwargs.pop("num_identities", 2)
    with pytest.raises(ValueError):
        CombAutoencoder(CombArch(n, **{**TINY, **kwargs}))


# -- forward contracts ----------------------------------------------------------------------------


def test_shapes_ranges_and_finiteness_at_every_stage():
    model = make()
    for stage, alpha in stage_alphas(model):
        img = torch.rand(2, 3, stage, stage)
        latent = model.encode(img, stage, alpha)
        assert latent.shape == (2, 8, 4, 4)
        rgb, mask_logit = model.decode(latent, 1, stage, alpha)
        assert rgb.shape == (2, 3, stage, stage)
        assert mask_logit.shape == (2, 1, stage, stage)
        assert torch.isfinite(rgb).all() and torch.isfinite(mask_logit).all()
        assert rgb.min() >= 0.0 and rgb.max() <= 1.0


def test_invalid_inputs_are_rejected():
    model = make()
    img = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="stage_res"):
        model(img, 0, 12, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        model(img, 0, 16, 1.5)
    with pytest.raises(ValueError, match="img must be"):
        model(img, 0, 32, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        model(img, N_ID, 16, 1.0)
    with pytest.raises(ValueError, match="identity"):
        model(img, torch.zeros(2), 16, 1.0)
    with pytest.raises(ValueError, match="latent must be"):
        model.decode(torch.zeros(2, 8, 8, 8), 0, 16, 1.0)


@pytest.mark.parametrize("block", BLOCK_KINDS)
@pytest.mark.parametrize("arch", [TINY, TINY_FLAT], ids=["start>latent", "start=latent"])
def test_alpha0_continuity_at_every_transition(arch, block):
    """Grown model at (2r, alpha=0) == the stage-r model on the downsampled image, upsampled."""
    torch.manual_seed(0)
    model = CombAutoencoder(CombArch(N_ID, **arch, block=block)).double()
    for r, r2 in zip(model.stages[:-1], model.stages[1:]):
        img = torch.rand(4, 3, r2, r2, dtype=torch.float64)
        ids = routed_ids(4)
        rgb, mask = model(img, ids, r2, 0.0)
        rgb_r, mask_r = model(downsample2x(img), ids, r, 1.0)
        assert (rgb - upsample2x(rgb_r)).abs().max() < 1e-5
        assert (mask - upsample2x(mask_r)).abs().max() < 1e-5
        latent = model.encode(img, r2, 0.0)
        assert (latent - model.encode(downsample2x(img), r, 1.0)).abs().max() < 1e-5


def _colour_model(seed: int = 0) -> CombAutoencoder:
    model = make(seed=seed, colour_norm=True).double()
    mean = torch.tensor([[0.7, 0.6, 0.5], [0.3, 0.2, 0.15], [0.5, 0.5, 0.5]])
    std = torch.tensor([[0.2, 0.19, 0.17], [0.1, 0.08, 0.07], [0.25, 0.25, 0.25]])
    model.set_identity_colour(mean, std)
    return model


def test_colour_norm_keeps_alpha0_continuity():
    """The per-identity affine normalisation commutes with the fade's average pooling."""
    model = _colour_model()
    ids = routed_ids(4)
    for r, r2 in zip(model.stages[:-1], model.stages[1:]):
        img = torch.rand(4, 3, r2, r2, dtype=torch.float64)
        rgb, mask = model(img, ids, r2, 0.0, source=ids)
        rgb_r, mask_r = model(downsample2x(img), ids, r, 1.0, source=ids)
        assert (rgb - upsample2x(rgb_r)).abs().max() < 1e-5
        assert (mask - upsample2x(mask_r)).abs().max() < 1e-5


def test_colour_norm_makes_the_latent_blind_to_an_identitys_colours():
    """A face of identity 1 that is identity 0's face recoloured by the ratio of their statistics
    encodes exactly like identity 0's face: skin tone does not reach the latent, relative light does."""
    model = _colour_model()
    (m0, s0), (m1, s1) = (model.identity_colour[k].double() for k in (0, 1))
    face0 = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    face1 = (face0 - m0[:, None, None]) / s0[:, None, None] * s1[:, None, None] + m1[:, None, None]
    torch.testing.assert_close(model.encode(face1, 32, source=1), model.encode(face0, 32, source=0))
    # Named by tensor, row by row, the same.
    both = torch.cat([face0, face1])
    src = torch.tensor([0, 0, 0, 1, 1, 1])
    lat = model.encode(both, 32, source=src)
    torch.testing.assert_close(lat[:3], lat[3:])
    # A brighter frame of the same person is a different latent (lighting passes through).
    assert (model.encode(face0 * 1.2, 32, source=0) - lat[:3]).abs().max() > 1e-3
    # Encoding as the wrong identity changes the latent; None uses the identities' average.
    assert (model.encode(face1, 32, source=0) - lat[:3]).abs().max() > 1e-3
    avg = model.identity_colour.double().mean(0)
    expect = model.encoder((face0 - avg[0][:, None, None]) / avg[1][:, None, None], 32)
    torch.testing.assert_close(model.encode(face0, 32), expect)


def test_colour_norm_off_passes_images_unchanged_and_saves_no_statistics():
    model = make()
    img = torch.rand(2, 3, 8, 8)
    assert model.normalise_input(img, 1) is img
    assert "identity_colour" not in model.state_dict()
    on = make(colour_norm=True)
    assert "identity_colour" in on.state_dict()
    with pytest.raises(ValueError, match="std > 0"):
        on.set_identity_colour(torch.full((N_ID, 3), 0.5), torch.zeros(N_ID, 3))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        on.set_identity_colour(torch.full((2, 3), 0.5), torch.ones(2, 3))
    with pytest.raises(ValueError, match="out of range"):
        on.encode(img, 8, source=N_ID)


@pytest.mark.parametrize("block", BLOCK_KINDS)
def test_fade_is_continuous_in_alpha(block):
    """The skipped-path shortcuts at alpha in {0, 1} agree with the lerp just inside the fade."""
    model = make(block=block).double()
    for r2 in model.stages[1:]:
        img = torch.rand(2, 3, r2, r2, dtype=torch.float64)
        for end, inside in ((0.0, 1e-9), (1.0, 1.0 - 1e-9)):
            a = torch.cat(model(img, 0, r2, end), 1)
            b = torch.cat(model(img, 0, r2, inside), 1)
            assert (a - b).abs().max() < 1e-6


@pytest.mark.parametrize("block", BLOCK_KINDS)
def test_alpha1_is_the_pure_2r_network(block):
    """At alpha=1 the model equals one built to start at 2r with the same weights."""
    model = make(block=block)
    for r2 in model.stages[1:]:
        pure = CombAutoencoder(CombArch(N_ID, **{**TINY, "start_res": r2}, block=block))
        result = pure.load_state_dict(model.state_dict(), strict=False)
        assert not result.missing_keys
        img = torch.rand(2, 3, r2, r2)
        ids = routed_ids(2)
        for a, b in zip(model(img, ids, r2, 1.0), pure(img, ids, r2, 1.0)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCK_KINDS)
@pytest.mark.parametrize("arch", [TINY, TINY_FLAT], ids=["start>latent", "start=latent"])
def test_gradients_reach_exactly_the_active_parameters(arch, block):
    torch.manual_seed(0)
    model = CombAutoencoder(CombArch(N_ID, **arch, block=block))
    for stage, alpha in stage_alphas(model):
        model.zero_grad(set_to_none=True)
        img = torch.rand(2 * N_ID, 3, stage, stage)
        rgb, mask = model(img, routed_ids(2 * N_ID), stage, alpha)
        (rgb * torch.randn_like(rgb)).sum().add((mask * torch.randn_like(mask)).sum()).backward()
        active = set(model.active_parameters(stage, alpha))
        assert active <= set(model.active_parameters(stage))  # alpha=None is the union
        for name, p in model.named_parameters():
            where = f"{name} at stage {stage}, alpha {alpha}"
            if name in active:
                assert p.grad is not None, f"no gradient: {where}"
                assert torch.isfinite(p.grad).all(), f"non-finite gradient: {where}"
                assert p.grad.abs().sum() > 0, f"zero gradient: {where}"
            else:
                assert p.grad is None, f"inactive parameter got a gradient: {where}"


@pytest.mark.parametrize("block", BLOCK_KINDS)
def test_new_parameters_at_growth_are_the_outer_blocks(block):
    model = make(block=block)
    new = set(model.active_parameters(16)) - set(model.active_parameters(8))
    prefixes = {"encoder.blocks.b16.", "encoder.from_rgb.r16."}
    for i in range(N_ID):
        prefixes |= {f"decoders.{i}.blocks.b16.", f"decoders.{i}.to_rgb.r16."}
    expected = {n for n, _ in model.named_parameters() if any(n.startswith(p) for p in prefixes)}
    assert new == expected


@pytest.mark.parametrize(
    "block",
    [
        EncoderBlock(3, 4, norm_groups=2),
        EncoderBlock(4, 4, down=False, out_act=False),
        DecoderBlock(4, 3),
        DecoderBlock(3, 3, up=False, norm_groups=3),
        ToRGB(3, 4),
        EncoderBlock(3, 4, block="dwsep"),
        EncoderBlock(4, 4, down=False, out_act=False, block="dwsep"),
        DecoderBlock(4, 3, block="dwsep"),
        DecoderBlock(3, 3, up=False, norm_groups=3, block="dwsep"),
        SeparableConv(3, 5, 0.2),
    ],
    ids=["enc", "enc-neck", "dec", "dec-stem", "to_rgb", "enc-dwsep", "enc-neck-dwsep", "dec-dwsep",
         "dec-stem-dwsep", "sepconv"],
)
def test_block_gradcheck(block):
    # Weights drawn here, not at collection (where they depend on what the suite imported
    # first): a draw with a pre-activation near LeakyReLU's kink made the check flaky in CI.
    torch.manual_seed(0)
    for m in block.modules():
        if m is not block and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    block = block.double()
    channels = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.randn(2, channels, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-5)


def test_resamplers():
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample2x, (x,))
    assert torch.autograd.gradcheck(downsample2x, (x,))
    const = torch.full((1, 2, 4, 4), 0.7)
    torch.testing.assert_close(upsample2x(const), torch.full((1, 2, 8, 8), 0.7))
    torch.testing.assert_close(downsample2x(const), torch.full((1, 2, 2, 2), 0.7))
    up = upsample2x(torch.rand(1, 1, 5, 5))
    assert up.min() >= 0 and up.max() <= 1  # convex: [0, 1] stays in [0, 1]
    with pytest.raises(ValueError):
        downsample2x(torch.rand(1, 1, 5, 5))


# -- routing, serialisation, runtime options ------------------------------------------------------


def test_tensor_identity_routing_equals_per_identity_calls():
    model = make().double()
    ids = torch.tensor([2, 0, 1, 0, 2, 2])
    for stage, alpha in stage_alphas(model):
        img = torch.rand(6, 3, stage, stage, dtype=torch.float64)
        rgb, mask = model(img, ids, stage, alpha)
        for i in range(N_ID):
            sel = ids == i
            rgb_i, mask_i = model(img[sel], i, stage, alpha)
            torch.testing.assert_close(rgb[sel], rgb_i)
            torch.testing.assert_close(mask[sel], mask_i)
    # a tensor naming one identity takes the int path
    one = torch.full((6,), 1)
    torch.testing.assert_close(model(img, one, stage, 1.0)[0], model(img, 1, stage, 1.0)[0])


@pytest.mark.parametrize("block", BLOCK_KINDS)
def test_arch_args_round_trip(block):
    model = make(norm_groups=2, act_slope=0.1, colour_norm=True, block=block)
    model.set_identity_colour(torch.rand(N_ID, 3), torch.rand(N_ID, 3) + 0.1)
    args = json.loads(json.dumps(model.arch_args()))  # plain data, fit for a checkpoint
    rebuilt = CombAutoencoder(CombArch(**args))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.arch_args() == model.arch_args()
    img = torch.rand(2, 3, 32, 32)
    for a, b in zip(model(img, 1, 32, 0.4), rebuilt(img, 1, 32, 0.4)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_arch_entry_written_before_block_existed_rebuilds_the_dense_network():
    """Checkpoints' ``arch`` dicts from before the field have no ``block``: they read back as the
    dense design, with the same weight names and shapes as then."""
    old = {k: v for k, v in CombArch(N_ID, **TINY).as_dict().items() if k != "block"}
    arch = CombArch.from_dict(old)
    assert arch.block == "conv"
    model = CombAutoencoder(arch)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["encoder.blocks.b32.conv1.weight"] == (4, 4, 3, 3)
    assert shapes["decoders.0.stem.conv2.weight"] == (16, 16, 3, 3)
    assert not any("depthwise" in n for n in shapes)
    sep = {n: tuple(p.shape) for n, p in make(block="dwsep").named_parameters()}
    assert sep["encoder.blocks.b32.conv1.depthwise.weight"] == (4, 1, 3, 3)
    assert sep["encoder.blocks.b32.conv1.pointwise.weight"] == (4, 4, 1, 1)
    assert sum(map(torch.Size.numel, map(torch.Size, sep.values()))) < sum(
        map(torch.Size.numel, map(torch.Size, shapes.values())))


def test_checkpoint_blocks_gives_same_outputs_and_gradients():
    model = make()
    img = torch.rand(3, 3, 16, 16)

    def step(flag: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.checkpoint_blocks = flag
        model.zero_grad(set_to_none=True)
        rgb, mask = model(img, routed_ids(3), 16, 0.5)
        (rgb.square().sum() + mask.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return rgb.detach(), grads

    ref_out, ref_grads = step(False)
    out, grads = step(True)
    assert model.encoder.checkpoint_blocks and model.decoders[2].checkpoint_blocks
    torch.testing.assert_close(out, ref_out)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


def test_channels_last_matches_contiguous():
    model = make()
    img = torch.rand(2, 3, 32, 32)
    ref = model(img, 0, 32, 0.5)
    model = model.to(memory_format=torch.channels_last)
    out = model(img.to(memory_format=torch.channels_last), 0, 32, 0.5)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_encoder_and_decoder_stand_alone():
    torch.manual_seed(0)
    enc = ProgressiveEncoder(**TINY)
    dec = ProgressiveDecoder(**TINY, out_channels=4)
    out = dec(enc(torch.rand(2, 3, 16, 16), 16, 0.5), 16, 0.5)
    assert out.shape == (2, 4, 16, 16)
    assert out[:, :3].min() >= 0 and out[:, :3].max() <= 1


# -- summary --------------------------------------------------------------------------------------


def test_summary_of_a_1024_model_is_fast_and_consistent():
    with torch.device("meta"):
        model = CombAutoencoder(CombArch(2))  # default (1024) architecture, no storage
    start = time.perf_counter()
    rows = summarize(model, batch_size=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"summary took {elapsed:.1f} s"
    assert [r["stage_res"] for r in rows] == [256, 512, 1024]
    last = set(model.active_parameters(1024))  # everything but the 256-px adapters
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    assert rows[-1]["params_total"] == sum(sizes[n] for n in last)
    used = set().union(*(model.active_parameters(s) for s in model.stages))
    assert used == {n for n, _ in model.named_parameters()}  # every parameter serves some stage
    assert rows[-1]["params_step"] == rows[-1]["params_encoder"] + rows[-1]["params_decoder"]
    mem = [r["activation_bytes"] for r in rows]
    flops = [r["gflops_forward"] for r in rows]
    assert 0 < mem[0] < mem[1] < mem[2] and 0 < flops[0] < flops[1] < flops[2]
    assert all(r["gflops_train"] > r["gflops_forward"] for r in rows)
    text = format_summary(rows)
    assert "1024" in text and "\x1b" not in text


def test_the_output_layer_keeps_float32_at_inference_under_bf16_autocast():
    """Inference: float32 colour whatever the autocast (bfloat16 would round to 1 part in 256,
    2 % of a linear value through ACEScct). Training: left to autocast (activation memory)."""
    torch.manual_seed(0)
    layer = ToRGB(8, 4)
    x = torch.randn(1, 8, 4, 4).to(torch.bfloat16)
    want = layer(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        got = layer(x)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = layer(x)
    assert trained.dtype == torch.bfloat16 and not torch.equal(trained.float(), want)
