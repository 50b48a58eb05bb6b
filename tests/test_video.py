"""Video I/O through PyAV: real mp4 files written and read back, VFR timing, phantom truth."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from progressive_swap.footage.video import probe_video, read_video, write_video
from progressive_swap.phantom.video import write_phantom_video


def gradient_frames(n: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Smooth frames (codec-friendly) whose content changes with the index."""
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    return [np.clip(255 * np.stack([x, y, np.full_like(x, i / n)], -1), 0, 255).astype(np.uint8) for i in range(n)]


def test_write_then_read_round_trip(tmp_path):
    frames = gradient_frames(12)
    path = tmp_path / "clip.mp4"
    assert write_video(path, iter(frames), fps=24, crf=10) == 12
    info = probe_video(path)
    assert info == {"fps": 24.0, "size": (96, 64), "n_frames": 12}
    got = list(read_video(path))
    assert [i for i, _, _ in got] == list(range(12))
    np.testing.assert_allclose([t for _, t, _ in got], np.arange(12) / 24, atol=1e-6)
    for (_, _, img), ref in zip(got, frames):
        assert img.shape == (64, 96, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - ref).mean() < 3  # lossy, but close
    # Frames are told apart: each decoded frame is nearest to its own source frame.
    blue = [img[..., 2].mean() for _, _, img in got]
    assert np.all(np.diff(blue) > 0)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary files left


def test_ntsc_rate_is_kept(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(path, gradient_frames(6), fps=Fraction(30000, 1001))
    assert probe_video(path)["fps"] == pytest.approx(29.97, abs=1e-3)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "bad.mp4"

    def frames():
        yield from gradient_frames(3)
        yield np.zeros((10, 10, 3), np.uint8)  # wrong size mid-stream

    with pytest.raises(ValueError, match="expected 96x64"):
        write_video(path, frames(), fps=24)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="even"):
        write_video(path, [np.zeros((9, 10, 3), np.uint8)], fps=24)
    assert path.read_bytes() == b"old"  # the old file is untouched


def test_read_keeps_variable_frame_rate_timestamps(tmp_path):
    path = tmp_path / "vfr.mp4"
    times_ms = [0, 40, 80, 200, 240, 520]  # irregular gaps: index / fps would be wrong
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = Fraction(1, 1000)
        for t, img in zip(times_ms, gradient_frames(len(times_ms), 64, 48)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got = [(i, t) for i, t, _ in read_video(path)]
    assert [i for i, _ in got] == list(range(len(times_ms)))
    np.testing.assert_allclose([t for _, t in got], np.array(times_ms) / 1000, atol=1e-3)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_video(tmp_path / "nope.mp4"))
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "nope.mp4")


def test_phantom_video_and_truth(tmp_path):
    from progressive_swap.phantom.renderer import FrameParams, render, sample_identity, sample_trajectory

    idn = sample_identity(7)
    traj = sample_trajectory(3, 5, fps=12)
    video, truth_path = write_phantom_video(tmp_path, "id0", idn, traj, 64, fps=12)
    assert video.name == "id0.mp4" and truth_path.name == "id0.truth.json"
    truth = json.loads(truth_path.read_text())
    assert set(truth) == {"fps", "size", "frames"} and truth["fps"] == 12 and truth["size"] == [64, 64]
    assert [f["index"] for f in truth["frames"]] == list(range(5))
    decoded = [img for _, _, img in read_video(video)]
    assert len(decoded) == 5
    for f, params, img in zip(truth["frames"], traj, decoded):
        (face,) = f["faces"]
        assert set(face) == {"identity", "box", "landmarks", "params"} and face["identity"] == "id0"
        lm = np.array(face["landmarks"])
        r = render(idn, params, 64)
        np.testing.assert_allclose(lm, r.landmarks, atol=1e-3)
        x0, y0, x1, y1 = face["box"]
        inside = (lm[:, 0] >= x0) & (lm[:, 0] <= x1) & (lm[:, 1] >= y0) & (lm[:, 1] <= y1)
        on_frame = (lm >= -0.5).all(1) & (lm <= 63.5).all(1)
        assert inside[on_frame].all()
        assert FrameParams(**{**face["params"], "occluder": None}).yaw == pytest.approx(params.yaw)
        assert np.abs(img.astype(int) - r.image).mean() < 6  # the video shows the rendered frames


def test_frames_keeps_part_of_a_video_by_0_based_index_and_stops_decoding_after_it(tmp_path, monkeypatch):
    from progressive_swap.extract.pipeline import missing_frames
    from progressive_swap.footage import sources

    frames = gradient_frames(12)
    path = tmp_path / "clip.mp4"
    write_video(path, iter(frames), fps=24, crf=10)
    decoded = []
    real = sources.read_video

    def counting(p):
        for item in real(p):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(sources, "read_video", counting)
    src = sources.open_source(path, frames=(3, 6))
    got = [(fr.index, fr.pos) for fr in src.frames()]
    assert got == [(3, 3), (4, 4), (5, 5), (6, 6)] and src.expected_frames == 4
    assert max(decoded) == 6 and not src.problems and missing_frames(src.problems, src, 4) == 0
    assert [fr.index for fr in src.frames(src.position(5))] == [5, 6]  # a resumed pass starts mid-range
    tail = sources.open_source(path, frames=(9, 99))  # past the end: what there is, no complaint
    assert [fr.index for fr in tail.frames()] == [9, 10, 11] and not tail.problems
    with pytest.raises(FileNotFoundError, match=r"in frames=12-20 \(its frames are 0-11, counted from 0\)"):
        sources.open_source(path, frames=(12, 20))
