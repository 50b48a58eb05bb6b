"""Layers in a real compositing application: headless Blender (Debian's ``blender`` package).

Blender composites exported layers over their plates (Image nodes → Alpha Over → Composite,
``tests/blender/comp.py``) and each render must equal the project's own linear-light composite
(``composite.over``) within 1/255 everywhere in the frame, with the face off-centre. The comp
file ``swap-export comp=blender`` writes must render the export's finished frames.
``PROGRESSIVE_SWAP_SKIP_BLENDER=1`` skips these tests on a machine without Blender.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_tiny_weights

from progressive_swap.cli import export as export_cli
from progressive_swap.core import align
from progressive_swap.export import composite as C
from progressive_swap.export import writers as W
from progressive_swap.export.frames import FaceIn, FrameIn
from progressive_swap.export.pipeline import Exporter
from progressive_swap.export.settings import ExportSettings
from progressive_swap.export.swapper import CheckpointInfo, Swapper
from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

SCRIPT = Path(__file__).parent / "blender" / "comp.py"
FACE_TYPE = "whole"
PLATE = (256, 256)  # (w, h): the phantom's 160 px frame pasted off-centre into it
OFFSETS = [(92, 6), (4, 90)]  # two frames, the face far from the centre each time
ARCH = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
            channel_base=256, channel_max=16, channel_min=8)
INFO = CheckpointInfo("standin.ckpt", "0" * 64, ARCH, 128, 1.0, ["alice", "bob"], FACE_TYPE)


def run_blender(exe: str, *args: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([exe, "-b", "--factory-startup", "--python-exit-code", "1", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    return time.perf_counter() - t


class TintNet(torch.nn.Module):
    """Stand-in swap: a tinted face with a soft disc mask (semi-transparent edges test the blend)."""

    def forward(self, img, identity, stage_res, alpha, source=None):
        b, _, s, _ = img.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        logit = (0.55 - (xx**2 + yy**2).sqrt()) * 15.0
        return img * 0.6 + torch.tensor([0.35, 0.05, 0.2]).view(1, 3, 1, 1), logit.expand(b, 1, s, s)


@pytest.fixture(scope="module")
def shots():
    """Phantom frames pasted off-centre into bigger plates, with their landmarks moved along."""
    ident = sample_identity(3)
    out = []
    for (dx, dy), pose in zip(OFFSETS, sample_trajectory(1, len(OFFSETS), fps=25)):
        r = render(ident, pose, 160)
        plate = np.full((PLATE[1], PLATE[0], 3), 70, np.uint8)
        plate[:, :, 2] = np.linspace(40, 200, PLATE[0]).astype(np.uint8)  # something to see through the edge
        plate[dy : dy + 160, dx : dx + 160] = r.image
        out.append((plate, r.landmarks + [dx, dy]))
    return out


def export(out, shots, **kw):
    frames = [FrameIn(i, i / 25, plate, [FaceIn(align.alignment_matrix(lm, FACE_TYPE), 0, lm)])
              for i, (plate, lm) in enumerate(shots)]
    settings = ExportSettings(crop_size=128, **kw)
    Exporter(out, Swapper(TintNet(), 1, 128), INFO, 1, settings, progress=False).run(frames)


def test_blender_composites_layers_where_the_project_does(tmp_path, blender, shots):
    """EXR (frame data window) and PNG16 layers in Blender = composite.over within 1/255; the
    face-sized EXR data window is what Blender places wrong (it ignores the display window)."""
    variants = {"exr": dict(format="exr"), "png16": dict(format="png16"),
                "exr_face": dict(format="exr", exr_window="face")}
    jobs = []
    for name, kw in variants.items():
        export(tmp_path / name, shots, **kw)
        for i, (plate, _) in enumerate(shots):
            cv2.imwrite(str(tmp_path / f"plate{i}.png"), plate[..., ::-1])
            layer = tmp_path / name / f"layers/face.{i:06d}{W.FORMATS[kw['format']]}"
            jobs.append({"plate": str(tmp_path / f"plate{i}.png"), "layer": str(layer), "format": kw["format"],
                         "out": str(tmp_path / f"blender_{name}_{i}.png"), "name": name, "i": i})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    seconds = run_blender(blender, "--python", str(SCRIPT), "--", str(tmp_path / "jobs.json"))
    errors = {}
    for job in jobs:
        plate = shots[job["i"]][0]
        layer = W.read_layer(job["layer"])
        assert layer.shape[:2] == plate.shape[:2]
        ys, xs = np.nonzero(layer[..., 3])
        centre = np.array([xs.mean(), ys.mean()])
        assert np.linalg.norm(centre - [PLATE[0] / 2, PLATE[1] / 2]) > 40  # really off-centre
        want = C.over(layer, plate, linear=True)
        got = cv2.imread(job["out"], cv2.IMREAD_UNCHANGED)
        assert got is not None and got.dtype == np.uint16 and got.shape == (PLATE[1], PLATE[0], 3)
        err = np.abs(got[..., ::-1] / 65535.0 - want) * 255
        errors[(job["name"], job["i"])] = round(float(err.max()), 3)
    print(f"blender: {len(jobs)} comps in one process, {seconds:.1f} s; max error /255: {errors}")
    for (name, i), e in errors.items():
        if name == "exr_face":
            assert e > 30, (name, i, e)  # moved to the frame's centre: the reason the default is the frame
        else:
            assert e <= 1.0, (name, i, e)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("ckpt"), ARCH, FACE_TYPE)


@pytest.mark.parametrize("fmt", ["exr", "png16"])
def test_comp_blend_renders_the_finished_frames(tmp_path, blender, shots, ckpt, fmt):
    """comp=blender: the .blend's render of each frame equals the export's finished frame (1/255)."""
    seq = tmp_path / "plates"
    seq.mkdir()
    for i, (plate, _) in enumerate(shots):  # an image sequence numbered from 1001, as on a film
        cv2.imwrite(str(seq / f"shot.{1001 + i}.png"), plate[..., ::-1])
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"fps": 25, "size": list(PLATE), "frames": [
        {"index": 1001 + i, "faces": [{"landmarks": lm.tolist()}]} for i, (_, lm) in enumerate(shots)]}))
    out = tmp_path / "out"
    args = [f"checkpoint={ckpt}", f"input={seq}", f"out={out}", "identity=bob", "progress=false", "landmarks=given",
            f"landmarks_file={truth}", f"format={fmt}", "composite=true", "comp=blender"]
    assert export_cli.main(args) == 0
    blend = out / "comp.blend"
    assert blend.is_file() and not list(out.glob(".comp*"))
    render = tmp_path / "render" / "r_######"
    run_blender(blender, str(blend), "-o", str(render), "-F", "PNG", "-f", f"0..{len(shots) - 1}")
    for i in range(len(shots)):
        got = cv2.imread(str(tmp_path / "render" / f"r_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        want = cv2.imread(str(out / "comp" / f"comp.{1001 + i}.png"), cv2.IMREAD_UNCHANGED)  # the plates' numbers
        assert got is not None and got.shape == want.shape, (None if got is None else got.shape)
        err = np.abs(got.astype(int) - want.astype(int))
        assert err.max() <= 1, (i, err.max())
        assert np.abs(want.astype(int) - shots[i][0][..., ::-1]).max() > 40  # the face is there


def test_comp_blender_without_blender_is_one_line_before_anything_is_written(tmp_path, ckpt, capsys, monkeypatch):
    monkeypatch.setenv("PROGRESSIVE_SWAP_BLENDER", str(tmp_path / "no-blender"))
    rc = export_cli.main([f"checkpoint={ckpt}", f"input={tmp_path}", f"out={tmp_path / 'out'}", "identity=bob",
                          "comp=blender"])
    err = capsys.readouterr().err
    assert rc == 2 and "comp=blender needs Blender" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
