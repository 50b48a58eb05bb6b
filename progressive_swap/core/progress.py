"""Progress of the long commands: a live bar on a terminal, plain lines in a log.

When stderr is a terminal, a rich bar. Otherwise (SLURM, ``nohup``, stderr redirected to a
file or a pipe) one plain line per task every ``every`` seconds (``progress_every=`` on every
command, default 30) and one when the task ends, so a job in a log never looks stuck::

    extract detect  frames 120/480 (25%)  12.3 frames/s  faces 118  ETA 0m29s
    extract detect  frames 480/480 (100%)  12.0 frames/s  faces 470  done in 0m40s

Every command's lines have this shape: a label, ``UNIT DONE/TOTAL (PCT%)``, the rate over
this run, counters, and ``ETA`` (or ``done in``/``stopped after`` on the last line).
``swap-train`` formats its own lines with :func:`format_line`.

Example:
    >>> with Progress(every=30) as p:  # doctest: +SKIP
    ...     task = p.task("extract detect", total=480, unit="frames", faces=0)
    ...     task.advance(1, faces=2)
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress

DEFAULT_EVERY = 30.0
"""Seconds between progress lines when stderr is not a terminal."""


def duration(seconds: float) -> str:
    """``4m10s`` below an hour, ``2h05m`` above."""
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_line(
    label: str,
    unit: str,
    done: int,
    total: int | None,
    rate: float | None = None,
    rate_unit: str | None = None,
    extras: Sequence[str] = (),
    tail: str = "",
) -> str:
    """One progress line: ``LABEL  UNIT DONE/TOTAL (PCT%)  RATE UNIT/s  EXTRAS...  TAIL``.

    Args:
        label: what runs (``extract detect``, ``stage 64px alpha 0.42``).
        unit: what is counted (``frames``, ``faces``, ``step``).
        done: units done so far.
        total: units in all, or ``None`` when unknown (no percentage then).
        rate: units (or ``rate_unit``) per second; left out when ``None`` or 0.
        rate_unit: the rate's unit; default ``UNIT/s``.
        extras: further fields (``faces 118``, ``loss 0.1234``).
        tail: the last field: ``ETA 4m10s``, ``done in 0m40s``.
    """
    count = f"{unit} {done}/{total} ({100 * done / max(total, 1):.0f}%)" if total else f"{unit} {done}"
    parts = [p for p in (label, count) if p]
    if rate:
        parts.append(f"{rate:.1f} {rate_unit or unit + '/s'}")
    parts += [e for e in extras if e]
    if tail:
        parts.append(tail)
    return "  ".join(parts)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (a stream without ``isatty`` is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Task:
    """One counted piece of work of a :class:`Progress` (made by :meth:`Progress.task`)."""

    def __init__(self, owner: "Progress", label: str, total: int | None, unit: str, done: int, counts: dict[str, int]):
        self.owner, self.label, self.total, self.unit = owner, label, total, unit
        self.done, self.counts = int(done), dict(counts)
        self.t0 = owner.clock()
        self.done0 = self.done  # work found done (a resumed run): not part of this run's rate
        self._last_line = self.t0
        self.closed = False
        self._rich_id = None
        if owner._rich is not None:
            self._rich_id = owner._rich.add_task(label, total=total or None, completed=self.done, info=self._info())

    def rate(self) -> float | None:
        """Units per second in this run (``None`` before any time has passed)."""
        dt = self.owner.clock() - self.t0
        return (self.done - self.done0) / dt if dt > 0 else None

    def eta(self) -> float | None:
        """Seconds left at this run's rate (``None`` when the total or the rate is unknown)."""
        r = self.rate()
        if not self.total or not r:
            return None
        return max(self.total - self.done, 0) / r

    def _info(self) -> str:
        r = self.rate()
        parts = [f"{r:.1f} {self.unit}/s"] if r else []
        return "  ".join(parts + [f"{k} {v}" for k, v in self.counts.items()])

    def line(self, tail: str | None = None) -> str:
        """The plain progress line now; ``tail`` replaces the ``ETA`` field."""
        if tail is None:
            eta = self.eta()
            tail = f"ETA {duration(eta)}" if eta is not None else ""
        return format_line(self.label, self.unit, self.done, self.total, self.rate(),
                           extras=[f"{k} {v}" for k, v in self.counts.items()], tail=tail)

    def advance(self, n: int = 1, **counts: int) -> None:
        """``n`` more units done; ``counts`` are added to the named counters."""
        self.update(self.done + n, **{k: self.counts.get(k, 0) + v for k, v in counts.items()})

    def update(self, done: int | None = None, *, total: int | None = None, label: str | None = None,
               **counts: int) -> None:
        """Set the units done (and, optionally, the total, the label or counters)."""
        if done is not None:
            self.done = int(done)
        if total is not None:
            self.total = int(total)
        if label is not None:
            self.label = label
        self.counts.update(counts)
        o = self.owner
        if o._rich is not None:
            o._rich.update(self._rich_id, completed=self.done, total=self.total or None, description=self.label,
                           info=self._info())
        elif o.enabled and (done is not None or counts) and o.clock() - self._last_line >= o.every:
            self._print(self.line())

    def _print(self, text: str) -> None:
        self._last_line = self.owner.clock()
        self.owner._write(text)

    def close(self, stopped: bool = False) -> None:
        """End the task: its last line (``done in``, or ``stopped after`` when interrupted)."""
        if self.closed:
            return
        self.closed = True
        o = self.owner
        if o._rich is not None or not o.enabled:
            return
        took = duration(o.clock() - self.t0)
        self._print(self.line(f"stopped after {took}" if stopped else f"done in {took}"))


class Progress:
    """The progress display of one command run: a rich bar on a terminal, plain lines otherwise.

    Use as a context manager; tasks still open at its end are closed (their last line is
    written, ``stopped after`` when an exception is on its way).

    Args:
        every: seconds between plain lines (0: a line on every update).
        enabled: ``False``: no output at all.
        stream: where to write; default ``sys.stderr`` at the time of construction.
        clock: seconds, monotonic (tests pass a fake).
        terminal: force the bar (``True``) or the lines (``False``); default: ask the stream.
    """

    def __init__(self, every: float = DEFAULT_EVERY, enabled: bool = True, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic, terminal: bool | None = None):
        self.every, self.enabled, self.clock = float(every), bool(enabled), clock
        self.stream = stream if stream is not None else sys.stderr
        tty = is_terminal(self.stream) if terminal is None else terminal
        self._rich: _RichProgress | None = None
        if self.enabled and tty:
            self._rich = _RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
        self.tasks: list[Task] = []

    def __enter__(self) -> "Progress":
        if self._rich is not None:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for t in self.tasks:
            t.close(stopped=exc[0] is not None)
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def task(self, label: str, total: int | None, unit: str = "frames", done: int = 0, **counts: int) -> Task:
        """Start counting a piece of work of ``total`` units (``None``: unknown); earlier tasks
        stay as they are (close them to write their last line now)."""
        t = Task(self, label, total, unit, done, counts)
        self.tasks.append(t)
        return t

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
