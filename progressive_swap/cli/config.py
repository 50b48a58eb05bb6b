"""Finding and composing the recipes (Hydra's compose API, so commands stay plain functions)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from progressive_swap.cli.common import UserError
from progressive_swap.cli.schema import TrainConfig, check_options, closest, explain_validation_error, omegaconf_schema

GROUPS = (
    "recipe",
    "model",
    "schedule",
    "data",
    "loss",
    "optimizer",
    "trainer",
    "module",
    "callbacks",
    "logger",
    "debug",
)
SCHEMAS = {"train": TrainConfig}  # config name -> its options dataclass

ConfigStore.instance().store(name="train_schema", node=omegaconf_schema(TrainConfig))


PRECISION_ENV = "PROGRESSIVE_SWAP_CPU_PRECISION"


def cpu_precision() -> str:
    """``trainer=cpu``'s precision: ``auto`` (swap-train measures bf16-mixed against 32-true on
    this CPU and takes the faster, :mod:`progressive_swap.train.precision`), unless
    ``$PROGRESSIVE_SWAP_CPU_PRECISION`` (``bf16-mixed`` or ``32-true``) forces one, e.g. to see
    what a CPU without bfloat16 in hardware would do.
    """
    forced = os.environ.get(PRECISION_ENV)
    if forced:
        if forced not in ("bf16-mixed", "32-true"):
            raise UserError(f"{PRECISION_ENV}={forced!r}: choose bf16-mixed or 32-true")
        return forced
    return "auto"


def cpu_precision_by_flags() -> str:
    """``bf16-mixed`` where the CPU has bfloat16 instructions (AVX512-BF16 or AMX), else
    ``32-true``: the guess that ``trainer.precision=auto`` falls back on where it cannot measure
    (several training processes, which must agree)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return "bf16-mixed" if native else "32-true"


OmegaConf.register_new_resolver("cpu_precision", cpu_precision, replace=True)  # recipes/trainer/cpu.yaml


def precision_for_capability(capability: tuple[int, int] | None) -> str:
    """Lightning precision for a CUDA device of compute ``capability`` (major, minor).

    bfloat16 needs compute capability 8.0 or newer (Ampere: RTX 30xx, A100; Ada: RTX 40xx; Hopper
    and later), so those get ``bf16-mixed``. Older cards (Pascal GTX 10xx 6.x, Volta 7.0, Turing
    RTX 20xx 7.5) have fast float16 but no bfloat16: ``16-mixed``, float16 autocast with
    Lightning's loss scaling (its GradScaler skips steps whose gradients overflow). ``None`` (no
    CUDA device here, e.g. a dry run on a laptop) gives ``bf16-mixed``, what a current GPU runs.

    Example:
        >>> precision_for_capability((7, 5)), precision_for_capability((8, 9))
        ('16-mixed', 'bf16-mixed')
    """
    if capability is None or tuple(capability) >= (8, 0):
        return "bf16-mixed"
    return "16-mixed"


def gpu_precision() -> str:
    """``trainer=gpu``'s precision: :func:`precision_for_capability` of CUDA device 0, if any."""
    capability = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None
    return precision_for_capability(capability)


OmegaConf.register_new_resolver("gpu_precision", gpu_precision, replace=True)  # recipes/trainer/gpu.yaml


def loader_workers(cap: int = 8, gb_each: float = 1.0) -> int:
    """Data-loader worker processes for this machine: one per core beyond the one that trains,
    at most ``cap`` (more do not feed a single GPU faster), and no more than the free memory holds
    at about ``gb_each`` GiB per worker (a worker holds torch and its share of the face sets)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        free_gb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        free_gb = float("inf")
    return int(max(1, min(cap, cores - 1, (free_gb - 2.0) // gb_each)))


OmegaConf.register_new_resolver("loader_workers", loader_workers, replace=True)  # recipes/data/*.yaml


def cpu_loader_workers(workers: int = 2) -> int:
    """Loader workers for training on this CPU: none on two cores or fewer, where a worker
    process only takes time from the trainer's threads (the demo's first 300 steps, AVX2 and
    float32, 2 cores: 46.7 s loading in the trainer, 55.0 s with one worker, 56.0 s with two;
    ``docs/quality.md``), else ``workers``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else int(workers)


