"""Training the segmenter: loss, inference, held-out IoU and the training loop.

Conventions: :mod:`progressive_swap.masks.segment`.
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from progressive_swap.core.metrics import mask_iou as iou
from progressive_swap.masks.bisenet import BiSeNet
from progressive_swap.masks.segment_data import Face, MaskDataset, NoMasksError, resize_to, seed_worker
from progressive_swap.masks.weights import mask_from_logits


def segmentation_loss(
    logits: Sequence[torch.Tensor], target: torch.Tensor, kind: str = "dice+bce", aux_weight: float = 0.4
) -> torch.Tensor:
    """Binary-mask loss over the main and auxiliary heads (soft targets allowed).

    Args:
        logits: ``(main, aux16, aux32)`` each ``(B, 1, H, W)``.
        target: ``(B, 1, H, W)`` in [0, 1].
        kind: ``dice+bce`` or ``dice+focal``.
        aux_weight: weight of each auxiliary head's loss.
    """
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    if kind == "dice+bce":
        pix = F.binary_cross_entropy_with_logits
    elif kind == "dice+focal":
        pix = smp.losses.FocalLoss("binary")
    else:
        raise ValueError(f"unknown loss {kind!r}; choose dice+bce or dice+focal")
    total = target.new_zeros(())
    for k, z in enumerate(logits):
        total = total + (1.0 if k == 0 else aux_weight) * (dice(z, target) + pix(z, target))
    return total


@torch.no_grad()
def predict_masks(
    model: BiSeNet,
    images: Sequence[np.ndarray],
    input_size: int,
    indices: Sequence[int] = (0,),
    out_size: int | None = None,
) -> np.ndarray:
    """Soft masks for uint8 RGB crops, at their own resolution (or ``out_size``).

    The crops are resized to ``input_size`` for the network; its logits are resized back
    (bilinear) *before* the sigmoid/softmax, which keeps edges sharp.

    Returns:
        ``(B, S, S)`` float32 in [0, 1].
    """
    size = out_size or images[0].shape[0]
    dev = next(model.parameters()).device
    x = (
        torch.from_numpy(np.stack([resize_to(im, input_size) for im in images]))
        .to(dev)
        .permute(0, 3, 1, 2)
        .float()
        .div_(255)
    )
    z = model.eval()(x)
    if z.shape[-1] != size:
        z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
    return mask_from_logits(z, indices).float().cpu().numpy()


def evaluate(
    model: BiSeNet, faces: Sequence[Face], mask_name: str, input_size: int, batch: int = 8
) -> dict[str, float]:
    """IoU of predicted and true masks at each crop's native resolution.

    Returns:
        ``{"iou": mean per-face IoU, "iou_pooled": all pixels pooled, "faces": count, "size": S}``.
    """
    ious, inter, union, sizes = [], 0, 0, set()
    for s in range(0, len(faces), batch):
        chunk = faces[s : s + batch]
        imgs = [fs.image(i) for fs, i in chunk]
        preds = predict_masks(model, imgs, input_size)
        for (fs, i), p in zip(chunk, preds):
            t = fs.mask(i, mask_name, prefer_user=True)
            ious.append(iou(p, t))
            inter += int(np.logical_and(p > 0.5, t > 0.5).sum())
            union += int(np.logical_or(p > 0.5, t > 0.5).sum())
            sizes.add(fs.size)
    return {
        "iou": float(np.mean(ious)),
        "iou_pooled": inter / max(union, 1),
        "faces": len(faces),
        "size": max(sizes) if sizes else 0,
    }


def lr_factor(progress: float, warmup: float = 0.05) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warm-up, then cosine to 1 %."""
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    t = min(1.0, (progress - warmup) / (1.0 - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class TrainResult:
    """What :func:`train_segmenter` reports."""

    model: BiSeNet
    steps: int
    seconds: float
    before: dict[str, float]  # held-out metrics of the untrained model
    after: dict[str, float]
    losses: list[float]


def train_segmenter(
    model: BiSeNet,
    train: Sequence[Face],
    held_out: Sequence[Face],
    *,
    mask_name: str = "visible",
    size: int = 128,
    steps: int = 2000,
    batch: int = 8,
    lr: float = 2e-3,
    loss: str = "dice+bce",
    occluder_p: float = 0.5,
    workers: int = 0,
    max_minutes: float = 0.0,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a 1-class BiSeNet to predict ``mask_name`` (AdamW, warm-up + cosine schedule).

    Args:
        model: the network (``num_classes=1``); trained in place.
        train, held_out: faces from :func:`faces_with_mask` / :func:`split_faces`.
        size: training resolution (crops are resized to it); also the inference input size.
        steps: optimiser steps (the learning-rate schedule spans them).
        max_minutes: wall-time budget (0 = none); the schedule then follows whichever of
            steps or time runs out first, and training stops there.
        workers: DataLoader worker processes (0 = load in this process).
        log: called with a line every 50 steps.
        on_step: called with (steps done, steps) after each step (progress display).
    """
    if model.config.num_classes != 1:
        raise ValueError("train_segmenter trains binary masks: build BiSeNet(num_classes=1)")
    if len(train) < 2 or not held_out:
        raise NoMasksError(
            f"need at least 2 training faces and 1 held-out face with masks, got {len(train)} and {len(held_out)}"
        )
    torch.manual_seed(seed)
    ds = MaskDataset(train, mask_name, size, augment=True, occluder_p=occluder_p, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    dl = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        drop_last=len(ds) >= batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=gen,
        worker_init_fn=functools.partial(seed_worker, os.getpid()),
    )
    before = evaluate(model, held_out, mask_name, size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    losses: list[float] = []
    t0, step = time.time(), 0
    dev = next(model.parameters()).device
    model.train()
    while step < steps:
        for x, y in dl:
            if x.shape[0] < 2:  # BatchNorm on the pooled context needs 2 samples
                continue
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            # Progress counts steps or wall time, whichever is further: a time-limited run
            # still anneals to the end of its schedule.
            progress = step / steps
            if max_minutes:
                progress = max(progress, (time.time() - t0) / (60 * max_minutes))
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(progress)
            out = model(x, aux=True)
            lv = segmentation_loss(out, y, loss)
            opt.zero_grad(set_to_none=True)
            lv.backward()
            opt.step()
            losses.append(lv.item())
            step += 1
            if on_step:
                on_step(step, steps)
            if log and (step % 50 == 0 or step == steps):
                log(f"step {step}/{steps} loss {np.mean(losses[-50:]):.4f} ({time.time() - t0:.0f} s)")
            if step >= steps or (max_minutes and time.time() - t0 > 60 * max_minutes):
                steps = step
                break
    seconds = time.time() - t0
    model.eval()
    after = evaluate(model, held_out, mask_name, size)
    return TrainResult(model, step, seconds, before, after, losses)
