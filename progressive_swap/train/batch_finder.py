"""``find_batch=true``: the largest batch per stage that fits in device memory.

For each stage, real training steps (augmentation, forward, losses, backward, Adam step) run
on a copy of the model at the stage's resolution mid-fade (both paths active: the most memory a
stage ever needs), with batch sizes found by doubling and then bisection, catching
``torch.cuda.OutOfMemoryError``. The schedule is then rebuilt with those batches; every stage
keeps its images (and fade images), so only the number of batches changes.

The search is split so that it can be tested without a GPU: :func:`largest_batch` searches
any monotone predicate, :func:`fits_in_memory` turns a step function into one (an OOM means
"does not fit"), and :func:`find_batches` applies a per-stage predicate to a schedule.

Example:
    >>> largest_batch(lambda b: b <= 37, start=16, limit=256)
    37
"""
from __future__ import annotations

import copy
import dataclasses
import gc
from contextlib import nullcontext
from typing import Callable

import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

from progressive_swap.train.growth import GrowthSchedule
from progressive_swap.train.strategy import DecoderParallelStrategy

__all__ = [
    "largest_batch",
    "fits_in_memory",
    "with_batches",
    "find_batches",
    "fake_batch",
    "memory_cap",
    "search_on_device",
    "time_phases",
]


