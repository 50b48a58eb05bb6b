"""Another tool's curated landmarks, per source frame: what ``swap-extract landmarks=given`` reads
from a FaceSwap ``alignments.fsa`` or a folder of DeepFaceLab aligned faces.

The result has the shape of the extractor's landmarks file (``extract/detect.py``
``GivenLandmarks``), plus ``names``: the faces of each frame by the frame's file name, which is
how both tools name frames. A numbered frame name (``clip_000123.png``, ``00123.png``) also
gives the frame's index in a video: both tools number a video's frames from 1, our extractor
from 0, so frame ``N`` is index ``N - 1``.

Everything is read through :mod:`.safe_load`; an unsafe or unreadable file is refused in one
line (``ValueError``) naming it: landmarks that drive an extraction must all be trusted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from progressive_swap.faceset.migrate.dfl import read_dfl
from progressive_swap.faceset.migrate.faceswap import read_alignments
from progressive_swap.faceset.migrate.peer_face import frame_number, points68
from progressive_swap.faceset.migrate.safe_load import DamagedMetadataError, UnsafeMetadataError

VIDEO_FIRST_FRAME = 1
"""The number both tools give a video's first frame in the frame names they record."""


def is_peer_landmarks(path: str | Path) -> bool:
    """A FaceSwap alignments file or a folder (of DeepFaceLab aligned faces)."""
    p = Path(path)
    return p.suffix.lower() == ".fsa" or p.is_dir()


def _face(landmarks: Any, box: Any, what: str) -> dict[str, Any]:
    lm = points68(landmarks, what)
    b = np.asarray(box, np.float64).reshape(-1) if box is not None else None
    if b is None or b.shape != (4,) or not np.isfinite(b).all():
        b = np.r_[lm.min(0), lm.max(0)]
    return {"landmarks": lm.tolist(), "box": b.tolist()}


def peer_landmarks(path: str | Path) -> dict[str, Any]:
    """``{"frames": [{"index", "faces": [{"landmarks", "box"}]}], "names": {frame name: faces}}``.

    Raises:
        ValueError: one line naming the file and what is wrong (unsafe, damaged, not 68 points).
    """
    path = Path(path)
    names: dict[str, list[dict[str, Any]]] = {}
    if path.suffix.lower() == ".fsa":
        try:
            frames = read_alignments(path.read_bytes())
            for frame, faces in frames.items():
                for k, f in enumerate(faces):
                    if not isinstance(f, dict):
                        raise DamagedMetadataError(f"frame {frame} face {k} is not a dict")
                    box = None
                    if all(isinstance(f.get(c), (int, float)) for c in "xywh"):
                        box = [f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]]
                    names.setdefault(Path(frame).name, []).append(
                        _face(f.get("landmarks_xy"), box, f"frame {frame} face {k} landmarks"))
        except (UnsafeMetadataError, DamagedMetadataError) as e:
            raise ValueError(f"landmarks file {str(path)!r} refused: {e}") from None
    else:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        if not files:
            raise ValueError(f"{str(path)!r} holds no DeepFaceLab aligned faces (*.jpg, *.png)")
        for p in files:
            try:
                face = read_dfl(p, p.read_bytes(), pixels=False)
            except (UnsafeMetadataError, DamagedMetadataError) as e:
                raise ValueError(f"landmarks folder {str(path)!r}: refused {p.name}: {e}") from None
            names.setdefault(Path(face.source).name, []).append(_face(face.landmarks, None, p.name))
    frames_by_index: dict[int, list[dict[str, Any]]] = {}
    for name, faces in names.items():
        n = frame_number(name)
        if n >= VIDEO_FIRST_FRAME:
            frames_by_index.setdefault(n - VIDEO_FIRST_FRAME, []).extend(faces)
    return {"frames": [{"index": i, "faces": f} for i, f in sorted(frames_by_index.items())], "names": names}
