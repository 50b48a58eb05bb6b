"""Shared command-line plumbing: ``key=value`` overrides and one-line errors.

Every command has ``main(argv: list[str] | None = None) -> int``. Bad input raises
:class:`UserError` (or ``ValueError``/``FileNotFoundError``/``PermissionError``); the
:func:`run_cli` wrapper turns it into one line on stderr and exit code 2.

Exit codes, the same for every command: 0 done; 2 bad input (nothing written); 3 other I/O
errors (a full disk); 4 incomplete (some input could not be read; what could is written and
listed); 130 interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM. Work finished before an
interrupt is kept, and rerunning the command resumes it.
"""
from __future__ import annotations

import dataclasses
import re
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from progressive_swap.cli.schema import check_options, closest, explain_validation_error, help_text, omegaconf_schema
from progressive_swap.core.io import os_error_in


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


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (``finally`` blocks and atomic writes clean up), exit 143.

    Not a ``KeyboardInterrupt``: Lightning turns those into exit code 1.
    """


EXIT_INCOMPLETE = 4


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def run_cli(fn: Callable[[], int | None], prog: str) -> int:
    """Run ``fn``; print one-line errors for bad input and return the exit code."""
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _raise_terminated)
    _NOTES.clear()
    try:
        rc = _run(fn, prog)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if rc in (0, EXIT_INCOMPLETE):
        for note in _NOTES:
            print(note, file=sys.stderr)
    _NOTES.clear()
    return rc


def _run(fn: Callable[[], int | None], prog: str) -> int:
    try:
        try:
            rc = fn()
        except Exception as e:
            cause = _unwrap(e)
            if cause is not e and isinstance(cause, EXPECTED_ERRORS):
                raise cause from None
            if _is_config_error(cause):
                raise UserError(str(cause)) from None
            io_error = os_error_in(cause) if isinstance(cause, RuntimeError) else None
            if io_error is not None:  # torch and other libraries wrap disk-full errors in RuntimeError
                raise io_error from None
            raise
    except EXPECTED_ERRORS as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full and friends
        print(f"{prog}: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: stopped by SIGTERM; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 143
    return int(rc or 0)


_NOTES: list[str] = []  # deprecation notes, printed once the command has run (errors stay one line)


def note_deprecated(note: str) -> None:
    """Queue a one-line note for stderr, shown after the command ran (not before an error line)."""
    if note not in _NOTES:
        _NOTES.append(note)


def split_deprecated(argv: Sequence[str], key: str, prefix: str, new_key: str, prog: str) -> list[str]:
    """Rewrite the old one-string spelling ``key=PREFIX:VALUE`` as ``key=PREFIX new_key=VALUE``.

    Example: ``landmarks=given:f.json`` -> ``landmarks=given landmarks_file=f.json``, with a
    deprecation note.
    """
    out = []
    for a in argv:
        k, _, v = a.partition("=")
        if k == key and v.startswith(prefix + ":"):
            out += [f"{key}={prefix}", f"{new_key}={v[len(prefix) + 1:]}"]
            note_deprecated(f"{prog}: note: {key}={prefix}:X is deprecated; write {key}={prefix} {new_key}=X")
        else:
            out.append(a)
    return out


_KEY = re.compile(r"^[+~]?[A-Za-z_][A-Za-z0-9_.]*$")


def is_override(arg: str) -> bool:
    """Whether ``arg`` is a ``key=value`` option rather than a path.

    Only the text before the first ``=`` is the key, and it must look like one (letters,
    digits, ``_`` and ``.``): ``out=runs/a=b`` is the key ``out``, while ``faces/my run=1`` and
    ``./run=1`` are paths.
    """
    key, eq, _ = arg.partition("=")
    return bool(eq) and bool(_KEY.match(key))


def split_positional(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional paths and ``key=value`` options, in order (:func:`is_override` tells them apart)."""
    return [a for a in argv if not is_override(a)], [a for a in argv if is_override(a)]


def parse_overrides(argv: Sequence[str], defaults: Any, prog: str = "") -> DictConfig:
    """Merge ``key=value`` arguments into a dataclass of defaults, checked against its schema.

    Unknown keys get a "did you mean" with the closest valid one; ``Literal[...]`` fields their
    choices; fields with ``metadata={"min": ...}`` their bound (:mod:`progressive_swap.cli.schema`,
    the same checks as ``swap-train``).

    Args:
        argv: arguments such as ``["out=dir", "size=128"]``.
        defaults: a dataclass instance (the command's options, documented on its fields).

    Returns:
        A read-only ``DictConfig`` with the merged values, type-checked against the dataclass.
    """
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    if bad:
        raise UserError(f"expected key=value arguments, got {bad[0]!r}")
    cls = type(defaults)
    names = [f.name for f in dataclasses.fields(cls)]
    for a in argv:
        key = a.split("=", 1)[0].lstrip("+")
        if key.split(".")[0] not in names:
            raise UserError(f"unknown option {key!r}{closest(key, names)}; {prog or 'the command'} --help lists them")
    schema = omegaconf_schema(cls)
    base = OmegaConf.structured(schema(**{n: getattr(defaults, n) for n in names}))
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
    except Exception as e:  # omegaconf raises many types; show the first line
        raise UserError(explain_validation_error(e) or str(e).splitlines()[0]) from None
    try:
        check_options(cfg, cls)
    except ValueError as e:
        raise UserError(str(e)) from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def usage(defaults: Any) -> str:
    """The options of a command, one per line: ``key=default`` and what it means (generated from
    the options dataclass, its ``Literal`` choices and its field docs)."""
    assert dataclasses.is_dataclass(defaults)
    return "\n" + help_text(type(defaults))
