"""swap-extract: phantom videos with ground truth, the real face-alignment loading path
(random weights, offline), kill-and-resume, and bad input."""
from __future__ import annotations

import json
import os

os.environ.setdefault("NUMBA_DISABLE_JIT", "1")  # face-alignment's numba helpers: skip ~20 s of JIT

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from progressive_swap import faceset
from progressive_swap.cli.extract import main
from progressive_swap.core import align
from progressive_swap.core.landmarks import BROWS, NOSE
from progressive_swap.extract.pipeline import ExtractOptions, extract
from progressive_swap.extract.smoothing import face_scale
from progressive_swap.footage.sources import open_source
from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory
from progressive_swap.phantom.video import write_phantom_video

N_FRAMES = 24
SIZE = 128  # frame side


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("phantom")
    return write_phantom_video(d, "clip", sample_identity(3), sample_trajectory(3, N_FRAMES, 24.0), SIZE, fps=24.0)


def run(*args: str) -> int:
    return main([*map(str, args), "progress=false"])


def truth_landmarks(truth: Path) -> dict[int, np.ndarray]:
    doc = json.loads(truth.read_text())
    return {f["index"]: np.array(f["faces"][0]["landmarks"]) for f in doc["frames"] if f["faces"]}


# ---------------------------------------------------------------------- phantom video


def test_phantom_video_given_landmarks(phantom, tmp_path, capsys):
    video, truth = phantom
    out = tmp_path / "set"
    assert run(f"input={video}", f"out={out}", "size=64", f"landmarks=given:{truth}", "chunk=5") == 0
    assert "frames 24" in capsys.readouterr().out
    fs = faceset.open(out)
    assert len(fs) == N_FRAMES and fs.size == 64 and fs.face_type == "whole"
    assert fs.validate(deep=True) == []
    assert set(fs.mask_names) >= {"components", "extended"}
    t = truth_landmarks(truth)
    np.testing.assert_array_equal(fs.frame_indices, np.arange(N_FRAMES))
    np.testing.assert_allclose(fs.times, np.arange(N_FRAMES) / 24.0, atol=1e-3)  # from pts
    for i in range(len(fs)):
        r = fs.record(i)
        np.testing.assert_allclose(r.landmarks_raw, t[r.frame_index], atol=1e-9)  # raw = given
        # Smoothing a noise-free track barely moves the stable points (the talking mouth a little
        # more, blinking lids too); the crop is made from the smoothed landmarks.
        err = np.linalg.norm(r.landmarks - t[r.frame_index], axis=1)
        assert err[list(BROWS + NOSE)].max() < 0.5 and err.max() < 0.03 * face_scale(t[r.frame_index])
        np.testing.assert_allclose(r.matrix, align.alignment_matrix(r.landmarks, "whole"), atol=1e-12)
        assert np.abs(
            align.matrix_scale(r.matrix) - align.matrix_scale(align.alignment_matrix(t[r.frame_index], "whole"))
        ) < 0.01 * align.matrix_scale(r.matrix)
        assert r.track == 0 and r.frame_size == (SIZE, SIZE) and r.identity == "clip"
    # The crop shows the face where the truth says: aligned landmarks sit on the template.
    m = fs.mask(0, "components")
    lm_px = fs.landmarks_aligned[0] * 64 - 0.5
    assert m.shape == (64, 64) and m[int(lm_px[30, 1]), int(lm_px[30, 0])] > 0.9  # nose tip inside the hull
    # Rerunning is a no-op (everything is done), and the set is unchanged.
    assert run(f"input={video}", f"out={out}", "size=64", f"landmarks=given:{truth}", "chunk=5") == 0
    assert "written 0" in capsys.readouterr().out and len(faceset.open(out)) == N_FRAMES
    # Changed options are refused rather than mixed in.
    assert run(f"input={video}", f"out={out}", "size=64", f"landmarks=given:{truth}", "chunk=5", "min_face=10") == 2
    assert "min_face" in capsys.readouterr().err


def test_smoothing_off_keeps_raw_and_track_filters(phantom, tmp_path):
    video, truth = phantom
    s = extract(
        ExtractOptions(
            input=str(video),
            out=str(tmp_path / "raw"),
            size=32,
            landmarks=f"given:{truth}",
            smooth="none",
            masks=False,
            progress=False,
        )
    )
    fs = faceset.open(tmp_path / "raw")
    np.testing.assert_array_equal(fs.landmarks, fs.landmarks_raw)
    assert s["faces_written"] == N_FRAMES and s["smoothing"] == "none" and fs.mask_names == []
    with pytest.raises(ValueError, match="no faces"):
        extract(
            ExtractOptions(
                input=str(video),
                out=str(tmp_path / "big"),
                size=32,
                landmarks=f"given:{truth}",
                min_face=10_000,
                progress=False,
            )
        )
    assert not (tmp_path / "big").exists()  # nothing usable: nothing left behind


