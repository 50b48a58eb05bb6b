"""CPU training precision chosen by measurement: the faster of bfloat16 autocast and float32.

Whether bfloat16 pays on a CPU is not a matter of its flags. With AMX, oneDNN's bfloat16
convolutions are much faster than float32; with AVX512-BF16 alone they can be slower (the demo's
steps: 145 s against 122 s in a stand-in, ``docs/quality.md``); without either, bfloat16 is
emulated and about 8x slower. So ``trainer=cpu`` (``trainer.precision=auto``) times a few real
training steps of the run's own model in both precisions (:func:`measure`, a second or a few)
and takes the faster, cached per CPU, torch version, thread count, instruction-set limits and
workload (:func:`choose`), so later runs start at once.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from progressive_swap.core.io import atomic_write_bytes
from progressive_swap.train import batch_finder
from progressive_swap.train.datamodule import cache_dir

PRECISIONS = ("32-true", "bf16-mixed")
#: bfloat16 is taken only when its estimate is this much below float32's: a closer call is noise,
#: and float32 is the numerically safer of two equals.
MARGIN = 0.05
#: Keys of the cache entry that say which CPU and which software measured it.
_ENV_KNOBS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "DNNL_MAX_CPU_ISA")
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Choice:
    """The precision taken, the estimated step seconds of the whole schedule in each precision
    measured (``None`` where a measurement stopped early as clearly slower), and whether it came
    from the cache."""

    precision: str
    seconds: dict[str, float | None]
    cached: bool

    @property
    def estimate(self) -> float | None:
        """Estimated seconds of the schedule's steps in the precision taken."""
        return self.seconds.get(self.precision)

    def line(self) -> str:
        """One line for the run's log: which precision and why."""
        fp32, bf16 = self.seconds.get("32-true"), self.seconds.get("bf16-mixed")

        def est(s: float | None) -> str:
            return "over twice as long (stopped early)" if s is None else f"{s:.0f} s"

        if len(self.seconds) == 1:
            return f"precision {self.precision} (set): the schedule's steps take an estimated {est(self.estimate)} here"
        src = "measured earlier on this CPU (cached)" if self.cached else "measured now on this CPU"
        return (f"precision {self.precision}, {src}: the schedule's steps take an estimated {est(bf16)} in "
                f"bf16-mixed and {est(fp32)} in 32-true; trainer.precision= sets it")


def cpu_fingerprint() -> dict:
    """What decides which precision is faster here: the CPU model and its bfloat16 instructions,
    torch's version and threads, and the instruction-set limits set in the environment."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "flags": sorted(f for f in _FLAGS if f in flags),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "env": {k: os.environ[k] for k in _ENV_KNOBS if k in os.environ},
    }


def workload_key(module) -> dict:
    """The measured workload: the model's constructor arguments, memory format and the
    schedule's phases (resolution, batch, fade)."""
    arch = module.model.arch_args() if hasattr(module.model, "arch_args") else repr(module.model)
    phases = [(p.res, p.batch, bool(p.fading), p.batches) for p in module.schedule.phases]
    return {"arch": json.loads(json.dumps(arch, default=str)), "channels_last": bool(module.channels_last),
            "phases": phases}


