"""The segmenter's data: faces that have a given mask kind, the held-out split, augmentation with
pasted occluders, and the dataset its loader reads.

Conventions: :mod:`progressive_swap.masks.segment`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from progressive_swap.core import procs
from progressive_swap.faceset import USER_PREFIX, FaceSet
from progressive_swap.masks.occluders import paste_occluder

Face = tuple[FaceSet, int]  # a face set and a row in it


class NoMasksError(ValueError):
    """The face sets hold no masks of the requested kind (nothing to train on)."""


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


def resize_to(a: np.ndarray, size: int) -> np.ndarray:
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
        self.rng = np.random.default_rng(seed)  # reseeded per worker by :func:`seed_worker`
        self._aug = build_augment(seed) if augment else None

    def __len__(self) -> int:
        return len(self.faces)

    def _load(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        fs, i = self.faces[j]
        img, m = fs.image(i), fs.mask(i, self.mask_name, prefer_user=True)
        if m is None:
            raise NoMasksError(f"face {fs.ids[i]!r} of {str(fs.root)!r} has no {self.mask_name!r} mask")
        if self.size:
            img, m = resize_to(img, self.size), resize_to(m, self.size)
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


def seed_worker(owner_pid: int, worker_id: int) -> None:
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
