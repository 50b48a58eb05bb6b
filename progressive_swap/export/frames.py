"""Frame sources for export: footage frames paired with the faces to swap in them.

Each source yields :class:`FrameIn` one frame at a time (memory stays flat over long clips):
the decoded plate, its index and presentation time, and the aligned faces found in it. Every
frame of the footage is yielded, also those without faces, so the exported sequence keeps the
footage's frame count, order and timestamps.

:func:`faceset_frames` pairs the footage with a face set of it: face records carry ``source``,
``frame_index`` and ``matrix``; the plates are decoded from ``source`` (or a path given instead)
and the set's own aligned crops are what the model sees. Footage without a face set is first
extracted into one by the extractor (``progressive_swap.extract.pipeline``: detection or given
landmarks, tracks, smoothing), see ``cli/export.py``.

Convention: plates are uint8 ``(H, W, 3)`` RGB; landmarks frame pixels (centres at integers);
matrices frame pixels → normalised crop coordinates. On an anamorphic plate these are its own
(squeezed) pixels, the matrix an affine fitted on de-squeezed ones (``core/align.py``), so crops
come out undistorted and layers land on the plate's own grid with no other step; a face whose
record says another pixel aspect than the plates' is refused in one line.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from progressive_swap.footage.sources import footage_exists, open_source, parse_frames


@dataclass
class FaceIn:
    """One face to swap.

    Attributes:
        matrix: ``(2, 3)`` alignment, frame px → normalised crop coordinates.
        track: track id within the footage (-1 if none).
        landmarks: ``(68, 2)`` frame px, or None.
        crop: uint8 ``(S, S, 3)`` aligned crop if the source has one (face sets), else None.
        face_id: the face set record id, if any.
        mask: float32 ``(S, S)`` stored mask of the face set, when export asks for one.
    """

    matrix: np.ndarray
    track: int = -1
    landmarks: np.ndarray | None = None
    crop: np.ndarray | None = None
    face_id: str | None = None
    mask: np.ndarray | None = None


@dataclass
class FrameIn:
    """One footage frame and its faces.

    Attributes:
        index: the frame's identity (video: decoding order; numbered sequence: the file's number).
        time: seconds (NaN when unknown).
        image: uint8 ``(H, W, 3)`` sRGB (the plate, or its display view for a float plate).
        faces: the faces to swap.
        plate: float32 ``(H, W, 3)`` plate values in its colour space (EXR, DPX, 16-bit/float
            files), else None.
        info: the plate file's windows and attributes.
        colour: the plate's colour path (:class:`~progressive_swap.footage.colour.PlateColour`).
        pixel_aspect: the pixel aspect given in place of the plate's ``PixelAspectRatio``
            (``pixel_aspect=``), which its layers then carry; None: the header's, copied as it is.
    """

    index: int
    time: float
    image: np.ndarray
    faces: list[FaceIn] = field(default_factory=list)
    plate: np.ndarray | None = None
    info: object | None = None
    colour: object | None = None
    pixel_aspect: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(w, h)``."""
        return int(self.image.shape[1]), int(self.image.shape[0])


# ----------------------------------------------------------------------------- plates


def open_plates(path: str | os.PathLike, frames: str = "", layer: str = "", colorspace: str = "", ocio: str = "",
                colorspace_check: bool = True, pixel_aspect: float = 0.0):
    """The footage as a :class:`~progressive_swap.footage.sources.FrameSource` (video, image
    folder, image pattern or one image; the extractor's reader, with its ``frames``, ``layer``,
    ``colorspace``, ``ocio`` and ``pixel_aspect`` options)."""
    return open_source(path, frames=parse_frames(frames), layer=layer, colorspace=colorspace, ocio=ocio,
                       colorspace_check=colorspace_check, pixel_aspect=pixel_aspect)


# ----------------------------------------------------------------------------- face sets


def resolve_source(source: str, faceset_root: Path) -> Path:
    """Find a face set record's ``source`` on disk: as given, then beside the face set. A pattern
    (``plate.%04d.exr``, ``plate.####.exr``) is found when it matches image files."""
    p = Path(source)
    for cand in (p, faceset_root / p, faceset_root.parent / p, faceset_root.parent / p.name):
        if footage_exists(cand):
            return cand
    raise FileNotFoundError(
        f"the face set's source footage {source!r} was not found (also looked beside {str(faceset_root)!r}); "
        "pass source=PATH"
    )


def faceset_sources(fs) -> list[str]:
    return sorted(set(fs.sources))


def faceset_frames(fs, footage: str | os.PathLike, source: str, mask_name: str | None = None) -> Iterator[FrameIn]:
    """Frames of ``footage`` with the face set's faces of ``source`` attached.

    Args:
        fs: an open :class:`~progressive_swap.faceset.FaceSet`.
        footage: the plates (video, image or image folder), or an open
            :class:`~progressive_swap.footage.sources.FrameSource` (whose ``problems`` then list
            the frames that could not be decoded).
        source: the records' ``source`` value to use.
        mask_name: also attach this stored mask to each face (a user's ``user_`` edit wins).
    """
    rows: dict[int, list[int]] = defaultdict(list)
    srcs, fidx = fs.sources, fs.frame_indices
    for i in range(len(fs)):
        if srcs[i] == source:
            rows[int(fidx[i])].append(i)
    ids, sizes, mats, tracks, lms = fs.ids, fs.frame_sizes, fs.matrices, fs.tracks, fs.landmarks
    aspects = fs.pixel_aspects
    plates = footage if hasattr(footage, "frames") else open_plates(footage)  # a FrameSource keeps its problems
    plate_aspect = getattr(plates, "pixel_aspect", 1.0)
    given = plate_aspect if getattr(plates, "aspect_given", False) else None  # pixel_aspect=: on the layers too
    for fr in plates.frames():
        index, t, image = fr.index, fr.time, fr.image
        faces = []
        for i in rows.get(index, ()):
            if tuple(int(v) for v in sizes[i]) != (image.shape[1], image.shape[0]):
                raise ValueError(
                    f"face {ids[i]} was extracted from a {sizes[i][0]}x{sizes[i][1]} frame, "
                    f"but frame {index} of {str(footage)!r} is {image.shape[1]}x{image.shape[0]}"
                )
            if aspects[i] != plate_aspect:  # its matrix would cut a squashed (or stretched) face
                name = getattr(plates, "path", Path(str(footage))).name
                has = (f"pixel_aspect={plate_aspect:g} is given for {name}" if given is not None
                       else f"{name} has PixelAspectRatio {plate_aspect:g}")
                raise ValueError(
                    f"face {ids[i]} was aligned at pixel aspect {aspects[i]:g}, but {has}; extract the plates again "
                    f"(swap-extract reads their pixel aspect), or give pixel_aspect={aspects[i]:g} if that is theirs"
                )
            faces.append(FaceIn(matrix=np.asarray(mats[i], np.float64), track=int(tracks[i]),
                                landmarks=np.asarray(lms[i], np.float64), crop=fs.image(i), face_id=ids[i],
                                mask=fs.mask(i, mask_name, prefer_user=True) if mask_name else None))
        yield FrameIn(index, t, image, faces, fr.plate, fr.info, plates.colour, given)


def faceset_tracks(fs, source: str) -> list[int]:
    return sorted({int(t) for s, t in zip(fs.sources, fs.tracks) if s == source})
