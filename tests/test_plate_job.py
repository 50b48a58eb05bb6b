"""One whole plate job (issue 34, item 6): ``tools/plate_job.sh`` from phantom EXR plates to an
oiiotool composite, run as a user runs it, with a tiny model and schedule (``docs/plates.md``,
"One whole job").

Ground truth: the plates' own values (where a layer is transparent the finished frame must be
the plate), the composite's formula (layer + plate · (1 − α), rounded to half floats), and the
plate's colour-space metadata, which the layers must carry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("OpenImageIO")
pytest.importorskip("PyOpenColorIO")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "plate_job.sh"
BIN = Path(sys.executable).parent  # the environment's swap-* commands and Python
FRAMES, SIZE, CROP = 6, 96, 32
NUMBERS = range(1001, 1001 + FRAMES)
# conftest's TINY (a tiny comb, 16 -> 32 px, a few dozen images), passed through to swap-train.
TINY = ["model.channel_base=256", "model.channel_max=16", "model.channel_min=8", "model.latent_channels=8",
        "model.latent_res=8",
        "schedule.stages=[{res:16,images:48,batch:4,lr:1e-3},{res:32,images:32,fade:32,batch:4,lr:1e-3}]",
        "data.num_workers=0", "preview_every=0", "schedule_seconds=null"]


def oiiotool() -> str | None:
    """``$OIIOTOOL`` if set, else the system's oiiotool (Debian's openimageio-tools) if there is
    one, else the OpenImageIO wheel's beside this Python."""
    if os.environ.get("OIIOTOOL"):
        return shutil.which(os.environ["OIIOTOOL"])
    others = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    return shutil.which("oiiotool", path=others) or shutil.which("oiiotool", path=str(BIN))


def job_env(cache: Path, tool: str | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OIIOTOOL"] = tool or oiiotool() or "oiiotool"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])  # this tree's code
    env["PROGRESSIVE_SWAP_CACHE"] = str(cache)
    env["PROGRESSIVE_SWAP_CPU_PRECISION"] = "32-true"  # no precision measurement: seconds, not minutes
    env["PYTHON"] = sys.executable
    return env


def run_job(args, cache: Path, tool: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], env=job_env(cache, tool), capture_output=True,
                          text=True, timeout=timeout)


def read(path) -> tuple[np.ndarray, dict]:
    import OpenImageIO as oiio

    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    spec = buf.spec()
    attrs = {a.name: a.value for a in spec.extra_attribs}
    return buf.get_pixels(oiio.FLOAT), attrs


def half_step(x: np.ndarray) -> np.ndarray:
    """Half of one half-float step at each value (the rounding error of storing it as half)."""
    e = np.floor(np.log2(np.maximum(np.abs(x), 2.0**-14)))
    return 2.0 ** (e - 11)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    if oiiotool() is None:
        pytest.skip("oiiotool is not installed (Debian package openimageio-tools; tools/install_apps.sh)")
    out = tmp_path_factory.mktemp("job") / "job"
    t0 = time.perf_counter()
    r = run_job([out, "--frames", FRAMES, "--size", SIZE, "--crop", CROP, *TINY], tmp_path_factory.mktemp("cache"))
    seconds = time.perf_counter() - t0
    print(f"plate_job.sh: {seconds:.1f} s wall, OIIOTOOL={oiiotool()}\n{r.stdout}")
    assert r.returncode == 0, (r.stdout, r.stderr)
    return out, r, seconds


@pytest.mark.slow
def test_every_stage_of_the_job_writes_its_outputs(job):
    from progressive_swap import faceset as fs

    out, r, seconds = job
    lines = r.stdout.splitlines()
    steps = ["plates", "extract_A", "extract_B", "train", "export", "comp"]
    assert [x.split()[1] for x in lines[:-1]] == steps and all(" done in " in x for x in lines[:-1]), lines
    assert lines[-1].startswith(f"plate_job.sh: {FRAMES} finished frames in ") and "(oiiotool " in lines[-1], lines
    for k in ("A", "B"):
        assert sorted(p.name for p in (out / "plates" / k).glob("plate.*.exr")) == [f"plate.{n}.exr" for n in NUMBERS]
        assert (out / "plates" / k / "landmarks.json").is_file()
        s = fs.open(out / "faces" / k)
        assert len(s) == FRAMES and s.crop_space == "acescct" and s.size == CROP and s.identities == [k]
        assert sorted(s.frame_indices.tolist()) == list(NUMBERS)  # the plates' own numbers
    assert (out / "run" / "model.safetensors").is_file() and (out / "run" / "last.ckpt").is_file()
    meta = json.loads((out / "shot" / "export.json").read_text())
    assert meta["status"] == "complete" and meta["identity"] == "B" and meta["from_identity"] == "A"
    assert meta["colour"]["plate"] == "ACEScg" and meta["crop_space"] == "acescct"
    for n in NUMBERS:
        assert (out / "shot" / "layers" / f"face.{n}.exr").is_file() and (out / "comp" / f"comp.{n}.exr").is_file()
    assert not list((out / "comp").glob(".tmp*"))  # each comp was renamed into place
    assert {p.stem for p in (out / "logs").glob("*.log")} == set(steps)