# ---------------------------------------------------------------------- face-alignment, offline


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Random FAN and S3FD weights at the exact names face-alignment downloads to."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from progressive_swap.extract.detect import weight_files

    home = tmp_path_factory.mktemp("torch_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home))
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    names = list(weight_files("sfd"))
    assert names[0].startswith("2DFAN4") and names[1].startswith("s3fd")
    torch.save(FAN(4).state_dict(), ckpt / names[0])
    torch.save(s3fd().state_dict(), ckpt / names[1])
    yield ckpt
    mp.undo()


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    from progressive_swap.extract.detect import LandmarkDetector, WeightsMissingError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError) as e:
        LandmarkDetector(device="cpu", allow_download=False)
    msg = str(e.value)
    assert "2DFAN4-11f355bf06.pth.tar" in msg and "https://" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "\n" not in msg


def test_heatmap_points_match_face_alignment():
    from face_alignment.utils import get_preds_fromhm

    from progressive_swap.extract.detect import heatmap_points

    rng = np.random.default_rng(0)
    hm = rng.random((2, 68, 64, 64)).astype(np.float32)
    hm[0, 0] = 0
    hm[0, 0, 0, 5] = 1  # a maximum on the border: no quarter-pixel shift
    centers, scales = rng.uniform(50, 300, (2, 2)), rng.uniform(0.5, 3, 2)
    ours = heatmap_points(hm, centers, scales)
    ref = np.stack([get_preds_fromhm(hm[i : i + 1], centers[i], scales[i])[1].reshape(68, 2) for i in range(2)])
    np.testing.assert_array_equal(np.trunc(ours), ref)  # the package truncates to integers; we keep sub-pixels


def test_face_alignment_real_loading_path(random_weights):
    """The package's own loaders read our random S3FD and FAN weights from $TORCH_HOME."""
    from progressive_swap.extract.detect import LandmarkDetector

    det = LandmarkDetector(device="auto", face_detector="sfd", flip_input=False, allow_download=False)
    assert det.device in ("cpu", "cuda") and det.fa.face_detector.face_detector is not None
    assert det.landmarks_batch([np.zeros((8, 8, 3), np.uint8)], [np.zeros((0, 4))]) == [[]]
    # Never call detect() with these weights: a random S3FD floods NMS and hangs.


@pytest.mark.timeout(300)
def test_extract_with_fan_on_given_boxes(random_weights, tmp_path):
    """One image through the whole pipeline with FAN landmarks on a given box (one real FAN
    forward pass; the landmarks are garbage with random weights)."""
    img = render(sample_identity(2), sample_trajectory(2, 1)[0], SIZE).image
    cv2.imwrite(str(tmp_path / "face.png"), img[:, :, ::-1])
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        json.dumps({"frames": [{"index": 0, "faces": [{"box": [10, 10, 118, 118], "landmarks": [[0, 0]] * 68}]}]})
    )
    s = extract(
        ExtractOptions(
            input=str(tmp_path / "face.png"),
            out=str(tmp_path / "set"),
            size=32,
            boxes=f"given:{boxes}",
            flip_input=False,
            device="cpu",
            min_face=0,
            progress=False,
        )
    )
    assert s["faces_written"] == 1 and s["smoothing"] == "none"
    r = faceset.open(tmp_path / "set").record(0)
    assert r.landmarks.shape == (68, 2) and not np.allclose(r.landmarks, 0)  # FAN's, not the file's


# ---------------------------------------------------------------------- kill and resume


def _extract_cmd(video: Path, truth: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "progressive_swap.cli.extract",
        f"input={video}",
        f"out={out}",
        "size=32",
        f"landmarks=given:{truth}",
        "chunk=3",
        "progress=false",
    ]


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, "extraction finished before it could be killed"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


