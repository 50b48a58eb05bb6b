"""The peers' designs (progressive_swap/eval/peers.py, docs/peers.md): full-size counts against
the originals on the meta device, and the trainer's interface at the study's scaled size."""
from __future__ import annotations

import json

import pytest
import torch

from progressive_swap.eval.peers import PEERS, CodeDiscriminator, build_peer, describe

# FaceSwap's own code (issue #32): parameters (M) and train GFLOP per image of Phaze-A's presets.
FS_TARGETS = {"fs_dny256": (29.9, 32.0), "fs_dny512": (39.3, 129.2), "fs_dny1024": (53.5, 517.7)}
# The ports' own counts at DeepFaceLab's default dims (docs/peers.md): (res, params, train GFLOP/img).
SAEHD_STATED = {
    ("saehd_liae_ud", 256): (145_340_267, 214.54),
    ("saehd_df_ud", 256): (82_794_838, 182.58),
    ("saehd_liae_ud", 1024): (1_404_614_507, 3432.7),
    ("saehd_df_ud", 1024): (649_271_638, 2921.3),
}


@pytest.fixture(scope="module")
def full_size():
    return {(n, r): describe(n, res=r) for n, r in [(n, None) for n in FS_TARGETS] + list(SAEHD_STATED)}


@pytest.mark.parametrize("name", list(FS_TARGETS))
def test_phaze_a_presets_match_faceswap_within_2_percent(full_size, name):
    params_m, gflops = FS_TARGETS[name]
    d = full_size[(name, None)]
    assert d["params"] / 1e6 == pytest.approx(params_m, rel=0.02)
    assert len(d["train_gflops_per_image"]) == 1 and d["stages"] == [int(name[6:])]
    assert d["train_gflops_per_image"][0] == pytest.approx(gflops, rel=0.02)


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _saehd_params(archi: str, res: int, ae: int = 256, e: int = 64, d: int = 64, dm: int = 22) -> int:
    """SAEHD's weights from its layer list (-ud: pixel norm, dense at res/32, 2x output)."""
    enc = _conv(3, e, 5) + _conv(e, 2 * e, 5) + _conv(2 * e, 4 * e, 5) + _conv(4 * e, 8 * e, 5)
    features, side = 8 * e * (res // 16) ** 2, res // 32

    def inter(out_ch: int) -> int:
        return features * ae + ae + ae * side * side * out_ch + side * side * out_ch + _conv(out_ch, 4 * out_ch, 3)

    def decoder(in_ch: int) -> int:
        face = _conv(in_ch, 32 * d, 3) + _conv(8 * d, 16 * d, 3) + _conv(4 * d, 8 * d, 3)
        res_blocks = 2 * (_conv(8 * d, 8 * d, 3) + _conv(4 * d, 4 * d, 3) + _conv(2 * d, 2 * d, 3))
        out = _conv(2 * d, 3, 1) + 3 * _conv(2 * d, 3, 3)
        mask = (_conv(in_ch, 32 * dm, 3) + _conv(8 * dm, 16 * dm, 3) + _conv(4 * dm, 8 * dm, 3)
                + _conv(2 * dm, 4 * dm, 3) + _conv(dm, 1, 1))
        return face + res_blocks + out + mask

    if archi == "df":
        return enc + inter(ae) + 2 * decoder(ae)
    return enc + 2 * inter(2 * ae) + decoder(4 * ae)


@pytest.mark.parametrize("key", list(SAEHD_STATED))
def test_saehd_counts_are_the_stated_ones(full_size, key):
    params, gflops = SAEHD_STATED[key]
    d = full_size[key]
    assert d["params"] == params == _saehd_params(key[0].split("_")[1], key[1])
    assert d["train_gflops_per_image"][0] == pytest.approx(gflops, rel=0.02)
    assert d["stages"] == [key[1]]


@pytest.mark.parametrize("name", list(PEERS))
def test_scaled_peer_has_the_trainers_interface(name):
    torch.manual_seed(0)
    res = 1024 if name.startswith("saehd") else None
    model = PEERS[name](res=res, side_div=8, width_div=2)
    r = model.res
    assert model.stages == [r] and model.start_res == model.final_res == r and not model.colour_norm
    assert r == (128 if res else int(name[6:]) // 8)
    x = torch.rand(2, 3, r, r)
    rgb, mask_logit = model(x, torch.tensor([0, 1]), r)
    assert rgb.shape == (2, 3, r, r) and mask_logit.shape == (2, 1, r, r)
    assert float(rgb.detach().min()) >= 0.0 and float(rgb.detach().max()) <= 1.0
    with torch.no_grad():  # per-sample routing is the per-identity decode, sample by sample
        latent = model.encode(x, r)
        for i in range(2):
            rgb_i, mask_i = model.decode(latent[i : i + 1], i, r)
            assert torch.allclose(rgb[i : i + 1], rgb_i, atol=1e-6) and torch.allclose(mask_logit[i : i + 1], mask_i)
    rebuilt = build_peer(json.loads(json.dumps(model.arch_args())))
    assert rebuilt.arch_args() == model.arch_args()
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        full = PEERS[name](res=res)
    assert full.scaled(8, 2).arch_args() == model.arch_args()
    assert set(model.active_parameters(r)) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 2 * r, 2 * r), 0, 2 * r)
    with pytest.raises(ValueError):
        model.decode(latent, 2, r)


