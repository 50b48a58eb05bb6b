"""Occlusion-aware face masks: train a BiSeNet on face sets, apply it, import painted masks.

* **Training** (:func:`train_segmenter`) reads face crops and a ground-truth mask kind from face
  sets (the phantom's ``visible`` = face minus occluders; a user's painted ``user_<kind>``
  mask wins over the automatic one). Augmentation is albumentations plus random occluders
  pasted over the face (:func:`paste_occluder`), which also cut the target mask. The loss is
  smp's Dice plus BCE (or focal) on the main head and, down-weighted, on the two auxiliary
  heads. IoU is measured on held-out faces at their native resolution.
* **Applying** (:func:`apply_to_faceset`) writes soft masks at each crop's native resolution
  (16-bit PNG, lossless). It never writes a ``user_*`` mask; painted masks are combined in
  by union or subtraction rules. :func:`apply_hulls` writes the extractor's landmark hull masks
  into a face set made without them.

Convention: images uint8 ``(S, S, 3)`` RGB at numpy boundaries, float ``(B, 3, H, W)`` in
``[0, 1]`` in torch; masks float32 in ``[0, 1]``, 1 = visible face.
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from progressive_swap.core import align, procs
from progressive_swap.core.metrics import mask_iou as iou
from progressive_swap.faceset import USER_PREFIX, FaceSet
from progressive_swap.masks.bisenet import BiSeNet
from progressive_swap.masks.hull import LANDMARK_MASKS, landmark_mask
from progressive_swap.masks.occluders import paste_occluder, paste_occluder_alpha  # noqa: F401 (part of this module's API)
from progressive_swap.masks.weights import mask_from_logits

Face = tuple[FaceSet, int]  # a face set and a row in it


class NoMasksError(ValueError):
    """The face sets hold no masks of the requested kind (nothing to train on)."""


# ---------------------------------------------------------------------- data


def faces_with_mask(sets: Sequence[FaceSet], mask_name: str) -> list[Face]:
    """Every face that has mask ``mask_name`` (or the user's ``user_<mask_name>``).

    Raises:
        NoMasksError: none has; the message names the masks the sets do have.
    """
    out: list[Face] = []
    for fs in sets:
        present: set[str] = set()
        for n in (mask_name, USER_PREFIX + mask_name):
            if n in fs.mask_names and len(fs):
                folder = fs.mask_path(0, n).parent  # one listing per kind, not one stat per face
                present.update(Path(e).stem for e in os.listdir(folder) if e.endswith(".png") and not e.startswith("."))
        out.extend((fs, i) for i, face_id in enumerate(fs.ids) if face_id in present)
    if not out:
        have = sorted({n for fs in sets for n in fs.mask_names})
        where = ", ".join(str(fs.root) for fs in sets)
        raise NoMasksError(
            f"no {mask_name!r} masks in {where} (masks present: {', '.join(have) or 'none'}); "
            "choose mask=NAME, or paint masks and add them with "
            f"'swap-mask import FACESET dir=PNG_DIR name={mask_name}'"
        )
    return out


def split_faces(faces: list[Face], fraction: float, seed: int = 0) -> tuple[list[Face], list[Face]]:
    """Random ``(train, held_out)`` split; held-out gets ``fraction`` of the faces (at least 1)."""
    if len(faces) < 2:
        raise NoMasksError(f"need at least 2 faces with masks to train and evaluate, got {len(faces)}")
    order = np.random.default_rng(seed).permutation(len(faces))
    k = min(len(faces) - 1, max(1, round(fraction * len(faces))))
    return [faces[j] for j in order[k:]], [faces[j] for j in order[:k]]


def build_augment(seed: int | None = None) -> A.Compose:
    """Geometric and photometric augmentation; masks follow the geometry (bilinear, soft)."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.85, 1.15),
                translate_percent=(-0.06, 0.06),
                rotate=(-20, 20),
                border_mode=cv2.BORDER_REFLECT_101,
                mask_interpolation=cv2.INTER_LINEAR,
                p=0.7,
            ),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8),
            A.OneOf(
                [
                    A.GaussianBlur(blur_limit=(3, 5)),
                    A.MotionBlur(blur_limit=(3, 7)),
                    A.GaussNoise(std_range=(0.02, 0.08)),
                    A.ImageCompression(quality_range=(40, 90)),
                ],
                p=0.4,
            ),
            # Rectangular "occluders" in random noise; the face under them is not visible.
            A.CoarseDropout(
                num_holes_range=(1, 2),
                hole_height_range=(0.05, 0.2),
                hole_width_range=(0.05, 0.2),
                fill="random",
                fill_mask=0.0,
                p=0.2,
            ),
        ],
        seed=seed,
    )


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[0] == size and a.shape[1] == size:
        return a
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA if a.shape[0] > size else cv2.INTER_LINEAR)


