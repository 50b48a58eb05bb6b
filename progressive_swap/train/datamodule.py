"""Training data: one face set per identity, served in batches that follow the growth plan.

Each item is a *comb sample*: one face of every identity, at the resolution of the batch it
belongs to. Which face, and how it is colour-augmented, is a pure function of the global
sample index and the seed. The batch sampler walks the :class:`GrowthSchedule` from a start
batch, so a resumed run continues with exactly the data it would have seen.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from progressive_swap import faceset as fs
from progressive_swap.core import procs
from progressive_swap.core.landmarks import face_type as face_type_of
from progressive_swap.footage.colour import frame_in_crop_space
from progressive_swap.masks.hull import LANDMARK_MASKS, landmark_mask, region_masks
from progressive_swap.masks.occluders import paste_occluder_alpha
from progressive_swap.phantom.dataset import DEFAULT_FACES, generate_phantom_dataset
from progressive_swap.train.augment import photometric
from progressive_swap.train.growth import GrowthSchedule, mix_seed


def cache_dir() -> Path:
    """Where generated data (the phantom) is cached: ``$PROGRESSIVE_SWAP_CACHE`` or ``~/.cache/progressive_swap``."""
    env = os.environ.get("PROGRESSIVE_SWAP_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "progressive_swap"


def model_crop_space(spaces: Sequence[str]) -> str:
    """The one crop space a model of face sets of ``spaces`` learns in: ``acescct`` when any set
    holds ACEScct crops (a plate's, with its highlights), whose values an 8-bit ``srgb`` set's
    pictures are converted to as they load (nothing of them is lost: ACEScct holds all of sRGB);
    else ``srgb``."""
    return "acescct" if "acescct" in spaces else "srgb"


def check_facesets(paths: Sequence[str | os.PathLike], min_size: int, mask: str | None = None) -> dict[str, Any]:
    """Open and cross-check the training face sets (one per identity).

    Args:
        paths: one face set per identity.
        min_size: the final stage's resolution.
        mask: the training mask (``data.mask``): a landmark hull kind, or a stored mask that at
            least one face of every set has (faces without it fall back to the ``extended`` hull).

    Raises:
        ValueError: one line naming the problem: missing, repeated, empty or damaged set (the
            quick check of ``swap-faceset info``), mixed face types, a set whose crops are smaller
            than ``min_size``, or a mask no set has.
    """
    if len(paths) < 2:
        raise ValueError(f"training needs at least 2 face sets (one per identity), got {len(paths)}")
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"face set not found: {p}")
    real = [os.path.realpath(p) for p in paths]
    for i, r in enumerate(real):
        if r in real[:i]:  # two decoders trained on the same faces: one identity twice
            raise ValueError(f"data.faces lists the face set {paths[i]} twice; give one face set per identity")
    # verified: a set whose index and files disagree (an image that is /dev/zero or a FIFO, a
    # missing file) is refused here in one line, before a worker reads it
    sets = [fs.open(p, verify=True) for p in paths]
    if mask is not None and mask not in LANDMARK_MASKS:
        for p, s in zip(paths, sets):
            have = {n[len("user_"):] if n.startswith("user_") else n for n in s.mask_names}
            if mask not in have:
                choices = sorted(have | set(LANDMARK_MASKS))
                near = difflib.get_close_matches(mask, choices, n=1, cutoff=0.5)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(
                    f"data.mask={mask!r}: face set {p} has no such masks; choose one of {', '.join(choices)}{hint}"
                )
    for p, s in zip(paths, sets):
        if len(s) == 0:
            raise ValueError(f"face set is empty: {p}")
    for p, s in zip(paths, sets):
        if s.size < min_size:
            raise ValueError(
                f"face set {p} has {s.size} px crops, smaller than the final stage's {min_size} px: extract it "
                f"again with size={min_size} (swap-extract ... size={min_size}), or train a smaller recipe"
            )
    types = {s.face_type for s in sets}
    if len(types) > 1:
        raise ValueError(
            f"face sets have different face types: {', '.join(f'{p}={s.face_type}' for p, s in zip(paths, sets))}"
        )
    spaces = [s.crop_space for s in sets]
    names = [s.identities[0] if len(s.identities) == 1 else Path(p).name for p, s in zip(paths, sets)]
    if len(set(names)) < len(names):  # labels must tell the decoders apart
        names = [Path(p).name if names.count(n) > 1 else n for p, n in zip(paths, names)]
    return {
        "face_type": types.pop(),
        "crop_space": model_crop_space(spaces),
        "crop_spaces": spaces,
        "sizes": [s.size for s in sets],
        "counts": [len(s) for s in sets],
        "identities": names,
    }


class CombDataset(Dataset):
    """Comb samples from N face sets.

    Args:
        paths: one face set per identity; identity ``k`` is ``paths[k]``.
        mask: stored mask name to train against, or ``components``/``extended`` for landmark hulls
            (also the fallback when a face has no stored mask of that name).
        augment: keyword arguments of :func:`photometric`, or ``None`` for no colour change.
        seed: data seed.
        paste_occluders: probability that a training face gets a random occluder pasted over it
            (:func:`~progressive_swap.masks.occluders.paste_occluder_alpha`: any colour, cut out
            of the target mask and the loss weights), so the mask head learns occluders by
            shape, not by colour. 0 disables it.
        cache_mb: megabytes per process kept of decoded faces and their masks at the training
            side, so a small face set (the demo's) is decoded once, not at every pass; faces
            past the budget are decoded each time. 0 keeps nothing.

    Items are indexed by ``(sample_index, res)`` and return float32 tensors:
    ``image (N, 3, res, res)`` in [0, 1], ``mask (N, 1, res, res)``, ``regions (N, 2, res, res)``
    (eyes, mouth).
    """

    def __init__(
        self,
        paths: Sequence[str],
        mask: str = "components",
        augment: dict | None = None,
        seed: int = 0,
        paste_occluders: float = 0.0,
        cache_mb: float = 256.0,
    ):
        if not 0.0 <= paste_occluders <= 1.0:
            raise ValueError(f"paste_occluders is a probability in [0, 1], got {paste_occluders}")
        self.paths = [str(p) for p in paths]
        self.mask = mask
        self.augment_args = augment
        self.seed = seed
        self.paste_occluders = float(paste_occluders)
        self._sets: list[Any] | None = None  # opened lazily, per worker process
        self._aug = None
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self.cache_bytes = int(cache_mb * 2**20)
        self._faces: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}  # (identity, face, res) -> arrays
        self._faces_bytes = 0
        opened = [fs.open(p) for p in self.paths]
        self.counts = [len(s) for s in opened]
        self.crop_space = model_crop_space([s.crop_space for s in opened])  # what the network is fed

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_sets"], d["_aug"], d["_perm_cache"], d["_faces"], d["_faces_bytes"] = None, None, {}, {}, 0
        return d

    def _open(self) -> list[Any]:
        if self._sets is None:
            self._sets = [fs.open(p) for p in self.paths]
            self._aug = photometric(**self.augment_args) if self.augment_args is not None else None
        return self._sets

    def face_index(self, identity: int, sample: int) -> int:
        """Which face of ``identity`` sample ``sample`` uses: a fresh permutation per pass."""
        n = self.counts[identity]
        epoch, r = divmod(sample, n)
        key = (identity, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            perm = np.random.default_rng(mix_seed(self.seed, identity, epoch)).permutation(n)
            self._perm_cache = {key: perm}  # keep one: samples arrive in order
        return int(perm[r])

    def load(self, identity: int, face: int, res: int, sample: int | None = None) -> dict[str, np.ndarray]:
        """One face at ``res``: image (3,res,res), mask (1,res,res), regions (2,res,res); augmented if
        ``sample`` is given."""
        img, m, regions = (a.copy() for a in self._unaugmented(identity, face, res))
        if sample is not None and self._aug is not None:
            self._aug.set_random_seed(mix_seed(self.seed, identity, sample, 7))
            img = self._aug(image=img)["image"]
        if sample is not None and self.paste_occluders > 0:
            rng = np.random.default_rng(mix_seed(self.seed, identity, sample, 11))
            if rng.random() < self.paste_occluders:
                img, a = paste_occluder_alpha(img, np.asarray(m, np.float32), rng)
                m, regions = m * (1 - a), regions * (1 - a)
        scale = 255.0 if img.dtype == np.uint8 else 1.0  # uint8 pictures, or a 16-bit set's float values
        return {
            "image": np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / scale,
            "mask": np.asarray(m, np.float32)[None],
            "regions": np.asarray(regions, np.float32),
        }

    def _unaugmented(self, identity: int, face: int, res: int) -> tuple[np.ndarray, ...]:
        """Image (res, res, 3) uint8 (a 16-bit set's float32 values), mask (res, res) and regions
        (2, res, res) of one face at ``res``, before augmentation; kept while the process's budget
        (``cache_mb``) allows. Callers copy before changing them."""
        key = (identity, face, res)
        hit = self._faces.get(key)
        if hit is not None:
            return hit
        s = self._open()[identity]
        img = s.image(face) if s.crop_space == "srgb" else s.values(face)  # 16-bit sets: float32 values
        if s.crop_space != self.crop_space:  # an 8-bit set beside ACEScct ones: its picture's ACEScct values
            img = frame_in_crop_space(img, None, self.crop_space)
        interp = cv2.INTER_AREA if img.shape[0] > res else cv2.INTER_LINEAR
        if img.shape[0] != res:
            img = cv2.resize(img, (res, res), interpolation=interp)
        lm = np.asarray(s.landmarks_aligned[face], np.float64) * res - 0.5  # crop pixels at res
        m = None if self.mask in LANDMARK_MASKS else s.mask(face, self.mask, prefer_user=True)  # a painted mask wins
        if m is None:
            m = landmark_mask(lm, res, kind=self.mask if self.mask in LANDMARK_MASKS else "extended")
        elif m.shape[0] != res:
            m = cv2.resize(m, (res, res), interpolation=interp)
        arrays = (img, np.asarray(m, np.float32), np.asarray(region_masks(lm, res), np.float32))
        size = sum(a.nbytes for a in arrays)
        if self._faces_bytes + size <= self.cache_bytes:
            self._faces[key] = arrays
            self._faces_bytes += size
        return arrays

    def colour_stats(self, identity: int, faces: int = 256, res: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """RGB mean and standard deviation inside the training mask of one identity's face set.

        Measured on up to ``faces`` evenly spaced faces at ``res`` px, unaugmented, so every
        process of a run gets the same numbers. Feeds
        :meth:`~progressive_swap.model.autoencoder.CombAutoencoder.set_identity_colour`.

        Returns:
            ``(mean, std)``, each (3,) float64, RGB in [0, 1] units.
        """
        n = self.counts[identity]
        total, sq, weight = np.zeros(3), np.zeros(3), 0.0
        for face in np.unique(np.linspace(0, n - 1, min(n, faces)).round().astype(int)):
            item = self.load(identity, int(face), res)
            img, w = item["image"].astype(np.float64), item["mask"][0].astype(np.float64)  # (3, r, r), (r, r)
            total += (img * w).sum((1, 2))
            sq += (img**2 * w).sum((1, 2))
            weight += w.sum()
        if weight <= 0:
            raise ValueError(f"{self.paths[identity]}: the training mask {self.mask!r} is empty on every face measured")
        mean = total / weight
        std = np.sqrt(np.maximum(sq / weight - mean**2, 0.0))
        return mean, np.maximum(std, 1e-2)  # a flat face set must not divide by zero

    def __len__(self) -> int:
        return 2**62  # indexed by global sample number; the sampler decides how many

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        sample, res, batch_index = key
        parts = [self.load(k, self.face_index(k, sample), res, sample) for k in range(len(self.paths))]
        out = {name: torch.from_numpy(np.stack([p[name] for p in parts])) for name in parts[0]}
        out["batch_index"] = torch.tensor(batch_index)
        return out


class PlanBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields the batches of a :class:`GrowthSchedule` from ``start`` to the end, for one rank.

    ``len()`` is the whole plan, so the trainer's batch count stays consistent on resume,
    while iteration starts at ``start``.
    """

    def __init__(self, schedule: GrowthSchedule, start: int = 0, rank: int = 0):
        self.schedule, self.start, self.rank = schedule, start, rank

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for b in range(self.start, self.schedule.total_batches):
            res = self.schedule.at(b).res
            yield [(i, res, b) for i in self.schedule.samples(b, self.rank)]

    def __len__(self) -> int:
        return self.schedule.total_batches


def _worker_init(trainer_pid: int, worker_id: int) -> None:
    """Set up one loader worker of the training process ``trainer_pid``.

    The worker ends with the trainer, even one killed with SIGKILL: its parent is the
    forkserver, which outlives the trainer, so it watches the trainer itself
    (:func:`~progressive_swap.core.procs.serve`). With the workers gone the forkserver exits too.
    """
    procs.serve(trainer_pid)
    # Loader workers decode and resize with OpenCV; one thread each, or they fight the trainer.
    cv2.setNumThreads(1)


class ResumableLoader(DataLoader):
    """A DataLoader that tells the trainer it can resume mid-run.

    The position lives in the training module (``batches_done``, saved in the checkpoint) and
    is read when the loader is built, so there is no state of its own to save.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FaceDataModule(pl.LightningDataModule):
    """Face sets (or the phantom) → batches that follow the module's growth schedule.

    Args:
        faces: one face set directory per identity; ``None`` uses the phantom (generated once into
            the cache).
        mask: stored mask name used as the training mask (``visible`` for the phantom, ``hull`` or a
            segmenter's output for extracted sets), or ``components``/``extended`` for landmark hulls.
        num_workers: loader processes.
        augment: :func:`photometric` arguments; ``None`` disables colour augmentation.
        phantom: arguments of ``generate_phantom_dataset`` when ``faces`` is ``None``.
        seed: data seed.
        paste_occluders: probability of a random occluder pasted over a training face (see
            :class:`CombDataset`); 0 disables it.
        cache_mb: megabytes of decoded faces each loader process keeps (see :class:`CombDataset`).
    """

    def __init__(
        self,
        faces: Sequence[str] | None = None,
        mask: str = "visible",
        num_workers: int = 2,
        augment: dict | None = None,
        phantom: dict | None = None,
        seed: int = 0,
        paste_occluders: float = 0.0,
        cache_mb: float = 256.0,
    ):
        super().__init__()
        self.cache_mb = cache_mb
        self.faces = list(faces) if faces else None
        self.mask = mask
        self.num_workers = num_workers
        self.augment = dict(augment) if augment is not None else None
        self.phantom = dict(phantom or {})
        self.seed = seed
        self.paste_occluders = paste_occluders
        self.dataset: CombDataset | None = None

    def resolve_faces(self) -> list[str]:
        """Face set paths; generates the phantom into the cache on first use."""
        if self.faces:
            return self.faces

        args = {
            "identities": 2,
            "faces": DEFAULT_FACES,
            "size": 64,
            "face_type": "whole",
            "seed": 0,
            "occluders": 0.3,
            **self.phantom,
        }
        # Keyed by the arguments and by the crop the face type means today, so a set rendered
        # with an older crop template is never reused as if it were current.
        crop = dataclasses.astuple(face_type_of(args["face_type"]))
        key = hashlib.sha1(json.dumps([args, crop], sort_keys=True).encode()).hexdigest()[:12]
        root = cache_dir() / "phantom" / key
        paths = [str(root / "faces" / f"id{k}") for k in range(args["identities"])]
        if not all((Path(p) / "faceset.json").exists() for p in paths):
            generate_phantom_dataset(out=str(root), videos=0, **args)
        self.faces = paths
        return paths

    def prepare_data(self) -> None:
        self.resolve_faces()

    def setup(self, stage: str | None = None) -> None:
        if int(os.environ.get("LOCAL_RANK") or 0) > 0:
            # A DDP rank started by the launching rank: if that one is killed, this one (and so
            # its loader workers) must not live on waiting for it.
            procs.serve(os.getppid())
        if self.dataset is None:
            self.dataset = CombDataset(self.resolve_faces(), self.mask, self.augment, self.seed, self.paste_occluders,
                                       self.cache_mb)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        module = self.trainer.lightning_module
        sampler = PlanBatchSampler(module.schedule, start=module.batches_done, rank=self.trainer.global_rank)
        return ResumableLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if self.num_workers > 0 else None,
            worker_init_fn=functools.partial(_worker_init, os.getpid()) if self.num_workers > 0 else None,
            # Workers start from a clean server process, not a fork of this one: the trainer
            # may have run thread pools (phantom generation, OpenCV) whose locks a fork would copy.
            multiprocessing_context="forkserver" if self.num_workers > 0 else None,
        )

    def colour_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every identity's RGB mean and deviation inside its faces: two (N, 3) tensors."""
        self.setup()
        stats = [self.dataset.colour_stats(k) for k in range(len(self.dataset.paths))]
        return tuple(torch.tensor(np.stack(x), dtype=torch.float32) for x in zip(*stats))  # type: ignore[return-value]

    def preview_batch(self, n: int, res: int) -> torch.Tensor:
        """The first ``n`` faces of every identity, unaugmented: ``(N, n, 3, res, res)``."""
        self.setup()
        ds = self.dataset
        out = [
            [torch.from_numpy(ds.load(k, i % ds.counts[k], res)["image"]) for i in range(n)]
            for k in range(len(ds.paths))
        ]
        return torch.stack([torch.stack(row) for row in out])
