"""The growth schedule: where training is (stage, fade alpha, batch size, learning rate) as a
pure function of how many batches have been seen.

Training is a sequence of *phases*. The first stage has one phase (stable). Every later
stage has a fade phase, in which its outer blocks blend in as ``alpha`` goes 0 → 1, then a
stable phase at ``alpha = 1``. Phase lengths are given in *images*: one image is one face
through the encoder, so a batch holds ``batch × identities × world_size`` images.

Because everything is a function of the global batch index, resuming at batch ``k`` restores
stage and alpha exactly, and the data loader can restart at the same sample.
"""
from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np


def mix_seed(*xs: int) -> int:
    """Stable 63-bit hash of integers: the seed of everything random that is a function of
    (seed, batch index, ...), independent of Python's hash randomisation."""
    h = hashlib.blake2b(np.asarray(xs, np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1

@dataclass(frozen=True)
class Stage:
    """One resolution of the schedule.

    Attributes:
        res: output resolution in pixels (a power-of-two multiple of the first stage's).
        images: images trained at ``alpha = 1`` once the stage is fully in.
        fade: images over which the stage fades in (ignored for the first stage).
        batch: faces per identity per device in one batch.
        lr: learning rate for this stage (fade included).
        lr_end: learning rate reached, linearly, at the last batch of the stage's stable phase
            (null: ``lr`` throughout). Annealing the last stage sharpens the final weights.
    """

    res: int
    images: int
    fade: int = 0
    batch: int = 16
    lr: float = 2e-4
    lr_end: float | None = None


@dataclass(frozen=True, kw_only=True)
class Phase:
    """A stretch of batches with one resolution and batch size."""

    stage: int  # index into the schedule's stages
    res: int
    fading: bool
    first_batch: int  # global batch index where the phase starts
    batches: int
    batch: int
    lr: float
    first_sample: int  # index of the first comb sample (one face per identity) of the phase
    lr_end: float | None = None  # learning rate at the phase's last batch, reached linearly (None: constant)

    @property
    def end_batch(self) -> int:
        return self.first_batch + self.batches


@dataclass(frozen=True)
class Position:
    """Where training is at one global batch index."""

    batch_index: int
    phase: Phase
    alpha: float  # 1.0 outside fades

    @property
    def res(self) -> int:
        return self.phase.res

    @property
    def stage(self) -> int:
        return self.phase.stage

    @property
    def lr(self) -> float:
        """The schedule's learning rate at this batch (linear from ``lr`` to ``lr_end`` across the phase)."""
        p = self.phase
        if p.lr_end is None:
            return p.lr
        t = (self.batch_index - p.first_batch + 1) / p.batches  # reaches 1 at the last batch
        return p.lr + (p.lr_end - p.lr) * t


class GrowthSchedule:
    """Stages and their fade-ins, laid out as phases of whole batches.

    Args:
        stages: the stages, smallest resolution first (dicts or :class:`Stage`).
        identities: number of identities (decoders) trained together. Passed by code.
        world_size: number of data-parallel processes. Passed by code.

    Example:
        >>> s = GrowthSchedule([dict(res=32, images=64, batch=4), dict(res=64, images=64, fade=32, batch=2)])
        >>> [(p.res, p.fading, p.batches) for p in s.phases]
        [(32, False, 8), (64, True, 8), (64, False, 16)]
        >>> s.at(8).alpha, s.at(12).alpha
        (0.0, 0.5)
    """

    def __init__(self, stages: Sequence[Mapping[str, Any] | Stage], identities: int = 2, world_size: int = 1):
        st = [s if isinstance(s, Stage) else Stage(**dict(s)) for s in stages]
        if not st:
            raise ValueError("the schedule needs at least one stage")
        for a, b in zip(st, st[1:]):
            if b.res != 2 * a.res:
                raise ValueError(f"stages must double in resolution, got {a.res} then {b.res}")
        for s in st:
            if s.batch < 1 or s.images < 0 or s.fade < 0 or s.lr <= 0 or (s.lr_end is not None and s.lr_end <= 0):
                raise ValueError(f"bad stage {s}")
        if identities < 1 or world_size < 1:
            raise ValueError("identities and world_size must be positive")
        self.stages = tuple(st)
        self.identities = identities
        self.world_size = world_size
        self.phases = self._layout()
        self._starts = [p.first_batch for p in self.phases]

    def _layout(self) -> tuple[Phase, ...]:
        phases: list[Phase] = []
        batch0 = sample0 = 0
        for i, s in enumerate(self.stages):
            per_batch = s.batch * self.identities * self.world_size
            parts = ([(True, s.fade)] if i > 0 and s.fade > 0 else []) + [(False, s.images)]
            for fading, images in parts:
                n = math.ceil(images / per_batch)
                if n == 0:
                    continue
                phases.append(
                    Phase(
                        stage=i,
                        res=s.res,
                        fading=fading,
                        first_batch=batch0,
                        batches=n,
                        batch=s.batch,
                        lr=s.lr,
                        first_sample=sample0,
                        lr_end=None if fading else s.lr_end,
                    )
                )
                batch0 += n
                sample0 += n * s.batch * self.world_size
        if not phases:
            raise ValueError("the schedule has no images to train on")
        return tuple(phases)

    @property
    def start_res(self) -> int:
        return self.stages[0].res

    @property
    def final_res(self) -> int:
        return self.stages[-1].res

    @property
    def total_batches(self) -> int:
        return self.phases[-1].end_batch

    def at(self, batch_index: int) -> Position:
        """Stage, phase and alpha of global batch ``batch_index`` (clamped to the last batch)."""
        b = min(max(int(batch_index), 0), self.total_batches - 1)
        phase = self.phases[bisect.bisect_right(self._starts, b) - 1]
        alpha = (b - phase.first_batch) / phase.batches if phase.fading else 1.0
        return Position(b, phase, alpha)

    def samples(self, batch_index: int, rank: int = 0) -> range:
        """Comb-sample indices of one batch for one process: disjoint across ranks and batches."""
        pos = self.at(batch_index)
        p = pos.phase
        start = p.first_sample + ((batch_index - p.first_batch) * self.world_size + rank) * p.batch
        return range(start, start + p.batch)

    def images_seen(self, batch_index: int) -> int:
        """Images (faces through the encoder) before global batch ``batch_index`` (all of them at the end)."""
        if batch_index >= self.total_batches:
            return sum(q.batches * q.batch * self.identities * self.world_size for q in self.phases)
        pos = self.at(batch_index)
        p = pos.phase
        per = p.batch * self.identities * self.world_size
        before = sum(
            q.batches * q.batch * self.identities * self.world_size for q in self.phases if q.end_batch <= p.first_batch
        )
        return before + (batch_index - p.first_batch) * per

    def describe(self) -> list[dict[str, Any]]:
        """The phases as plain dicts, for printing and for the run's saved config."""
        return [asdict(p) for p in self.phases]

    def state(self) -> dict[str, Any]:
        """Constructor arguments, for checkpoints."""
        return {
            "stages": [asdict(s) for s in self.stages],
            "identities": self.identities,
            "world_size": self.world_size,
        }
