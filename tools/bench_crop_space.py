"""Which space should a model of float plates learn in: 8-bit crops of the sRGB view (``srgb``)
or 16-bit ACEScct crops (``acescct``)? Equal training on the same plates, JSON out.

The plates: two phantom identities rendered as ACEScg EXR sequences (half float), each frame
with a specular highlight on the nose (linear peak 3 to 8, far above the view's 1.0), as a lit
face on set has. Both identities are extracted twice (``crop_space=srgb`` and
``crop_space=acescct``, landmarks given) and ``recipe=demo`` (32 → 64 px) trains once on each
pair, same schedule and seed. On held-out frames of identity A, at the crops the export feeds
each model (``export/plate_layers.py: crop_working``):

* ``recon``: decoder A on A (what an un-swapped export returns), ``swap``: decoder B on A, judged
  against the phantom's true swap (B rendered in A's pose, with the same highlight);
* ``view_psnr``: PSNR of the output's sRGB view against the truth's, inside the face mask: what
  a viewer sees, highlights clipped in both;
* ``highlight_stops``: where the truth is above linear 1.5, the mean |log2(output / truth)| of
  the luminance in linear light: how many stops the highlight is off (an ``srgb`` model cannot
  exceed the view's 1.0);
* ``linear_rel_err``: mean relative error in linear light inside the face mask.

At ``--size 128`` (issue #34's measurement: crops of 128 px from 256 px plates) the model is a
design of ``tools/bench_efficiency.py`` (``--design``, default ``half``, the recipes' model) at its
CPU scale, trained 32 → 64 → 128 px on the images that ``--budget`` seconds of that design buy at
full size on an H100 (the study's schedule and shares, so a run's result does not depend on this
CPU or its load). The swap is then also judged with the identity measures of
``eval/quality.py`` on the sRGB views: ``identity_gain_db`` (swap PSNR minus that of A's face
recoloured to B's colours, inside B's face), ``feature_transfer`` and ``shape_transfer``.

Usage:
    python tools/bench_crop_space.py [--frames 200] [--held-out 16] [--scale 1.0] [--seed 0]
                                     [--size 64|128] [--design half] [--budget 50]
                                     [--spaces srgb acescct] [--work DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACES = ("srgb", "acescct")


def _plate(render, colour, gain: float) -> np.ndarray:
    """A rendered sRGB frame as an ACEScg plate with a specular highlight on the nose."""
    from progressive_swap.footage import colour as CO

    to_plate = CO._processor(colour.config, colour.view_space, colour.plate)
    lin = CO._apply(to_plate, render.image.astype(np.float32) / 255)
    cx, cy = render.landmarks[28:31].mean(0)  # the nose bridge
    r = 0.035 * (render.landmarks[16, 0] - render.landmarks[0, 0])
    side = render.image.shape[0]
    yy, xx = np.mgrid[0:side, 0:side]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)).astype(np.float32)
    return lin + (gain * blob * render.face_mask)[..., None]


def _write_exr(path: Path, rgb) -> None:
    import OpenImageIO as oiio

    spec = oiio.ImageSpec(rgb.shape[1], rgb.shape[0], 3, "half")
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(np.ascontiguousarray(rgb, np.float32))
    out.close()


def make_plates(work: Path, frames: int, held_out: int, seed: int, frame: int = 128) -> dict:
    """Two identities' EXR sequences (``frame`` px) with landmark files, the held-out truth for A,
    and a few training frames of each identity (``refs``: sRGB renders with their face masks)."""
    from progressive_swap.footage import colour as CO
    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory, true_swap

    colour = CO.plate_colour(".exr", "half")
    rng = np.random.default_rng(seed)
    ids = [sample_identity(1000 * seed + k) for k in range(2)]
    out: dict = {"train": [], "held": [], "refs": []}
    for k, ident in enumerate(ids):
        d = work / f"plates_{k}"
        d.mkdir(parents=True, exist_ok=True)
        poses = sample_trajectory(1000 * seed + k, frames + held_out, fps=25)
        truth = []
        refs = []
        for i, pose in enumerate(poses[:frames]):
            r = render(ident, pose, frame)
            _write_exr(d / f"p.{1001 + i}.exr", _plate(r, colour, rng.uniform(3, 8)))
            truth.append({"index": 1001 + i, "faces": [{"landmarks": r.landmarks.tolist()}]})
            if i < 16:
                refs.append((r.image, r.landmarks, r.visible_mask))
        out["refs"].append(refs)
        (work / f"truth_{k}.json").write_text(json.dumps({"fps": 25, "size": [frame, frame], "frames": truth}))
        out["train"].append((d / "p.####.exr", work / f"truth_{k}.json"))
        if k == 0:
            for pose in poses[frames:]:
                gain = rng.uniform(3, 8)
                a, b = render(ident, pose, frame), true_swap(ids[1], pose, frame)
                out["held"].append({"plate": _plate(a, colour, gain), "swap": _plate(b, colour, gain),
                                    "landmarks": a.landmarks, "mask": a.face_mask,
                                    "vis_a": a.visible_mask, "vis_b": b.visible_mask})
    return out


def evaluate(model_path: Path, held: list[dict], size: int = 64, refs: list | None = None) -> dict:
    """Recon (A→A) and swap (A→B) quality of one model on the held-out plates (see the module
    doc); with ``refs`` (``make_plates``) the swap's identity measures too."""
    import cv2

    from progressive_swap.core import align
    from progressive_swap.eval.quality import face_colour, identity_scores
    from progressive_swap.export import plate_layers as PL
    from progressive_swap.export.frames import FaceIn, FrameIn
    from progressive_swap.export.swapper import Swapper, load_model
    from progressive_swap.footage import colour as CO

    model, info = load_model(model_path, "cpu")
    colour = CO.plate_colour(".exr", "half").for_crops(info.crop_space)
    # each identity's sRGB-view colours on training frames: the recoloured-source reference's, for both spaces
    ref = np.asarray([face_colour(frames, info.face_type, size) for frames in refs]) if refs else None
    res: dict = {"crop_space": info.crop_space}
    lum = lambda x: x @ np.array([0.2722, 0.6741, 0.0537])  # noqa: E731 - AP1 luminance weights
    for name, decoder, key in (("recon", 0, "plate"), ("swap", 1, "swap")):
        psnr, stops, rel, ident = [], [], [], []
        for h in held:
            m = align.alignment_matrix(h["landmarks"], info.face_type)
            frame = FrameIn(0, 0.0, colour.view(h["plate"]), [FaceIn(m, 0, h["landmarks"])], h["plate"], None, colour)
            crop = PL.crop_working(frame, m, size)
            out, out_mask = Swapper(model, decoder, info.stage_res, info.alpha, source=0)(crop[None])
            lin = colour.to_plate(out[0])  # the layer's colour in the plate's space
            truth = align.warp_to_crop(h[key], m, size, cv2.INTER_AREA)
            mask = align.warp_to_crop(h["mask"], m, size, cv2.INTER_LINEAR) > 0.5
            a, b = colour.view(lin).astype(np.float64), colour.view(truth).astype(np.float64)
            mse = ((a - b) ** 2)[mask].mean()
            psnr.append(10 * np.log10(255.0**2 / max(mse, 1e-10)))
            hot = (lum(truth) > 1.5) & mask
            if hot.any():
                stops.append(float(np.abs(np.log2(np.maximum(lum(lin)[hot], 1e-4) / lum(truth)[hot])).mean()))
            rel.append(float((np.abs(lin - truth) / np.maximum(np.abs(truth), 0.02))[mask].mean()))
            if name == "swap" and ref is not None:
                src = colour.view(align.warp_to_crop(h["plate"], m, size, cv2.INTER_AREA)).astype(np.float32) / 255
                vis_a, vis_b = (align.warp_to_crop(h[k], m, size, cv2.INTER_LINEAR) for k in ("vis_a", "vis_b"))
                recoloured = np.clip((src - ref[0, 0]) / ref[0, 1] * ref[1, 1] + ref[1, 0], 0, 1)
                ident.append(identity_scores((a / 255).astype(np.float32), out_mask[0], (b / 255).astype(np.float32),
                                             recoloured, vis_a, vis_b, src))
        res[name] = {"view_psnr": round(float(np.mean(psnr)), 3), "highlight_stops": round(float(np.mean(stops)), 3),
                     "linear_rel_err": round(float(np.mean(rel)), 4), "frames": len(held),
                     "frames_with_highlight": len(stops)}
        for k in ("identity_gain_db", "feature_transfer", "shape_transfer"):
            if ident:
                res[name][k] = round(float(np.nanmean([d[k] for d in ident])), 4)
    return res