def largest_batch(fits: Callable[[int], bool], start: int = 1, limit: int = 1024) -> int:
    """Largest ``b`` in ``[1, limit]`` with ``fits(b)``, assuming ``fits`` is monotone.

    Doubles up (or halves down) from ``start``, then bisects between the last size that fitted
    and the first that did not: about ``2 * log2(answer / start)`` calls.

    Returns:
        The batch size, or 0 when not even ``1`` fits.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    b = min(max(int(start), 1), limit)
    if fits(b):
        good, bad = b, None
        while bad is None and good < limit:
            nxt = min(2 * good, limit)
            if fits(nxt):
                good = nxt
            else:
                bad = nxt
        if bad is None:
            return good
    else:
        good, bad = 0, b
        while bad > 1:
            nxt = bad // 2
            if fits(nxt):
                good = nxt
                break
            bad = nxt
        if good == 0:
            return 0
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def _free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fits_in_memory(step: Callable[[int], None], free: Callable[[], None] = _free_cuda) -> Callable[[int], bool]:
    """A predicate ``fits(batch)``: True when ``step(batch)`` runs, False when it runs out of memory.

    Args:
        step: runs training steps at a batch size; raises ``torch.cuda.OutOfMemoryError`` when
            the batch does not fit. Other errors propagate.
        free: releases cached memory after each try.
    """

    def fits(batch: int) -> bool:
        ok = True
        try:
            step(batch)
        except torch.cuda.OutOfMemoryError:
            ok = False  # the handler has ended, so the traceback no longer pins the step's tensors
        free()
        return ok

    return fits


def with_batches(schedule: GrowthSchedule, batches: list[int]) -> GrowthSchedule:
    """The same schedule with a new batch (per identity, per process) for each stage; images kept."""
    if len(batches) != len(schedule.stages):
        raise ValueError(f"need {len(schedule.stages)} batch sizes, got {len(batches)}")
    stages = [dataclasses.replace(s, batch=int(b)) for s, b in zip(schedule.stages, batches)]
    return GrowthSchedule(stages, identities=schedule.identities, world_size=schedule.world_size)


def stage_point(schedule: GrowthSchedule, stage: int) -> tuple[int, float]:
    """``(res, alpha)`` a stage is measured at: mid-fade after the first stage, where both paths run."""
    s = schedule.stages[stage]
    return s.res, (0.5 if stage > 0 and s.fade > 0 else 1.0)


def find_batches(
    schedule: GrowthSchedule,
    fits_for_stage: Callable[[int, float], Callable[[int], bool]],
    limit: int = 1024,
    report: Callable[[str], None] | None = None,
) -> GrowthSchedule:
    """Rewrite each stage's batch to the largest that fits.

    Args:
        schedule: the schedule to resize; each stage's own batch is where the search starts.
        fits_for_stage: ``(res, alpha) -> fits(batch)``.
        limit: largest batch per identity to try.
        report: called with one line per stage.

    Raises:
        RuntimeError: when not even a batch of 1 fits at some stage.
    """
    batches = []
    for i, s in enumerate(schedule.stages):
        res, alpha = stage_point(schedule, i)
        b = largest_batch(fits_for_stage(res, alpha), start=s.batch, limit=limit)
        if b == 0:
            raise RuntimeError(
                f"not even a batch of 1 per identity fits at {res} px; try activation_checkpointing=true, "
                "trainer.precision=bf16-mixed, trainer=fsdp or trainer=model_parallel"
            )
        if report:
            report(f"find_batch: {res} px fits {b} per identity (schedule had {s.batch})")
        batches.append(b)
    return with_batches(schedule, batches)


def fake_batch(
    n_id: int, batch: int, res: int, batch_index: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """A synthetic batch shaped like :class:`FaceDataModule`'s: random images, a box mask."""
    g = torch.Generator().manual_seed(batch_index)
    mask = torch.zeros(batch, n_id, 1, res, res)
    mask[..., res // 6 : -res // 6, res // 6 : -res // 6] = 1
    return {
        "image": torch.rand(batch, n_id, 3, res, res, generator=g).to(device),
        "mask": mask.to(device),
        "regions": torch.zeros(batch, n_id, 2, res, res, device=device),
        "batch_index": torch.full((batch,), batch_index),
    }


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a Lightning precision string (``bf16-mixed``, ``16-mixed``, ``32-true``)."""
    p = str(precision)
    if p.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if p.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def _train_step(module, opt: torch.optim.Optimizer, data: dict, precision: str, device: torch.device) -> None:
    """One real optimizer step of ``module`` on ``data`` (waits for the device to finish)."""
    with autocast_for(precision, device):
        loss = module.training_step(data, 0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_cap(max_memory_gb: float | None, device: torch.device) -> None:
    """Limit this process to ``max_memory_gb`` of the CUDA device (for the search and training after it).

    Emulates a smaller card: allocations beyond the cap raise ``OutOfMemoryError``.
    """
    if not max_memory_gb:
        return
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, max_memory_gb * 2**30 / total), device)


def search_on_device(
    module_factory: Callable[[torch.nn.Module], torch.nn.Module],
    model: torch.nn.Module,
    schedule: GrowthSchedule,
    device: torch.device,
    precision: str = "32-true",
    max_memory_gb: float | None = None,
    limit: int = 1024,
    steps: int = 2,
    report: Callable[[str], None] | None = None,
) -> GrowthSchedule:
    """Find every stage's largest batch with real training steps on ``device`` (CUDA).

    Args:
        module_factory: builds a :class:`SwapModule` around a model copy (same loss,
            augmentation and ``channels_last`` as the run).
        model: the run's model; it is copied, never trained.
        schedule: the run's schedule.
        device: the CUDA device to measure.
        precision: Lightning precision string of the run.
        max_memory_gb: cap this process at this much memory first (see :func:`memory_cap`).
        limit: largest batch per identity to try.
        steps: optimizer steps per try (the second one holds Adam's state too).
        report: called with one line per stage.
    """
    memory_cap(max_memory_gb, device)
    module = module_factory(copy.deepcopy(model).to(device))
    module.log = lambda *a, **k: None  # no trainer here
    n_id = module.model.num_identities

    def fits_for_stage(res: int, alpha: float) -> Callable[[int], bool]:
        index = next(
            p.first_batch + p.batches // 2 for p in schedule.phases if p.res == res and (p.fading or alpha == 1.0)
        )

        def step(batch: int) -> None:
            opt = torch.optim.Adam(module.model.parameters(), lr=1e-9)
            try:
                for _ in range(steps):
                    _train_step(module, opt, fake_batch(n_id, batch, res, index, device), precision, device)
            finally:
                opt.zero_grad(set_to_none=True)
                del opt

        return fits_in_memory(step)

    try:
        return find_batches(schedule, fits_for_stage, limit=limit, report=report)
    finally:
        module = None  # frees the copy before the cache is emptied
        _free_cuda()


def plan_for_run(
    module: torch.nn.Module,
    trainer,
    max_memory_gb: float | None = None,
    resume_schedule: dict | None = None,
    report: Callable[[str], None] | None = None,
) -> GrowthSchedule:
    """``find_batch=true`` for ``swap-train``: the run's schedule with every stage's batch maximised.

    A resumed run keeps the batches it started with (``resume_schedule``, the checkpoint's
    schedule state): its data position counts batches of those sizes.

    Raises:
        ValueError: without a CUDA device, or with more than one process or device (search once
            on one GPU, e.g. with ``dry_run=true``, and pass the batches in the schedule).
    """
    schedule = module.schedule
    if resume_schedule is not None:
        return with_batches(schedule, [int(s["batch"]) for s in resume_schedule["stages"]])
    strategy = trainer.strategy
    if not isinstance(strategy, SingleDeviceStrategy) or isinstance(strategy, DecoderParallelStrategy):
        raise ValueError(
            "find_batch=true measures one device: use it with trainer=gpu, then pass the batches it prints "
            "as schedule.stages for ddp/fsdp/model_parallel runs"
        )
    device = strategy.root_device
    if device.type != "cuda":
        raise ValueError("find_batch=true needs a CUDA device (trainer=gpu)")
    # The search trains a copy: the run's module starts from its own untouched weights.
    return search_on_device(
        lambda copy: copy,
        module,
        schedule,
        device,
        precision=str(trainer.precision),
        max_memory_gb=max_memory_gb,
        report=report,
    )


def time_phases(
    module: torch.nn.Module,
    device: torch.device,
    precision: str = "32-true",
    steps: int = 1,
    warmup: int = 1,
) -> list[dict]:
    """Seconds per optimizer step of every phase of ``module.schedule``, measured on ``device``.

    Real training steps (augmentation, forward, losses, backward, Adam) on synthetic batches of
    the phase's batch size, mid-phase (a fade measured at its middle, where both paths run), on
    a copy of the model; the first ``warmup`` steps of each phase are not timed. ``dry_run=true``
    multiplies them by each phase's batches for a time estimate per stage.

    Returns:
        One dict per phase: ``stage``, ``res``, ``fading``, ``batches``, ``batch``,
        ``s_per_step`` and ``estimated_s`` (``batches * s_per_step``).
    """
    import time

    schedule = module.schedule
    work = copy.deepcopy(module).to(device)  # the run's module keeps its untouched weights
    work.log = lambda *a, **k: None  # no trainer here
    n_id = work.model.num_identities
    opt = torch.optim.Adam(work.model.parameters(), lr=1e-9)

    def step(batch: int, res: int, index: int) -> None:
        _train_step(work, opt, fake_batch(n_id, batch, res, index, device), precision, device)

    rows = []
    for p in schedule.phases:
        index = p.first_batch + p.batches // 2
        for _ in range(warmup):
            step(p.batch, p.res, index)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(p.batch, p.res, index)
        per = (time.perf_counter() - t0) / steps
        rows.append(dict(stage=p.stage, res=p.res, fading=p.fading, batches=p.batches, batch=p.batch,
                         s_per_step=per, estimated_s=per * p.batches))
    return rows