OmegaConf.register_new_resolver("cpu_loader_workers", cpu_loader_workers, replace=True)  # recipes/recipe/demo.yaml
# recipes/model/*.yaml: the network is built for the schedule's resolutions.
OmegaConf.register_new_resolver("final_res", lambda stages: int(max(s["res"] for s in stages)), replace=True)
OmegaConf.register_new_resolver("start_res", lambda stages: int(min(s["res"] for s in stages)), replace=True)


def recipes_dir() -> Path:
    """The recipes: inside the installed package, or at the top of a source checkout."""
    pkg = Path(__file__).resolve().parents[1]
    for cand in (pkg / "recipes", pkg.parent / "recipes"):
        if (cand / "train.yaml").is_file():
            return cand
    raise UserError(f"recipes not found next to {pkg}; reinstall progressive_swap")


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (recipes_dir() / group).glob("*.yaml"))


def quote_group_choices(argv: Sequence[str]) -> list[str]:
    """``recipe=1024`` → ``recipe='1024'``: Hydra would read 1024 as an int and reject it."""
    pat = re.compile(rf"^(\+?(?:{'|'.join(GROUPS)}))=(-?\d+(?:\.\d+)?)$")
    return [pat.sub(r"\1='\2'", a) for a in argv]


def compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``recipes/<config_name>.yaml`` with ``key=value`` overrides, with one-line errors.

    Types come from the config's schema (:mod:`progressive_swap.cli.schema`); choices and bounds
    are checked here too, so a bad value stops before anything is built or written.
    """
    overrides = quote_group_choices(overrides)
    for a in overrides:
        m = re.match(rf"^\+?({'|'.join(GROUPS)})=(.+)$", a)
        if m:
            group, choice = m.group(1), m.group(2).strip("'\"")
            if choice not in available(group) and choice != "null":
                raise UserError(f"unknown {group} {choice!r}; available: {', '.join(available(group))}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except Exception as e:  # Hydra's override and composition errors
        if type(e).__name__ == "OverrideParseException":
            raise UserError(unparsable_override(overrides)) from None
        msg = str(e).strip().splitlines()
        typed = explain_validation_error(e)
        raise UserError(typed or _with_suggestion(msg[0] if msg else type(e).__name__, config_name)) from None
    finally:
        GlobalHydra.instance().clear()
    if config_name in SCHEMAS:
        try:
            check_options(cfg, SCHEMAS[config_name])
        except ValueError as e:
            raise UserError(str(e)) from None
    return cfg


def unparsable_override(overrides: Sequence[str]) -> str:
    """The one-line error for an override Hydra's grammar cannot read (a bare
    ``LexerNoViableAltException`` otherwise): which argument, and the same value quoted, e.g.
    ``cannot read 'out=/tmp/é': quote the value inside the argument, as in 'out="/tmp/é"' …``.
    """
    parser = OverridesParser.create()
    bad = next((a for a in overrides if not _parses(parser, a)), overrides[0] if overrides else "")
    key, _, value = bad.partition("=")
    if value.startswith("[") and value.endswith("]"):  # a list: quote each element
        quoted = "[" + ",".join(f'"{v.strip()}"' for v in value[1:-1].split(",")) + "]"
    else:
        quoted = f'"{value}"'
    return (f"cannot read {bad!r}: quote the value inside the argument, as in '{key}={quoted}' "
            '(README, "Paths and quoting")')


def _parses(parser: OverridesParser, override: str) -> bool:
    try:
        parser.parse_overrides([override])
    except Exception:  # Hydra's OverrideParseException and the lexer's own
        return False
    return True


def _known_keys(config_name: str) -> list[str]:
    """Every dotted key of the default config: what a misspelled key is compared with."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name)
    finally:
        GlobalHydra.instance().clear()
    keys: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for k in node.keys():
                keys.append(prefix + str(k))
                walk(node._get_node(k), prefix + str(k) + ".")

    walk(cfg, "")
    return keys + list(GROUPS)


def _with_suggestion(msg: str, config_name: str) -> str:
    """Hydra's "Could not override 'recipie'" (and friends) with the closest valid keys."""
    m = re.search(r"(?:override|Key) '([\w.]+)'", msg)
    if not m:
        return msg
    return msg + closest(m.group(1), _known_keys(config_name))
