"""swap-export composite=true: finished frames that agree with the layers, resumably.

The finished frame must be exactly the written layer composited over the plate with
``composite.over`` in linear light (as the preview), an unchanged face must composite back to
the plate, and resume must treat the finished frames as part of each frame's outputs.
"""
from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import write_tiny_weights, write_video_with_audio

from progressive_swap.cli import export as export_cli
from progressive_swap.core import align
from progressive_swap.export import composite as C
from progressive_swap.export import writers as W
from progressive_swap.export.frames import FaceIn, FrameIn
from progressive_swap.export.pipeline import Exporter, stack_layers
from progressive_swap.export.settings import ExportSettings
from progressive_swap.export.swapper import CheckpointInfo, Swapper
from progressive_swap.footage.video import read_video
from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

FACE_TYPE = "whole"
SIZE = 160
N = 4
ARCH = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
            channel_base=256, channel_max=16, channel_min=8)
INFO = CheckpointInfo("standin.ckpt", "0" * 64, ARCH, 64, 1.0, ["alice", "bob"], FACE_TYPE)


class TintNet(torch.nn.Module):
    """Stand-in swap: a tinted face (``tint=False``: the face itself) with a soft disc mask."""

    def __init__(self, tint: bool = True) -> None:
        super().__init__()
        self.tint = tint

    def forward(self, img, identity, stage_res, alpha, source=None):
        b, _, s, _ = img.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        logit = (0.55 - (xx**2 + yy**2).sqrt()) * (20.0 if self.tint else 200.0)  # soft edge when tinted
        out = img * 0.6 + torch.tensor([0.35, 0.05, 0.2]).view(1, 3, 1, 1) if self.tint else img
        return out, logit.expand(b, 1, s, s)


@pytest.fixture(scope="module")
def clip():
    return [render(sample_identity(5), p, SIZE) for p in sample_trajectory(2, N, fps=25)]


def frames_of(clip, empty=()):
    return [FrameIn(i, i / 25, r.image, [] if i in empty else
                    [FaceIn(align.alignment_matrix(r.landmarks, FACE_TYPE), 0, r.landmarks)])
            for i, r in enumerate(clip)]


def export(out, frames, tint=True, **kw):
    settings = ExportSettings(**{"crop_size": 64 if tint else 256, "composite": True, **kw})
    swap = Swapper(TintNet(tint), 1, settings.crop_size)  # unchanged faces: crops finer than the frame
    ex = Exporter(out, swap, INFO, 1, settings, progress=False, fps=25)
    return ex, ex.run(frames)


def comp_frame(out, i):
    q = cv2.imread(str(out / "comp" / f"comp.{i:06d}.png"), cv2.IMREAD_UNCHANGED)
    assert q is not None and q.dtype == np.uint8 and q.shape == (SIZE, SIZE, 3)
    return q[..., ::-1]


@pytest.mark.parametrize("fmt,layers", [("png16", "merged"), ("exr", "merged"), ("png8", "per_track")])
def test_finished_frame_is_the_written_layer_over_the_plate(tmp_path, clip, fmt, layers):
    _, stats = export(tmp_path, frames_of(clip, empty=(2,)), format=fmt, layers=layers)
    assert stats["written"] == N
    for i, r in enumerate(clip):
        side = json.loads((tmp_path / "meta" / f"face.{i:06d}.json").read_text())
        assert side["comp"] == f"comp/comp.{i:06d}.png"
        written = [W.read_layer(tmp_path / f) for f in side["files"].values()]
        if written:
            want = np.rint(C.over(stack_layers(written), r.image, linear=True) * 255).astype(np.uint8)
        else:  # per_track with no track in this frame: no layer at all
            want = r.image
        got = comp_frame(tmp_path, i)
        np.testing.assert_array_equal(got, want)  # the layers and the finished frames never disagree
        if i == 2:
            np.testing.assert_array_equal(got, r.image)  # no face: the plate itself
        else:
            assert np.abs(got.astype(int) - r.image).max() > 40  # the tinted face is in it
    with av.open(str(tmp_path / "comp" / "comp.mp4")) as c:
        assert c.streams.video[0].frames == N or sum(1 for _ in c.decode(video=0)) == N
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert manifest["composite"]["frames"] == "comp/comp.NNNNNN.png"


def test_an_unchanged_face_composites_back_to_the_plate(tmp_path, clip):
    export(tmp_path, frames_of(clip), tint=False, format="png16")
    for i, r in enumerate(clip):
        err = np.abs(comp_frame(tmp_path, i).astype(int) - r.image)
        assert err.max() <= 8 and err.mean() < 0.1, (i, err.max())  # resampling of a sharp face


def test_resume_counts_the_finished_frames_as_outputs(tmp_path, clip):
    frames = frames_of(clip)
    ex, _ = export(tmp_path, frames, composite=False, format="exr")
    assert not (tmp_path / "comp").exists()
    before = json.loads((tmp_path / "export.json").read_text())["fingerprint"]
    ex, stats = export(tmp_path, frames, format="exr")  # turned on later: every frame gets its finished frame
    assert stats["written"] == N and ex.fingerprint == before  # composite changes no layer pixel
    (tmp_path / "comp" / "comp.000001.png").unlink()
    (tmp_path / "comp" / "comp.000003.png").write_bytes(b"damaged")
    stamp = (tmp_path / "comp" / "comp.000000.png").stat().st_mtime_ns
    (tmp_path / "comp" / "comp.mp4").unlink()
    _, stats = export(tmp_path, frames, format="exr")
    assert (stats["written"], stats["skipped"], stats["redone"]) == (2, 2, 2)
    assert (tmp_path / "comp" / "comp.000000.png").stat().st_mtime_ns == stamp
    for i, r in enumerate(clip):
        side = json.loads((tmp_path / "meta" / f"face.{i:06d}.json").read_text())
        want = np.rint(C.over(W.read_layer(tmp_path / side["files"]["merged"]), r.image, linear=True) * 255)
        np.testing.assert_array_equal(comp_frame(tmp_path, i), want.astype(np.uint8))
    assert len(list(read_video(tmp_path / "comp" / "comp.mp4"))) == N  # rebuilt from the frames on disk


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("ckpt"), ARCH, FACE_TYPE)


def test_cli_video_gives_finished_frames_and_a_video_with_the_audio(tmp_path, ckpt, clip):
    times = [0.0, 0.04, 0.12, 0.16]
    path = write_video_with_audio(tmp_path / "plate.mp4", [r.image for r in clip], times)
    truth = tmp_path / "plate.truth.json"
    truth.write_text(json.dumps({"fps": 25, "size": [SIZE, SIZE], "frames": [
        {"index": i, "faces": [{"landmarks": r.landmarks.tolist()}]} for i, r in enumerate(clip)]}))
    out = tmp_path / "out"
    args = [f"checkpoint={ckpt}", f"input={path}", f"out={out}", "identity=bob", "progress=false",
            "landmarks=given", f"landmarks_file={truth}", "composite=true", "format=exr"]
    assert export_cli.main(args) == 0
    plates = [im for _, _, im in read_video(path)]
    for i, plate in enumerate(plates):
        want = np.rint(C.over(W.read_layer(out / f"layers/face.{i:06d}.exr"), plate, linear=True) * 255)
        np.testing.assert_array_equal(comp_frame(out, i), want.astype(np.uint8))
    assert [round(t, 3) for _, t, _ in read_video(out / "comp" / "comp.mp4")] == times
    with av.open(str(out / "comp" / "comp.mp4")) as c:
        assert len(c.streams.audio) == 1
