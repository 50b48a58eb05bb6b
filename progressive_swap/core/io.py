"""Crash-safe file writing: write to a temporary file beside the target, fsync, rename.

A reader never sees a half-written file: either the old file or the complete new one.

Every temporary file is created exclusively (``mkstemp``: ``O_CREAT | O_EXCL``, never through a
symlink) under a name that starts with :data:`TEMP_PREFIX`, a prefix no user file is expected to
carry; the debris sweep (:func:`remove_debris`) removes only such names, only in folders the
caller owns, and never descends into folders it did not make. Names that come from data (ids
in a journal, an index, a record, a request) pass :func:`check_name` before a path is built from
them, and a path built for a write or a delete passes :func:`check_inside` (``docs/faceset.md``,
*Names from data*).
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

TEMP_PREFIX = ".progressive_swap.tmp."
"""The start of every temporary file this package writes (``.progressive_swap.tmp.NAME.XXXXXXXX.tmp``)."""

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A name read from data: letters, digits, ``.``, ``_``, ``-``; no separator, no leading dot, no
control character, at most 128 characters (matched whole, so a trailing newline fails)."""

MAX_JSON_DEPTH = 32
"""Nesting depth above which :func:`loads_json` refuses a document (records nest 3 deep)."""


def is_name(value: Any) -> bool:
    """Whether ``value`` is a string that :data:`NAME_RE` matches whole."""
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def check_name(value: Any, what: str = "name") -> str:
    """``value`` if :func:`is_name`; else a one-line ``ValueError`` naming ``what``."""
    if not is_name(value):
        raise ValueError(f"bad {what} {value!r}: use letters, digits, '.', '_', '-' (not first), at most 128")
    return value


def check_inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` if it lies inside ``root`` once its folder is resolved (its last part is not
    followed: unlinking or renaming a symlink touches the link, not its target); else a one-line
    ``ValueError``. Every path built for a write or a delete from data passes this."""
    root_r = Path(os.path.realpath(root))
    p = Path(path)
    where = Path(os.path.realpath(p.parent)) / p.name
    if p.name in ("", ".", "..") or (where != root_r and root_r not in where.parents):
        raise ValueError(f"{str(path)!r} is not inside {str(root)!r}; refusing to touch it")
    return p


def loads_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``max_depth`` (one-line
    ``ValueError``, never a ``RecursionError``) and non-standard constants (``NaN``, ``Infinity``)."""
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    try:
        doc = json.loads(text, parse_constant=no_constant)
    except RecursionError:  # the C parser recurses once per level
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    todo = [(doc, 1)]
    while todo:  # iterative: the check itself must not recurse
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
            todo.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node)
                        if isinstance(v, (dict, list)))
    return doc


class NotARegularFile(OSError):
    """A path that should be a regular file is a device, FIFO, socket or folder, or too big."""


def read_regular(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file (a symlink to one is fine) of at most
    ``max_bytes``; a one-line :class:`NotARegularFile` otherwise. Opened without blocking, so
    a FIFO cannot hang the reader, and checked with ``fstat`` on the open descriptor, so
    ``/dev/zero`` is never read."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"{what} {str(path)!r} is not a regular file")
        if st.st_size > max_bytes:
            raise NotARegularFile(errno.EFBIG, f"{what} {str(path)!r} is {st.st_size} bytes, over the "
                                               f"{max_bytes}-byte limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


def make_temp(path: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a temporary file beside ``path`` exclusively (``mkstemp``: ``O_EXCL``, no symlink
    followed) under :data:`TEMP_PREFIX`; returns ``(fd, temp path)``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name[:120]}.", suffix=suffix, dir=path.parent)
    return fd, Path(tmp)


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
    prefix = f"{TEMP_PREFIX}{prefix if prefix is not None else path.stem[:120] + '.'}"
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
    """Open a temporary file next to ``path`` (``TEMP_PREFIX + NAME.XXXX.tmp``); on success fsync and
    rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_write("out.json", "w") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    path = Path(path)
    with atomic_path(path, suffix=".tmp", prefix=f"{path.name[:120]}.") as tmp:
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
        fd, probe = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}probe.", dir=path)
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


def remove_debris(root: str | os.PathLike, subdirs: tuple[str, ...] = (), manifest: str | None = None) -> list[Path]:
    """Remove the temporary files of atomic writes that never finished (a killed run's).

    Only names starting with :data:`TEMP_PREFIX` that are regular files (not links) are removed,
    only in ``root`` itself and in the ``subdirs`` the caller writes (each searched down its
    own tree, never through a symlinked folder), and only when ``root`` holds the caller's
    ``manifest`` file (a folder an earlier run of ours wrote); a user's files in any other
    folder are never looked at. Call it only while holding :func:`locked_dir` on ``root``: a
    running writer's temporary files look the same.

    Returns:
        The removed paths.
    """
    root = Path(root)
    if manifest is not None and not (root / manifest).is_file():
        return []
    removed = []

    def sweep(d: Path, deep: bool) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if deep:
                    sweep(Path(e.path), True)
            elif e.name.startswith(TEMP_PREFIX) and e.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
                    removed.append(Path(e.path))

    sweep(root, False)
    for sub in subdirs:
        d = root / sub
        if d.is_dir() and not d.is_symlink():
            sweep(d, True)
    return removed
