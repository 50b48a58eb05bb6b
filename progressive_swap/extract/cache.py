"""The detection cache: one ``det_<start>.npz`` per ``chunk`` frames under ``OUT/.extract/<source-key>/``,
each written atomically, so a rerun continues at the first missing chunk."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from progressive_swap.core.io import atomic_write
from progressive_swap.extract.detect import (
    Face,
)

CACHE_VERSION = 1

def chunk_path(work: Path, start: int) -> Path:
    return work / f"det_{start:09d}.npz"


def write_chunk(work: Path, start: int, frames: list[tuple[int, float, int, int]], faces: list[tuple[int, Face]],
                 eof: bool, problems: list[str]) -> None:
    m = len(faces)
    arrays = {
        "frame_index": np.array([f[0] for f in frames], np.int64),
        "time": np.array([f[1] for f in frames], np.float64),
        "frame_size": np.array([(f[2], f[3]) for f in frames], np.int32).reshape(-1, 2),
        "face_frame": np.array([i for i, _ in faces], np.int64),
        "box": np.array([f.box for _, f in faces], np.float64).reshape(m, 4),
        "score": np.array([f.score for _, f in faces], np.float64),
        "landmarks": np.array([f.landmarks for _, f in faces], np.float64).reshape(m, 68, 2),
        "meta": np.frombuffer(json.dumps({
            "version": CACHE_VERSION, "start": start, "eof": eof, "problems": problems,
            "identity": [f.identity for _, f in faces],
        }).encode(), np.uint8),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(chunk_path(work, start)) as f:
        f.write(buf.getvalue())


def read_chunks(work: Path, chunk: int) -> tuple[list[dict], bool]:
    """Contiguous cache chunks from frame 0; and whether the last one marks the end."""
    out: list[dict] = []
    start = 0
    while True:
        p = chunk_path(work, start)
        if not p.is_file():
            return out, False
        try:
            with np.load(p) as z:
                d = {k: z[k] for k in z.files}
            meta = json.loads(d.pop("meta").tobytes())
        except Exception:  # noqa: BLE001 - a damaged cache file is just redone
            p.unlink(missing_ok=True)
            return out, False
        d.update(meta)
        out.append(d)
        if meta["eof"]:
            return out, True
        start += chunk


def read_chunk(work: Path, start: int) -> dict:
    with np.load(chunk_path(work, start)) as z:
        d = {k: z[k] for k in z.files}
    d.update(json.loads(d.pop("meta").tobytes()))
    return d
