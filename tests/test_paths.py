"""Paths with spaces, non-ASCII characters and ``=`` work in every command (README: "Paths and
quoting"): ``key=value`` splits on the first ``=``, a positional path may hold ``=``, and
swap-train (Hydra) takes ``'out="runs/my run"'``."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import TINY, write_blob_faceset
from omegaconf import ListConfig, OmegaConf

from progressive_swap import faceset
from progressive_swap.cli import export as export_cli
from progressive_swap.cli import export_model as export_model_cli
from progressive_swap.cli import extract as extract_cli
from progressive_swap.cli import faceset as faceset_cli
from progressive_swap.cli import mask as mask_cli
from progressive_swap.cli import phantom as phantom_cli
from progressive_swap.cli import train as train_cli
from progressive_swap.cli.config import compose
from progressive_swap.core.weights import save_weights
from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
from progressive_swap.phantom.renderer import sample_identity, sample_trajectory
from progressive_swap.phantom.video import write_phantom_video

ODD = "my run é=1"


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    """A folder named ``my run é=1`` holding three face sets, a clip with its truth file and a model."""
    d = tmp_path_factory.mktemp("paths") / ODD
    d.mkdir()
    for k in range(2):
        write_blob_faceset(d / f"set {k}=é", k, n=4)
    write_phantom_video(d, "clip", sample_identity(3), sample_trajectory(3, 3, 24.0), 96, fps=24.0)
    torch.manual_seed(0)
    model = CombAutoencoder(CombArch(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
                                     channel_base=256, channel_max=16, channel_min=8))
    meta = {"arch": model.arch_args(), "face_type": "whole", "identities": ["a", "b"], "stage_res": 32, "alpha": 1.0}
    save_weights(model, d / "model.safetensors", meta)
    assert extract_cli.main([f"input={d}/clip.mp4", f"out={d}/clip set=é", "size=32", "landmarks=given",
                             f"landmarks_file={d}/clip.truth.json", "progress=false"]) == 0
    return d


def _train(d: Path) -> list[str]:
    return ["recipe=demo", "data=facesets", f'data.faces=["{d}/set 0=é","{d}/set 1=é"]', f'out="{d}/run"', *TINY,
            "dry_run=true"]


CASES = {
    "swap-phantom": (phantom_cli.main, lambda d: [f"out={d}/phantom", "faces=2", "videos=0", "size=32",
                                                  "progress=false"], "phantom/faces/id1"),
    "swap-extract": (extract_cli.main, lambda d: [f"input={d}/clip.mp4", f"out={d}/extracted", "size=32",
                                                  "landmarks=given", f"landmarks_file={d}/clip.truth.json",
                                                  "progress=false"], "extracted/faceset.json"),
    "swap-train": (train_cli.main, _train, None),
    "swap-export": (export_cli.main, lambda d: [f"checkpoint={d}/model.safetensors", f"input={d}/clip.mp4",
                                                f"out={d}/export", "identity=a", "landmarks=given",
                                                f"landmarks_file={d}/clip.truth.json", "progress=false"],
                    "export/export.json"),
    "swap-export-model": (export_model_cli.main, lambda d: [f"checkpoint={d}/model.safetensors", "identity=a",
                                                            "format=torchscript", f"out={d}/model=é.pt"],
                          "model=é.pt"),
    "swap-mask apply": (mask_cli.main, lambda d: ["apply", f"{d}/set 0=é", "hull=components"],
                        "set 0=é/masks/components"),
    "swap-faceset info": (faceset_cli.main, lambda d: ["info", f"{d}/set 1=é"], None),
    "swap-faceset sort": (faceset_cli.main, lambda d: ["sort", f"{d}/set 1=é", "by=size", f"out={d}/sorted=é"],
                          "sorted=é/faceset.json"),
    "swap-faceset merge": (faceset_cli.main, lambda d: ["merge", f"{d}/set 0=é", f"{d}/clip set=é",
                                                        f"out={d}/merged set=é"], "merged set=é/faceset.json"),
}


@pytest.mark.parametrize("command", list(CASES))
def test_odd_paths_work_in_every_command(odd, command, capsys):
    main, argv, made = CASES[command]
    rc = main(argv(odd))
    out, err = capsys.readouterr()
    assert rc == 0, err
    if made:
        assert (odd / made).exists(), sorted(p.name for p in odd.iterdir())
    if command == "swap-train":
        assert f"{odd}/run" in out + err  # the run directory, whole
    if command == "swap-faceset merge":
        assert len(faceset.open(odd / "merged set=é")) == 4 + 3


HELP_AND_TYPO = [  # (command, argv before the options, a key its --help lists, a misspelt key, its suggestion)
    (phantom_cli.main, [], "progress_every=30.0", "fces=2", "faces"),
    (extract_cli.main, [], "progress_every=30.0", "inptu=x", "input"),
    (train_cli.main, ["recipe=demo"], "progress_every", "seeed=1", "seed"),
    (export_cli.main, [], "progress_every=30.0", "chekpoint=x", "checkpoint"),
    (export_model_cli.main, [], "checkpoint=''", "identiy=a", "identity"),
    *[(mask_cli.main, [sub], key, typo, right) for sub, key, typo, right in [
        ("train", "progress_every=30.0", "stpes=3", "steps"), ("apply", "hull=''", "hul=both", "hull"),
        ("import", "dir=''", "dri=x", "dir"), ("convert", "encoder=''", "encodr=x", "encoder")]],
    *[(faceset_cli.main, [sub, "DIR"], key, typo, right) for sub, key, typo, right in [
        ("sort", "order=''", "oder=asc", "order"), ("embed", "jitter=0", "jiter=1", "jitter"),
        ("filter", "threshold=0.6", "treshold=1", "threshold"), ("review", "port=8765", "prot=1", "port"),
        ("remove", "ids_file=''", "ids_fle=x", "ids_file"), ("merge", "out=''", "uot=x", "out")]],
]


@pytest.mark.parametrize("main, head, key, typo, right", HELP_AND_TYPO)
def test_help_lists_keys_and_a_typo_gets_the_closest(main, head, key, typo, right, capsys):
    assert main([*head, "--help"]) == 0
    assert key in capsys.readouterr().out
    assert main([*head, typo]) == 2
    err = capsys.readouterr().err
    assert f"did you mean '{right}'" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("arg, key, meant", [
    ("out=runs/my run é", "out", "runs/my run é"),
    ("data.faces=[faces/my set é,faces/b=2]", "data.faces", ["faces/my set é", "faces/b=2"]),
])
def test_an_unquoted_odd_value_in_swap_train_says_how_to_quote_it(arg, key, meant, capsys):
    """Hydra's grammar refuses them with a bare LexerNoViableAltException; the line shows the
    argument quoted, and the quoted form means what was typed."""
    assert train_cli.main(["recipe=demo", "data=facesets", arg, "dry_run=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swap-train: error: cannot read") and "\n" not in err, err
    assert "Exception" not in err and 'README, "Paths and quoting"' in err, err
    suggested = re.search(r"as in '(.+)' \(README", err).group(1)
    cfg = compose("train", ["recipe=demo", "data=facesets", suggested])
    value = OmegaConf.select(cfg, key)
    assert (OmegaConf.to_container(value) if isinstance(value, ListConfig) else value) == meant
