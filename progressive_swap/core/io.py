"""Crash-safe file writing: write to a temporary file beside the target, fsync, rename.

A reader never sees a half-written file: either the old file or the complete new one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask is process-wide and not thread-safe to probe


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry so a rename inside it survives power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, prefix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for writers that need a file name (video
    muxers, image libraries); on success fsync it and rename it over ``path``.

    The temporary name keeps ``path``'s suffix (or ``suffix``), so format detection by
    extension still works. On any exception the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    prefix = prefix if prefix is not None else f".{path.stem}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` (``.NAME.XXXX.tmp``); on success fsync and
    rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_write("out.json", "w") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    path = Path(path)
    with atomic_path(path, suffix=".tmp", prefix=f".{path.name}.") as tmp:
        with open(tmp, mode) as f:
            yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def print_json(obj: Any, path: str | os.PathLike | None = None, indent: int | None = 1) -> None:
    """Print ``obj`` as JSON on stdout and, when ``path`` is given, write the same text there
    atomically (how the benchmarks in ``tools/`` report)."""
    text = json.dumps(obj, indent=indent)
    print(text)
    if path:
        atomic_write_text(path, text + "\n")


# What torch.save's C++ writer says when the file system refuses a write (it raises a RuntimeError
# without the OSError: errno is lost), e.g. "PytorchStreamWriter failed writing file data/0: file write failed".
_WRITE_FAILED = re.compile(r"No space left on device|Disk quota exceeded|file write failed|unexpected pos \d+")


def os_error_in(e: BaseException) -> OSError | None:
    """The I/O error behind ``e``: ``e`` itself, an ``OSError`` in its cause/context chain, or one
    made from a library's wrapped "write failed" message (``ENOSPC`` when it says the disk is
    full, else ``EIO``); ``None`` when ``e`` is not an I/O error.

    torch.save, safetensors and loggers wrap disk-full errors in ``RuntimeError``; the command
    line reports them as I/O errors (exit code 3), not as crashes.
    """
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    if isinstance(e, RuntimeError) and _WRITE_FAILED.search(str(e)):
        text = str(e)
        if "No space left" in text:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if "quota" in text:
            return OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return OSError(errno.EIO, f"write failed ({text.strip().splitlines()[0][:120]})")
    return None


class WriteError(OSError):
    """An I/O error while writing, whose message already names the file (see :func:`write_error`)."""


def write_error(e: BaseException, what: str) -> WriteError | None:
    """:func:`os_error_in` as one line that names what was being written:
    ``No space left on device while writing previews/step_0000012.png`` (``None``: not an I/O error)."""
    err = os_error_in(e)
    if err is None:
        return None
    if isinstance(err, WriteError):  # named already, by a writer further down
        return err
    reason = err.strerror or str(err)
    where = f" ({err.filename})" if err.filename and str(err.filename) not in what else ""
    return WriteError(err.errno or errno.EIO, f"{reason} while writing {what}{where}")


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be created in it.

    Raises:
        PermissionError: with a one-line message naming the directory.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"cannot write to {str(path)!r}: {e.strerror or e}") from None
    return path


class OutputInUse(ValueError):
    """Another process is writing the same output directory (one line, exit code 2)."""


def _lock_holder(path: Path) -> int | None:
    """PID holding a ``flock`` on the directory ``path``, from ``/proc/locks`` (Linux), else None."""
    try:
        st = os.stat(path)
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == wanted:
                return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


@contextlib.contextmanager
def locked_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the directory ``path`` (created) for the ``with`` block.

    The lock is a ``flock`` on the directory itself, so no lock file is left behind, and the
    kernel drops it when the process ends however it ends (``kill -9`` included).

    Raises:
        OutputInUse: at once, naming the PID of the process that holds it.
    """
    path = check_writable_dir(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _lock_holder(path)
            who = f"process {pid}" if pid else "another process"
            raise OutputInUse(f"{str(path)!r} is being written by {who}; wait for it to end or choose another out=") \
                from None
        yield path
    finally:
        os.close(fd)


# mkstemp's names: the prefix, 8 characters of [a-z0-9_], the suffix (``.NAME.XXXXXXXX.tmp``,
# ``.STEM.XXXXXXXX.png``, ``.probe.XXXXXXXX``): what a write killed before its rename leaves.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def remove_debris(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temporary files of atomic writes that never finished (a killed run's).

    Call it only while holding :func:`locked_dir` on ``root``: a running writer's temporary
    files look the same.

    Returns:
        The removed paths.
    """
    root = Path(root)
    found = root.rglob(".*") if recursive else root.glob(".*")
    removed = []
    for p in found:
        if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
