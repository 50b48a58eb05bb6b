"""Extraction throughput (frames/s) on a phantom video, as JSON.

Three numbers:

* ``pipeline``: ``swap-extract`` with ``landmarks=given:truth.json``: decoding (twice), tracks,
  smoothing, crops, two hull masks and PNG writing; no network.
* ``fan``: the 2D-FAN landmark pass on given boxes (one face per frame), through
  :meth:`LandmarkDetector.landmarks_batch`. Uses random weights in a temporary
  ``TORCH_HOME`` unless real ones are installed (speed does not depend on the values).
* ``s3fd_forward``: the S3FD network's forward pass on one full frame (detection without its
  NMS post-processing, which random weights would flood).

Usage:
    python tools/bench_extract.py [--frames 48] [--frame-size 512] [--crop 256] [--device cpu]
                                  [--fan-frames 4] [--out FILE]
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
    a = ap.parse_args(argv)

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
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
