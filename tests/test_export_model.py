"""swap-export-model: DFM, ONNX and TorchScript files run in their own runtimes and swap as the Swapper does.

Every file is run by the runtime a consumer uses (onnxruntime on the CPU; ``torch.jit.load`` in a
fresh interpreter that cannot import this package) on phantom faces, and compared with
:class:`~progressive_swap.export.swapper.Swapper` on the same crops. The model is a tiny random
comb with identity colour normalisation (distinct colours per identity, so swapping the
identities or the channel order changes the answer), stored mid-fade (``alpha`` 0.6) so the
export must honour the checkpoint's stage and alpha.
"""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest
import torch

from progressive_swap.cli import export_model as cli
from progressive_swap.core import align
from progressive_swap.export import model_export as ME
from progressive_swap.export.swapper import Swapper, load_model
from progressive_swap.model import autoencoder as AE
from progressive_swap.phantom.renderer import render, sample_frame, sample_identity
from progressive_swap.train.checkpoint import save_weights

ort = pytest.importorskip("onnxruntime")

RES = 32
ARCH = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
            channel_base=256, channel_max=16, channel_min=8, colour_norm=True)
TOL = 1e-3


def build_comb(arch: dict) -> torch.nn.Module:
    """The trainer's network for an architecture."""
    return AE.CombAutoencoder(AE.CombArch(**arch))


