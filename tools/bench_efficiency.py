#!/usr/bin/env python
"""Quality per unit of compute: candidate designs trained on the phantom for the same budget,
then measured against the true swap (swap PSNR, the identity measures of ``eval.quality``:
``identity_gain_db`` over the recoloured source, ``swap_recon_gap_db``, ``shape_score``).

The budget's currency (``--cost``) is what a design costs **at full size**, where users pay:

* ``h100`` / ``rtx4090``: estimated GPU seconds of full-size training (``eval/cost.py``: a
  per-operation roofline from the spec sheets' bf16 peak and memory bandwidth);
* ``flops``: full-size training PFLOP (``FlopCounterMode``);
* ``cpu``: process CPU seconds of the scaled model on this machine (the former currency, kept
  for comparison and for the runs made with it).

For the full-size currencies a run's images per phase are ``share × budget ÷ full-size cost per
image of that phase``: the scaled model trains the images the budget buys at full size. That
count does not depend on the machine or its load, so runs may share the cores.

    python tools/bench_efficiency.py --cost h100 --budget 50 --candidates half half_adv --seeds 0 \
        --runs-dir docs/results/efficiency_runs
    python tools/bench_efficiency.py --describe half lean
    python tools/bench_efficiency.py --report --cost h100 --runs-dir docs/results/efficiency_runs

A candidate is a name of ``FULL``, ``default``, or ``package.module:NAME`` naming a dict of the
same form (``CombArch`` fields, and ``train``: swap-train overrides such as the identity levers),
so a new design plugs into ``--candidates`` without editing this file.

The peers' designs (``PEER_FULL``: ``fs_dny1024``, ``saehd_liae_ud``, ``saehd_df_ud``; the
ports of ``eval/peers.py``, docs/peers.md) are candidates too, as ``{"peer": NAME, "res": 1024}``:
built for the same full-size output as ours (1024 px), scaled by the same rule (sides ÷ 8,
widths ÷ 2: 128 px) and trained by the same ``swap-train`` on the same data, losses, learning
rate and budgets, through ``module.model`` (``eval.peers.train_overrides``). A port does not
grow: its full-size cost per image is that of 1024 px at batch 4 per identity in all five
phases, and its scaled run is one stage at 128 px of all the phases' images, the learning rate
annealed to ``LR_END`` across it.

    python tools/bench_efficiency.py --cost h100 --budget 50 --candidates half fs_dny1024 saehd_liae_ud saehd_df_ud
    python tools/bench_efficiency.py --describe fs_dny1024 saehd_liae_ud saehd_df_ud

The CPU-second currency, as it was:

    python tools/bench_efficiency.py --budget-cpu 100 --seeds 0 --frames 16 --out seed0.json &
    python tools/bench_efficiency.py --budget-cpu 100 --seeds 1 --frames 16 --out seed1.json
    python tools/bench_efficiency.py --budget-cpu 100 --merge seed0.json seed1.json --out efficiency.json

Each candidate is a full-size design (256 → 512 → 1024 px, ``FULL``) scaled down for this CPU:
every side ÷ 8 (32 → 64 → 128 px; the bottleneck stays 4×4, the smallest the comb allows, so
the scaled network has one level fewer than the full one) and every width ÷ 2
(``channel_base`` ÷ 16 since it is channels × side; ``channel_max``, ``channel_min`` and
``latent_channels`` ÷ 2), so each design keeps its *shape*: which levels are wide and which are
cheap.

Why CPU seconds and not wall time: the machine is shared, so a run's wall time depends on what
else runs. The CPU time a process is given for the same work moves far less, provided it runs
one thread: with two, PyTorch's OpenMP threads spin while they wait for each other, and on an
oversubscribed machine that spinning is billed as CPU time (a first attempt with two threads
used twice its calibrated CPU time). So every run has one thread (``OMP_NUM_THREADS=1``). Each
run first measures its candidate's CPU seconds per image at every phase (a few real training
steps on batches from the real loader: loading, augmentation, forward, losses, backward, Adam),
then sizes the schedule so that the budget is split over the phases in the same shares for every
candidate (``SHARES``; a design may name its own ``shares``, a lever on the schedule), and trains
with the real ``swap-train`` (phantom data, bf16 autocast and
channels-last as ``trainer=cpu`` picks them, loader in-process so its work is counted too). The
CPU seconds each run actually used are recorded next to the budget, with ``os.getloadavg()``
before and after. Candidates run
interleaved, seed by seed, each in a fresh process (its own peak RSS).

A run stopped part-way (a killed process, a closed session) resumes when the same command runs
again with the same ``--work``: it checkpoints every 10 minutes and keeps the phases it was sized
with in ``bench_plan.json`` beside them; its JSON then says ``resumed_at_images``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

# Full-size designs (CombArch fields). "comb" is the recipes' model before issue #14, "lean" the
# one issue #14 chose; the core designs (issue #27) put their capacity at half the latent side.
_LEAN = dict(channel_base=2048, channel_max=256, channel_min=24, latent_channels=256, block="conv")
FULL: dict[str, dict] = {
    "comb": dict(channel_base=32768, channel_max=512, channel_min=32, latent_channels=256, block="conv"),
    "half": dict(channel_base=16384, channel_max=512, channel_min=32, latent_channels=256, block="conv"),
    "slim": dict(_LEAN, channel_min=16),
    "lean": _LEAN,
    "slim_dwsep": dict(channel_base=4096, channel_max=256, channel_min=24, latent_channels=256, block="dwsep"),
    # lean + a 512-wide core at 8x8: 3 blocks in each decoder, 1 in the encoder
    "core": dict(_LEAN, core_channels=512, core_blocks=3, encoder_core_blocks=1),
    # lean + decoder cores (3 blocks), one 3x3 convolution per block from 128 px out
    "core_light": dict(_LEAN, core_channels=512, core_blocks=3, light_res=128),
    # deeper cores (4 decoder blocks, 2 encoder blocks), light blocks from 128 px out
    "core_deep": dict(_LEAN, core_channels=512, core_blocks=4, encoder_core_blocks=2, light_res=128),
}
# Identity levers on the default (issue #32): the shared latent should carry pose, expression and
# light, and leave identity to each decoder.
_HALF = FULL["half"]
FULL.update({
    # a latent identity adversary: a critic on the latent, its gradient reversed into the encoder
    "half_adv": dict(_HALF, train={"loss.latent_adversary": 1.0}),
    "half_adv01": dict(_HALF, train={"loss.latent_adversary": 0.1}),
    # Gaussian noise on the latent in training, 0.3 of its deviation
    "half_noise": dict(_HALF, train={"augment.latent_noise": 0.3}),
    # a latent 4x tighter (64 channels at full size)
    "half_lat64": dict(_HALF, latent_channels=64),
    # the project's premise: the default trained at the final side from scratch, not grown
    "half_fixed": dict(_HALF, fixed=True),
    # swaps judged by an identity critic of the real faces' structure (a second decoder pass)
    "half_swapid": dict(_HALF, train={"loss.swap_identity": 0.1}),
    "half_swapid001": dict(_HALF, train={"loss.swap_identity": 0.01}),
    # the encoder-input warp (the recipes' 0.04 of the side) stronger, weaker and off: a stronger
    # one leaves the latent less of where A's features are, so each decoder must draw its own
    "half_warp0": dict(_HALF, train={"augment.warp": 0.0}),
    "half_warp02": dict(_HALF, train={"augment.warp": 0.02}),
    "half_warp08": dict(_HALF, train={"augment.warp": 0.08}),
    "half_warp12": dict(_HALF, train={"augment.warp": 0.12}),
    # no warp, and the weak latent adversary (which draws the other identity's features)
    "half_warp0_adv01": dict(_HALF, train={"augment.warp": 0.0, "loss.latent_adversary": 0.1}),
    # the same pair with a stronger adversary, and with half the recipes' warp
    "half_warp0_adv03": dict(_HALF, train={"augment.warp": 0.0, "loss.latent_adversary": 0.3}),
    "half_warp02_adv01": dict(_HALF, train={"augment.warp": 0.02, "loss.latent_adversary": 0.1}),
    # more of the budget at the first, cheapest side (full size: 256 px costs a quarter of 1024 px per
    # image), where the face's layout is learnt; less on the fades and the final side
    "half_low55": dict(_HALF, shares=(0.55, 0.10, 0.10, 0.10, 0.15)),
    # the other way: twice the study's share at the final side, where swaps are judged
    "half_high40": dict(_HALF, shares=(0.20, 0.10, 0.15, 0.15, 0.40)),
})
# The peers' designs (eval/peers.py) at our full-size output, 1024 px: Phaze-A's dny1024 preset and
# SAEHD built at resolution 1024 (DeepFaceLab's own settings stop at 640).
PEER_FULL: dict[str, dict] = {
    "fs_dny1024": {"peer": "fs_dny1024", "res": 1024},
    "saehd_liae_ud": {"peer": "saehd_liae_ud", "res": 1024},
    "saehd_df_ud": {"peer": "saehd_df_ud", "res": 1024},
    # Phaze-A at FaceSwap's own default learning rate, 5e-5, constant (at the study's 5e-5 to 5e-4
    # annealed it diverged at 200 H100 s: docs/results/efficiency_runs_diverged/)
    "fs_dny1024_lr5e5": {"peer": "fs_dny1024", "res": 1024, "lr": 5e-5},
}
ALIASES = {"today": "comb", "slim24": "lean"}  # the names the issue #14 study used
SIDE_DIV, WIDTH_DIV = 8, 2
_ARCH_KEYS = ("channel_base", "channel_max", "channel_min", "latent_channels", "block", "core_channels",
              "core_blocks", "encoder_core_blocks", "light_res")


def default_design() -> dict:
    """The full-size design ``recipe=1024``'s model group resolves to."""
    from hydra.utils import instantiate

    from progressive_swap.cli.config import compose

    cfg = compose("train", ["recipe=1024"])
    arch = instantiate(cfg.model, num_identities=2, final_res=1024, start_res=256)
    return {k: getattr(arch, k) for k in _ARCH_KEYS}


