"""Video frame sources and sinks through PyAV (FFmpeg).

Frames are uint8 ``(H, W, 3)`` RGB numpy arrays. Every decoded frame carries its index in
decoding order and its presentation time in seconds from the stream's pts, so variable
frame-rate footage keeps correct timing (never assume ``index / fps``).
"""
from __future__ import annotations

import contextlib
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from progressive_swap.core.io import atomic_path


def fps_fraction(fps: float | Fraction) -> Fraction:
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
    rate = fps_fraction(fps)
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
