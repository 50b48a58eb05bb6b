"""The dlib model files that the ``face-recognition-models`` wheel ships (the optional ``[dlib]``
extra): found without importing that package, whose ``__init__`` needs ``pkg_resources``, which
recent setuptools no longer ship."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

DLIB_INSTALL = "pip install 'progressive-swap[dlib]' (dlib-bin and face-recognition-models)"


class DlibMissingError(ImportError):
    """dlib or its model files (``face-recognition-models``) are not installed."""


def dlib_model_files(names: Mapping[str, str], needs: str,
                     error: type[ImportError] = DlibMissingError) -> dict[str, Path]:
    """``{role: path}`` of the model files ``names`` (``{role: file name}``) inside the installed
    ``face_recognition_models``.

    Args:
        names: the files wanted, by role.
        needs: what wants them, said in the error, e.g. ``"detector=dlib needs"``.
        error: the exception raised when something is missing.

    Raises:
        error: the package or one of its files is missing (one line, how to install).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise error(f"{needs} the face-recognition-models package: {DLIB_INSTALL}")
    root = Path(locations[0]) / "models"
    files = {role: root / name for role, name in names.items()}
    for path in files.values():
        if not path.is_file():
            raise error(f"dlib model file {path} is missing: reinstall face-recognition-models")
    return files
