"""Face sets: directories of aligned face crops, masks and per-face metadata.

Written by the extractor (which resumes into a set after a crash) and the phantom generator;
read by the trainer's data loader (random access by index from worker processes), the exporter
and the mask tools. Layout, conventions and crash safety: ``docs/faceset.md``.

Example:
    >>> from progressive_swap import faceset  # doctest: +SKIP
    >>> with faceset.create("out/A", face_type="whole", size=512, identity="A") as w:
    ...     w.append(records, images, masks={"hull": hull_masks})
    >>> fs = faceset.open("out/A")
    >>> fs.image(0).shape, fs.landmarks_aligned.shape   # (512, 512, 3), (N, 68, 2)

Convention: ``landmarks`` are frame pixels (x right, y down, pixel centres at integers);
``matrices`` map frame pixels to *normalised crop coordinates* ``u`` in [0, 1], so
``landmarks_aligned`` are in [0, 1] units for any crop size S (pixel = ``u * S - 0.5``).
"""
import os

from progressive_swap.faceset.format import FORMAT_VERSION, USER_PREFIX, FaceRecord, FaceSetError
from progressive_swap.faceset.reader import FaceSet, link_face_files, merge
from progressive_swap.faceset.writer import FaceSetWriter, create, open_writer

__all__ = [
    "FORMAT_VERSION", "USER_PREFIX", "FaceRecord", "FaceSet", "FaceSetError", "FaceSetWriter",
    "create", "link_face_files", "merge", "open", "open_writer",
]


def open(path: str | os.PathLike, *, on_corrupt: str = "raise", verify: bool = False) -> FaceSet:  # noqa: A001
    """Open a face set for reading (see :class:`FaceSet`); ``verify=True`` first checks that its
    index and files agree, as every in-place change must."""
    return FaceSet(path, on_corrupt=on_corrupt, verify=verify)
