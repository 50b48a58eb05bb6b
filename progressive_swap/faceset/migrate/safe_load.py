"""Loading another tool's metadata without running it: a restricted unpickler, a capped literal
parser and bounded decompression.

DeepFaceLab stores each face's metadata as a Python pickle (a JPEG's APP15 segment, a PNG's
``fcWp`` chunk, ``faceset.pak``) and FaceSwap stores its alignments as a zlib-compressed pickle
(``alignments.fsa``) and each face PNG's as a Python literal. A plain ``pickle.loads`` runs
whatever a downloaded face set asks for, so nothing here ever calls it:

* :func:`restricted_loads` resolves only the exact ``(module, name)`` pairs that real files
  reference (:data:`ALLOWED`, both numpy 1 ``numpy.core`` and numpy 2 ``numpy._core``
  spellings) and maps each to a placeholder of our own: arrays are rebuilt with
  ``np.frombuffer`` from a dtype whitelist (:data:`DTYPES`), a checked shape and an exact byte
  count. Anything else is refused at ``find_class``, before any call.
* :func:`literal_text` parses Python literals with ``ast.literal_eval`` after a length cap, and
  names what a refused text asked for.
* :func:`bounded_zlib` decompresses with a maximum output.

Every refusal is an :class:`UnsafeMetadataError` whose message is one line naming what the file
asked for; the importer adds the file name.
"""
from __future__ import annotations

import ast
import io
import math
import pickle
import zlib
from typing import Any

import numpy as np


class UnsafeMetadataError(ValueError):
    """A file's metadata asks for something we do not load (code, an unknown global, a bomb)."""


class DamagedMetadataError(ValueError):
    """A file's metadata is truncated, malformed or not what the format says."""


MAX_ARRAY_BYTES = 256 << 20
"""Largest array a metadata pickle may rebuild (a long video's ``alignments.fsa`` thumbnails
are the largest real case, a few hundred bytes each)."""
MAX_NDIM = 4
MAX_DEPTH = 64
"""Deepest container nesting accepted (real files nest 6 deep)."""

DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
"""dtype codes an array may have: booleans, integers, floats. Never object, void or strings."""


class _ArrayClass:
    """Placeholder for ``numpy.ndarray`` (only ever the first argument of ``_reconstruct``)."""


class _DType:
    """Placeholder for a ``numpy.dtype``: its code and, after ``BUILD``, its byte order."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str):
            raise UnsafeMetadataError(f"a dtype from {type(code).__name__}")
        kind = code.lstrip("<>|=")
        if kind == "?":
            kind = "b1"
        if kind not in DTYPES:
            raise UnsafeMetadataError(f"an array of dtype {code!r}")
        self.code, self.order = kind, code[0] if code[0] in "<>|=" else "="

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subdtype, names, fields, itemsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "="):
            raise UnsafeMetadataError("a dtype with an unknown state")
        if any(s is not None for s in state[2:5]):
            raise UnsafeMetadataError("a structured or sub-array dtype")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        dt = np.dtype("?" if self.code == "b1" else self.code)
        return dt.newbyteorder(self.order) if self.order in "<>" and dt.itemsize > 1 else dt


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > MAX_NDIM or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape
    ):
        raise UnsafeMetadataError(f"an array of shape {shape!r}")
    return shape


def _array(dtype: Any, shape: tuple[int, ...], data: Any, fortran: bool = False) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise UnsafeMetadataError("an array without a whitelisted dtype")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeMetadataError(f"an array built from {type(data).__name__}, not raw bytes (object array?)")
    dt = dtype.numpy()
    n = math.prod(shape) * dt.itemsize
    if n > MAX_ARRAY_BYTES:
        raise UnsafeMetadataError(f"an array of {n} bytes")
    if len(data) != n:
        raise DamagedMetadataError(f"an array of shape {shape} {dt.str} holds {len(data)} bytes, not {n}")
    a = np.frombuffer(bytes(data), dt).reshape(shape, order="F" if fortran else "C")
    return a.astype(dt.newbyteorder("="))  # a native, writable copy


class _ArrayStub:
    """What ``_reconstruct(ndarray, (0,), b'b')`` returns until ``BUILD`` gives its state."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw bytes)
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise UnsafeMetadataError("an array with an unknown state")
        _, shape, dtype, fortran, data = state
        self.array = _array(dtype, _shape(shape), data, bool(fortran))


def _reconstruct(cls: Any, shape: Any = (0,), code: Any = b"b") -> _ArrayStub:
    if cls is not _ArrayClass:
        raise UnsafeMetadataError("_reconstruct of something other than numpy.ndarray")
    return _ArrayStub()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    # numpy's pickle of an array at protocol 5 (Python >= 3.14): in-band buffer.
    if isinstance(buf, memoryview):
        buf = buf.tobytes()
    return _array(dtype, _shape(shape), buf, order == "F")


def _scalar(dtype: Any, data: Any = b"") -> int | float | bool:
    a = _array(dtype, (), data)
    return a.item()


