"""Benchmark the face-set format: open time at 100k faces, and bytes per face PNG vs JPEG.

Usage:
    python tools/bench_faceset.py [--faces 100000] [--batch 256] [--size 1024] [--out FILE]

Open time: the index is written directly (``faceset_index.write_shard`` with random columns)
without image files, since opening reads only ``faceset.json`` and ``index/``; writing 100k
real images would take minutes and measure the disk, not the format. Two layouts are timed:
one compacted shard (what ``FaceSetWriter.close()``/``compact()`` leave) and one shard per
``--batch`` faces (an extractor that crashed before closing). Times are warm page cache, best
of ``--repeat``.

Bytes per face: one realistic ``--size`` crop (a phantom face if ``data.phantom.render``
exists, else a smooth synthetic image with fine noise) encoded as the writer does (PNG at
the default compression level, JPEG quality 95). Prints JSON; ``--out`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from progressive_swap import faceset
from progressive_swap.faceset import index as fx
from progressive_swap.faceset.format import decode_image, encode_image, encode_mask, make_header


def build_index(root: Path, n: int, batch: int, seed: int = 0) -> None:
    """A face set with ``n`` index entries (and no images), in shards of ``batch`` rows."""
    faceset.create(root, face_type="whole", size=1024, identity="A").close()
    rng = np.random.default_rng(seed)
    for k, start in enumerate(range(0, n, batch)):
        m = min(batch, n - start)
        cols = fx.empty_columns(m)
        cols["frame_index"][:] = np.arange(start, start + m)
        cols["time"][:] = cols["frame_index"] / 24.0
        cols["track"][:] = 0
        cols["frame_size"][:] = (3840, 2160)
        cols["matrix"][:] = rng.normal(size=(m, 2, 3))
        cols["landmarks"][:] = rng.uniform(0, 2000, (m, 68, 2))
        cols["landmarks_raw"][:] = cols["landmarks"] + rng.normal(size=(m, 68, 2))
        cols["has_raw"][:] = True
        strings = {
            "ids": [f"shot010_v003.mov_f{start + i:07d}_0" for i in range(m)],
            "sources": ["/footage/shot010/shot010_v003.mov"],
            "identities": ["A"],
            "extra": {},
        }
        fx.write_shard(root / "index" / fx.shard_filename(k), cols, strings)


def time_open(root: Path, repeat: int) -> dict[str, float]:
    best_open, best_lm = float("inf"), float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fs = faceset.open(root)
        t1 = time.perf_counter()
        _ = fs.landmarks_aligned
        t2 = time.perf_counter()
        best_open, best_lm = min(best_open, t1 - t0), min(best_lm, t2 - t1)
    t0 = time.perf_counter()
    faceset.open_writer(root).close(compact=False)
    resume = time.perf_counter() - t0
    return {"faces": len(fs), "shards": fs.shard_count, "open_s": round(best_open, 4),
            "first_landmarks_aligned_s": round(best_lm, 4), "writer_resume_s": round(resume, 4)}


def realistic_face(size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """A ``(size, size, 3)`` uint8 RGB aligned phantom face crop (fine skin texture included),
    rendered in a frame twice the crop's size and aligned with the shared alignment."""
    from progressive_swap.core import align
    from progressive_swap.phantom.renderer import render, sample_frame, sample_identity

    r = render(sample_identity(seed), sample_frame(seed), 2 * size)
    m = align.alignment_matrix(r.landmarks, "whole")
    return align.warp_to_crop(r.image, m, size), "phantom face, whole crop"


def bytes_per_face(size: int) -> dict[str, object]:
    img, origin = realistic_face(size)
    out: dict[str, object] = {"size": size, "image": origin}
    for fmt, quality, level in (("png", 95, 1), ("png", 95, 6), ("jpg", 95, 1), ("jpg", 100, 1)):
        header = make_header("whole", size, fmt, quality, level, None)
        t0 = time.perf_counter()
        data = encode_image(img, size, header)
        t1 = time.perf_counter()
        back = decode_image(data, size, "bench")
        t2 = time.perf_counter()
        key = f"png_level{level}" if fmt == "png" else f"jpeg_q{quality}"
        out[key] = {"bytes": len(data), "encode_ms": round(1e3 * (t1 - t0), 1),
                    "decode_ms": round(1e3 * (t2 - t1), 1),
                    "max_abs_err": int(np.abs(back.astype(int) - img).max())}
    mask = cv2.GaussianBlur(
        (np.hypot(*(np.mgrid[0:size, 0:size] / size - 0.5)) < 0.35).astype(np.float32), (0, 0), size / 100
    )
    out["mask_png16_bytes"] = len(encode_mask(mask, size))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=256, help="faces per shard in the uncompacted layout")
    ap.add_argument("--size", type=int, default=1024, help="crop size for bytes per face")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result: dict[str, object] = {"machine": platform.platform(), "python": sys.version.split()[0]}
    tmp = Path(tempfile.mkdtemp(prefix="bench_faceset_"))
    try:
        root = tmp / "set"
        t0 = time.perf_counter()
        build_index(root, args.faces, args.batch)
        build_s = time.perf_counter() - t0
        result["open_uncompacted"] = {**time_open(root, args.repeat), "batch": args.batch}
        t0 = time.perf_counter()
        with faceset.open_writer(root) as w:
            w.compact()
        result["compact_s"] = round(time.perf_counter() - t0, 3)
        result["open_compacted"] = time_open(root, args.repeat)
        result["index_bytes_per_face"] = round(
            sum(p.stat().st_size for p in (root / "index").iterdir()) / args.faces, 1
        )
        result["build_index_s"] = round(build_s, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["bytes_per_face"] = bytes_per_face(args.size)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