@pytest.mark.timeout(180)
def test_kill_and_resume_equals_uninterrupted(phantom, tmp_path):
    video, truth = phantom
    ref, out = tmp_path / "ref", tmp_path / "out"
    env = {**os.environ, "PROGRESSIVE_SWAP_EXTRACT_DELAY": "0.05"}
    # Kill once in the detection pass, once in the crop pass (after a batch was committed).
    p = subprocess.Popen(_extract_cmd(video, truth, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(lambda: len(list(out.glob(".extract/*/det_*.npz"))) >= 2, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "faceset.json").exists()
    p = subprocess.Popen(_extract_cmd(video, truth, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(lambda: len(list(out.glob("index/shard_*.npz"))) >= 2, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = len(faceset.open(out))
    assert 0 < partial < N_FRAMES
    # Finish in-process (faster than two more interpreter starts), and make a reference.
    assert main(_extract_cmd(video, truth, out)[3:]) == 0
    assert main(_extract_cmd(video, truth, ref)[3:]) == 0
    a, b = faceset.open(out), faceset.open(ref)
    assert list(a.ids) == list(b.ids) and len(set(a.ids)) == N_FRAMES
    for i in range(len(a)):
        assert a.record(i) == b.record(i)
        np.testing.assert_array_equal(a.image(i), b.image(i))
        np.testing.assert_array_equal(a.mask(i, "extended"), b.mask(i, "extended"))


# ---------------------------------------------------------------------- bad input


def test_corrupt_video_keeps_what_decodes(phantom, tmp_path, capsys):
    video, truth = phantom
    data = bytearray(video.read_bytes())
    k = len(data) // 2
    data[k : k + 300] = b"\xff" * 300
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    assert run(f"input={bad}", f"out={tmp_path / 'set'}", "size=32", f"landmarks=given:{truth}") == 4
    captured = capsys.readouterr()
    assert "decoding stopped after frame" in captured.out
    err = captured.err.strip().splitlines()  # the error, then the note on the old landmarks= spelling
    assert err[0].startswith("swap-extract: error: incomplete:") and "allow_missing=true" in err[0]
    assert all(line.startswith("swap-extract: ") for line in err)
    # Accepting the damage explicitly: the same command (resumed) ends with exit 0.
    assert run(f"input={bad}", f"out={tmp_path / 'set'}", "size=32", f"landmarks=given:{truth}",
               "allow_missing=true") == 0
    n = len(faceset.open(tmp_path / "set"))
    assert 0 < n < N_FRAMES


def test_unreadable_inputs_fail_in_one_line_and_write_nothing(phantom, tmp_path, capsys):
    video, truth = phantom
    cases = {
        "empty.mp4": b"",
        "trunc.mp4": video.read_bytes()[: len(video.read_bytes()) // 2],
        "junk.mp4": b"not a video" * 50,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        out = tmp_path / f"out_{name}"
        assert run(f"input={tmp_path / name}", f"out={out}", f"landmarks=given:{truth}") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("swap-extract: error:") and name in err and "\n" not in err
        assert not out.exists()
    assert run(f"input={tmp_path / 'missing.mp4'}", f"out={tmp_path / 'x'}", f"landmarks=given:{truth}") == 2
    assert run(f"input={video}", f"out={tmp_path / 'x'}", "size=100") == 2
    assert "multiple of 16" in capsys.readouterr().err


def test_image_folder_with_odd_files(tmp_path, capsys):
    """Gray, RGBA, 16-bit and zero-byte images; frames without faces."""
    idn = sample_identity(5)
    traj = sample_trajectory(5, 6)
    d = tmp_path / "frames"
    d.mkdir()
    frames = []
    for i, p in enumerate(traj):
        r = render(idn, p, SIZE)
        bgr = r.image[:, :, ::-1]
        variant = [
            bgr,
            cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
            cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
            bgr.astype(np.uint16) * 257,
            None,
            bgr,
        ][i]
        if variant is None:
            (d / f"f{i:03d}.png").write_bytes(b"")
        else:
            cv2.imwrite(str(d / f"f{i:03d}.png"), variant)
        faces = [] if i == 5 else [{"identity": "P", "landmarks": r.landmarks.tolist()}]
        frames.append({"index": i, "faces": faces})
    given = tmp_path / "lm.json"
    given.write_text(json.dumps({"fps": 24, "size": [SIZE, SIZE], "frames": frames}))
    src = open_source(d)
    assert src.kind == "sequence" and len(src.files) == 6
    ims = {f.index: f.image for f in src.frames()}
    assert sorted(ims) == [0, 1, 2, 3, 5] and all(
        im.dtype == np.uint8 and im.shape == (SIZE, SIZE, 3) for im in ims.values()
    )
    assert np.abs(ims[3].astype(int) - render(idn, traj[3], SIZE).image).max() <= 1  # 16-bit scaled back
    assert any("0 bytes" in p for p in src.problems)

    args = (f"input={d}", f"out={tmp_path / 'set'}", "size=32", f"landmarks=given:{given}", "identity=A")
    assert run(*args) == 4  # the zero-byte image is a frame that could not be decoded
    assert run(*args, "allow_missing=true") == 0
    out = capsys.readouterr().out
    assert "frames 5" in out and "frames with no face 1" in out and "0 bytes" in out
    fs = faceset.open(tmp_path / "set")
    assert sorted(fs.frame_indices.tolist()) == [0, 1, 2, 3] and fs.identities == ["A"]
    assert np.isnan(fs.times).all()  # images have no time unless fps= is given


def test_several_faces_make_tracks(tmp_path):
    """Two faces per frame, given in swapped order: tracks follow the faces; track=largest keeps one."""
    from progressive_swap.core.landmarks import MEAN_FACE

    frames, n = [], 10
    img = np.zeros((240, 480, 3), np.uint8)
    d = tmp_path / "seq"
    d.mkdir()
    for i in range(n):
        a = MEAN_FACE * 90 + [40 + 2 * i, 60]
        b = MEAN_FACE * 60 + [300 - 3 * i, 80]
        faces = [{"landmarks": a.tolist()}, {"landmarks": b.tolist()}]
        frames.append({"index": i, "faces": faces[::-1] if i % 2 else faces})
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    given = tmp_path / "lm.json"
    given.write_text(json.dumps({"frames": frames}))
    s = extract(
        ExtractOptions(
            input=str(d), out=str(tmp_path / "all"), size=32, landmarks=f"given:{given}", masks=False, progress=False
        )
    )
    assert s["tracks"] == 2 and s["frames_several_faces"] == n
    fs = faceset.open(tmp_path / "all")
    for t in (0, 1):
        x = fs.landmarks[fs.tracks == t][:, 30, 0]
        assert np.all(np.diff(x) > 0) or np.all(np.diff(x) < 0)  # each track moves one way
    extract(
        ExtractOptions(
            input=str(d),
            out=str(tmp_path / "big"),
            size=32,
            landmarks=f"given:{given}",
            track="largest",
            masks=False,
            progress=False,
        )
    )
    fs = faceset.open(tmp_path / "big")
    assert len(fs) == n and np.all(fs.landmarks[:, 30, 0] < 240)  # the larger face, on the left


def test_variable_frame_rate_keeps_pts_times(tmp_path):
    from fractions import Fraction

    import av

    from progressive_swap.core.landmarks import MEAN_FACE

    pts = [0, 1, 3, 4, 7, 8, 12]  # 1/24 s units: irregular steps
    video = tmp_path / "vfr.mkv"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width = s.height = 128
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, 24)
        for p in pts:
            f = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 20 * p, np.uint8), format="rgb24")
            f.pts, f.time_base = p, Fraction(1, 24)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    lm = (MEAN_FACE * 60 + 30).tolist()
    given = tmp_path / "lm.json"
    given.write_text(json.dumps({"frames": [{"index": i, "faces": [{"landmarks": lm}]} for i in range(len(pts))]}))
    extract(
        ExtractOptions(
            input=str(video),
            out=str(tmp_path / "set"),
            size=32,
            landmarks=f"given:{given}",
            smooth="one_euro",
            progress=False,
        )
    )
    fs = faceset.open(tmp_path / "set")
    np.testing.assert_array_equal(fs.frame_indices, np.arange(len(pts)))
    np.testing.assert_allclose(fs.times, np.array(pts) / 24.0, atol=2e-3)  # mkv keeps milliseconds


def test_non_finite_landmarks_or_boxes_are_refused_in_one_line_naming_frame_and_face(tmp_path, capsys):
    """JSON allows NaN and Infinity: a landmarks or boxes file holding them stops before anything is written."""
    d = tmp_path / "frames"
    d.mkdir()
    r = render(sample_identity(2), sample_trajectory(2, 1)[0], SIZE)
    cv2.imwrite(str(d / "f000.png"), r.image[:, :, ::-1])
    good = {"landmarks": r.landmarks.tolist()}
    nan_point = {"landmarks": [[float("nan"), 1.0], *r.landmarks.tolist()[1:]]}
    cases = {  # (file, option): what the one line must name
        "lm_nan": ({"frames": [{"index": 0, "faces": [good, nan_point]}]}, "landmarks", "frame 0, face 1: landmark 0"),
        "box_inf": ({"frames": [{"index": 0, "faces": [{**good, "box": [0, 0, float("inf"), 9]}]}]}, "boxes",
                    "frame 0, face 0: box is not finite"),
        "fps_nan": ({"fps": float("nan"), "frames": []}, "landmarks", "fps is not finite"),
    }
    for name, (doc, option, expected) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))  # writes NaN / Infinity, as other tools do
        assert "NaN" in path.read_text() or "Infinity" in path.read_text()
        out = tmp_path / f"out_{name}"
        assert run(f"input={d}", f"out={out}", "size=32", f"{option}=given", f"{option}_file={path}") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("swap-extract: error:") and "\n" not in err and "Traceback" not in err, err
        assert expected in err and f"{name}.json" in err, err
        assert not out.exists()
