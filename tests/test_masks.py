"""Occlusion masks: BiSeNet checkpoint import, safe loading, hull masks, swap-mask train/apply/import."""
from __future__ import annotations

import json
import pathlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from progressive_swap import faceset
from progressive_swap.cli.extract import main as extract_main
from progressive_swap.cli.mask import main as mask_main
from progressive_swap.core import align
from progressive_swap.core.landmarks import MEAN_FACE
from progressive_swap.masks import hull, segment
from progressive_swap.masks.bisenet import BiSeNet
from progressive_swap.masks.hull import BORDER_MAX, LANDMARK_MASKS
from progressive_swap.masks.weights import (
    FACE_PARSING_LABELS,
    CheckpointMismatchError,
    face_class_indices,
    load_segmenter,
    mask_from_logits,
    read_state_dict,
    save_segmenter,
    to_model_keys,
)
from progressive_swap.phantom.renderer import sample_identity, sample_trajectory
from progressive_swap.phantom.video import write_phantom_video
from progressive_swap.train.checkpoint import UnsafeCheckpointError

# Every key, shape and dtype of the public face-parsing checkpoint (no weights): test data we own.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "face_parsing_bisenet19_state_dict.json"

TINY = dict(encoder="tu-mobilenetv3_small_100", context_channels=32, fuse_channels=32, aux_channels=16)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared CPU: more threads only spin
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------- public checkpoint layout


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(FIXTURE.read_text())