def schedule(a) -> tuple[list[str], dict]:
    """The training overrides of one run: the demo's schedule (``--size 64``, times ``--scale``),
    or a study design at its CPU scale on what ``--budget`` H100 seconds buy at full size."""
    if a.size == 64:
        imgs = [max(16, int(n * a.scale)) for n in (10000, 3500)]
        return [f"schedule.stages.0.images={imgs[0]}", f"schedule.stages.1.images={imgs[1]}"], {"images": imgs}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_efficiency as BE

    from progressive_swap.cli.config import cpu_precision_by_flags

    full = BE.design(a.design)
    arch = BE.scaled(full)
    train = arch.pop("train", {})
    images = BE.images_for(a.budget, BE.per_image(full, "h100"))
    over = [f"model.{k}={v}" for k, v in arch.items()] + [f"{k}={v}" for k, v in train.items()]
    over += [BE._stages(images), f"trainer.precision={cpu_precision_by_flags()}", "data.num_workers=0",
             "checkpoint.every_minutes=1000"]
    return over, {"design": a.design, "budget_h100_s": a.budget, "images_per_phase": images, "images": sum(images)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="training frames per identity")
    ap.add_argument("--held-out", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, choices=(64, 128), help="crop side (plates are twice it)")
    ap.add_argument("--scale", type=float, default=1.0, help="--size 64: multiplies the demo schedule's images")
    ap.add_argument("--design", default="half", help="--size 128: a tools/bench_efficiency.py candidate")
    ap.add_argument("--budget", type=float, default=50.0, help="--size 128: full-size H100 seconds of training")
    ap.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--reuse", action="store_true",
                    help="with --work: evaluate a space's finished model there instead of training it again")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    import torch

    from progressive_swap.cli import train as train_cli
    from progressive_swap.extract.pipeline import ExtractOptions, extract

    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        data = make_plates(work, a.frames, a.held_out, a.seed, 2 * a.size)
        over, sched = schedule(a)
        res: dict = {"frames": a.frames, "held_out": a.held_out, "scale": a.scale, "seed": a.seed,
                     "plate": f"{2 * a.size} px ACEScg EXR, nose highlight 3-8 linear", "crop": a.size,
                     "schedule": sched, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "cpu_precision": os.environ.get("PROGRESSIVE_SWAP_CPU_PRECISION", "auto"),
                     "plates_seconds": round(time.perf_counter() - t0, 1), "results": {}}
        for space in a.spaces:
            sets = []
            for k, (pattern, truth) in enumerate(data["train"]):
                out = work / f"set_{space}_{k}"
                extract(ExtractOptions(input=str(pattern), out=str(out), size=a.size, landmarks="given",
                                       landmarks_file=str(truth), crop_space=space, identity=f"id{k}", progress=False))
                sets.append(str(out))
            run = work / f"run_{space}"
            argv_ = ["recipe=demo", "data=facesets", f"data.faces=[{sets[0]},{sets[1]}]", f"out={run}",
                     "preview_every=0", f"seed={a.seed}", "progress_every=60", "schedule_seconds=null", *over]
            c0, w0 = time.process_time(), time.perf_counter()
            reused = a.reuse and (run / "model.safetensors").is_file()  # a finished run of an interrupted bench
            if not reused and train_cli.main(argv_) != 0:
                raise SystemExit(f"training on {space} crops failed")
            row = evaluate(run / "model.safetensors", data["held"], a.size, data["refs"] if a.size > 64 else None)
            row["train_cpu_s"] = None if reused else round(time.process_time() - c0, 1)
            row["train_wall_s"] = None if reused else round(time.perf_counter() - w0, 1)
            row["reused"] = bool(reused)
            res["results"][space] = row
    from progressive_swap.core.io import print_json

    print_json(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