def measure(module, steps: int = 3, warmup: int = 1, precisions=PRECISIONS) -> dict[str, float | None]:
    """Estimated seconds of the schedule's training steps in each precision, from ``steps`` timed
    real training steps (after ``warmup``) of every distinct phase of ``module``'s schedule, on a
    copy of its model (synthetic batches, as ``dry_run`` times them).

    Precisions are measured in order; a later one stops as soon as its time over the phases
    measured so far is twice the best earlier one's (emulated bfloat16 would otherwise cost tens
    of seconds to learn that it loses) and reads ``None``.
    """
    device = torch.device("cpu")
    work = copy.deepcopy(module).to(device)
    work.log = lambda *a, **k: None  # no trainer here
    if work.channels_last:
        work.model.to(memory_format=torch.channels_last)
    n_id = work.model.num_identities
    phases, seen = [], set()
    for p in work.schedule.phases:
        kind = (p.res, p.batch, bool(p.fading))
        if kind not in seen:
            seen.add(kind)
            phases.append((p, sum(q.batches for q in work.schedule.phases if (q.res, q.batch, bool(q.fading)) == kind)))
    out: dict[str, float | None] = {}
    partial_best: list[float] | None = None  # the best precision's running total, phase by phase
    for precision in precisions:
        opt = torch.optim.Adam(work.model.parameters(), lr=1e-12)
        total, running = 0.0, []
        for p, batches in phases:
            index = p.first_batch + p.batches // 2
            for _ in range(warmup):
                batch_finder._train_step(work, opt, batch_finder.fake_batch(n_id, p.batch, p.res, index),
                                         precision, device)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                batch_finder._train_step(work, opt, batch_finder.fake_batch(n_id, p.batch, p.res, index),
                                         precision, device)
                times.append(time.perf_counter() - t0)
            total += sorted(times)[len(times) // 2] * batches
            running.append(total)
            if partial_best is not None and total > 2.0 * partial_best[len(running) - 1]:
                total = None
                break
        out[precision] = None if total is None else round(total, 2)
        if total is not None and (partial_best is None or total < partial_best[-1]):
            partial_best = running
        del opt
    return out


def pick(seconds: dict[str, float | None]) -> str:
    """``bf16-mixed`` when its estimate is more than :data:`MARGIN` below float32's, else ``32-true``."""
    fp32, bf16 = seconds.get("32-true"), seconds.get("bf16-mixed")
    if bf16 is not None and (fp32 is None or bf16 < (1.0 - MARGIN) * fp32):
        return "bf16-mixed"
    return "32-true"


def cache_path() -> Path:
    return cache_dir() / "cpu_precision.json"


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Python's, NumPy's and torch's CPU random states as they were on entry, restored on exit:
    building and timing a model for the measurement must not change what a seeded run draws
    after it (its initial weights, its augmentation), so a run is the same whether its
    precision was measured or set."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def scaled_stages(stages: list[dict], factor: float, identities: int) -> list[dict]:
    """``stages`` with every stage's ``images`` and ``fade`` times ``factor`` (in (0, 1]), each
    kept to at least one batch (the stage's batch × ``identities``). Learning rates, batches and
    resolutions are unchanged.

    Example:
        >>> scaled_stages([{"res": 32, "images": 1000, "batch": 8}], 0.5, 2)
        [{'res': 32, 'images': 500, 'batch': 8}]
    """
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor}")
    out = []
    for st in stages:
        st = dict(st)
        least = int(st.get("batch", 16)) * int(identities)
        for key in ("images", "fade"):
            if st.get(key):
                st[key] = max(least, int(round(st[key] * factor)))
        out.append(st)
    return out


def choose(module, steps: int = 3, precisions: tuple[str, ...] = PRECISIONS) -> Choice:
    """The faster precision for training ``module`` on this CPU: from the cache when this CPU,
    software and workload were measured before, else :func:`measure` now (and cache it).
    With one precision in ``precisions`` it only estimates that one's time.

    The cache is a JSON file of entries keyed by a hash of :func:`cpu_fingerprint` and
    :func:`workload_key`; an unreadable cache is measured over, never trusted.
    """
    key_doc = {"cpu": cpu_fingerprint(), "workload": workload_key(module), "precisions": list(precisions),
               "version": 1}
    key = hashlib.sha1(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_path()
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    hit = entries.get(key)
    if isinstance(hit, dict) and hit.get("precision") in PRECISIONS and isinstance(hit.get("seconds"), dict):
        return Choice(hit["precision"], hit["seconds"], cached=True)
    seconds = measure(module, steps=steps, precisions=precisions)
    choice = Choice(pick(seconds) if len(precisions) > 1 else precisions[0], seconds, cached=False)
    entries[key] = {"precision": choice.precision, "seconds": seconds, "cpu": key_doc["cpu"],
                    "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(entries, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # a read-only cache costs a re-measurement next time, nothing else
    return choice