def write_ckpt(path, arch=ARCH, names=("alice", "bob"), face_type="whole", stage_res=RES, alpha=0.6, seed=0):
    torch.manual_seed(seed)
    model = build_comb(arch)
    n = arch["num_identities"]
    mean = torch.tensor([[0.7, 0.55, 0.45], [0.35, 0.25, 0.2], [0.5, 0.45, 0.6]])[:n]
    std = torch.tensor([[0.2, 0.18, 0.16], [0.1, 0.08, 0.07], [0.15, 0.15, 0.2]])[:n]
    model.set_identity_colour(mean, std)
    meta = {"arch": model.arch_args(), "face_type": face_type, "identities": list(names),
            "stage_res": stage_res, "alpha": alpha}
    save_weights(model, path, meta)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_ckpt(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Aligned phantom crops, uint8 (4, 64, 64, 3) RGB."""
    out = []
    for k in range(4):
        r = render(sample_identity(k % 2), sample_frame(k), 128)
        out.append(align.warp_to_crop(r.image, align.alignment_matrix(r.landmarks, "whole"), 64))
    return np.stack(out)


@pytest.fixture(scope="module")
def swapper(ckpt):
    net, info = load_model(ckpt, "cpu")
    assert info.alpha == 0.6 and info.stage_res == RES

    def swap(crops, identity=1, source=0, mask_from="source"):
        return Swapper(net, identity, info.stage_res, info.alpha, source=source, mask_from=mask_from)(crops)

    return swap


def crops_at(faces: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in faces])


def export(tmp_path, ckpt, fmt, name, *extra, expect=0):
    out = tmp_path / name
    rc = cli.main([f"checkpoint={ckpt}", "identity=bob", f"format={fmt}", f"out={out}", *extra])
    assert rc == expect
    return out


def test_onnx_runs_in_onnxruntime_and_matches(tmp_path, ckpt, faces, swapper):
    path = export(tmp_path, ckpt, "onnx", "swap.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["face"]
    assert sess.get_inputs()[0].shape[1:] == [3, RES, RES]
    crops = crops_at(faces, RES)
    want_rgb, want_mask = swapper(crops)
    x = crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    for batch in (x, x[:1]):  # dynamic batch axis
        rgb, mask = sess.run(["rgb", "mask"], {"face": batch})
        n = len(batch)
        assert rgb.dtype == np.float32 and rgb.shape == (n, 3, RES, RES) and mask.shape == (n, 1, RES, RES)
        assert np.abs(rgb.transpose(0, 2, 3, 1) - want_rgb[:n]).max() < TOL
        assert np.abs(mask[:, 0] - want_mask[:n]).max() < TOL
    # the colour normalisation is inside the graph: another source identity would give another swap
    other, _ = swapper(crops, source=1, identity=1)
    assert np.abs(rgb.transpose(0, 2, 3, 1) - other[:1]).max() > 0.02
    meta = ME.read_metadata(path)
    assert meta["resolution"] == str(RES) and meta["face_type"] == "whole" and meta["alpha"] == "0.6"
    assert json.loads(meta["identities"]) == ["alice", "bob"]
    assert (meta["identity"], meta["from_identity"]) == ("bob", "alice")
    assert meta["software"].startswith("progressive_swap ")


def dfm_convert(path, crops_uint8: np.ndarray, morph: float = 0.75):
    """Drive a .dfm as the contract says a consumer does: find the inputs by name, read the
    resolution from the input's shape, feed NHWC BGR float32 in [0, 1] (and morph_value (1,)),
    read the three outputs by position."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    assert 1 <= len(inputs) <= 2 and "in_face" in inputs[0].name
    h, w = inputs[0].shape[1:3]
    assert (h, w) == (RES, RES) and crops_uint8.shape[1:3] == (h, w)
    feed = {inputs[0].name: np.ascontiguousarray(crops_uint8[..., ::-1].astype(np.float32) / 255.0)}
    if len(inputs) == 2:
        assert "morph_value" in inputs[1].name and inputs[1].shape == [1]
        feed[inputs[1].name] = np.float32([morph])
    face_mask, celeb, celeb_mask = sess.run(None, feed)
    assert [o.name for o in sess.get_outputs()] == list(ME.DFM_OUTPUTS)
    return face_mask, celeb, celeb_mask, len(inputs)


def test_dfm_driven_like_a_consumer(tmp_path, ckpt, faces, swapper):
    crops = crops_at(faces, RES)
    swap_rgb, own_mask = swapper(crops, mask_from="source")
    _, swap_mask = swapper(crops, mask_from="model")
    recon_rgb, _ = swapper(crops, identity=0, source=0, mask_from="model")

    plain = export(tmp_path, ckpt, "dfm", "plain.dfm")
    face_mask, celeb, celeb_mask, n_in = dfm_convert(plain, crops)
    assert n_in == 1
    assert celeb.shape == (4, RES, RES, 3) and face_mask.shape == celeb_mask.shape == (4, RES, RES, 1)
    assert all(a.dtype == np.float32 for a in (face_mask, celeb, celeb_mask))
    assert np.abs(celeb[..., ::-1] - swap_rgb).max() < TOL  # BGR out
    assert np.abs(celeb - swap_rgb).max() > 0.02  # ... and not RGB
    assert np.abs(face_mask[..., 0] - own_mask).max() < TOL
    assert np.abs(celeb_mask[..., 0] - swap_mask).max() < TOL

    morph = export(tmp_path, ckpt, "dfm", "morph.dfm", "morph=true")
    _, full, full_mask, n_in = dfm_convert(morph, crops, morph=1.0)
    assert n_in == 2
    assert np.abs(full[..., ::-1] - swap_rgb).max() < TOL and np.abs(full_mask[..., 0] - swap_mask).max() < TOL
    _, none, none_mask, _ = dfm_convert(morph, crops, morph=0.0)
    assert np.abs(none[..., ::-1] - recon_rgb).max() < TOL  # morph 0: the face's own reconstruction
    assert np.abs(none_mask[..., 0] - own_mask).max() < TOL
    _, half, _, _ = dfm_convert(morph, crops, morph=0.5)
    assert np.abs(half[..., ::-1] - (swap_rgb + recon_rgb) / 2).max() < TOL
    meta = ME.read_metadata(morph)
    assert (meta["layout"], meta["channels"], meta["morph_value"]) == ("NHWC", "BGR", "true")


FRESH = textwrap.dedent("""
    import sys
    sys.path.append({site!r})
    try:
        import progressive_swap
    except ImportError:
        pass
    else:
        raise SystemExit("progressive_swap is importable here: " + progressive_swap.__file__)
    import json
    import numpy as np
    import torch
    files = {{"progressive_swap.json": ""}}
    m = torch.jit.load({model!r}, map_location="cpu", _extra_files=files)
    meta = json.loads(files["progressive_swap.json"])
    for name in ("a", "b"):
        x = torch.from_numpy(np.load(name + ".npy"))
        with torch.no_grad():
            np.save(name + "_out.npy", m(x).numpy())
    print(json.dumps(meta))
""")


def test_torchscript_loads_without_the_package(tmp_path, ckpt, faces, swapper):
    path = export(tmp_path, ckpt, "torchscript", "swap.pt")
    work = tmp_path / "fresh"
    work.mkdir()
    small, big = crops_at(faces[:1], RES), faces[:1]  # the model's side, and a 64 px crop resized inside
    for name, c in (("a", small), ("b", big)):
        np.save(work / f"{name}.npy", c.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
    code = FRESH.format(site=sysconfig.get_paths()["purelib"], model=str(path))
    # -I: no PYTHONPATH, no user site, no script dir; -S: no .pth files, so no editable install
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=work, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    meta = json.loads(p.stdout.strip().splitlines()[-1])
    assert meta["resolution"] == str(RES) and meta["identity"] == "bob" and meta["format"] == "torchscript"
    for name, c in (("a", small), ("b", big)):
        out = np.load(work / f"{name}_out.npy")
        rgb, mask = swapper(c)
        assert out.shape == (1, 4, c.shape[1], c.shape[2])
        assert np.abs(out[0, :3].transpose(1, 2, 0) - rgb[0]).max() < TOL
        assert np.abs(out[0, 3] - mask[0]).max() < TOL


def _bad(tmp_path, capsys, ckpt, *args, rc=2):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    argv = [f"checkpoint={ckpt}", "identity=bob", "format=onnx", f"out={out / 'm.onnx'}", *args]
    assert cli.main(argv) == rc
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("swap-export-model: error:"), err
    assert list(out.iterdir()) == [], "nothing may be written"
    return err[0]


def test_bad_input(tmp_path, capsys, ckpt):
    assert "unknown identity 'carol'" in _bad(tmp_path, capsys, ckpt, "identity=carol")
    assert "alice" in _bad(tmp_path, capsys, ckpt, "from_identity=dave")
    assert "allow_same=true" in _bad(tmp_path, capsys, ckpt, "from_identity=bob")
    assert "face type mismatch" in _bad(tmp_path, capsys, ckpt, "face_type=head")
    assert "unknown format" in _bad(tmp_path, capsys, ckpt, "format=coreml")
    assert "morph=true" in _bad(tmp_path, capsys, ckpt, "morph=true")
    assert "not found" in _bad(tmp_path, capsys, tmp_path / "nope.safetensors")
    three = write_ckpt(tmp_path / "three.safetensors", {**ARCH, "num_identities": 3}, ("alice", "bob", "carol"))
    assert "from_identity=NAME" in _bad(tmp_path, capsys, three)
    (tmp_path / "three.safetensors").unlink()
    # identity count: three names for a two-decoder checkpoint
    wrong = write_ckpt(tmp_path / "wrong.safetensors", ARCH, ("alice", "bob", "carol"))
    assert "3 identity names for 2 decoders" in _bad(tmp_path, capsys, wrong)
    wrong.unlink()
    # an output that cannot be written: its directory is a file
    (tmp_path / "afile").write_text("x")
    assert cli.main([f"checkpoint={ckpt}", "identity=bob", "format=onnx", f"out={tmp_path / 'afile' / 'm.onnx'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # the optional dependency is missing: one line naming the extra
    import importlib.util

    real = importlib.util.find_spec
    try:
        importlib.util.find_spec = lambda name, *a: None if name == "onnx" else real(name, *a)
        assert "progressive-swap[export]" in _bad(tmp_path, capsys, ckpt)
    finally:
        importlib.util.find_spec = real


def test_same_identity_when_allowed(tmp_path, ckpt, faces, swapper):
    path = export(tmp_path, ckpt, "onnx", "same.onnx", "from_identity=bob", "allow_same=true")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    crops = crops_at(faces, RES)
    rgb, _ = sess.run(None, {"face": crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0})
    want, _ = swapper(crops, identity=1, source=1)
    assert np.abs(rgb.transpose(0, 2, 3, 1) - want).max() < TOL


def test_failed_write_leaves_old_file(tmp_path, capsys, ckpt, monkeypatch):
    out = tmp_path / "swap.pt"
    out.write_bytes(b"old")

    def broken_save(obj, f, _extra_files=None):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", broken_save)
    assert cli.main([f"checkpoint={ckpt}", "identity=bob", "format=torchscript", f"out={out}"]) == 3
    assert "No space left" in capsys.readouterr().err
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["swap.pt"]