class _IntEnum:
    """DeepFaceLab's ``FaceType`` / ``SampleType`` in ``faceset.pak``: called with an int."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UnsafeMetadataError(f"{self.name} of {type(value).__name__}")
        return value


_NUMPY = {
    "multiarray._reconstruct": _reconstruct,
    "multiarray.scalar": _scalar,
    "numeric._frombuffer": _frombuffer,
}
ALLOWED: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _ArrayClass, ("numpy", "dtype"): _DType}
"""Exact ``(module, name)`` pairs a metadata pickle may reference, mapped to our placeholders."""
for _core in ("numpy.core", "numpy._core"):
    for _path, _fn in _NUMPY.items():
        _mod, _name = _path.split(".")
        ALLOWED[(f"{_core}.{_mod}", _name)] = _fn
DFL_PAK_ALLOWED = {
    ("facelib.FaceType", "FaceType"): _IntEnum("FaceType"),
    ("samplelib.Sample", "SampleType"): _IntEnum("SampleType"),
}
"""Also allowed in a DeepFaceLab ``faceset.pak`` header: two IntEnums, read as plain ints."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeMetadataError(f"asks for {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeMetadataError("asks for a persistent object")


def _finish(obj: Any, depth: int = 0) -> Any:
    """Replace array placeholders by arrays; refuse any object that is not plain data."""
    if depth > MAX_DEPTH:
        raise UnsafeMetadataError(f"containers nested deeper than {MAX_DEPTH}")
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.ndarray)):
        return obj
    if isinstance(obj, bytearray):
        return bytes(obj)
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise UnsafeMetadataError("an array without its data")
        return obj.array
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None), bytes)):
                raise UnsafeMetadataError(f"a dict key of type {type(k).__name__}")
            out[k] = _finish(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [_finish(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_finish(v, depth + 1) for v in obj)
    raise UnsafeMetadataError(f"an object of type {type(obj).__name__}")


def restricted_loads(data: bytes, *, pak: bool = False) -> Any:
    """Unpickle plain data and numpy arrays only; never call anything else.

    Args:
        data: the pickle's bytes.
        pak: also allow the two IntEnums of DeepFaceLab's ``faceset.pak`` (read as ints).

    Returns:
        dicts, lists, tuples, str, bytes, numbers, bools, None and ``np.ndarray`` (numeric dtypes).

    Raises:
        UnsafeMetadataError: the pickle references a global outside :data:`ALLOWED` (named in
            the message), a persistent id, a non-numeric dtype, or an oversized array.
        DamagedMetadataError: the pickle is truncated or malformed.
    """
    allowed = {**ALLOWED, **DFL_PAK_ALLOWED} if pak else ALLOWED
    try:
        obj = _Unpickler(bytes(data), allowed).load()
    except (UnsafeMetadataError, DamagedMetadataError):
        raise
    except RecursionError:
        raise UnsafeMetadataError("a pickle nested too deep") from None
    except MemoryError:
        raise UnsafeMetadataError("a pickle too large for memory") from None
    except Exception as e:  # truncated stream, bad opcode, a placeholder called wrongly, ...
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DamagedMetadataError(f"unreadable pickle ({type(e).__name__}: {msg})"[:200]) from None
    try:
        return _finish(obj)
    except RecursionError:
        raise UnsafeMetadataError("a pickle nested too deep") from None


MAX_LITERAL_CHARS = 4 << 20
"""Longest Python-literal metadata text accepted (real FaceSwap headers: 3 KB to about 100 KB)."""


def _first_non_literal(text: str) -> str:
    """What a text that ``literal_eval`` refused asks for, in a few words."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "text that is not a Python literal"
    plain = (ast.Expression, ast.Constant, ast.Dict, ast.List, ast.Tuple, ast.Set, ast.UnaryOp, ast.USub,
             ast.UAdd, ast.BinOp, ast.Add, ast.Sub, ast.Load)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            try:
                fn = ast.unparse(node.func)
            except Exception:  # noqa: BLE001 - only used for the message
                fn = "a function"
            return f"asks for a call to {fn[:60]}"
        if isinstance(node, (ast.Name, ast.Attribute)):
            return f"asks for the name {getattr(node, 'id', None) or getattr(node, 'attr', '?')}"
        if not isinstance(node, plain):
            return f"asks for a {type(node).__name__} expression"
    return "text that is not a Python literal"


def literal_text(raw: bytes, *, max_chars: int = MAX_LITERAL_CHARS) -> Any:
    """Parse a Python literal (FaceSwap's ``str(dict)`` metadata) without evaluating code.

    Raises:
        UnsafeMetadataError: the text is longer than ``max_chars``, or holds anything but a
            literal (named in the message: a call, a name, ...).
        DamagedMetadataError: the text is not UTF-8.
    """
    if len(raw) > max_chars:
        raise UnsafeMetadataError(f"metadata text of {len(raw)} bytes (cap {max_chars})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DamagedMetadataError("metadata text is not UTF-8") from None
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise UnsafeMetadataError(_first_non_literal(text) if len(text) < 200_000 else
                                  "text that is not a Python literal") from None


def bounded_zlib(data: bytes, max_out: int, *, exact: int | None = None) -> bytes:
    """zlib-decompress at most ``max_out`` bytes; refuse a stream that would give more.

    Args:
        exact: if given, the output must be exactly this long.
    """
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_out)
    except zlib.error as e:
        raise DamagedMetadataError(f"bad zlib stream ({e})") from None
    if d.unconsumed_tail:
        raise UnsafeMetadataError(f"a zlib stream that inflates past {max_out} bytes")
    if not d.eof:
        raise DamagedMetadataError("truncated zlib stream")
    if exact is not None and len(out) != exact:
        raise DamagedMetadataError(f"zlib data of {len(out)} bytes, expected {exact}")
    return out
