"""Shared command-line plumbing: ``key=value`` overrides and one-line errors.

Every command has ``main(argv: list[str] | None = None) -> int``. Bad input raises
:class:`UserError` (or ``ValueError``/``FileNotFoundError``/``PermissionError``); the
:func:`run_cli` wrapper turns it into one line on stderr and exit code 2.
"""
from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


EXPECTED_ERRORS = (UserError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


def _unwrap(e: BaseException) -> BaseException:
    """Hydra wraps constructor errors in ``InstantiationException``; report the cause."""
    while type(e).__name__ == "InstantiationException" and e.__cause__ is not None:
        e = e.__cause__
    return e


def _is_config_error(e: BaseException) -> bool:
    # Lightning's "this strategy/accelerator cannot run here" errors, and Hydra's own.
    return type(e).__name__ in ("MisconfigurationException", "InstantiationException", "ConfigCompositionException")


def run_cli(fn: Callable[[], int | None], prog: str) -> int:
    """Run ``fn``; print one-line errors for bad input and return the exit code."""
    try:
        try:
            rc = fn()
        except Exception as e:
            cause = _unwrap(e)
            if cause is not e and isinstance(cause, EXPECTED_ERRORS):
                raise cause from None
            if _is_config_error(cause):
                raise UserError(str(cause)) from None
            raise
    except EXPECTED_ERRORS as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full and friends
        print(f"{prog}: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def parse_overrides(argv: Sequence[str], defaults: Any, prog: str = "") -> DictConfig:
    """Merge ``key=value`` arguments into a dataclass of defaults, rejecting unknown keys.

    Args:
        argv: arguments such as ``["out=dir", "size=128"]``.
        defaults: a dataclass instance (the command's options, documented on its fields).

    Returns:
        A read-only ``DictConfig`` with the merged values, type-checked against the dataclass.
    """
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    if bad:
        raise UserError(f"expected key=value arguments, got {bad[0]!r}")
    base = OmegaConf.structured(defaults)
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
    except Exception as e:  # omegaconf raises many types; show the first line
        raise UserError(str(e).splitlines()[0]) from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def usage(defaults: Any) -> str:
    """One line per option of a dataclass: ``name=default``."""
    assert is_dataclass(defaults)
    return " ".join(f"{f.name}={getattr(defaults, f.name)!r}" for f in fields(defaults))
