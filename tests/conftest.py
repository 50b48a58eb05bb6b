"""Shared fixtures: tiny face sets written through the real face set API."""
from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from progressive_swap import faceset as fs
from progressive_swap.core import align
from progressive_swap.core.landmarks import MEAN_FACE
from progressive_swap.core.weights import save_weights
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated data (the phantom) goes to a per-session cache, never the user's."""
    monkeypatch.setenv("PROGRESSIVE_SWAP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def write_blob_faceset(
    path: Path, identity: int, n: int = 12, size: int = 32, face_type: str = "whole", seed: int = 0
) -> Path:
    """A face set of coloured face-shaped blobs (colour depends on ``identity``)."""
    rng = np.random.default_rng(seed + 97 * identity)
    w = fs.create(path, face_type=face_type, size=size)
    recs, imgs = [], []
    colour = [(220, 170, 120), (90, 130, 220), (120, 200, 90)][identity % 3]
    for i in range(n):
        frame = np.full((128, 128, 3), 40 + 50 * identity, np.uint8)
        lm = align.transform_points(MEAN_FACE, np.array([[45.0, 0, 40], [0, 45.0, 30]])) + rng.normal(0, 0.8, (68, 2))
        cv2.fillPoly(frame, [cv2.convexHull(lm.astype(np.int32))], colour)
        for j in (36, 45, 48, 54):  # eyes and mouth corners, darker
            cv2.circle(frame, tuple(int(v) for v in lm[j]), 2, (30, 30, 30), -1)
        m = align.alignment_matrix(lm, face_type)
        recs.append(
            fs.FaceRecord(
                id=f"f{i:03d}",
                source="synthetic",
                frame_index=i,
                time=i / 25,
                track=0,
                identity=f"id{identity}",
                landmarks=lm,
                matrix=m,
                frame_size=(128, 128),
            )
        )
        imgs.append(align.warp_to_crop(frame, m, size))
    w.append(recs, imgs)
    w.close()
    return path


@pytest.fixture(scope="session")
def blob_sets(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("blobs")
    return [str(write_blob_faceset(root / f"id{k}", k)) for k in range(2)]


# A demo recipe shrunk to seconds: tiny comb, 16 -> 32 px, no workers, no previews.
TINY = [
    "model.channel_base=256",
    "model.channel_max=16",
    "model.channel_min=8",
    "model.latent_channels=8",
    "model.latent_res=8",
    "schedule.stages=[{res:16,images:48,batch:4,lr:1e-3},{res:32,images:32,fade:32,batch:4,lr:1e-3}]",
    "data.num_workers=0",
    "preview_every=0",
    "checkpoint.every_steps=3",
    "augment.warp=0.03",
]


def tiny(blob_sets, out, *extra):
    return ["recipe=demo", "data=facesets", f"data.faces=[{blob_sets[0]},{blob_sets[1]}]", f"out={out}", *TINY, *extra]


def write_tiny_weights(root: Path, arch: dict, face_type: str, identities=("alice", "bob"), stage_res: int = 32,
                       seed: int = 0) -> Path:
    """A tiny random comb saved as ``root/model.safetensors`` with the metadata export reads."""
    torch.manual_seed(seed)
    model = CombAutoencoder(CombArch(**arch))
    meta = {"arch": model.arch_args(), "face_type": face_type, "identities": list(identities), "stage_res": stage_res,
            "alpha": 1.0}
    save_weights(model, root / "model.safetensors", meta)
    return root / "model.safetensors"


def write_video_with_audio(path: Path, images, times, audio_frames: int = 10) -> Path:
    """An H.264 mp4 of ``images`` (uint8 RGB, square) at ``times`` (seconds: variable frame rate
    is fine) with a silent AAC stream of ``audio_frames`` x 1024 samples."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width = v.height = images[0].shape[0]
        v.pix_fmt, v.codec_context.time_base, v.options = "yuv420p", tb, {"crf": "12"}
        a = c.add_stream("aac", rate=48000)
        for t, im in zip(times, images):
            f = av.VideoFrame.from_ndarray(im, format="rgb24")
            f.pts, f.time_base = round(t * 1000), tb
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        for k in range(audio_frames):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, k * 1024
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return path


def import_tool(name: str):
    """A script of ``tools/`` as a module (the chaos test drives ``tools/chaos_train.py``)."""
    import importlib

    tools = str(Path(__file__).resolve().parent.parent / "tools")
    sys.path.insert(0, tools)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(tools)


@pytest.fixture(scope="session")
def blender() -> str:
    """Blender's executable; a failure (not a skip) where it is missing, unless told to skip."""
    from progressive_swap.export import blender_comp

    exe = blender_comp.find_blender()
    if exe is None:
        if os.environ.get("PROGRESSIVE_SWAP_SKIP_BLENDER") == "1":
            pytest.skip("Blender tests skipped (PROGRESSIVE_SWAP_SKIP_BLENDER=1)")
        pytest.fail("Blender tests need Blender: apt-get install -y blender (or PROGRESSIVE_SWAP_SKIP_BLENDER=1)")
    return exe
