"""Video frame sources and sinks through PyAV (FFmpeg), and phantom videos with ground truth.

Frames are uint8 ``(H, W, 3)`` RGB numpy arrays. Every decoded frame carries its index in
decoding order and its presentation time in seconds from the stream's pts, so variable
frame-rate footage keeps correct timing (never assume ``index / fps``).

Phantom videos come with a ``<name>.truth.json`` file (format in ``docs/phantom.md``) that the
extractor accepts as ``landmarks=given:FILE``.
"""
from __future__ import annotations

import contextlib

import math
import os
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import av
import numpy as np

from progressive_swap.io import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from progressive_swap.data.phantom_params import FrameParams, Identity

BOX_PAD = 0.1
"""Truth boxes are the landmarks' bounding box grown by this fraction of its longer side on
every side (then clipped to the frame)."""


def _fps_fraction(fps: float | Fraction) -> Fraction:
    if isinstance(fps, Fraction):
        return fps
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    # 29.97 → 2997/100, 30000/1001 stays exact when passed as a Fraction.
    return Fraction(str(float(fps))).limit_denominator(100000)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    crf: int = 17,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> int:
    """Encode RGB frames into a video file, atomically (temporary file, then rename).

    Args:
        path: output file; the container is chosen from its extension (``.mp4``, ``.mkv``, …).
        frames: uint8 ``(H, W, 3)`` RGB arrays, all the same size (even sides for 4:2:0).
        fps: constant frame rate (a ``Fraction`` such as ``30000/1001`` is kept exact).
        crf: quality for x264/x265 (lower is better; 17 is visually lossless).
        codec: FFmpeg encoder name.
        pix_fmt: encoded pixel format.

    Returns:
        The number of frames written. On any error the target is left untouched.
    """
    path = Path(path)
    rate = _fps_fraction(fps)
    n = 0
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:  # the suffix tells FFmpeg the container
        with av.open(str(tmp), mode="w", format=None) as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise ValueError(f"frames must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
                if stream is None:
                    h, w = frame.shape[:2]
                    if pix_fmt.startswith("yuv420") and (h % 2 or w % 2):
                        raise ValueError(f"{pix_fmt} needs even frame sides, got {w}x{h}")
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                    if codec in ("libx264", "libx265"):
                        stream.options = {"crf": str(int(crf))}
                elif frame.shape[:2] != (stream.height, stream.width):
                    raise ValueError(f"frame {n} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"expected {stream.width}x{stream.height}")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode():  # flush the encoder
                container.mux(packet)
    return n


@contextlib.contextmanager
def _open_video(path: Path) -> Iterator[av.container.InputContainer]:
    """Open a video for reading, with one-line errors for a missing file or no video stream."""
    if not path.is_file():
        raise FileNotFoundError(f"no such video: {str(path)!r}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{str(path)!r} has no video stream")
        yield container


def read_video(path: str | os.PathLike) -> Iterator[tuple[int, float, np.ndarray]]:
    """Decode a video's first video stream.

    Yields:
        ``(frame_index, pts_seconds, image)``: the index in decoding order from 0, the
        presentation time in seconds (NaN when the stream has no timestamps), and a uint8
        ``(H, W, 3)`` RGB array.
    """
    path = Path(path)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and frame.time_base is not None:
                t = float(frame.pts * frame.time_base)
            else:
                t = float("nan")
            yield i, t, frame.to_ndarray(format="rgb24")


def probe_video(path: str | os.PathLike) -> dict:
    """Basic facts about a video's first video stream.

    Returns:
        ``{"fps": float, "size": (w, h), "n_frames": int}``. ``fps`` is the average rate;
        ``n_frames`` comes from the container when it knows it, else from counting packets.
    """
    path = Path(path)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        n = int(stream.frames or 0)
        if n <= 0:
            n = sum(1 for p in container.demux(stream) if p.size > 0)
        return {"fps": float(rate) if rate else float("nan"), "size": (stream.width, stream.height), "n_frames": n}


def truth_box(landmarks: np.ndarray, frame_wh: tuple[int, int], pad: float = BOX_PAD) -> list[float]:
    """Face box ``[x0, y0, x1, y1]`` (frame px) for a truth file: the landmarks' bounding box
    grown by ``pad`` times its longer side on each side, clipped to the frame."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    m = pad * float((hi - lo).max())
    w, h = frame_wh
    return [float(np.clip(lo[0] - m, -0.5, w - 0.5)), float(np.clip(lo[1] - m, -0.5, h - 0.5)),
            float(np.clip(hi[0] + m, -0.5, w - 0.5)), float(np.clip(hi[1] + m, -0.5, h - 0.5))]


def write_phantom_video(
    out_dir: str | os.PathLike,
    name: str,
    identity: Identity,
    trajectory: list[FrameParams],
    size: int,
    fps: float = 24.0,
    identity_label: str | None = None,
    crf: int = 17,
) -> tuple[Path, Path]:
    """Render a phantom trajectory to ``<out_dir>/<name>.mp4`` plus ``<name>.truth.json``.

    The truth file (written after the video, both atomically) follows the format in
    ``docs/phantom.md``: ``{"fps", "size": [w, h], "frames": [{"index", "faces": [{"identity",
    "box", "landmarks", "params"}]}]}`` with landmarks in frame pixels (centres at integers).

    Args:
        out_dir: existing directory.
        name: file stem.
        identity: who is in the video.
        trajectory: one :class:`FrameParams` per frame (:func:`sample_trajectory`).
        size: frame side in pixels (even).
        fps: frame rate.
        identity_label: the ``identity`` string in the truth file (default: ``name``).
        crf: x264 quality.

    Returns:
        The video and truth paths.
    """
    from progressive_swap.data.phantom import render  # the renderer is heavy; import on use

    out_dir = Path(out_dir)
    label = identity_label if identity_label is not None else name
    truth_frames: list[dict] = []

    def frames() -> Iterator[np.ndarray]:
        for i, params in enumerate(trajectory):
            r = render(identity, params, size)
            truth_frames.append({
                "index": i,
                "faces": [{
                    "identity": label,
                    "box": [round(v, 3) for v in truth_box(r.landmarks, (size, size))],
                    "landmarks": [[round(float(x), 4), round(float(y), 4)] for x, y in r.landmarks],
                    "params": asdict(params),
                }],
            })
            yield r.image

    video = out_dir / f"{name}.mp4"
    truth = out_dir / f"{name}.truth.json"
    write_video(video, frames(), fps, crf=crf)
    atomic_write_json(truth, {"fps": float(_fps_fraction(fps)), "size": [size, size], "frames": truth_frames})
    return video, truth