def design(name: str) -> dict:
    """Full-size CombArch fields of a candidate (and ``train``, its swap-train overrides): a name
    of ``FULL``, an alias, ``default``, or ``package.module:NAME`` naming such a dict; or a peer's
    design, ``{"peer": NAME of eval.peers.PEERS, "res": ...}`` (``PEER_FULL``)."""
    if name == "default":
        return default_design()
    if name in PEER_FULL:
        return PEER_FULL[name]
    if ":" in name:
        import importlib

        module, attr = name.split(":", 1)
        found = getattr(importlib.import_module(module), attr, None)
        if not isinstance(found, dict):
            raise SystemExit(f"candidate {name!r}: {attr} in {module} is not a design dict")
        return found
    name = ALIASES.get(name, name)
    if name not in FULL:
        raise SystemExit(f"unknown candidate {name!r}: one of default, {', '.join(FULL)}, {', '.join(PEER_FULL)} "
                         f"(or {', '.join(ALIASES)})")
    return FULL[name]
STAGES = (32, 64, 128)
# Share of the CPU budget per phase: 32 px; 64 px fade, stable; 128 px fade, stable (lr annealed).
SHARES = (0.35, 0.15, 0.15, 0.15, 0.20)
LR, LR_END, BATCH = 5e-4, 5e-5, 8  # 1e-3 (the demo's) made the scaled "today" diverge at 64-128 px


def arch_of(full: dict) -> dict:
    """A design's CombArch fields (without its ``train`` overrides, its ``fixed`` flag, its own
    ``shares`` of the budget and a peer's own ``lr``)."""
    return {k: v for k, v in full.items() if k not in ("train", "fixed", "shares", "lr")}


def fixed_res(full: dict) -> int | None:
    """The one scaled side a design trains at when it does not grow (a peer, or a comb with
    ``fixed``: trained at the final side from scratch), else None."""
    if is_peer(full):
        return scaled(full)["res"]
    return STAGES[-1] if full.get("fixed") else None


def is_peer(full: dict) -> bool:
    """Whether a design is one of the peers' (``{"peer": NAME, ...}``) rather than a comb."""
    return "peer" in full


def peer_model(arch: dict, side_div: int = 1, width_div: int = 1):
    """The port of a peer design (``arch_of`` of it), on the current device, scaled by the divisors."""
    from progressive_swap.eval.peers import PEERS

    kw = {k: v for k, v in arch.items() if k != "peer"}
    return PEERS[arch["peer"]](side_div=side_div, width_div=width_div, **kw)


