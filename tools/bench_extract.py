"""Extraction throughput (frames/s) on a phantom video, as JSON.

Three numbers:

* ``pipeline``: ``swap-extract`` with ``landmarks=given:truth.json``: decoding (twice), tracks,
  smoothing, crops, two hull masks and PNG writing; no network.
* ``fan``: the 2D-FAN landmark pass on given boxes (one face per frame), through
  :meth:`LandmarkDetector.landmarks_batch`. Uses random weights in a temporary
  ``TORCH_HOME`` unless real ones are installed (speed does not depend on the values).
* ``s3fd_forward``: the S3FD network's forward pass on one full frame (detection without its
  NMS post-processing, which random weights would flood).

``--plates exr`` measures instead extraction from a **2K ACEScg EXR sequence** (half float, ZIP,
phantom faces placed on a 2048×1080 plate, numbered from 1001; no network, landmarks given), at
each ``--oiio-threads`` setting (OpenImageIO's ``threads`` attribute: 1, or 0 for one per core):
``read`` (OpenImageIO decoding plus the colour-managed view, per frame), and ``pipeline`` for
8-bit sRGB crops (``crop_space=srgb``) and 16-bit ACEScct crops (``crop_space=acescct``).

Usage:
    python tools/bench_extract.py [--frames 48] [--frame-size 512] [--crop 256] [--device cpu]
                                  [--fan-frames 4] [--out FILE]
    python tools/bench_extract.py --plates exr [--frames 24] [--plate-size 2048x1080] [--crop 512]
                                  [--oiio-threads 1 0] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")


def _random_weights(home: Path) -> None:
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from progressive_swap.extract.detect import weight_files

    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    fan, sfd = list(weight_files("sfd"))
    torch.save(FAN(4).state_dict(), ckpt / fan)
    torch.save(s3fd().state_dict(), ckpt / sfd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--frame-size", type=int, default=512)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fan-frames", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plates", choices=["exr"], help="extraction from a 2K EXR sequence instead")
    ap.add_argument("--plate-size", default="2048x1080", help="WxH of the EXR plates")
    ap.add_argument("--oiio-threads", type=int, nargs="+", default=[1, 0],
                    help="OpenImageIO threads settings to time (0: one per core)")
    a = ap.parse_args(argv)
    if a.plates:
        return _write(bench_plates(a), a.out)

    import torch

    from progressive_swap.extract.detect import GivenLandmarks, LandmarkDetector, checkpoint_dir, weight_files
    from progressive_swap.extract.pipeline import ExtractOptions, extract
    from progressive_swap.footage.video import read_video
    from progressive_swap.phantom.renderer import sample_identity, sample_trajectory
    from progressive_swap.phantom.video import write_phantom_video

    res: dict = {"frames": a.frames, "frame_size": a.frame_size, "crop": a.crop, "device": a.device,
                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video, truth = write_phantom_video(tmp, "bench", sample_identity(7), sample_trajectory(7, a.frames, 24.0),
                                           a.frame_size, fps=24.0)
        t0 = time.perf_counter()
        s = extract(ExtractOptions(input=str(video), out=str(tmp / "set"), size=a.crop, landmarks=f"given:{truth}",
                                   progress=False))
        dt = time.perf_counter() - t0
        res["pipeline"] = {"frames_per_s": round(a.frames / dt, 2), "seconds": round(dt, 2),
                           "faces": s["faces_written"], "masks": 2}

        if not all((checkpoint_dir() / n).is_file() for n in weight_files("sfd")):
            os.environ["TORCH_HOME"] = str(tmp / "torch")
            _random_weights(tmp / "torch")
            res["weights"] = "random (speed only)"
        else:
            res["weights"] = "installed"
        det = LandmarkDetector(device=a.device, face_detector="sfd", batch_size=a.batch, flip_input=True,
                               allow_download=False)
        given = GivenLandmarks(truth)
        frames = [im for i, _, im in read_video(video) if i < a.fan_frames]
        boxes = [given.boxes(i) for i in range(len(frames))]
        det.landmarks_batch(frames[:1], boxes[:1])  # warm-up
        t0 = time.perf_counter()
        det.landmarks_batch(frames, boxes)
        if det.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        res["fan"] = {"frames_per_s": round(len(frames) / dt, 3), "flip_input": True, "frames_timed": len(frames)}

        net = det.fa.face_detector.face_detector
        x = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float().to(det.device)
        with torch.no_grad():
            net(x)
            t0 = time.perf_counter()
            for _ in range(2):
                net(x)
            if det.device.startswith("cuda"):
                torch.cuda.synchronize()
        res["s3fd_forward"] = {"frames_per_s": round(2 / (time.perf_counter() - t0), 3)}
    return _write(res, a.out)


def _write(res: dict, out: Path | None) -> int:
    text = json.dumps(res, indent=1)
    print(text)
    if out:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(out, text + "\n")
    return 0


def _cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags)


def bench_plates(a) -> dict:
    """Extraction from a 2K ACEScg EXR sequence: OpenImageIO reads and the pipeline, per threads setting."""
    import numpy as np
    import OpenImageIO as oiio

    from progressive_swap.extract.pipeline import ExtractOptions, extract
    from progressive_swap.footage import colour as CO
    from progressive_swap.footage import plates as P
    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    w, h = (int(v) for v in a.plate_size.lower().split("x"))
    res: dict = {"plates": "exr half ZIP, ACEScg", "plate_size": [w, h], "frames": a.frames, "crop": a.crop,
                 "cpu_count": os.cpu_count(), "cpu_flags": _cpu_flags(), "openimageio": oiio.__version__}
    ident, poses = sample_identity(7), sample_trajectory(7, a.frames, 24.0)
    colour = CO.plate_colour(".exr", "half")
    to_plate = CO._processor(colour.config, colour.view_space, colour.plate)
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seq = tmp / "plates"
        seq.mkdir()
        truth = []
        t0 = time.perf_counter()
        for k, pose in enumerate(poses):
            r = render(ident, pose, side)
            canvas = np.full((h, w, 3), 0.18, np.float32)
            canvas[y0:y0 + side, x0:x0 + side] = CO._apply(to_plate, r.image.astype(np.float32) / 255.0)
            spec = oiio.ImageSpec(w, h, 3, "half")
            spec.attribute("compression", "zip")
            out = oiio.ImageOutput.create(str(seq / f"plate.{1001 + k}.exr"))
            out.open(str(seq / f"plate.{1001 + k}.exr"), spec)
            out.write_image(np.ascontiguousarray(canvas))
            out.close()
            truth.append({"index": 1001 + k, "faces": [{"landmarks": (r.landmarks + (x0, y0)).tolist()}]})
        (tmp / "truth.json").write_text(json.dumps({"fps": 24, "size": [w, h], "frames": truth}))
        res["write_seconds"] = round(time.perf_counter() - t0, 2)
        res["mb_per_frame"] = round(sum(f.stat().st_size for f in seq.iterdir()) / a.frames / 2**20, 2)
        runs = []
        before = oiio.get_int_attribute("threads")
        for threads in a.oiio_threads:
            oiio.attribute("threads", int(threads))
            row: dict = {"oiio_threads": int(threads), "oiio_threads_used": oiio.get_int_attribute("threads")}
            files = sorted(seq.iterdir())
            t0 = time.perf_counter()
            for f in files:
                plate, _ = P.read_plate(f)
                colour.view(plate)
            row["read"] = {"frames_per_s": round(len(files) / (time.perf_counter() - t0), 2)}
            for space in ("srgb", "acescct"):
                t0 = time.perf_counter()
                s = extract(ExtractOptions(input=str(seq / "plate.####.exr"), out=str(tmp / f"set_{threads}_{space}"),
                                           size=a.crop, landmarks="given", landmarks_file=str(tmp / "truth.json"),
                                           crop_space=space, progress=False))
                dt = time.perf_counter() - t0
                row[f"pipeline_{space}"] = {"frames_per_s": round(a.frames / dt, 2), "seconds": round(dt, 2),
                                            "faces": s["faces_written"]}
            runs.append(row)
        oiio.attribute("threads", before)
        res["runs"] = runs
    return res


if __name__ == "__main__":
    raise SystemExit(main())
