"""Typed options: the schema of ``recipes/train.yaml`` and the checks every command shares.

Options are dataclasses. Fields with a fixed set of values are ``Literal[...]``, fields with a
lower bound say so in their metadata (``field(metadata={"min": 0})``). OmegaConf checks the
types while a config is composed; :func:`check_options` checks the choices and bounds that it
cannot express, with a "did you mean" for near misses. Every default lives in one place: the
dataclass for the small commands, ``recipes/`` for ``swap-train`` (whose schema here only types
the keys).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Union

from omegaconf import MISSING, DictConfig

FreezeChoice = Literal["encoder"]


def closest(word: str, choices: typing.Iterable[str], n: int = 3) -> str:
    """``" (did you mean 'x'?)"`` for the nearest choices, or ``""``."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.5)
    if not near:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in near) + "?)"


def _literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of ``Literal[...]`` or ``Optional[Literal[...]]``, else ``None``."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            found = _literal_choices(arg)
            if found is not None:
                return found
    return None


def _plain(tp: Any) -> Any:
    """``tp`` with ``Literal[...]`` replaced by the type of its values (OmegaConf cannot check
    literals itself)."""
    choices = _literal_choices(tp)
    if choices is None:
        return tp
    base = type(choices[0])
    return Optional[base] if type(None) in typing.get_args(tp) else base


def omegaconf_schema(cls: type) -> type:
    """A copy of the options dataclass ``cls`` that OmegaConf accepts as a structured config."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            tp = omegaconf_schema(tp)
            default = field(default_factory=tp)
        elif f.default is not dataclasses.MISSING:
            default = field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = field(default_factory=f.default_factory)
        else:
            default = field(default=MISSING)
        specs.append((f.name, _plain(tp), default))
    return dataclasses.make_dataclass(cls.__name__, specs)


def check_options(cfg: DictConfig | Any, cls: type, prefix: str = "") -> None:
    """Check the values of ``cfg`` against the choices and bounds declared on ``cls``.

    Raises:
        ValueError: one line naming the key, the bad value and the allowed ones.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        value = cfg.get(f.name) if hasattr(cfg, "get") else getattr(cfg, f.name)
        if dataclasses.is_dataclass(tp):
            if value is not None:
                check_options(value, tp, key + ".")
            continue
        choices = _literal_choices(tp)
        if choices is not None and value is not None and value not in choices:
            raise ValueError(
                f"unknown {key} {value!r}: {key} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}{closest(value, choices)}"
            )
        low = f.metadata.get("min")
        values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else [value]
        for v in values:  # a list option (frame numbers) is bounded item by item
            if low is not None and v is not None and v < low:
                raise ValueError(f"{key} must be >= {low}, got {value!r}")
            above = f.metadata.get("gt")
            if above is not None and v is not None and v <= above:
                raise ValueError(f"{key} must be > {above}, got {value!r}")


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def explain_validation_error(e: BaseException) -> str | None:
    """One line for OmegaConf's "could not be converted" errors: ``seed must be an integer, got 'abc'``."""
    text = "\n".join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
    m = re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    k = re.search(r"full_key: ([\w.]+)", text)
    if not (m and k):
        return None
    return f"{k.group(1)} must be {_TYPE_WORDS.get(m.group(2), m.group(2))}, got {m.group(1)!r}"


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The first line of each field's documentation, as written in the class body: a string right
    under the field (an attribute docstring) or a ``# comment`` at the end of its line.

    Read from the source, so ``--help`` says what the code says without a second copy.
    """
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, [*body[1:], None]):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = ""
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            text = inspect.cleandoc(nxt.value.value).split("\n\n")[0].replace("\n", " ")
        text = text or comments.get(node.end_lineno or node.lineno, "")
        docs[node.target.id] = text.replace("``", "")
    return docs


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, help)`` rows for ``--help``, from the dataclass and its field docs."""
    rows = []
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".")
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        )
        choices = _literal_choices(tp)
        note = f.metadata.get("help", "") or docs.get(f.name, "")
        if choices:
            note = (note + " " if note else "") + "[" + "|".join(map(str, choices)) + "]"
        rows.append((prefix + f.name, repr(default), note))
    return rows


def help_text(cls: type) -> str:
    """The ``--help`` table of an options dataclass: one line per key, default and description."""
    rows = describe(cls)
    width = max(len(f"{k}={d}") for k, d, _ in rows)
    return "\n".join(f"  {f'{k}={d}':<{width}}  {h}".rstrip() for k, d, h in rows)


# ---------------------------------------------------------------------- swap-train's schema


@dataclass
class Derived:
    identities: int = field(default=2, metadata={"min": 2})
    world_size: int = field(default=1, metadata={"min": 1})


@dataclass
class Augment:
    geometry: Dict[str, float] = field(default_factory=dict)
    warp: float = field(default=0.04, metadata={"min": 0.0})
    input_color: float = field(default=0.0, metadata={"min": 0.0})


@dataclass
class Checkpointing:
    every_minutes: float = field(default=10.0, metadata={"min": 0.0})
    every_steps: Optional[int] = field(default=None, metadata={"min": 1})
    keep: int = field(default=3, metadata={"min": -1})
    every_images: Optional[int] = field(default=None, metadata={"min": 0})


@dataclass
class TrainConfig:
    """The keys of ``recipes/train.yaml`` (defaults and their meaning are written there)."""

    derived: Derived = field(default_factory=Derived)
    run_dir: Optional[str] = None
    name: str = "demo"
    run: Optional[str] = None
    out: Optional[str] = None
    resume: Optional[str] = None
    warm_start: Optional[str] = None
    freeze: Optional[FreezeChoice] = None
    freeze_steps: int = field(default=0, metadata={"min": 0})
    seed: int = field(default=0, metadata={"min": 0})
    dry_run: bool = False
    max_steps: Optional[int] = field(default=None, metadata={"min": 1})
    preview_every: int = field(default=100, metadata={"min": 0})
    preview_faces: int = field(default=4, metadata={"min": 1})
    progress_every: float = field(default=30.0, metadata={"min": 0.0})
    channels_last: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    find_batch: bool = False
    max_memory_gb: Optional[float] = field(default=None, metadata={"min": 0.0})
    augment: Augment = field(default_factory=Augment)
    checkpoint: Checkpointing = field(default_factory=Checkpointing)
    # Groups: each is one constructor's arguments (its _target_ says which).
    guard: Any = None
    model: Any = None
    schedule: Any = None
    data: Any = None
    loss: Any = None
    optimizer: Any = None
    trainer: Any = None
    module: Any = None
    callbacks: Any = None
    logger: Any = None