class MaskDataset(Dataset):
    """``(image (3, H, W) float [0, 1], mask (1, H, W) float [0, 1])`` pairs at ``size``.

    Args:
        faces: faces from :func:`faces_with_mask`.
        mask_name: the target kind; a user's ``user_<mask_name>`` is preferred.
        size: side the pairs are resized to; ``None`` keeps each set's native size.
        augment: apply :func:`build_augment` and, with probability ``occluder_p``,
            :func:`paste_occluder`.
    """

    def __init__(
        self,
        faces: Sequence[Face],
        mask_name: str,
        size: int | None,
        augment: bool = False,
        occluder_p: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.faces = list(faces)
        self.mask_name, self.size, self.augment, self.occluder_p = mask_name, size, augment, occluder_p
        self.rng = np.random.default_rng(seed)  # reseeded per worker by :func:`_seed_worker`
        self._aug = build_augment(seed) if augment else None

    def __len__(self) -> int:
        return len(self.faces)

    def _load(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        fs, i = self.faces[j]
        img, m = fs.image(i), fs.mask(i, self.mask_name, prefer_user=True)
        if m is None:
            raise NoMasksError(f"face {fs.ids[i]!r} of {str(fs.root)!r} has no {self.mask_name!r} mask")
        if self.size:
            img, m = _resize(img, self.size), _resize(m, self.size)
        return img, m

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, m = self._load(j)
        if self._aug is not None:
            rng = self.rng
            if rng.random() < self.occluder_p:
                other = self._load(int(rng.integers(len(self))))[0] if rng.random() < 0.3 else None
                img, m = paste_occluder(img, m, rng, other)
            r = self._aug(image=img, mask=m)
            img, m = r["image"], r["mask"]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        y = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)).clamp_(0, 1)[None]
        return x, y


def _seed_worker(owner_pid: int, worker_id: int) -> None:
    """Give each DataLoader worker its own occluder stream (a forked copy would repeat it).

    The worker also ends with ``owner_pid``, the process that trains: if that one is killed
    (SIGKILL included), the worker must not live on holding its memory.
    """
    procs.serve(owner_pid)
    info = torch.utils.data.get_worker_info()
    cv2.setNumThreads(1)  # workers run in parallel already; more threads only contend
    info.dataset.rng = np.random.default_rng([info.seed % 2**32, worker_id])
    if info.dataset._aug is not None:
        info.dataset._aug.set_random_seed(info.seed % 2**32)


# ---------------------------------------------------------------------- loss and metric


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


# ---------------------------------------------------------------------- inference


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
        torch.from_numpy(np.stack([_resize(im, input_size) for im in images]))
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


# ---------------------------------------------------------------------- training


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
        worker_init_fn=functools.partial(_seed_worker, os.getpid()),
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


# ---------------------------------------------------------------------- applying and importing


def combine_masks(
    fs: FaceSet,
    i: int,
    pred: np.ndarray,
    union: Sequence[str] = (),
    subtract: Sequence[str] = (),
    intersect: Sequence[str] = (),
) -> np.ndarray:
    """``pred`` ∪ union masks, ∩ intersect masks, minus subtract masks (soft: max, product, ``*(1-m)``).

    Masks a face does not have are skipped.
    """
    m = pred
    for name in union:
        u = fs.mask(i, name)
        if u is not None:
            m = np.maximum(m, u)
    for name in intersect:
        u = fs.mask(i, name)
        if u is not None:
            m = m * u
    for name in subtract:
        u = fs.mask(i, name)
        if u is not None:
            m = m * (1.0 - u)
    return np.clip(m, 0, 1).astype(np.float32)


