"""Benchmark: train the occlusion segmenter from scratch on phantom faces, measure held-out IoU.

Renders phantom face sets with occluders (training identities from ``seed``; held-out
identities from another seed, so no held-out identity is seen in training), trains a
binary ``visible``-mask BiSeNet at ``--train-size`` for ``--minutes`` of wall time, and measures
IoU of the predicted mask against the exact ``visible`` mask at the crops' native
resolution (``--crop``). Prints one JSON object (also written to ``--json``).

    python tools/bench_masks.py --crop 256 --train-size 128 --minutes 15 --json bench_masks.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="checkpoints/bench_masks", help="data and model directory")
    ap.add_argument("--crop", type=int, default=256, help="face-set crop size (IoU is measured at it)")
    ap.add_argument("--train-size", type=int, default=128, help="network input size")
    ap.add_argument("--identities", type=int, default=8)
    ap.add_argument("--faces", type=int, default=100, help="faces per training identity")
    ap.add_argument("--val-identities", type=int, default=2)
    ap.add_argument("--val-faces", type=int, default=40)
    ap.add_argument("--occluders", type=float, default=0.6)
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    ap.add_argument("--steps", type=int, default=3000, help="schedule length (training stops at --minutes)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--encoder", default="tu-mobilenetv3_small_100")
    ap.add_argument("--channels", type=int, default=64, help="context/fusion width (aux heads: half)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from progressive_swap import faceset
    from progressive_swap.masks import segment
    from progressive_swap.masks.bisenet import BiSeNet
    from progressive_swap.masks.weights import save_segmenter
    from progressive_swap.phantom.dataset import generate_phantom_dataset

    work = Path(a.work)
    t0 = time.time()
    sets = {}
    for split, ids, faces, seed in (("train", a.identities, a.faces, 0), ("val", a.val_identities, a.val_faces, 977)):
        out = work / f"{split}_{a.crop}_{ids}x{faces}"
        if not (out / "faces" / f"id{ids - 1}" / "faceset.json").exists():
            generate_phantom_dataset(out, identities=ids, faces=faces, size=a.crop, videos=0, occluders=a.occluders,
                                     seed=seed, progress=False)
        sets[split] = [faceset.open(out / "faces" / f"id{i}") for i in range(ids)]
    render_s = time.time() - t0

    train = segment.faces_with_mask(sets["train"], "visible")
    held = segment.faces_with_mask(sets["val"], "visible")
    torch.manual_seed(0)
    model = BiSeNet(1, a.encoder, a.channels, a.channels, a.channels // 2)
    r = segment.train_segmenter(
        model,
        train,
        held,
        size=a.train_size,
        steps=a.steps,
        batch=a.batch,
        lr=a.lr,
        workers=a.workers,
        max_minutes=a.minutes,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    occluded = [f for f in held if f[0].mask(f[1], "occluder").max() > 0.5]
    occ = segment.evaluate(r.model, occluded, "visible", a.train_size) if occluded else None
    result = {
        "task": "visible-face mask (face minus occluders), phantom, held-out identities",
        "crop": a.crop,
        "train_size": a.train_size,
        "iou_measured_at": a.crop,
        "train_faces": len(train),
        "held_out_faces": len(held),
        "held_out_identities": a.val_identities,
        "occluders": a.occluders,
        "encoder": a.encoder,
        "channels": a.channels,
        "params_m": round(sum(p.numel() for p in r.model.parameters()) / 1e6, 3),
        "steps": r.steps,
        "batch": a.batch,
        "train_seconds": round(r.seconds, 1),
        "render_seconds": round(render_s, 1),
        "iou_untrained": round(r.before["iou"], 4),
        "iou": round(r.after["iou"], 4),
        "iou_pooled": round(r.after["iou_pooled"], 4),
        "iou_occluded_faces": round(occ["iou"], 4) if occ else None,
        "occluded_faces": len(occluded),
        "goal": "iou >= 0.95 at 256 px",
        "goal_met": bool(r.after["iou"] >= 0.95 and a.crop >= 256),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "final_loss": round(sum(r.losses[-50:]) / max(len(r.losses[-50:]), 1), 4),
    }
    model_path = work / f"segmenter_{a.train_size}.safetensors"
    save_segmenter(r.model, model_path, labels=["visible"], input_size=a.train_size, metadata={"bench": result})
    result["model"] = str(model_path)
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(Path(a.json), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
