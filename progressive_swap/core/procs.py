"""Helper processes that die with the process they serve, even when it is killed with SIGKILL.

A process killed with SIGKILL runs no cleanup, so nothing tells its loader workers to stop.
Two mechanisms close that gap, both set up inside the helper itself:

* a *parent-death signal* (Linux ``prctl(PR_SET_PDEATHSIG)``): the kernel kills the helper
  when its parent exits. It watches the direct parent only (more exactly: the parent's thread
  that started the helper), and a forkserver's worker has the forkserver as its parent, which
  outlives the trainer: every worker holds the forkserver's "alive" pipe open, and the
  forkserver waits for that pipe to close before it exits;
* a *watchdog* on the process that matters, named by PID (:func:`exit_with`): a daemon thread
  that waits on a pidfd (no polling, immune to PID reuse) or, where there is none, polls
  every half second, and kills the helper once that process has exited.

When the workers are gone, the last holders of the forkserver's pipe are gone and the
forkserver (and its resource tracker) exits on its own.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # SIGTERM where there is no SIGKILL: it ends the process there
_watched: set[int] = set()  # PIDs this process has a watchdog thread for
_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child inherits the set but not the threads: it watches nothing yet.
    global _lock
    _lock = threading.Lock()
    _watched.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def set_parent_death_signal(sig: int = _KILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits (Linux only).

    Returns:
        Whether the signal was set; ``False`` on other systems or if ``prctl`` failed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (an exited, unreaped zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc here: trust kill()


def _kill_self() -> None:
    # SIGKILL, not an exception: a helper's cleanup could block on a queue nobody reads any more.
    os.kill(os.getpid(), _KILL)


def _wait_for_exit(pid: int, fd: int | None, interval: float) -> None:
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():  # readable once the process has exited
            pass
    else:
        while is_alive(pid):
            time.sleep(interval)
    _kill_self()


def exit_with(pid: int, interval: float = 0.5) -> None:
    """Kill this process (SIGKILL) as soon as process ``pid`` has exited.

    Starts one daemon thread per watched PID (a second call for the same PID does nothing).
    If ``pid`` is already gone, this process is killed at once.

    Args:
        pid: the process to outlive by no more than a moment (need not be the parent).
        interval: polling period in seconds where the system has no pidfd.
    """
    if pid == os.getpid():
        return
    with _lock:
        if pid in _watched:
            return
        _watched.add(pid)
    fd = None
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            _kill_self()
        except OSError:  # an old kernel or a sandbox without pidfd: poll instead
            fd = None
    threading.Thread(target=_wait_for_exit, args=(pid, fd, interval), name=f"exit-with-{pid}", daemon=True).start()


def serve(pid: int) -> None:
    """Make this helper process end with process ``pid``: a parent-death signal plus :func:`exit_with`.

    Call it first thing in a helper (a loader worker's init, a child process's start). ``pid`` is
    the process the helper works for, read *there* (``os.getpid()``) before the helper starts;
    with a forkserver in between it is not this process's parent.
    """
    set_parent_death_signal()
    exit_with(pid)