def apply_to_faceset(
    fs: FaceSet,
    model: BiSeNet,
    input_size: int,
    *,
    indices: Sequence[int] = (0,),
    name: str = "segment",
    union: Sequence[str] = (),
    subtract: Sequence[str] = (),
    intersect: Sequence[str] = (),
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the model's soft mask of every face as mask ``name`` (native resolution, 16-bit).

    ``user_*`` masks are never written: a hand-edited ``user_<name>`` stays as it is, and
    readers asking ``fs.mask(i, name, prefer_user=True)`` keep getting it after any rerun.

    Returns:
        ``{"written": n, "with_user_edit": faces that have user_<name>, "name": name}``.
    """
    if name.startswith(USER_PREFIX):
        raise ValueError(f"mask name {name!r} is reserved for hand-edited masks; choose another name")
    for n in (*union, *subtract, *intersect):
        if n == name:
            raise ValueError(f"mask {name!r} cannot be combined with itself")
    user = USER_PREFIX + name
    written = edited = 0
    for s in range(0, len(fs), batch):
        rows = list(range(s, min(s + batch, len(fs))))
        preds = predict_masks(model, [fs.image(i) for i in rows], input_size, indices, fs.size)
        for i, p in zip(rows, preds):
            fs.write_mask(i, name, combine_masks(fs, i, p, union, subtract, intersect))
            written += 1
            edited += fs.has_mask(i, user)
        if progress:
            progress(rows[-1] + 1, len(fs))
    return {"written": written, "with_user_edit": edited, "name": name}


def apply_hulls(
    fs: FaceSet,
    kinds: Sequence[str] = LANDMARK_MASKS,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the landmark hull masks of every face, exactly as the extractor draws them.

    Each face's stored (smoothed) frame landmarks go through its alignment matrix into crop
    pixels, and :func:`~progressive_swap.masks.hull.landmark_mask` draws the hull at the set's
    crop size with the border rule: the same masks an extraction with ``masks=true`` writes.
    Each file is written atomically; ``user_*`` masks are never touched.

    Args:
        fs: the face set.
        kinds: hull kinds to write (``components``, ``extended``).
        progress: called with (faces done, faces) after each face.

    Returns:
        ``{"written": faces, "names": kinds}``.
    """
    bad = [k for k in kinds if k not in LANDMARK_MASKS]
    if bad:
        raise ValueError(f"unknown hull {bad[0]!r}; choose from {', '.join(LANDMARK_MASKS)}")
    lms, mats = fs.landmarks, fs.matrices
    for i in range(len(fs)):
        lm_crop = align.transform_points(lms[i], align.crop_matrix(mats[i], fs.size))
        for kind in kinds:
            fs.write_mask(i, kind, landmark_mask(lm_crop, fs.size, kind))
        if progress:
            progress(i + 1, len(fs))
    return {"written": len(fs), "names": list(kinds)}


def read_mask_png(path: str | Path, size: int) -> np.ndarray:
    """A painted mask file (8/16-bit gray, or RGB(A): alpha if present, else luminance) as float32 ``(size, size)``."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read mask image {path}")
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 3:
        raw = raw[..., 3] if raw.shape[2] == 4 else cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
    m = raw.astype(np.float32) / scale
    return np.clip(_resize(m, size), 0, 1)


def import_user_masks(fs: FaceSet, directory: str | Path, name: str = "segment") -> dict[str, Any]:
    """Store painted PNGs ``<face id>.png`` from ``directory`` as ``user_<name>`` masks.

    Files are resized to the crop's native size if needed. Returns counts and up to 5
    file names that match no face.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"mask directory not found: {directory}")
    name = name[len(USER_PREFIX) :] if name.startswith(USER_PREFIX) else name
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    unknown, ready = [], []
    for p in files:  # read (and so check) every file before writing any: a bad one leaves the set as it was
        try:
            i = fs.index_of(p.stem)
        except (KeyError, ValueError):
            unknown.append(p.name)
            continue
        ready.append((i, read_mask_png(p, fs.size)))
    for i, m in ready:
        fs.write_mask(i, name, m, user=True)
    imported = len(ready)
    if files and not imported:
        raise ValueError(
            f"none of the {len(files)} PNG files in {directory} is named after a face id of {fs.root} "
            f"(e.g. {fs.ids[0]}.png)"
        )
    if not files:
        raise ValueError(f"no PNG files in {directory}")
    return {
        "imported": imported,
        "unmatched": len(unknown),
        "unmatched_examples": unknown[:5],
        "name": USER_PREFIX + name,
    }