@pytest.mark.slow
def test_the_comp_is_the_plate_where_the_layer_is_transparent_and_the_over_elsewhere(job):
    out = job[0]
    zero_total = light_total = 0
    for n in NUMBERS:
        plate, _ = read(out / "plates" / "A" / f"plate.{n}.exr")
        layer, _ = read(out / "shot" / "layers" / f"face.{n}.exr")
        comp, _ = read(out / "comp" / f"comp.{n}.exr")
        assert plate.shape == (SIZE, SIZE, 3) and layer.shape == (SIZE, SIZE, 4) and comp.shape == (SIZE, SIZE, 3)
        a = layer[..., 3]
        zero = a == 0
        # alpha = 0 continuity: the finished frame is the plate, values above 1 (the corner light) included.
        err = np.abs(comp - plate)[zero]
        assert (err <= half_step(plate[zero])).all(), err.max()
        zero_total += zero.sum()
        light_total += (zero & (plate.min(-1) >= 16.0)).sum()
        # Everywhere: the over of the premultiplied layer, rounded to half floats.
        want = layer[..., :3] + plate * (1.0 - a[..., None])
        assert (np.abs(comp - want) <= half_step(want) + 1e-7).all()
        assert (np.abs(comp - plate)[a > 0.5] > 1e-3).any()  # the swap is really there
    print(f"{zero_total} transparent pixels over {FRAMES} frames, {light_total} of them the corner light (16.0)")
    assert zero_total > 0.2 * FRAMES * SIZE * SIZE and light_total >= FRAMES * 4


@pytest.mark.slow
def test_the_layers_and_the_comp_carry_the_plates_colour_space(job):
    from progressive_swap.footage.colour import PRIMARIES, file_colour

    out = job[0]
    for n in NUMBERS:
        _, plate = read(out / "plates" / "A" / f"plate.{n}.exr")
        _, layer = read(out / "shot" / "layers" / f"face.{n}.exr")
        _, comp = read(out / "comp" / f"comp.{n}.exr")
        assert np.allclose(plate["chromaticities"], PRIMARIES["AP1"], atol=1e-4)  # what the plates say
        for attrs in (layer, comp):
            assert np.allclose(attrs["chromaticities"], plate["chromaticities"], atol=1e-6)
            assert attrs["oiio:ColorSpace"] == plate["oiio:ColorSpace"]
            said = file_colour(attrs, ".exr")  # what swap-extract or swap-export would read it as
            assert said.names == file_colour(plate, ".exr").names and "ACEScg" in said.names, said
            assert attrs["smpte:TimeCode"] == plate["smpte:TimeCode"]  # the plate's own frame, not another's
        assert layer["colorspace"] == "ACEScg" and layer["alpha"] == "premultiplied"
        assert "alpha" not in comp  # an RGB frame: the layer's alpha convention is not copied onto it


def _one_line_error(r) -> str:
    err = r.stderr.strip()
    assert r.returncode != 0 and err.startswith("plate_job.sh: error: ") and "\n" not in err, (r.returncode, r.stderr)
    return err


@pytest.mark.parametrize("args, says", [
    (["--plates", "{tmp}/nowhere"], "--plates {tmp}/nowhere: no such folder"),
    (["--plates", "{tmp}"], "no A/plate.NNNN.exr files in it"),
    (["--frames", "many"], "--frames many: a whole number is needed"),
    (["--crop-space", "log"], "--crop-space log: auto, srgb or acescct"),
    (["--nope"], "unknown argument --nope"),
])
def test_bad_input_is_one_line_a_non_zero_exit_and_nothing_written(tmp_path, args, says):
    out = tmp_path / "job"
    r = run_job([out, *(a.format(tmp=tmp_path) for a in args)], tmp_path / "cache")
    assert says.format(tmp=tmp_path) in _one_line_error(r) and r.returncode == 2
    assert not out.exists() and r.stdout == ""


def test_a_used_out_folder_and_a_missing_oiiotool_are_refused_in_one_line(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    r = run_job([tmp_path / "used"], tmp_path / "cache")
    assert "is not an empty folder" in _one_line_error(r) and r.returncode == 2
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]
    r = run_job([tmp_path / "job"], tmp_path / "cache", tool=str(tmp_path / "bin" / "oiiotool"))
    assert f"{tmp_path}/bin/oiiotool not found: it composites" in _one_line_error(r) and r.returncode == 2
    assert not (tmp_path / "job").exists()


def test_a_failed_step_is_one_line_naming_it_and_its_log(tmp_path):
    plates = tmp_path / "plates"
    for k in ("A", "B"):
        (plates / k).mkdir(parents=True)
        (plates / k / "plate.1001.exr").write_bytes(b"not an EXR")
    r = run_job([tmp_path / "job", "--plates", plates], tmp_path / "cache")
    err = _one_line_error(r)
    assert err.startswith("plate_job.sh: error: extract_A failed (exit ") and err.endswith(
        f"log: {tmp_path / 'job' / 'logs' / 'extract_A.log'}"), err
    assert not (tmp_path / "job" / "run").exists()  # nothing after the failed step ran
