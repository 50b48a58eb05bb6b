"""Bad input to every command: one line on stderr, a non-zero exit, nothing half-written.

Each row runs a command's ``main(argv)`` in-process. Inputs are built once per module; each
case writes (if it wrongly wrote anything) under its own ``out``, and the inputs are
fingerprinted before and after, so a command that touched them fails too.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_blob_faceset

COMMANDS = {
    "swap-train": "progressive_swap.cli.train",
    "swap-phantom": "progressive_swap.cli.phantom",
    "swap-faceset": "progressive_swap.cli.faceset",
    "swap-extract": "progressive_swap.cli.extract",
    "swap-mask": "progressive_swap.cli.mask",
    "swap-export": "progressive_swap.cli.export",
}
TRAIN = [
    "recipe=demo",
    "data=facesets",
    "data.faces=[{A},{B}]",
    "out={out}",
    "model.channel_base=256",
    "model.channel_max=16",
    "model.channel_min=8",
    "model.latent_channels=8",
    "model.latent_res=8",
    "data.num_workers=0",
    "schedule.stages=[{{res:16,images:48,batch:4,lr:1e-3}},{{res:32,images:32,fade:32,batch:4,lr:1e-3}}]",
]
TINY_ARCH = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8, channel_base=256,
                 channel_max=16, channel_min=8)


class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def inputs(blob_sets, tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad_inputs")
    p = {"A": str(d / "A"), "B": str(d / "B"), "dir": str(d)}
    shutil.copytree(blob_sets[0], p["A"])
    shutil.copytree(blob_sets[1], p["B"])
    # Face sets of an unknown format_version, with a broken header, of another face type.
    for name, header in (("v99", {"format_version": 99}), ("vstr", {"format_version": "two"})):
        shutil.copytree(blob_sets[0], d / name)
        h = json.loads((d / name / "faceset.json").read_text())
        h.update(header)
        (d / name / "faceset.json").write_text(json.dumps(h))
        p[name] = str(d / name)
    shutil.copytree(blob_sets[0], d / "badhdr")
    (d / "badhdr" / "faceset.json").write_text("{not json")
    p["badhdr"] = str(d / "badhdr")
    p["full"] = str(write_blob_faceset(d / "full", 1, n=3, face_type="full"))
    # Footage: empty, random bytes, a real phantom video cut short, a folder of broken images.
    from progressive_swap.phantom.renderer import sample_identity, sample_trajectory
    from progressive_swap.phantom.video import write_phantom_video

    video, truth = write_phantom_video(d, "clip", sample_identity(3), sample_trajectory(3, 6, 24.0), 96, fps=24.0)
    p["video"], p["truth"] = str(video), str(truth)
    (d / "empty.mp4").write_bytes(b"")
    (d / "junk.mp4").write_bytes(os.urandom(5000))
    (d / "cut.mp4").write_bytes(video.read_bytes()[: video.stat().st_size * 6 // 10])
    (d / "imgs").mkdir()
    (d / "imgs" / "f_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(50))  # truncated/corrupt
    (d / "imgs" / "f_0001.png").write_bytes(b"")
    (d / "file.txt").write_text("a regular file, so nothing can be created under it\n")
    # Weight files: hostile pickles, a truncated checkpoint, another model's checkpoint, an export.
    (d / "evil.pt").write_bytes(pickle.dumps({"state_dict": _Boom(d / "pwned")}))
    (d / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": _Boom(d / "pwned")}))
    (d / "evil.safetensors").write_bytes(pickle.dumps(_Boom(d / "pwned")))
    other = {
        "progressive_swap": {
            "arch": {**TINY_ARCH, "latent_channels": 64},
            "schedule": {"world_size": 1},
            "stage_res": 32,
            "alpha": 1.0,
            "batches_done": 3,
        },
        "state_dict": {},
    }
    torch.save(other, d / "other.ckpt")
    data = (d / "other.ckpt").read_bytes()
    (d / "cut.ckpt").write_bytes(data[: len(data) // 2])
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
    from progressive_swap.train.checkpoint import save_weights

    model = CombAutoencoder(CombArch(**TINY_ARCH))
    meta = {
        "arch": model.arch_args(),
        "stage_res": 32,
        "alpha": 1.0,
        "identities": ["alice", "bob"],
        "face_type": "whole",
    }
    save_weights(model, d / "model.safetensors", meta)
    p["fingerprint"] = _fingerprint(d)
    return p


def _fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*") if f.is_file()}


CASES = [
    # swap-train: recipes and overrides
    ("swap-train", ["recipe=demo", "foo=1"], "foo"),
    ("swap-train", [*TRAIN, "seed=abc"], "seed must be an integer"),
    ("swap-train", ["recipe=2048"], "unknown recipe"),
    ("swap-train", ["recipe=demo", "--cfg", "everything"], "--cfg"),
    ("swap-train", [*TRAIN, "freeze=decoder"], "freeze must be"),
    (
        "swap-train",
        [*TRAIN[:4], "schedule.stages=[{{res:16,images:48}},{{res:48,images:32}}]"],
        "schedule: stages must double",
    ),
    # swap-train: face sets
    ("swap-train", ["recipe=demo", "data=facesets", "data.faces=[{A},{v99}]", "out={out}"], "format_version 99"),
    (
        "swap-train",
        ["recipe=demo", "data=facesets", "data.faces=[{A},{badhdr}]", "out={out}"],
        "corrupt face set header",
    ),
    ("swap-train", ["recipe=demo", "data=facesets", "data.faces=[{A},{dir}/file.txt]", "out={out}"], "not a directory"),
    ("swap-train", ["recipe=demo", "data=facesets", "data.faces=[{A}]", "out={out}"], "at least 2 face sets"),
    ("swap-train", [*TRAIN[:2], "data.faces=[{A},{full}]", *TRAIN[3:]], "different face types"),
    # swap-train: weights, checkpoints, output
    ("swap-train", [*TRAIN, "resume={dir}/other.ckpt"], "another architecture"),
    ("swap-train", [*TRAIN, "resume={dir}/cut.ckpt"], "truncated or corrupt"),
    ("swap-train", [*TRAIN, "resume={dir}/evil.ckpt"], "refusing to load"),
    ("swap-train", [*TRAIN, "resume={dir}/nope.ckpt"], "not found"),
    ("swap-train", [*TRAIN, "warm_start={dir}/evil.safetensors"], "cannot read safetensors"),
    ("swap-train", [*TRAIN, "warm_start={dir}/evil.pt"], "refusing to load"),
    ("swap-train", [*TRAIN[:3], "out={dir}/file.txt/sub", *TRAIN[4:]], "cannot write to"),
    # swap-phantom
    ("swap-phantom", [], "out=DIR is required"),
    ("swap-phantom", ["out={out}", "foo=1"], "foo"),
    ("swap-phantom", ["out={out}", "faces=abc"], "abc"),
    ("swap-phantom", ["out={out}", "size=17"], "multiple of 16"),
    ("swap-phantom", ["out={out}", "face_type=banana"], "unknown face_type"),
    ("swap-phantom", ["out={dir}/file.txt/sub", "faces=2", "videos=0", "size=32"], "cannot write to"),
    # swap-faceset
    ("swap-faceset", ["info", "{dir}/nope"], "does not exist"),
    ("swap-faceset", ["info", "{v99}"], "format_version 99"),
    ("swap-faceset", ["info", "{vstr}"], "format_version"),
    ("swap-faceset", ["info", "{badhdr}"], "corrupt face set header"),
    ("swap-faceset", ["frob"], "unknown command"),
    # swap-extract: footage
    ("swap-extract", ["input={dir}/empty.mp4", "out={out}", "landmarks=given:{truth}"], "empty"),
    ("swap-extract", ["input={dir}/junk.mp4", "out={out}", "landmarks=given:{truth}"], "cannot read"),
    ("swap-extract", ["input={dir}/cut.mp4", "out={out}", "size=64", "landmarks=given:{truth}"], "cannot read"),
    (
        "swap-extract",
        ["input={dir}/imgs", "out={out}", "size=64", "landmarks=given:{truth}", "progress=false"],
        "could be decoded",
    ),
    ("swap-extract", ["input={dir}/nope.mp4", "out={out}"], "no such input"),
    ("swap-extract", ["input={video}", "out={out}", "size=100"], "multiple of 16"),
    ("swap-extract", ["input={video}", "out={out}", "size=64", "landmarks=given:{dir}/file.txt"], "not valid JSON"),
    ("swap-extract", ["input={video}", "out={out}", "seed=1"], "seed"),
    # swap-mask
    ("swap-mask", ["frob"], "unknown command"),
    ("swap-mask", ["train", "{v99}", "out={out}/m.safetensors"], "format_version 99"),
    ("swap-mask", ["train", "{A}", "out={out}/m.pt"], ".safetensors"),
    ("swap-mask", ["apply", "{A}", "model={dir}/evil.pt"], "refusing to load"),
    # swap-export
    ("swap-export", ["checkpoint={dir}/evil.pt", "input={A}", "out={out}", "identity=0"], "refusing to load"),
    ("swap-export", ["checkpoint={dir}/nope.ckpt", "input={A}", "out={out}", "identity=0"], "not found"),
    (
        "swap-export",
        ["checkpoint={dir}/model.safetensors", "input={A}", "out={out}", "identity=carol"],
        "unknown identity 'carol'",
    ),
    (
        "swap-export",
        ["checkpoint={dir}/evil.safetensors", "input={A}", "out={out}", "identity=0"],
        "cannot read safetensors",
    ),
    (
        "swap-export",
        ["checkpoint={dir}/model.safetensors", "input={A}", "out={out}", "identity=0", "format=jpg"],
        "unknown format",
    ),
    (
        "swap-export",
        ["checkpoint={dir}/model.safetensors", "input={dir}/nope", "out={out}", "identity=0"],
        "input not found",
    ),
]


@pytest.mark.parametrize("prog,argv,match", CASES, ids=[f"{c[0]}-{i:02d}-{c[2][:24]}" for i, c in enumerate(CASES)])
def test_bad_input(prog, argv, match, inputs, tmp_path, capsys):
    if prog in ("swap-mask", "swap-export"):  # teammates' commands: run them once they exist
        pytest.importorskip(COMMANDS[prog])
    cli = importlib.import_module(COMMANDS[prog])
    out = tmp_path / "out"
    args = [a.format(out=out, **inputs) for a in argv]
    capsys.readouterr()
    rc = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:") and match in err[0], err
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    assert list(tmp_path.iterdir()) == []
    assert _fingerprint(Path(inputs["dir"])) == inputs["fingerprint"]
    assert not (Path(inputs["dir"]) / "pwned").exists()


def test_the_table_covers_every_command():
    progs = {c[0] for c in CASES}
    assert progs == set(COMMANDS) and len(CASES) >= 20
