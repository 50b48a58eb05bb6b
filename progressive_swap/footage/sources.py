"""Frame sources for extraction: a video, an image sequence, a folder of images or one image.

Every source yields :class:`Frame` objects: uint8 ``(H, W, 3)`` RGB images with a stable frame
index (decoding order for video, sorted position for images) and a time in seconds (the
video's pts, so variable frame-rate footage keeps correct timing; ``index / fps`` for image
sequences when ``fps`` is given, else NaN).

Bad input never raises mid-stream: a file that cannot be decoded is skipped and a corrupt or
truncated video ends early; each problem is one line in ``source.problems``. Images are
normalised on the way in: grayscale → RGB, RGBA → RGB (alpha dropped), 16-bit → 8-bit.

Example:
    >>> src = open_source("shot.mp4")  # doctest: +SKIP
    >>> for fr in src.frames():
    ...     fr.index, fr.time, fr.image.shape
"""
from __future__ import annotations

import glob
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from progressive_swap.footage.video import probe_video, read_video

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".y4m"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Frame:
    """One decoded frame: ``image`` is uint8 ``(H, W, 3)`` RGB."""

    index: int
    time: float
    image: np.ndarray
    name: str = ""


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def to_rgb8(image: np.ndarray, bgr: bool = True) -> np.ndarray:
    """Normalise a decoded image to uint8 ``(H, W, 3)`` RGB.

    Grayscale is replicated, alpha dropped, 16-bit scaled by 1/257 (rounded), float assumed in
    [0, 1]. ``bgr``: the channels come from OpenCV (BGR order).
    """
    im = np.asarray(image)
    if im.dtype == np.uint16:
        im = ((im.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif im.dtype.kind == "f":
        im = (np.clip(np.nan_to_num(im), 0, 1) * 255 + 0.5).astype(np.uint8)
    elif im.dtype != np.uint8:
        raise ValueError(f"unsupported image type {im.dtype}")
    if im.ndim == 2:
        im = im[:, :, None]
    if im.ndim != 3 or im.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {im.shape}")
    c = im.shape[2]
    if c in (1, 2):
        return np.repeat(im[:, :, :1], 3, axis=2)
    im = im[:, :, :3]
    return np.ascontiguousarray(im[:, :, ::-1] if bgr else im)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as uint8 RGB; one-line ``ValueError`` when it cannot be decoded."""
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"{p.name}: empty file (0 bytes)")
    data = np.fromfile(p, np.uint8)
    im = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if im is None:
        raise ValueError(f"{p.name}: cannot decode image ({size} bytes; corrupt or unsupported format)")
    return to_rgb8(im)


@dataclass
class FrameSource:
    """Where frames come from. Build with :func:`open_source`.

    Attributes:
        kind: ``video``, ``sequence`` (numbered images), ``folder`` or ``image``.
        path: the input as given.
        name: short name for face records and ids (file or folder stem).
        fps: frame rate if known (video, or given for images).
        files: image files in frame order (not for video).
        problems: one-line messages about frames that could not be read.
    """

    kind: str
    path: Path
    name: str
    fps: float | None = None
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    expected_frames: int = 0

    @property
    def is_sequence(self) -> bool:
        """Frames are consecutive moments of one shot (temporal smoothing makes sense)."""
        return self.kind in ("video", "sequence")

    def fingerprint(self) -> dict:
        """What identifies this input's content cheaply, to refuse resuming on changed input."""
        if self.kind == "video":
            st = self.path.stat()
            return {"kind": self.kind, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        h = hashlib.sha1()
        for f in self.files:
            st = f.stat() if f.exists() else None
            h.update(f"{f.name}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n".encode())
        return {"kind": self.kind, "files": len(self.files), "sha1": h.hexdigest()}

    def frames(self, start: int = 0) -> Iterator[Frame]:
        """Decode frames with index ``>= start`` in order; problems go to :attr:`problems`.

        For video, earlier frames are decoded and dropped (seeking is not frame-exact).
        """
        if self.kind == "video":
            yield from self._video_frames(start)
            return
        for i in range(start, len(self.files)):
            f = self.files[i]
            try:
                im = read_image(f)
            except (OSError, ValueError) as e:
                msg = str(e) if isinstance(e, ValueError) else f"{f.name}: {e.strerror or e}"
                self.problems.append(f"frame {i} skipped: {msg}")
                continue
            t = i / self.fps if self.fps else math.nan
            yield Frame(i, t, im, f.name)

    def _video_frames(self, start: int) -> Iterator[Frame]:
        last = -1
        last_t = math.nan
        it = read_video(self.path)
        while True:
            try:
                i, t, im = next(it)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - FFmpeg raises many types; report, keep what decoded
                where = f"after frame {last} (t={last_t:.3f} s)" if last >= 0 else "before the first frame"
                line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.problems.append(f"{self.path.name}: decoding stopped {where}: {line}")
                break
            last, last_t = i, t
            if i >= start:
                yield Frame(i, t, im)
        if self.expected_frames and 0 <= last < self.expected_frames - 1 and not self.problems:
            self.problems.append(
                f"{self.path.name}: decoded {last + 1} of {self.expected_frames} frames the container announces "
                "(truncated?)"
            )


def open_source(path: str | os.PathLike, fps: float | None = None) -> FrameSource:
    """Open a video file, a folder of images, a ``%0Nd`` or glob image pattern, or one image.

    Args:
        path: input path or pattern (``shot/frame_%05d.png``, ``shot/*.png``).
        fps: frame rate of image input (sets times and smoothing windows); ignored for video.

    Raises:
        FileNotFoundError / ValueError: one line, when the input does not exist, holds no
        images, or is not a readable video at all.
    """
    s = str(path)
    p = Path(s)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file()),
                       key=lambda f: _natural_key(f.name))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {s!r}")
        numbered = all(re.search(r"\d+$", f.stem) for f in files)
        kind = "sequence" if numbered and len(files) > 1 else "folder"
        return FrameSource(kind, p, _clean_name(p.name), fps or None, files, expected_frames=len(files))
    if "%" in p.name or any(c in p.name for c in "*?["):
        if "%" in p.name:
            try:
                pat = re.escape(p.name).replace(re.escape("%"), "%")
                pat = re.sub(r"%0?(\d*)d", lambda m: r"(\d{%s,})" % (m.group(1) or "1"), pat)
            except re.error as e:
                raise ValueError(f"bad image pattern {s!r}: {e}") from None
            rx = re.compile(f"^{pat}$")
            files = [f for f in p.parent.glob("*") if rx.match(f.name)] if p.parent.is_dir() else []
        else:
            files = [Path(f) for f in glob.glob(s)]
        files = sorted((f for f in files if f.is_file()), key=lambda f: _natural_key(f.name))
        if not files:
            raise FileNotFoundError(f"no images match {s!r}")
        stem = re.split(r"[%*?\[]", p.name)[0].rstrip("._-") or p.parent.name
        return FrameSource("sequence", p, _clean_name(stem), fps or None, files, expected_frames=len(files))
    if not p.exists():
        raise FileNotFoundError(f"no such input: {s!r}")
    if p.suffix.lower() in IMAGE_EXTS:
        return FrameSource("image", p, _clean_name(p.stem), fps or None, [p], expected_frames=1)
    if p.stat().st_size == 0:
        raise ValueError(f"{s!r} is empty (0 bytes)")

    try:
        info = probe_video(p)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - not a container FFmpeg can open
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "video" if p.suffix.lower() in VIDEO_EXTS else "video or image"
        raise ValueError(f"cannot read {s!r} as a {kind}: {line}") from None
    rate = info["fps"] if info["fps"] and math.isfinite(info["fps"]) else None
    return FrameSource("video", p, _clean_name(p.stem), rate, expected_frames=int(info["n_frames"] or 0))


def is_pattern(path: str | os.PathLike) -> bool:
    """Whether ``path`` names frames by a pattern (``%04d``, ``####``, ``@@@@`` or a glob), not one file."""
    name = Path(str(path)).name
    return "%" in name or any(c in name for c in "*?[#@")


def footage_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is footage on disk: an existing file or folder, or a pattern matching at least one image."""
    if Path(str(path)).exists():
        return True
    if not is_pattern(path):
        return False
    try:
        open_source(path)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _clean_name(name: str) -> str:
    """A name usable inside face ids: ``[A-Za-z0-9._-]``, starting with a letter or digit."""
    n = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:48]
    return n or "input"