def fake_checkpoint(spec: dict, counters: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the public checkpoint's keys, shapes and dtypes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for e in spec["state_dict"]:
        if e["key"].endswith("num_batches_tracked"):
            if counters:
                sd[e["key"]] = torch.tensor(79999, dtype=getattr(torch, e["dtype"]))
        elif e["key"].endswith("running_var"):
            sd[e["key"]] = torch.rand(e["shape"], generator=g) + 0.5
        else:
            sd[e["key"]] = torch.randn(e["shape"], generator=g, dtype=getattr(torch, e["dtype"])) * 0.05
    return sd


def test_fixture_names_match_network_strictly(spec):
    sd = fake_checkpoint(spec)
    assert len(sd) == spec["counts"]["keys"]
    net = BiSeNet(num_classes=19)
    net.load_state_dict(to_model_keys(sd), strict=True)  # only the documented prefix rename
    assert tuple(spec["labels"]) == FACE_PARSING_LABELS


@pytest.mark.parametrize("counters", [True, False])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_public_checkpoint_imports(spec, tmp_path, counters, fmt):
    sd = fake_checkpoint(spec, counters)
    assert len(sd) == spec["counts"]["keys" if counters else "keys_without_num_batches_tracked"]
    path = tmp_path / f"face_parsing.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    net, info = load_segmenter(path)
    assert info.labels == FACE_PARSING_LABELS and info.input_size == spec["input"]["size"][0]
    assert info.config.num_classes == 19 and info.config.encoder == "resnet18"
    assert torch.equal(net.state_dict()["cp.encoder.layer3.1.conv2.weight"], sd["cp.resnet.layer3.1.conv2.weight"])
    assert torch.equal(net.state_dict()["conv_out.conv_out.weight"], sd["conv_out.conv_out.weight"])
    with torch.no_grad():
        x = torch.rand(2, 3, 64, 64)
        out = net(x)
        aux = net(x, aux=True)
    assert out.shape == (2, 19, 64, 64) and torch.isfinite(out).all()
    assert [tuple(t.shape) for t in aux] == [(2, 19, 64, 64)] * 3 and torch.allclose(aux[0], out)
    m = mask_from_logits(out, face_class_indices(info.labels))
    assert m.shape == (2, 64, 64) and 0 <= float(m.min()) and float(m.max()) <= 1


def test_dataparallel_prefix_and_wrapped_state_dict(spec, tmp_path):
    sd = {"module." + k: v for k, v in fake_checkpoint(spec, counters=False).items()}
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pth")
    net, info = load_segmenter(tmp_path / "wrapped.pth")
    assert info.config.num_classes == 19


def test_mismatched_checkpoint_lists_mismatches(spec, tmp_path, capsys):
    sd = fake_checkpoint(spec)
    del sd["cp.arm16.conv_atten.weight"]
    sd["cp.arm64.conv.weight"] = torch.zeros(3)
    sd["conv_out16.conv_out.weight"] = torch.zeros(18, 64, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_segmenter(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "\n" not in msg
    assert "1 missing (cp.arm16.conv_atten.weight)" in msg
    assert "1 unexpected (cp.arm64.conv.weight)" in msg
    assert "conv_out16.conv_out.weight: (18, 64, 1, 1) in file, (19, 64, 1, 1) in model" in msg
    # Through the CLI: one line, exit code 2.
    assert mask_main(["convert", str(tmp_path / "bad.pth"), f"out={tmp_path / 'x.safetensors'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "unexpected" in err
    assert not (tmp_path / "x.safetensors").exists()


class _Hostile:
    """Unpickling this would create a file (stand-in for arbitrary code)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv_out.conv_out.weight": torch.zeros(1), "x": _Hostile(str(marker))}, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        read_state_dict(tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError):
        load_segmenter(tmp_path / "evil.pth")
    assert not marker.exists()


def test_face_classes_and_soft_mask():
    labels = FACE_PARSING_LABELS
    base = face_class_indices(labels)
    assert [labels[i] for i in base] == [
        "skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip"]
    wide = face_class_indices(labels, include=["glasses", "hair", "ears"])
    assert {labels[i] for i in set(wide) - set(base)} == {"eye_g", "hair", "l_ear", "r_ear"}
    with pytest.raises(ValueError, match="unknown class 'beard'"):
        face_class_indices(labels, include=["beard"])
    z = torch.zeros(1, 19, 4, 4)  # uniform: each class 1/19
    assert torch.allclose(mask_from_logits(z, base), torch.full((1, 4, 4), len(base) / 19))
    assert face_class_indices(["visible"]) == [0]


def test_network_contract_gradients_reach_every_parameter():
    net = BiSeNet(num_classes=1, **TINY).train()
    out = net(torch.rand(2, 3, 64, 64), aux=True)
    sum(o.square().mean() for o in out).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


# ---------------------------------------------------------------------- hull masks


def test_hull_masks_soft_native_and_extended_covers_forehead():
    def lm_at(size: int) -> np.ndarray:
        return align.transform_points(
            MEAN_FACE, np.array([[0.45 * size, 0, 0.5 * size], [0, 0.45 * size, 0.55 * size]])
        )

    for size in (64, 256):
        m = hull.landmark_mask(lm_at(size), size)
        assert m.shape == (size, size) and m.dtype == np.float32
        assert ((m > 0.02) & (m < 0.98)).sum() > size // 2  # soft edge, not a hard step
        assert m.min() >= 0 and m.max() <= 1 and m.max() > 0.99
    small = hull.landmark_mask(lm_at(64), 64)
    big = cv2.resize(hull.landmark_mask(lm_at(256), 256), (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(small - big).mean() < 0.02  # same mask at any resolution
    lm = lm_at(256)
    comp, ext = hull.landmark_mask(lm, 256, "components"), hull.landmark_mask(lm, 256, "extended")
    assert ext.sum() > comp.sum() * 1.1 and (ext >= comp - 1e-3).all()
    brow_top = int(lm[17:27, 1].min())
    assert ext[: brow_top - 5].sum() > 5 * comp[: brow_top - 5].sum() + 50  # the forehead
    assert hull.landmark_mask(lm, 256, feather=0).max() == 1.0
    with pytest.raises(ValueError, match="unknown landmark mask kind"):
        hull.landmark_mask(lm, 256, "nose_only")


def border_max(m: np.ndarray, px: int = 2) -> float:
    return float(max(m[:px].max(), m[-px:].max(), m[:, :px].max(), m[:, -px:].max()))


@pytest.mark.parametrize("face_type", ["full", "whole", "head"])
def test_hull_masks_fade_out_inside_every_crop(face_type):
    """The border rule on phantom faces (random identities and poses): every landmark mask, as the
    extractor stores it and as training draws it, is <= 0.02 on the crop's outer 2 px."""
    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    worst = {}
    for seed in range(4):
        for p in sample_trajectory(seed, 3, fps=4.0):
            lm = render(sample_identity(seed), p, 96).landmarks
            m = align.alignment_matrix(lm, face_type)
            for size in (32, 128, 256):
                lm_crop = align.transform_points(lm, align.crop_matrix(m, size))
                for kind in ("components", "extended"):
                    worst[kind, size] = max(
                        worst.get((kind, size), 0.0), border_max(hull.landmark_mask(lm_crop, size, kind))
                    )
                    # Without the rule the forehead reaches past a full crop's top: the rule has work to do.
                    if face_type == "full" and kind == "extended":
                        assert border_max(hull.landmark_mask(lm_crop, size, kind, margin=None)) > 0.3
    assert max(worst.values()) <= hull.BORDER_MAX, worst


def test_fade_to_border_on_a_mask_that_fills_the_image():
    full = np.ones((64, 64), np.float32)
    for sigma in (0.0, 1.5, 6.0):
        m = hull.fade_to_border(full, sigma)
        assert border_max(m) <= hull.BORDER_MAX and m[32, 32] > (0.99 if sigma < 2 else 0.5)
        assert (m[32, :] > 0.02).sum() >= 64 - 2 * (2 + 3 * sigma) - 2  # cut no deeper than 2 px + 3 sigma


# ---------------------------------------------------------------------- swap-mask on phantom faces


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> list[str]:
    from progressive_swap.phantom.dataset import generate_phantom_dataset

    out = tmp_path_factory.mktemp("phantom_masks")
    r = generate_phantom_dataset(out, identities=2, faces=10, size=64, videos=0, occluders=0.6, seed=3, progress=False)
    return r["faces"]


def test_paste_occluder_cuts_the_mask():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 128, np.uint8)
    m = np.zeros((64, 64), np.float32)
    m[16:48, 16:48] = 1
    cut = 0
    for _ in range(20):
        im2, m2 = segment.paste_occluder(img, m, rng)
        assert im2.shape == img.shape and im2.dtype == np.uint8 and m2.dtype == np.float32
        assert (m2 <= m + 1e-6).all()
        cut += m2.sum() < m.sum() - 1
    assert cut >= 15


def test_train_improves_iou_and_saves_safetensors(phantom, tmp_path, capsys):
    out = tmp_path / "seg.safetensors"
    rc = mask_main(
        [
            "train",
            phantom[0],
            f"val=[{phantom[1]}]",
            f"out={out}",
            "size=32",
            "steps=20",
            "batch=6",
            "lr=0.003",
            "encoder=tu-mobilenetv3_small_100",
            "context_channels=32",
            "fuse_channels=32",
            "aux_channels=16",
            "seed=1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["after"]["iou"] > summary["before"]["iou"] + 0.1
    net, info = load_segmenter(out)
    assert info.labels == ("visible",) and info.input_size == 32
    assert info.metadata["options"]["steps"] == 20 and info.metadata["held_out"]["faces"] == 10
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_apply_writes_soft_native_masks_and_keeps_user_edits(phantom, tmp_path, capsys):
    fs = faceset.merge([phantom[0]], tmp_path / "set")  # a private copy
    model = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_segmenter(BiSeNet(1, **TINY).eval(), model, labels=["visible"], input_size=32)
    # A user paints face 0's mask (8-bit PNG at another resolution) and a "remove" mask for face 1.
    paint = tmp_path / "paint"
    paint.mkdir()
    painted = np.zeros((128, 128), np.uint8)
    painted[32:96, 40:88] = 255
    cv2.imwrite(str(paint / f"{fs.ids[0]}.png"), painted)
    cv2.imwrite(str(paint / "not_a_face.png"), painted)
    assert mask_main(["import", str(fs.root), f"dir={paint}"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["imported"] == 1 and r["unmatched"] == 1 and r["name"] == "user_segment"
    fs.write_mask(1, "remove", np.ones((64, 64), np.float32), user=True)
    user_file = fs.mask_path(0, "user_segment")
    before = user_file.read_bytes()
    for _ in range(2):  # a rerun must not touch the user's edit
        assert mask_main(["apply", str(fs.root), f"model={model}"]) == 0, capsys.readouterr().err
        res = json.loads(capsys.readouterr().out)
        assert res[0]["written"] == len(fs) and res[0]["with_user_edit"] == 1
    assert user_file.read_bytes() == before
    fs = faceset.open(fs.root)
    m = fs.mask(2, "segment")
    assert m.shape == (64, 64) and m.dtype == np.float32  # native crop resolution
    assert len(np.unique(m)) > 10  # soft probabilities kept, not a thresholded mask
    assert fs.mask(1, "segment").max() == 0.0  # subtract rule: user_remove cuts everything
    assert np.array_equal(fs.mask(0, "segment", prefer_user=True), fs.mask(0, "user_segment"))
    assert fs.mask(0, "user_segment")[64 // 2, 64 // 2] == 1.0
    # Writing a user_* mask automatically is refused.
    assert mask_main(["apply", str(fs.root), f"model={model}", "name=user_segment"]) == 2
    assert "reserved for hand-edited masks" in capsys.readouterr().err
    assert user_file.read_bytes() == before


def test_face_parsing_checkpoint_applies_at_native_resolution(spec, phantom, tmp_path, capsys):
    fs = faceset.merge([phantom[1]], tmp_path / "set")
    torch.save(fake_checkpoint(spec, counters=False), tmp_path / "fp.pth")
    assert (
        mask_main(
            ["apply", str(fs.root), f"model={tmp_path / 'fp.pth'}", "size=64", "include=[glasses]", "name=parsing"]
        )
        == 0
    ), capsys.readouterr().err
    m = faceset.open(fs.root).mask(0, "parsing")
    assert m.shape == (64, 64) and 0 <= m.min() <= m.max() <= 1


def test_bad_input_messages(blob_sets, tmp_path, capsys):
    rc = mask_main(["train", blob_sets[0], f"out={tmp_path / 'x.safetensors'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "no 'visible' masks" in err and "swap-mask import" in err and err.count("\n") == 1
    assert mask_main(["apply", blob_sets[0], f"model={tmp_path / 'missing.safetensors'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert mask_main(["train", blob_sets[0], "nonsense=1", f"out={tmp_path / 'x.safetensors'}"]) == 2
    assert mask_main(["frobnicate"]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_apply_hull_writes_the_extractors_masks_and_keeps_user_edits(tmp_path, capsys):
    """``swap-mask apply hull=both`` into a set extracted without masks gives exactly the masks an
    extraction with masks=true writes (same landmarks, same border rule); user_ masks stay."""
    clip, truth = write_phantom_video(tmp_path, "clip", sample_identity(5), sample_trajectory(5, 4, 24.0), 96)
    common = [f"input={clip}", "size=48", "landmarks=given", f"landmarks_file={truth}", "progress=false"]
    assert extract_main([*common, f"out={tmp_path / 'with'}"]) == 0
    assert extract_main([*common, f"out={tmp_path / 'without'}", "masks=false"]) == 0
    ref, fs = faceset.open(tmp_path / "with"), faceset.open(tmp_path / "without")
    assert fs.mask_names == [] and set(ref.mask_names) >= set(LANDMARK_MASKS)
    painted = np.zeros((48, 48), np.float32)
    fs.write_mask(0, "components", painted, user=True)
    capsys.readouterr()
    assert mask_main(["apply", str(fs.root), "hull=both"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["written"] == len(fs) == 4
    fs = faceset.open(fs.root)
    assert set(fs.mask_names) == {*LANDMARK_MASKS, "user_components"}
    for i in range(len(fs)):
        for kind in LANDMARK_MASKS:
            assert np.array_equal(fs.mask(i, kind), ref.mask(ref.index_of(fs.ids[i]), kind)), (i, kind)
            assert fs.mask(i, kind)[:2].max() <= BORDER_MAX  # the border rule came along
    assert np.array_equal(fs.mask(0, "user_components"), painted)  # the hand edit is untouched
    assert fs.validate(deep=True) == [] and not list(fs.root.rglob("*.tmp"))
    assert mask_main(["apply", str(fs.root), "hull=extended"]) == 0  # a rerun rewrites the same files
    assert mask_main(["apply", str(fs.root), "hull=components", "name=x"]) == 2
    assert "segmenter option" in capsys.readouterr().err
    assert mask_main(["apply", str(fs.root), "hull=extnded"]) == 2
    assert "did you mean 'extended'" in capsys.readouterr().err