def full_model(full: dict, dtype: torch.dtype = torch.float32, device: str | torch.device = "meta") -> torch.nn.Module:
    """A design at full size, on the meta device unless told (a comb for 256 → 512 → 1024 px)."""
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder

    with torch.device(device):
        if is_peer(full):
            model = peer_model(arch_of(full))
        else:
            model = CombAutoencoder(CombArch(2, final_res=1024, start_res=256, latent_res=16, colour_norm=True,
                                             **arch_of(full)))
    return model.to(dtype)


def scaled_model(full: dict) -> torch.nn.Module:
    """The scaled network a design trains (on the CPU, fresh weights)."""
    from progressive_swap.model.autoencoder import CombArch, CombAutoencoder
    from progressive_swap.model.builders import build_model

    if is_peer(full):
        return build_model(arch_of(scaled(full)))
    return CombAutoencoder(CombArch(2, final_res=STAGES[-1], start_res=STAGES[0], colour_norm=True,
                                    **arch_of(scaled(full))))


def scaled(full: dict) -> dict:
    """The CPU-sized version of a full-size design (see the module docstring): widths ÷ 2, sides
    ÷ 8 (``light_res`` too), block counts kept; ``train`` overrides kept as they are. A peer's
    is its scaled port's ``arch_args()``."""
    extra = {"train": full["train"]} if full.get("train") else {}
    if full.get("fixed"):
        extra["fixed"] = True
    if is_peer(full):
        with torch.device("meta"):
            return {**peer_model(arch_of(full), SIDE_DIV, WIDTH_DIV).arch_args(), **extra}
    return dict(
        channel_base=full["channel_base"] // (SIDE_DIV * WIDTH_DIV),
        channel_max=full["channel_max"] // WIDTH_DIV,
        channel_min=full["channel_min"] // WIDTH_DIV,
        latent_channels=full["latent_channels"] // WIDTH_DIV,
        block=full["block"],
        latent_res=4,
        core_channels=full.get("core_channels", 0) // WIDTH_DIV,
        core_blocks=full.get("core_blocks", 0),
        encoder_core_blocks=full.get("encoder_core_blocks", 0),
        light_res=full.get("light_res", 0) // SIDE_DIV,
        **extra,
    )


def full_size_gflops(full: dict) -> list[float]:
    """Full-size training GFLOP per image per stage (a peer has one)."""
    from progressive_swap.model.summary import summarize

    return [round(r["gflops_train"], 2) for r in summarize(full_model(full))]


# The study's phases at full size (the 1024 recipe's stages: 256; 512 fade, stable; 1024 fade,
# stable) and the recipe's batch per identity at each.
FULL_PHASES = ((256, 1.0), (512, 0.5), (512, 1.0), (1024, 0.5), (1024, 1.0))
FULL_BATCH = (16, 8, 8, 4, 4)
COSTS = ("h100", "rtx4090", "flops", "cpu")
UNITS = {"h100": "estimated H100 seconds at full size", "rtx4090": "estimated RTX 4090 seconds at full size",
         "flops": "full-size training PFLOP", "cpu": "process CPU seconds of the scaled model, one thread"}


def full_size_phases(full: dict) -> tuple[tuple[tuple[int, float], ...], tuple[int, ...]]:
    """``(FULL_PHASES, FULL_BATCH)`` of a design: a peer's (which does not grow) are its one
    resolution in all five phases, at the recipe's batch per identity for that resolution."""
    if full.get("fixed"):  # a comb trained at its final side from scratch
        return ((FULL_PHASES[-1][0], 1.0),) * len(FULL_PHASES), (FULL_BATCH[-1],) * len(FULL_BATCH)
    if not is_peer(full):
        return FULL_PHASES, FULL_BATCH
    res = int(full["res"]) if full.get("res") else full_model(full).res
    batch = {r: b for (r, _), b in zip(FULL_PHASES, FULL_BATCH)}.get(res, FULL_BATCH[-1])
    return ((res, 1.0),) * len(FULL_PHASES), (batch,) * len(FULL_BATCH)


def full_size_cost(full: dict) -> list[dict]:
    """Per phase of ``FULL_PHASES`` (``full_size_phases``): full-size training GFLOP and estimated
    GPU seconds per image (``eval/cost.py``), on the meta device in bf16."""
    key = {**arch_of(full), **({"fixed": True} if full.get("fixed") else {})}
    if float(full.get("train", {}).get("loss.swap_identity", 0)) > 0:
        key["swap_decodes"] = True  # a second decoder pass per image
    return json.loads(_full_size_cost(json.dumps(key, sort_keys=True)))


@functools.lru_cache(maxsize=None)
def _full_size_cost(arch_json: str) -> str:
    from progressive_swap.eval.cost import step_cost

    full = json.loads(arch_json)
    swap_decodes = bool(full.pop("swap_decodes", False))
    model = full_model(arch_of(full), torch.bfloat16)
    rows = []
    for (res, alpha), batch in zip(*full_size_phases(full)):
        c = step_cost(model, res, alpha, batch, swap_decodes)
        rows.append({"res": res, "alpha": alpha, "batch_per_identity": batch,
                     "train_gflops": round(c["train_gflops"], 3),
                     **{f"{k}_ms": round(v * 1e3, 5) for k, v in c["gpu_seconds"].items()}})
    return json.dumps(rows)


def per_image(full: dict, cost: str) -> list[float]:
    """A full-size currency's cost of one image in each phase (PFLOP or GPU seconds)."""
    rows = full_size_cost(full)
    if cost == "flops":
        return [r["train_gflops"] / 1e6 for r in rows]
    return [r[f"{cost}_ms"] / 1e3 for r in rows]


def spent(full: dict, images: list[int]) -> dict:
    """What ``images`` per phase cost at full size, in each full-size currency."""
    rows = full_size_cost(full)
    out = {"flops": sum(n * r["train_gflops"] / 1e6 for n, r in zip(images, rows))}
    for gpu in ("h100", "rtx4090"):
        out[gpu] = sum(n * r[f"{gpu}_ms"] / 1e3 for n, r in zip(images, rows))
    return {k: round(v, 3) for k, v in out.items()}


