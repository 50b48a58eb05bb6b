"""Warm starts: load weights from any earlier checkpoint by name and shape.

Works across stages, final resolutions and identity counts: a 512 model starts from a 256
model's blocks, a 3-identity comb from a 2-identity one (the new decoder starts fresh).
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict

import torch
from rich.console import Console
from rich.table import Table

from progressive_swap.train.checkpoint import load_weights


def match_weights(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy every source tensor whose name and shape match a model parameter or buffer.

    Returns:
        Names by outcome: ``loaded``, ``skipped`` (in the source, but absent or of another shape
        in the model) and ``new`` (in the model, not loaded).
    """
    own = model.state_dict()
    loaded, skipped = [], []
    update = {}
    for name, tensor in source.items():
        if name in own and own[name].shape == tensor.shape:
            update[name] = tensor.to(own[name].dtype)
            loaded.append(name)
        else:
            skipped.append(name)
    model.load_state_dict(update, strict=False)
    new = [n for n in own if n not in update]
    return {"loaded": loaded, "skipped": skipped, "new": new}


def _group(name: str) -> str:
    """``decoders.0.blocks.b64.conv1.weight`` → ``decoders.0.blocks.b64``: a table row per block."""
    parts = name.split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else parts[0]


def report_table(result: dict[str, list[str]], title: str) -> Table:
    """A rich table with one row per block: how many tensors were loaded, skipped or are new."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for status, names in result.items():
        for n in names:
            counts[_group(n)][status] += 1
    table = Table(title=title)
    for col in ("block", "loaded", "skipped", "new"):
        table.add_column(col, justify="left" if col == "block" else "right")
    for block in sorted(counts):
        c = counts[block]
        table.add_row(block, *(str(c[s]) if c[s] else "" for s in ("loaded", "skipped", "new")))
    table.add_row("[bold]total", *(f"[bold]{len(result[s])}" for s in ("loaded", "skipped", "new")))
    return table


def warm_start(model: torch.nn.Module, path: str | os.PathLike, console: Console | None = None) -> dict[str, list[str]]:
    """Load matching weights from ``path`` into ``model`` and print the table.

    Raises:
        ValueError: if nothing at all matched (almost certainly the wrong file).
    """
    result = match_weights(model, load_weights(path))
    if not result["loaded"]:
        raise ValueError(f"warm_start: no parameter of {path} matches this model by name and shape")
    (console or Console(stderr=True)).print(report_table(result, f"warm start from {path}"))
    return result
