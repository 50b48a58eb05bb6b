"""Rebuilding a network from its ``arch_args`` (a checkpoint's ``arch``).

A :class:`~progressive_swap.model.autoencoder.CombAutoencoder`'s ``arch_args`` are
:class:`~progressive_swap.model.autoencoder.CombArch` fields, as every checkpoint has held them.
Any other network the trainer can train (its ``module.model`` built through Hydra's
``_target_``, with the trainer's ``encode``/``decode`` interface) names the function that
rebuilds it in ``arch_args()["builder"]``: ``builder(arch_args)`` returns the network.

A checkpoint may come from anywhere, so only the builders listed in :data:`BUILDERS` are ever
called: a dotted path read from a file is never imported. The list names the efficiency study's
ports of the peers' designs (``eval/peers.py``); they are looked up by name when a checkpoint
asks for them, so this room does not import that one.
"""
from __future__ import annotations

import importlib
import json
from typing import Any, Mapping

from torch import nn

from progressive_swap.model.autoencoder import CombArch, CombAutoencoder

__all__ = ["BUILDER_KEY", "BUILDERS", "build_model", "arch_differences"]

BUILDER_KEY = "builder"
# The only builders a checkpoint's ``arch`` may name.
BUILDERS: tuple[str, ...] = ("progressive_swap.eval.peers.build_peer",)


def build_model(arch: Mapping[str, Any]) -> nn.Module:
    """The network ``arch`` describes: ``CombAutoencoder(CombArch.from_dict(arch))``, or for an
    ``arch`` naming a builder of :data:`BUILDERS`, what that builder returns.

    Raises:
        ValueError: a builder outside :data:`BUILDERS`, or arguments the builder refuses.
    """
    name = arch.get(BUILDER_KEY)
    if name is None:
        return CombAutoencoder(CombArch.from_dict(arch))
    if name not in BUILDERS:
        raise ValueError(f"unknown model builder {str(name)[:80]!r} (known: {', '.join(BUILDERS)})")
    module, attr = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)(dict(arch))


def _plain(v: Any) -> Any:
    return json.loads(json.dumps(v))  # tuples and lists compare equal


def arch_differences(saved: Mapping[str, Any], current: CombArch | Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved's, current's)}`` for every architecture value that differs between a
    checkpoint's ``arch`` and a model's (its :class:`CombArch` or its ``arch_args()``)."""
    mine = current.as_dict() if isinstance(current, CombArch) else dict(current)
    if BUILDER_KEY not in saved and BUILDER_KEY not in mine:
        ours = current if isinstance(current, CombArch) else CombArch.from_dict(mine)
        return CombArch.from_dict(saved).differences(ours)
    a, b = _plain(dict(saved)), _plain(mine)
    return {k: (a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)}