def converted(runs: list[dict], cost: str) -> list[dict]:
    """The CPU-second runs among ``runs`` in a full-size currency: each run's budget becomes the
    full-size cost of the images it trained, averaged over the seeds of its CPU budget (so seeds
    still group), and ``cost_spent`` its own. Their measures stay as they were measured (runs
    from before the identity measures lack them)."""
    cpu = [r for r in runs if budget_of(r)[0] == "cpu"]
    for r in cpu:
        r["_spent"] = spent(r["full_size_arch"], r["images_per_phase"])[cost]
    out = []
    for r in cpu:
        group = [q["_spent"] for q in cpu if q["candidate"] == r["candidate"] and budget_of(q) == budget_of(r)]
        out.append({**{k: v for k, v in r.items() if k != "_spent"}, "cost": cost, "cost_spent": r["_spent"],
                    "budget": round(sum(group) / len(group), 1), "converted_from_cpu_s": budget_of(r)[1]})
    return out


def critic_gflops(full: dict) -> float:
    """Full-size training GFLOP per image of the latent identity adversary's critic (its own
    update and the encoder's term through it; ``FlopCounterMode``), 0 without it. The cost model
    leaves it out; this says how much that is."""
    from torch.utils.flop_counter import FlopCounterMode

    from progressive_swap.model.autoencoder import CombArch
    from progressive_swap.train.losses import SwapLoss

    strength = float(full.get("train", {}).get("loss.latent_adversary", 0.0))
    if strength <= 0 or is_peer(full):
        return 0.0
    channels, side = arch_of(full)["latent_channels"], CombArch.latent_res  # the side of every stage
    loss = SwapLoss(latent_adversary=strength, latent_channels=channels, identities=2)
    latent = torch.randn(2, channels, side, side, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        loss.latent_term(latent, torch.tensor([0, 1])).backward()
    return round(counter.get_total_flops() / 2 / 1e9, 4)


def describe(name: str) -> dict:
    """A candidate's full-size and scaled size and cost, as JSON."""
    full = design(name)
    rows = full_size_cost(full)
    critic = critic_gflops(full)
    return {"candidate": name, "full_size_arch": arch_of(full), "train": full.get("train", {}),
            "params": full_size_params(full), "train_gflops_per_image": [r["train_gflops"] for r in rows],
            **({"critic_train_gflops_per_image": critic} if critic else {}),
            "phases": rows, "scaled_arch": scaled(full)}


def _overrides(name: str, seed: int, out: Path) -> list[str]:
    from progressive_swap.cli.config import cpu_precision_by_flags

    full = design(name)
    arch = scaled(full)
    train = arch.pop("train", {})
    arch.pop("fixed", None)
    if is_peer(full):  # the scaled port in place of the recipe's comb
        from progressive_swap.eval.peers import build_peer, train_overrides

        with torch.device("meta"):
            model = train_overrides(build_peer(arch))
    else:
        model = [f"model.{k}={v}" for k, v in arch.items()]
    return [
        "recipe=demo",
        "schedule_seconds=null",  # the budget decides the images, not this CPU's speed
        f"trainer.precision={cpu_precision_by_flags()}",  # as the study's runs have always trained
        *model,
        *[f"{k}={v}" for k, v in train.items()],
        f"data.phantom.size={arch['res'] if is_peer(full) else STAGES[-1]}",
        "data.num_workers=0",
        "preview_every=0",
        "checkpoint.every_minutes=10",  # a run stopped part-way resumes from here (one_run)
        "resume=auto",
        f"seed={seed}",
        f"out={out}",
    ]


def _stages(images: list[int], peer_res: int | None = None, lr: float | None = None) -> str:
    """The scaled schedule of ``images`` per phase: 32; 64 fade, stable; 128 fade, stable. A peer
    (``peer_res``, it does not grow) trains them all in one stage at its side, annealed; or at a
    constant ``lr`` of its own (a design's ``lr``: the peer tool's default)."""
    if peer_res is not None:
        return (f"schedule.stages=[{{res:{peer_res},images:{sum(images)},batch:{BATCH},lr:{lr or LR},"
                f"lr_end:{lr or LR_END}}}]")
    s32, f64, s64, f128, s128 = images
    return (
        f"schedule.stages=[{{res:32,images:{s32},batch:{BATCH},lr:{LR}}},"
        f"{{res:64,images:{s64},fade:{f64},batch:{BATCH},lr:{LR}}},"
        f"{{res:128,images:{s128},fade:{f128},batch:{BATCH},lr:{LR},lr_end:{LR_END}}}]"
    )


def calibrate(overrides: list[str], steps: int = 3, warmup: int = 1, peer_res: int | None = None) -> list[float]:
    """CPU seconds per image of each phase (32; 64 mid-fade, 64; 128 mid-fade, 128), real steps on
    synthetic batches at the run's precision and memory format. A peer (``peer_res``) has one
    phase: its cost is that of all five."""
    from hydra.utils import instantiate

    from progressive_swap.cli.config import compose, cpu_precision_by_flags
    from progressive_swap.model.autoencoder import CombAutoencoder
    from progressive_swap.train.batch_finder import autocast_for
    from progressive_swap.train.module import SwapModule

    cfg = compose("train", [*overrides, _stages([1600] * 5, peer_res)])
    schedule = instantiate(cfg.schedule, identities=2, world_size=1)
    if peer_res is not None:
        model = instantiate(cfg.module.model).to(memory_format=torch.channels_last)
    else:
        arch = instantiate(cfg.model, num_identities=2, final_res=schedule.final_res, start_res=schedule.start_res)
        model = CombAutoencoder(arch).to(memory_format=torch.channels_last)
    module = SwapModule(model, schedule, loss=instantiate(cfg.loss), geometry=dict(cfg.augment.geometry),
                        warp=float(cfg.augment.warp), channels_last=True)
    module.log = lambda *a, **k: None
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    precision = cpu_precision_by_flags()  # what the study's runs train in (see _overrides)

    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.num_workers = 0

    def batches(phase):  # the real loader from this phase's middle: its CPU time counts too
        mid = phase.first_batch + phase.batches // 2
        dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(schedule=schedule, batches_done=mid),
                                     global_rank=0)
        return iter(dm.train_dataloader())

    def cpu_step(s: int, it) -> float:
        t0 = time.process_time()
        data = next(it)
        with autocast_for(precision, torch.device("cpu")):
            loss = module.training_step(data, s)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.process_time() - t0

    out = []
    for phase in schedule.phases:
        it = batches(phase)
        for s in range(warmup):
            cpu_step(s, it)
        cpu = sorted(cpu_step(s, it) for s in range(steps))
        out.append(cpu[len(cpu) // 2] / (2 * BATCH))
    return out * len(SHARES) if peer_res is not None else out


def shares_of(full: dict) -> tuple[float, ...]:
    """How a design splits a budget over the phases: its own ``shares``, else the study's ``SHARES``."""
    return tuple(full.get("shares", SHARES))


def images_for(budget: float, costs: list[float], shares: tuple[float, ...] = SHARES) -> list[int]:
    """Images per phase that a budget buys: ``shares`` of it (the study's ``SHARES`` unless a design
    has its own) at each phase's cost per image, in whole steps (at least one)."""
    step = 2 * BATCH
    return [max(step, int(share * budget / c) // step * step) for share, c in zip(shares, costs)]


def _plan(run_dir: Path, budget: float, cost: str, make, shares: tuple[float, ...] = SHARES) -> tuple[dict, int]:
    """The run's costs per image and images per phase, and the images its newest checkpoint holds.

    A run stopped part-way (a killed process, a closed session) resumes from its checkpoint
    (written every 10 minutes) with the plan it started with, kept in ``run_dir/bench_plan.json``:
    a second calibration would size the phases differently. A plan for another budget or currency
    is not reused, and the run starts over."""
    from progressive_swap.core.io import atomic_write_json
    from progressive_swap.train.checkpoint import good_checkpoints

    path = run_dir / "bench_plan.json"
    plan = json.loads(path.read_text()) if path.is_file() else None
    found = good_checkpoints(run_dir, warn=lambda m: print(f"bench_efficiency: {m}", file=sys.stderr)) \
        if run_dir.is_dir() else []
    if plan and plan.get("budget") == budget and plan.get("cost") == cost and found:
        return plan, found[0][0] * 2 * BATCH
    if found:
        raise SystemExit(f"bench_efficiency: {run_dir} holds checkpoints of another plan (or none was kept); "
                         "move the directory away to train this run afresh")
    costs = make()
    plan = {"budget": budget, "cost": cost, "costs": costs, "images": images_for(budget, costs, shares)}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, plan)
    return plan, 0


def cpu_s_of(run: dict) -> float:
    """A run's process CPU seconds; a resumed run's part counts for all its images at its own rate
    (the process that was stopped left no figure)."""
    done = run.get("resumed_at_images", 0)
    part = run["images"] - done
    return run["train_cpu_s"] * run["images"] / part if done and part > 0 else run["train_cpu_s"]


def one_run(name: str, seed: int, budget: float, work: Path, cost: str = "cpu") -> dict:
    """Size the schedule to the budget (calibrated CPU seconds, or the full-size cost), train;
    runs in its own process. A run stopped part-way resumes (:func:`_plan`); its CPU and wall
    seconds then count this process's part only, and ``resumed_at_images`` says where it began."""
    from progressive_swap.cli import train as train_cli

    run_dir = work / f"seed{seed}" / name
    overrides = _overrides(name, seed, run_dir)
    full = design(name)
    peer_res = fixed_res(full)
    plan, done = _plan(run_dir, budget, cost,
                       lambda: calibrate(overrides, peer_res=peer_res) if cost == "cpu" else per_image(full, cost),
                       shares_of(full))
    costs, images = plan["costs"], plan["images"]
    load_before = os.getloadavg()
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    rc = train_cli.main([*overrides, _stages(images, peer_res, full.get("lr"))])
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
    if rc != 0:
        raise SystemExit(f"training failed for {name} seed {seed}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    total = sum(images)
    mine = total - done  # the images this process trained
    return {
        "candidate": name,
        "seed": seed,
        "checkpoint": str(run_dir / "model.safetensors"),
        "cost": cost,
        "budget": budget,
        **({"lr_constant": full["lr"]} if full.get("lr") else {}),
        **({"shares": list(full["shares"])} if full.get("shares") else {}),
        "cost_per_image": [round(c, 9) for c in costs],
        "cost_spent": round(sum(i * c for i, c in zip(images, costs)), 4),
        "images_per_phase": images,
        "images": total,
        "train_cpu_s": round(cpu, 1),
        "train_wall_s": round(wall, 1),
        **({"resumed_at_images": done} if done else {}),
        "images_per_cpu_s": round(mine / max(cpu, 1e-9), 2),
        "images_per_wall_s": round(mine / wall, 2),
        "peak_rss_gb": round(r1.ru_maxrss / 2**20, 3),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def summarise(runs: list[dict], budget: float | None = None) -> dict:
    """Per candidate and budget: the design's full-size and scaled cost, and the mean of its runs."""
    from progressive_swap.model.summary import summarize

    keys = ("swap_psnr", *IDENTITY_KEYS, "hf_coherent", "recon_psnr", "source_mask_iou", "swap_mask_iou", "images",
            "train_cpu_s", "images_per_cpu_s", "images_per_wall_s", "peak_rss_gb")
    candidates = {}
    for name in dict.fromkeys(r["candidate"] for r in runs):
        full = next(r["full_size_arch"] for r in runs if r["candidate"] == name)
        small = scaled_model(full)
        per_budget = {}
        for b in sorted({budget_of(r) for r in runs if r["candidate"] == name}):
            mine = [r for r in runs if r["candidate"] == name and budget_of(r) == b]
            per_budget[f"{b[0]} {b[1]:g}"] = {"seeds": [r["seed"] for r in mine], **_means(mine, keys)}
        candidates[name] = {
            "full_size_arch": full,
            "full_size_params": full_size_params(full),
            "full_size_train_gflops_per_image": full_size_gflops(full),
            "scaled_arch": scaled(full),
            "scaled_params": sum(p.numel() for p in small.parameters()),
            "scaled_train_gflops_per_image": [round(r["gflops_train"], 3) for r in summarize(small)],
            "mean": per_budget if budget is None else next(iter(per_budget.values())),
        }
    costs = sorted({budget_of(r)[0] for r in runs})
    return {
        "budget": "; ".join(f"{c}: {UNITS[c]}" for c in costs),
        "lr": [LR, LR_END],
        "shares": SHARES,
        "stages": STAGES,
        "torch_threads_per_run": 1,
        "candidates": candidates,
        "runs": runs,
    }


IDENTITY_KEYS = ("identity_gain_db", "swap_recon_gap_db", "shape_score", "shape_score_truth", "shape_transfer",
                 "feature_transfer", "swap_psnr_colour_matched", "identity_gain_colour_matched_db",
                 "baseline_colour_transfer_psnr", "baseline_blurred_truth_psnr",
                 "baseline_colour_transfer_feature_transfer", "baseline_blurred_truth_feature_transfer")
# Measures added after runs were kept: ``--rescore`` evaluates a kept run's checkpoint again and adds them.
RESCORE_KEYS = ("feature_transfer", "baseline_colour_transfer_feature_transfer",
                "baseline_blurred_truth_feature_transfer")


def rescore(path: Path, frames: int | None = None) -> dict:
    """Add :data:`RESCORE_KEYS` to the kept run ``path`` from its checkpoint, evaluated on the same
    held-out frames. The run's own swap PSNR must come back within 1e-3 dB (the same weights and
    frames), or nothing is written; a run whose checkpoint is gone is left as it is."""
    from progressive_swap.eval.quality import QualitySettings, evaluate

    run = json.loads(path.read_text())
    ck = Path(run.get("checkpoint") or "")
    if not ck.is_file():
        return {"run": path.name, "rescored": False, "why": f"checkpoint not found: {ck}"}
    q = evaluate(str(ck), QualitySettings(frames=frames or int(run.get("frames_per_pair", 16)), video_frames=0), "cpu")
    drift = abs(q["swap_psnr"] - run["swap_psnr"])
    if drift > 1e-3:
        return {"run": path.name, "rescored": False,
                "why": f"swap PSNR {q['swap_psnr']:.4f} dB now against {run['swap_psnr']:.4f} kept"}
    run.update({k: q[k] for k in RESCORE_KEYS})
    run["rescored"] = {"keys": list(RESCORE_KEYS), "swap_psnr_drift_db": round(drift, 6)}
    _write(path, json.dumps(run, indent=1))
    return {"run": path.name, "rescored": True, **{k: round(q[k], 4) for k in RESCORE_KEYS}}


def budget_of(run: dict) -> tuple[str, float]:
    """``(currency, budget)`` of a run; runs from before ``--cost`` were CPU-second runs."""
    return run.get("cost", "cpu"), float(run.get("budget", run.get("budget_cpu_s")))


def _means(runs: list[dict], keys: tuple[str, ...]) -> dict:
    """Mean of each key over the runs that have it (runs from before a measure existed lack it)."""
    out = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = round(sum(vals) / len(vals), 4)
    return out


def full_size_params(full: dict) -> int:
    return sum(p.numel() for p in full_model(full).parameters())


def run_file(runs_dir: Path, name: str, budget: float, seed: int, cost: str = "cpu") -> Path:
    if cost == "cpu":
        return runs_dir / f"{name}_{budget:g}s_seed{seed}.json"
    return runs_dir / f"{name}_{cost}-{budget:g}_seed{seed}.json"


def load_runs(runs_dir: Path) -> list[dict]:
    """Every finished run kept under ``runs_dir`` (one JSON per run)."""
    return [json.loads(f.read_text()) for f in sorted(runs_dir.glob("*_seed*.json"))]


def _write(path: Path | str, text: str) -> None:
    from progressive_swap.core.io import atomic_write_text

    atomic_write_text(path, text + "\n")


METRICS = ("swap_psnr", "hf_coherent", "recon_psnr")
# Images the recipes train (sum of every stage's images, fades included): what the fits are extrapolated to.
RECIPE_IMAGES = {"256": 4_000_000, "512": 7_800_000, "1024": 10_400_000}


def fit_line(x: list[float], y: list[float]) -> dict:
    """Least squares ``y = a + b * x`` with the standard errors of ``a`` and ``b`` (None when the
    points leave no degree of freedom) and the residual standard deviation."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    design_matrix = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(design_matrix, y, rcond=None)
    dof = len(x) - 2
    resid = y - design_matrix @ coef
    if dof <= 0:
        return {"a": float(coef[0]), "b": float(coef[1]), "se_a": None, "se_b": None, "resid_sd": None, "n": len(x)}
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(design_matrix.T @ design_matrix)
    return {"a": float(coef[0]), "b": float(coef[1]), "se_a": float(cov[0, 0] ** 0.5), "se_b": float(cov[1, 1] ** 0.5),
            "resid_sd": s2 ** 0.5, "n": len(x), "cov": cov.tolist()}


def _predict(fit: dict, x: float) -> tuple[float, float | None]:
    """Prediction of a fit at ``x`` and its standard error (from the coefficients' covariance)."""
    y = fit["a"] + fit["b"] * x
    if fit.get("cov") is None:
        return y, None
    c = fit["cov"]
    return y, (c[0][0] + 2 * x * c[0][1] + x * x * c[1][1]) ** 0.5


def report(runs: list[dict], plot: Path | None = None, fit_from: float = 0.0, cost: str = "cpu") -> dict:
    """Quality against compute per design: every budget's mean, a fit of quality linear in
    log10(process CPU seconds), the budgets where two designs' fits cross, and each fit
    extrapolated to a recipe's budget (the recipe's images at the scaled default's CPU cost per
    image; CPU-second runs only). Only runs of budgets ``>= fit_from`` enter the fits (a short
    run's early transient can dominate a straight line). Optionally a PNG, one line per design.

    ``cost`` names the currency of the runs (their budgets and what they spent: process CPU
    seconds, or the full-size cost of the images they trained); crossings keep the key
    ``cpu_s`` for that value whatever the currency."""
    import numpy as np

    runs = [dict(r, candidate=_named(r), train_cpu_s=cpu_s_of(r),
                 spent=cpu_s_of(r) if cost == "cpu" else r["cost_spent"]) for r in runs]
    def measured(some: list[dict]) -> tuple[str, ...]:  # runs from before a measure existed lack it
        return METRICS + tuple(k for k in ("identity_gain_db", "swap_recon_gap_db", "shape_score")
                               if some and all(r.get(k) is not None for r in some))

    metrics = measured(runs)
    names = list(dict.fromkeys(r["candidate"] for r in runs))
    designs = {}
    for name in names:
        mine = [r for r in runs if r["candidate"] == name]
        budgets = sorted({budget_of(r)[1] for r in mine})
        row = {"budgets": {}, "fits": {}}
        for b in budgets:
            at = [r for r in mine if budget_of(r)[1] == b]
            row["budgets"][f"{b:g}"] = {
                "seeds": [r["seed"] for r in at], "images": round(float(np.mean([r["images"] for r in at]))),
                "train_cpu_s": round(float(np.mean([r["train_cpu_s"] for r in at])), 1),
                "spent": round(float(np.mean([r["spent"] for r in at])), 3),
                **{m: round(float(np.mean([r[m] for r in at])), 4) for m in measured(at)},
                **{f"{m}_runs": [round(r[m], 4) for r in at] for m in measured(at)},
            }
        fitted_runs = [r for r in mine if budget_of(r)[1] >= fit_from]
        if len({budget_of(r)[1] for r in fitted_runs}) >= 2:
            x = [float(np.log10(r["spent"])) for r in fitted_runs]
            row["fits"] = {m: fit_line(x, [r[m] for r in fitted_runs]) for m in metrics}
            row["fit_cpu_s_range"] = [min(r["spent"] for r in fitted_runs), max(r["spent"] for r in fitted_runs)]
        row["cpu_s_per_image"] = float(np.mean([r["train_cpu_s"] / r["images"] for r in mine]))
        designs[name] = row
    fitted = [n for n in names if designs[n]["fits"]]
    crossings = {}
    for i, n1 in enumerate(fitted):
        for n2 in fitted[i + 1:]:
            for m in ("swap_psnr", "hf_coherent"):
                f1, f2 = designs[n1]["fits"][m], designs[n2]["fits"][m]
                x = (f2["a"] - f1["a"]) / (f1["b"] - f2["b"]) if f1["b"] != f2["b"] else None
                if x is not None and 0 <= x <= 9:  # 1 CPU s to 1e9 CPU s: beyond, the lines are as good as parallel
                    crossings[f"{n1} / {n2} {m}"] = {"cpu_s": round(10 ** x, 1),
                                                    "after_it_better": n1 if f1["b"] > f2["b"] else n2}
    default = _named({"candidate": "default", "scaled_arch": scaled(design("default"))})
    reference = default if default in designs else next(iter(designs))
    per_image = designs[reference]["cpu_s_per_image"]
    extrapolation = {}
    for recipe, images in (RECIPE_IMAGES if cost == "cpu" else {}).items():
        x = float(np.log10(images * per_image))
        extrapolation[recipe] = {"cpu_s": round(10 ** x), **{
            n: {m: [round(v, 3) if v is not None else None for v in _predict(designs[n]["fits"][m], x)]
                for m in ("swap_psnr", "hf_coherent")} for n in fitted}}
    result = {"cost": cost, "unit": UNITS[cost], "fit_from_budget_cpu_s": fit_from, "designs": designs,
              "crossings": crossings,
              "extrapolated_to_recipes": {"cpu_s_per_image_of": reference, "value_and_standard_error": extrapolation}}
    if plot is not None:
        _plot(designs, plot, fit_from, UNITS[cost])
    return result


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    """The report as Markdown: quality per design and budget, the fits, the crossings."""
    designs = result["designs"]
    budgets = sorted({float(b) for d in designs.values() for b in d["budgets"]})
    unit = {"cpu": "CPU s", "h100": "H100 s", "rtx4090": "RTX 4090 s", "flops": "PFLOP"}[result.get("cost", "cpu")]
    lines = ["| design | " + " | ".join(f"{b:g} {unit}" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for name, d in designs.items():
        cells = []
        for b in budgets:
            v = d["budgets"].get(f"{b:g}")
            gain = f" / gain {v['identity_gain_db']:+.2f}" if v is not None and "identity_gain_db" in v else ""
            cells.append("–" if v is None else f"{v['swap_psnr']:.2f}{gain} / {v['hf_coherent']:.3f} / "
                         f"{v['recon_psnr']:.2f} ({v['images']:,} img, seeds {','.join(map(str, v['seeds']))})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"| design | swap PSNR = a + b·log10({unit}): b ± se | hf_coherent: b ± se | points |",
              "|---|---:|---:|---:|"]
    for name, d in designs.items():
        if d["fits"]:
            f, h = d["fits"]["swap_psnr"], d["fits"]["hf_coherent"]
            lines.append(f"| {name} | {f['a']:.2f} + {f['b']:.2f}·x (± {_num(f['se_b'], 2)}) | "
                         f"{h['b']:.3f} (± {_num(h['se_b'], 3)}) | {f['n']} |")
    lines += ["", f"| pair, measure | fits cross at ({unit}) | better after |", "|---|---:|---|"]
    lines += [f"| {k} | {v['cpu_s']:,} | {v['after_it_better']} |" for k, v in result["crossings"].items()]
    return "\n".join(lines) + "\n"


def _named(run: dict) -> str:
    """A run's design name; a ``default`` run is named after the design of ``FULL`` it was."""
    if run["candidate"] != "default":
        return ALIASES.get(run["candidate"], run["candidate"])
    return next((n for n, full in FULL.items() if scaled(full) == run["scaled_arch"]), "default")


def _plot(designs: dict, path: Path, fit_from: float = 0.0, unit: str = UNITS["cpu"]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("swap_psnr", "swap PSNR (dB)"), ("hf_coherent", "hf_coherent")]
    if any("identity_gain_db_runs" in v for row in designs.values() for v in row["budgets"].values()):
        panels.insert(1, ("identity_gain_db", "identity gain over the recoloured source (dB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharex=True)
    for ax, (m, label) in zip(axes, panels):
        for k, (name, row) in enumerate(designs.items()):
            colour = plt.cm.tab20(k % 20)
            pts = [(v.get("spent", v["train_cpu_s"]), y) for v in row["budgets"].values()
                   for y in v.get(f"{m}_runs", [])]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, s=14)
            if row["fits"].get(m):
                f = row["fits"][m]
                xs = np.logspace(*np.log10(row["fit_cpu_s_range"]), 20)
                ax.plot(xs, f["a"] + f["b"] * np.log10(xs), color=colour, label=name)
            else:
                ax.plot([], [], color=colour, label=name)
        ax.set_xscale("log")
        ax.set_xlabel(unit)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fitted = f"runs of budget {fit_from:g} and more" if fit_from else "every run"
    fig.suptitle(f"Quality against compute, phantom, 32 -> 128 px (scaled designs); line: linear in log compute, "
                 f"fitted to {fitted}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cost", choices=COSTS, default="cpu",
                    help="the budget's currency: estimated full-size GPU seconds (h100, rtx4090), full-size PFLOP "
                         "(flops), or process CPU seconds of the scaled model (cpu)")
    ap.add_argument("--budget", type=float, default=None, help="the budget per run, in --cost's currency")
    ap.add_argument("--describe", nargs="+", default=None,
                    help="no training: print each candidate's full-size params, GFLOP and GPU time per image")
    ap.add_argument("--budget-cpu", type=float, default=150.0, help="process CPU seconds of training per run")
    ap.add_argument("--budgets", type=float, nargs="+", default=None,
                    help="several budgets (process CPU s), run in the order given; overrides --budget-cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--candidates", nargs="+", default=None,
                    help=f"names from {', '.join(FULL)}; 'default' is recipe=1024's model; aliases {ALIASES}; "
                         f"the peers' designs {', '.join(PEER_FULL)}")
    ap.add_argument("--frames", type=int, default=16, help="held-out frames per identity pair")
    ap.add_argument("--runs-dir", default=None,
                    help="keep each finished run as NAME_BUDGETs_seedSEED.json here and reuse the ones already "
                         "there (same scaled design and frames), so a study can be spread over several sittings")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", nargs="+", default=None,
                    help="combine the JSON of runs made separately (e.g. one process per seed) into --out")
    ap.add_argument("--report", action="store_true",
                    help="no training: fit quality against compute from the runs kept in --runs-dir, print JSON "
                         "(and write --plot)")
    ap.add_argument("--plot", default=None, help="with --report: a PNG of quality against compute")
    ap.add_argument("--md", default=None, help="with --report: Markdown tables of the same")
    ap.add_argument("--convert-cpu-runs", action="store_true",
                    help="with --report and a full-size --cost: add the CPU-second runs, each placed at what its "
                         "images cost at full size (their schedules split the CPU time, not the full-size cost, "
                         "in SHARES)")
    ap.add_argument("--fit-from", type=float, default=0.0,
                    help="with --report: fit only the runs of this budget (CPU s) and above")
    ap.add_argument("--rescore", nargs="+", default=None, metavar="RUN_JSON",
                    help="no training: evaluate these kept runs' checkpoints again and add the measures added "
                         "since (feature_transfer), checked against the run's own swap PSNR")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: NAME,SEED
    a = ap.parse_args()
    if a.describe:
        print(json.dumps([describe(n) for n in a.describe], indent=1))
        return 0
    budgets = a.budgets or [a.budget if a.budget is not None else a.budget_cpu]
    if a.rescore:
        torch.set_num_threads(1)
        for f in a.rescore:
            print(json.dumps(rescore(Path(f))), flush=True)
        return 0
    if a.report:
        if not a.runs_dir:
            raise SystemExit("--report reads the runs kept in --runs-dir")
        runs = [r for r in load_runs(Path(a.runs_dir)) if a.candidates is None or r["candidate"] in a.candidates]
        if a.cost != "cpu" and a.convert_cpu_runs:
            runs = [*[r for r in runs if budget_of(r)[0] == a.cost], *converted(runs, a.cost)]
        runs = [r for r in runs if budget_of(r)[0] == a.cost]
        result = report(runs, Path(a.plot) if a.plot else None, a.fit_from, a.cost)
        text = json.dumps(result, indent=1)
        print(text)
        if a.out:
            _write(a.out, text)
        if a.md:
            _write(a.md, markdown(result))
        return 0
    if a.merge:
        runs = [r for f in a.merge for r in json.loads(Path(f).read_text())["runs"]]
        text = json.dumps(summarise(runs), indent=1)
        print(text)
        if a.out:
            _write(a.out, text)
        return 0
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_efficiency_"))
    if a.one:
        name, seed = a.one.split(",")
        print(json.dumps(one_run(name, int(seed), budgets[0], work, a.cost)))
        return 0

    from progressive_swap.eval.quality import QualitySettings, evaluate

    torch.set_num_threads(1)  # the evaluation must not take the other study process's core
    settings = QualitySettings(frames=a.frames, video_frames=0)
    runs_dir = Path(a.runs_dir) if a.runs_dir else None
    runs = []
    a.candidates = a.candidates or list(FULL)
    for budget in budgets:
        for seed in a.seeds:  # interleaved: every candidate once per seed before the next seed
            for name in a.candidates:
                full = design(name)
                kept = run_file(runs_dir, name, budget, seed, a.cost) if runs_dir else None
                if kept is not None and kept.exists():
                    run = json.loads(kept.read_text())
                    if run["scaled_arch"] == scaled(full) and run["frames_per_pair"] == a.frames:
                        runs.append(run)
                        print(f"reusing {kept}", file=sys.stderr, flush=True)
                        continue
                cmd = [sys.executable, __file__, "--cost", a.cost, "--budget", str(budget),
                       "--work", str(work / f"{a.cost}{budget:g}"), "--one", f"{name},{seed}"]
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                run = json.loads(out.strip().splitlines()[-1])
                q = evaluate(run["checkpoint"], settings, "cpu")
                measured = ("swap_psnr", "swap_ssim", "hf_energy", "hf_coherent", "recon_psnr", "source_mask_iou",
                            "swap_mask_iou", "stage_res", "alpha", *IDENTITY_KEYS)
                run.update({k: q[k] for k in measured})
                run.update(frames_per_pair=a.frames, full_size_arch=full, scaled_arch=scaled(full),
                           lscpu_bf16=_cpu_bf16())
                if a.cost == "cpu":
                    run["budget_cpu_s"] = budget
                else:  # what the run's images cost at full size in every currency
                    run["full_size_cost_spent"] = spent(full, run["images_per_phase"])
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
                if kept is not None:
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    _write(kept, json.dumps(run, indent=1))
    text = json.dumps(summarise(runs, budgets[0] if len(budgets) == 1 else None), indent=1)
    print(text)
    if a.out:
        _write(a.out, text)
    return 0


def _cpu_bf16() -> str:
    """Which bfloat16 instructions this CPU has (``amx_bf16``, ``avx512_bf16`` or none)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "none (AVX2 class)")


if __name__ == "__main__":
    sys.exit(main())
