"""Phantom videos with ground truth: an mp4 and its ``<name>.truth.json``.

The truth file (format in ``docs/phantom.md``) is what the extractor accepts as
``landmarks=given landmarks_file=FILE``.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np

from progressive_swap.core.io import atomic_write_json
from progressive_swap.footage.video import fps_fraction, write_video
from progressive_swap.phantom.params import FrameParams, Identity
from progressive_swap.phantom.renderer import render

BOX_PAD = 0.1
"""Truth boxes are the landmarks' bounding box grown by this fraction of its longer side on
every side (then clipped to the frame)."""


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
    atomic_write_json(truth, {"fps": float(fps_fraction(fps)), "size": [size, size], "frames": truth_frames})
    return video, truth