def test_phaze_a_scaling_drops_the_inner_levels_and_keeps_the_4px_start():
    with torch.device("meta"):
        full, small = PEERS["fs_dny1024"](), PEERS["fs_dny1024"](side_div=8, width_div=2)
    f, s = full.arch_args(), small.arch_args()
    assert f["enc_widths"] == [16, 32, 64, 128, 256, 512, 512, 512, 512, 512]
    assert f["dec_widths"] == [512, 512, 512, 256, 128, 64, 32, 16] and f["shared_upscales"] == 2
    assert s["enc_widths"] == [8, 16, 32, 64, 128, 256, 256] and s["dec_widths"] == [128, 64, 32, 16, 8]
    assert s["bottleneck"] == s["entry_width"] == 256 and s["res"] == 128


def test_liae_identity_0_uses_only_the_shared_inter():
    model = PEERS["saehd_liae_ud"](side_div=8, width_div=2)
    r = model.res
    model(torch.rand(1, 3, r, r), 0, r)[0].sum().backward()
    assert all(p.grad is None for p in model.inters.parameters())
    assert all(p.grad is not None for p in model.inter_ab.parameters())


def test_phaze_a_learn_mask_branch_option():
    model = PEERS["fs_dny256"](side_div=8, width_div=2, mask="branch")
    r = model.res
    rgb, mask_logit = model(torch.rand(1, 3, r, r), 1, r)
    assert rgb.shape == (1, 3, r, r) and mask_logit.shape == (1, 1, r, r)
    assert model.mask_decoders is not None and model.shared_mask is not None


def test_true_face_discriminator_reads_a_df_latent():
    model = PEERS["saehd_df_ud"](side_div=8, width_div=2)
    latent = model.encode(torch.rand(2, 3, model.res, model.res), model.res)
    logits = CodeDiscriminator(latent.shape[1], latent.shape[-1], ch=32)(latent)
    assert logits.shape[:2] == (2, 1)


@pytest.mark.slow
def test_a_tiny_scaled_peer_trains_with_swap_train_reloads_and_evaluates(tmp_path):
    """The efficiency study's path for a peer at a tiny size: swap-train with the port as
    ``module.model``, then ``model.safetensors`` rebuilt by ``load_model`` and evaluated."""
    from progressive_swap.cli import train as train_cli
    from progressive_swap.eval.peers import PhazeA, train_overrides
    from progressive_swap.eval.quality import QualitySettings, evaluate
    from progressive_swap.export.swapper import load_model
    from progressive_swap.train.checkpoint import read_training_checkpoint
    from progressive_swap.train.module import CKPT_KEY, resume_problem

    model = PEERS["fs_dny1024"](side_div=32, width_div=8)  # 32 px
    run = tmp_path / "run"
    argv = ["recipe=demo", f"out={run}", "data.num_workers=0", "preview_every=0", "data.phantom.faces=4",
            "data.phantom.size=32", "data.phantom.occluders=0", *train_overrides(model),
            "schedule.stages=[{res:32,images:16,batch:4,lr:5e-4,lr_end:5e-5}]"]
    assert train_cli.main(argv) == 0
    loaded, info = load_model(run / "model.safetensors", "cpu")
    assert isinstance(loaded, PhazeA) and loaded.arch_args() == model.arch_args()
    assert info.stage_res == 32 and not loaded.colour_norm
    state = read_training_checkpoint(run / "last.ckpt")[CKPT_KEY]
    assert resume_problem(state, model.arch_args(), 1) is None
    assert "bottleneck: 64 vs 32" in resume_problem(state, dict(model.arch_args(), bottleneck=32))
    q = evaluate(str(run / "model.safetensors"), QualitySettings(frames=1, video_frames=0), "cpu")
    for k in ("swap_psnr", "recon_psnr", "identity_gain_db", "hf_coherent"):
        assert q[k] is not None and q[k] == q[k], k


def test_a_checkpoint_naming_a_builder_outside_the_allowlist_is_refused(tmp_path):
    from progressive_swap.core.weights import save_weights
    from progressive_swap.export.swapper import load_model
    from progressive_swap.model.builders import build_model

    path = tmp_path / "model.safetensors"
    arch = {"builder": "os.system", "design": "phaze_a", "num_identities": 2}
    save_weights({"w": torch.zeros(1)}, path, {"arch": arch, "stage_res": 32, "identities": ["a", "b"]})
    with pytest.raises(ValueError, match="unknown model builder 'os.system'") as e:
        load_model(path, "cpu")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown model builder"):
        build_model({"builder": "progressive_swap.eval.peers.PEERS"})
    # a comb's arch (no builder) is rebuilt as before
    assert type(build_model({"num_identities": 2, "final_res": 64, "start_res": 32})).__name__ == "CombAutoencoder"


def test_the_efficiency_study_trains_the_peers_at_128_px_in_place_of_the_comb(tmp_path):
    """tools/bench_efficiency.py: a peer is built for 1024 px, scaled to 128 px, charged at 1024 px
    (batch 4 per identity) in all five phases, and trained by swap-train as ``module.model`` in one
    annealed stage."""
    from conftest import import_tool
    from hydra.utils import instantiate

    from progressive_swap.cli.config import compose

    bench = import_tool("bench_efficiency")
    for name in ("fs_dny1024", "saehd_liae_ud", "saehd_df_ud"):
        full = bench.design(name)
        assert bench.scaled(full)["res"] == 128 and bench.full_size_phases(full) == (((1024, 1.0),) * 5, (4,) * 5)
    cfg = compose("train", [*bench._overrides("saehd_df_ud", 0, tmp_path), bench._stages([16] * 5, 128)])
    stages = [dict(s) for s in cfg.schedule.stages]
    assert stages == [{"res": 128, "images": 80, "batch": bench.BATCH, "lr": bench.LR, "lr_end": bench.LR_END}]
    assert cfg.data.phantom.size == 128 and cfg.trainer.gradient_clip_val == 1.0
    model = instantiate(cfg.module.model)
    assert model.arch_args() == bench.scaled(bench.design("saehd_df_ud")) and model.stages == [128]
