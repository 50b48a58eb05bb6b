"""Frame sources for extraction: a video, an image sequence, a folder of images or one image.

Every source yields :class:`Frame` objects: uint8 ``(H, W, 3)`` RGB images (what the detector
sees) with a stable frame index and a time in seconds. The index is the frame's identity
everywhere downstream (face records, sidecars, layer names): the decoding order from 0 for
video, **the number in the file name** for a numbered image sequence (``plate.1001.exr`` is
frame 1001), and the sorted position for a folder of unnumbered images. Times are the video's
pts (variable frame-rate footage keeps correct timing), ``(number - first) / fps`` for
sequences when ``fps`` is given, else NaN.

Sequences are named by a folder, a glob, or a pattern: ``plate.%04d.exr``, ``plate.####.exr``
or ``plate.@@@@.exr`` (each ``#`` or ``@`` one digit of padding, as in Nuke; more digits still
match). ``frames=(first, last)`` keeps part of one (of a video: 0-based frame indices, and
decoding stops after the last). Missing numbers inside the range are gaps:
each is one ``frame N skipped: …`` problem, counted like an unreadable frame (exit code 4).

High-precision files (EXR, DPX, 16-bit or float TIFF and PNG) are read through OpenImageIO
(``footage/plates.py``): the frame then also carries ``plate``, the float32 values in the
plate's colour space, and ``info`` (windows, attributes), and ``image`` is the colour-managed
display view of it (``footage/colour.py``); ``pixel_aspect`` is the first file's
``PixelAspectRatio``, or the value given in its place (``open_source(pixel_aspect=)``, the
commands' ``pixel_aspect=``); the pixels stay the file's own: extraction de-squeezes for detection
and alignment. 8-bit images and video keep the OpenCV and PyAV paths, unchanged.

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

from progressive_swap.core.align import check_pixel_aspect
from progressive_swap.footage import plates as P
from progressive_swap.footage.colour import PlateColour, file_colour, plate_colour
from progressive_swap.footage.video import probe_video, read_video

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".y4m"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr", ".dpx"}


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: the frame's identity (video: decoding order; sequence: the file's number).
        time: seconds (NaN when unknown).
        image: uint8 ``(H, W, 3)`` RGB, what the detector sees (sRGB).
        name: the file's name (images).
        pos: position in the source's order, from 0 (what :meth:`FrameSource.frames` starts at).
        plate: float32 ``(H, W, 3)`` plate values in the plate's colour space, for
            high-precision files; None for 8-bit images and video.
        info: the plate file's windows and attributes (:class:`~progressive_swap.footage.plates.PlateInfo`).
    """

    index: int
    time: float
    image: np.ndarray
    name: str = ""
    pos: int = -1
    plate: np.ndarray | None = None
    info: P.PlateInfo | None = None


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
    numbers: list[int] | None = None
    digits: int = 6
    layer: str = ""
    colour: PlateColour | None = None
    frame_range: tuple[int, int] | None = None
    """Video only: ``frames=`` as 0-based frame indices (inclusive); decoding stops after the last."""
    pixel_aspect: float = 1.0
    """The plates' ``PixelAspectRatio`` (the first file's header; 1.0 when absent, and for 8-bit
    images and video), or the value given in its place (:attr:`aspect_given`): a pixel's width
    over its height, 2.0 for a 2:1 anamorphic squeeze."""
    aspect_given: bool = False
    """``pixel_aspect`` was given (``pixel_aspect=``), not read: it holds for every frame, whatever
    the headers say (they are not compared from frame to frame)."""
    header_aspect: object = None
    """With :attr:`aspect_given`: what the first file's header states (unchecked; None: nothing)."""

    def aspect_line(self) -> str:
        """One line for the commands' first output when the pixels are not square or the header's
        value was replaced, else ``""``."""
        header = self.header_aspect
        said = ("none" if header is None else f"{header:g}" if isinstance(header, (int, float)) else repr(header))
        if self.aspect_given and self.pixel_aspect == 1.0:
            if header is None or said == "1":
                return ""
            return f"pixel aspect 1 (pixel_aspect=; the header says {said}): square pixels"
        if self.pixel_aspect == 1.0:
            return ""
        first = self.files[0].name if self.files else self.path.name
        where = f"pixel_aspect=; the header says {said}" if self.aspect_given else f"PixelAspectRatio of {first}"
        return (f"pixel aspect {self.pixel_aspect:g} ({where}): faces detected and aligned on de-squeezed pixels, "
                f"layers on the plate's own")

    @property
    def high_precision(self) -> bool:
        """Frames are read through OpenImageIO and carry float plate values."""
        return self.colour is not None

    def position(self, index: int) -> int:
        """Position (for :meth:`frames`) of the frame with identity ``index`` (the first one after it if absent)."""
        if self.numbers is None:
            return int(index)
        return int(np.searchsorted(np.asarray(self.numbers), int(index)))

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
        """Decode frames at position ``>= start`` in order; problems go to :attr:`problems`.

        For video, earlier frames are decoded and dropped (seeking is not frame-exact).
        """
        if self.kind == "video":
            yield from self._video_frames(start)
            return
        first = self.numbers[0] if self.numbers else 0
        for i in range(start, len(self.files)):
            f = self.files[i]
            index = self.numbers[i] if self.numbers is not None else i
            plate = info = None
            try:
                if self.colour is not None:
                    plate, info = P.read_plate(f, self.layer)
                    im = self.colour.view(plate)
                else:
                    im = read_image(f)
            except (OSError, ValueError) as e:
                msg = str(e) if isinstance(e, ValueError) else f"{f.name}: {e.strerror or e}"
                self.problems.append(f"frame {index} skipped: {msg}")
                continue
            t = (index - first) / self.fps if self.fps else math.nan
            yield Frame(index, t, im, f.name, i, plate, info)

    def _video_frames(self, start: int) -> Iterator[Frame]:
        last = -1
        last_t = math.nan
        lo, hi = self.frame_range or (0, None)
        it = read_video(self.path)
        while hi is None or last < hi:
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
            if i >= max(start, lo):
                yield Frame(i, t, im, pos=i)
        if hi is not None:
            if self.expected_frames and last < lo + self.expected_frames - 1 and not self.problems:
                self.problems.append(f"{self.path.name}: decoding ended at frame {last}, before frames={lo}-{hi} "
                                     "ends (truncated?)")
        elif self.expected_frames and 0 <= last < self.expected_frames - 1 and not self.problems:
            self.problems.append(
                f"{self.path.name}: decoded {last + 1} of {self.expected_frames} frames the container announces "
                "(truncated?)"
            )


def open_source(
    path: str | os.PathLike,
    fps: float | None = None,
    frames: tuple[int, int] | None = None,
    layer: str = "",
    colorspace: str = "",
    ocio: str = "",
    colorspace_check: bool = True,
    pixel_aspect: float = 0.0,
) -> FrameSource:
    """Open a video file, a folder of images, an image pattern or glob, or one image.

    Args:
        path: input path or pattern (``shot/frame_%05d.png``, ``plate.####.exr``,
            ``plate.@@@@.dpx``, ``shot/*.png``).
        fps: frame rate of image input (sets times and smoothing windows); ignored for video.
        frames: ``(first, last)`` frames to keep (inclusive): the file numbers of a numbered
            sequence, 0-based frame indices of a video.
        layer: the RGB layer of a multi-layer EXR (``""``: the beauty).
        colorspace: the plates' colour space (``""``: the default of their file type,
            :func:`~progressive_swap.footage.colour.default_space`); high-precision files only.
        ocio: the OCIO config (``""``: ``$OCIO``, else the built-in one).
        colorspace_check: refuse a ``colorspace`` that contradicts the file's own description
            (its EXR chromaticities or stated colour space); False reads it as ``colorspace`` anyway.
        pixel_aspect: the plates' pixel aspect ratio (0.1 to 10) in place of their
            ``PixelAspectRatio`` header, for every frame; 0: the first file's header (1 when it has
            none). High-precision files only (:func:`aspect_option`).

    Raises:
        FileNotFoundError / ValueError: one line, when the input does not exist, holds no
        images, is not a readable video at all, or asks for a layer, range or colour space it
        cannot give.
    """
    pixel_aspect = aspect_option(pixel_aspect)
    s = str(path)
    p = Path(s)
    numbers: list[int] | None = None
    digits = 0
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file()),
                       key=lambda f: _natural_key(f.name))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {s!r}")
        numbered = all(re.search(r"\d+$", f.stem) for f in files)
        kind = "sequence" if numbered and len(files) > 1 else "folder"
        name = p.name
        if kind == "sequence":
            numbers, digits = _trailing_numbers(files)
    elif not p.exists() and is_pattern(p):
        if "%" in p.name or _PADDING.search(p.name):
            rx = _pattern_regex(p.name, s)
            files = [f for f in p.parent.glob("*") if rx.match(f.name)] if p.parent.is_dir() else []
            files = [f for f in files if f.is_file()]
            if files:
                numbers = [int(rx.match(f.name).group(1)) for f in files]
                order = np.argsort(numbers, kind="stable")
                files, numbers = [files[i] for i in order], [numbers[i] for i in order]
                digits = _pattern_digits(p.name)
                if len(set(numbers)) != len(numbers):
                    raise ValueError(f"two files of {s!r} have the same frame number (different padding?)")
        else:
            files = sorted((Path(f) for f in glob.glob(s) if Path(f).is_file()), key=lambda f: _natural_key(f.name))
            if files and all(re.search(r"\d+$", f.stem) for f in files):
                numbers, digits = _trailing_numbers(files)
        if not files:
            raise FileNotFoundError(f"no images match {s!r}")
        kind = "sequence"
        name = re.split(r"[%*?\[#@]", p.name)[0].rstrip("._-") or p.parent.name
    elif not p.exists():
        raise FileNotFoundError(f"no such input: {s!r}")
    elif p.suffix.lower() in IMAGE_EXTS:
        kind, files, name = "image", [p], p.stem
    else:
        _check_aspect_given(p.name, pixel_aspect, "a video")
        return _open_video(p, s, layer, colorspace, frames)
    problems: list[str] = []
    expected = len(files)
    if frames is not None:
        if numbers is None:
            raise ValueError(f"frames= selects part of a numbered image sequence; {s!r} is not one")
        keep = [i for i, n in enumerate(numbers) if frames[0] <= n <= frames[1]]
        if not keep:
            raise FileNotFoundError(f"no frame of {s!r} in frames={frames[0]}-{frames[1]} "
                                    f"(it has {numbers[0]}-{numbers[-1]})")
        files, numbers = [files[i] for i in keep], [numbers[i] for i in keep]
    if numbers is not None:
        first, last = frames if frames is not None else (numbers[0], numbers[-1])
        problems = _gaps(numbers, first, last)
        expected = last - first + 1
    colour = _colour_of(files[0], layer, colorspace, ocio, colorspace_check)
    header = None
    if colour is None:  # OpenCV's 8-bit path reads no aspect
        _check_aspect_given(files[0].name, pixel_aspect, "8-bit")
        aspect = 1.0
    elif pixel_aspect:
        aspect, header = pixel_aspect, P.header_pixel_aspect(files[0])
    else:
        try:
            aspect = P.pixel_aspect(files[0])
        except P.PlateError as e:
            raise P.PlateError(f"{e}; pixel_aspect= gives the right one") from None
    return FrameSource(kind, p, _clean_name(name), fps or None, files, problems, expected, numbers,
                       max(digits, 1) if numbers is not None else 6, layer, colour, pixel_aspect=aspect,
                       aspect_given=bool(pixel_aspect), header_aspect=header)


def aspect_option(value) -> float:
    """The commands' ``pixel_aspect=`` checked: 0.0 (read the plates' header) or a pixel aspect
    ratio from 0.1 to 10; one-line ``ValueError`` otherwise."""
    try:
        a = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"pixel_aspect={value!r} is not a number") from None
    if a == 0.0:
        return 0.0
    try:
        return check_pixel_aspect(a)
    except ValueError:
        raise ValueError(f"pixel_aspect={a:g} is not a pixel aspect ratio: give one from 0.1 to 10 "
                         "(0 reads the plates' header)") from None


def _check_aspect_given(what: str, pixel_aspect: float, kind: str) -> None:
    if pixel_aspect:
        raise ValueError(f"pixel_aspect= replaces the PixelAspectRatio header of EXR, DPX and 16-bit or float "
                         f"plates; {what} is {kind}")


_PADDING = re.compile(r"#+|@+")


def _pattern_digits(name: str) -> int:
    m = re.search(r"%0?(\d*)d", name)
    if m:
        return int(m.group(1) or 1)
    m = _PADDING.search(name)
    return len(m.group(0)) if m else 1


def _pattern_regex(name: str, whole: str) -> re.Pattern:
    """``plate.%04d.exr`` / ``plate.####.exr`` / ``plate.@@@@.exr`` → a regex whose group 1 is the number."""
    if len(re.findall(r"%0?\d*d|#+|@+", name)) != 1:
        raise ValueError(f"bad image pattern {whole!r}: give one frame number (%04d, #### or @@@@)")
    parts = re.split(r"(%0?\d*d|#+|@+)", name)
    out = []
    for part in parts:
        if re.fullmatch(r"%0?\d*d|#+|@+", part):
            out.append(r"(-?\d{%d,})" % _pattern_digits(part))
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


def _trailing_numbers(files: list[Path]) -> tuple[list[int] | None, int]:
    """The frame numbers at the end of the files' stems, and the padding; None (positions) unless they
    rise strictly in the files' order (two files sharing a number, or several prefixes)."""
    found = [re.search(r"\d+$", f.stem).group(0) for f in files]
    numbers = [int(x) for x in found]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        return None, 0
    return numbers, min(len(x) for x in found)


def _gaps(numbers: list[int], first: int, last: int) -> list[str]:
    """One ``frame(s) … skipped`` line per run of missing numbers in ``first … last``, found
    from the files present (sorted), so a range of 10**11 numbers costs what its files cost."""
    out, n = [], first
    for have in sorted(set(numbers)) + [last + 1]:
        if have < n:
            continue
        if have > last + 1:
            have = last + 1
        if have > n:
            m = have - 1
            what = f"frame {n}" if m == n else f"frames {n}-{m}"
            out.append(f"{what} skipped: no file (a gap in the sequence)")
        n = have + 1
        if n > last:
            break
    return out


def _colour_of(first: Path, layer: str, colorspace: str, ocio: str, check: bool = True) -> PlateColour | None:
    """The colour path of high-precision plates (the first file's header describes the sequence),
    None for 8-bit images (read as sRGB, as always)."""
    if P.is_high_precision(first):
        dtype, _ = P.probe_plate(first)
        if layer:
            P.read_plate(first, layer, with_info=False)  # an absent layer: refused here, in one line
        described = file_colour(P.colour_attributes(first), first.suffix, first.name)
        return plate_colour(first.suffix, dtype, colorspace, ocio, described, check)
    _check_8bit(first.name, layer, colorspace)
    return None


def _check_8bit(what: str, layer: str, colorspace: str) -> None:
    if layer:
        raise ValueError(f"layer= picks a layer of a multi-layer EXR; {what} has one")
    if colorspace and colorspace.lower() not in ("srgb", "srgb_tx", "srgb encoded rec.709 (srgb)"):
        raise ValueError(f"colorspace={colorspace} applies to EXR, DPX and 16-bit or float plates; "
                         f"{what} is 8-bit and read as sRGB")


def _open_video(p: Path, s: str, layer: str, colorspace: str, frames: tuple[int, int] | None = None) -> FrameSource:
    """A video; ``frames`` keeps frame indices ``first``-``last`` (0-based, inclusive)."""
    _check_8bit(p.name, layer, colorspace)
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
    n = int(info["n_frames"] or 0)
    if frames is not None:
        if n and frames[0] >= n:
            raise FileNotFoundError(f"no frame of {s!r} in frames={frames[0]}-{frames[1]} "
                                    f"(its frames are 0-{n - 1}, counted from 0)")
        n = min(frames[1], n - 1) - frames[0] + 1 if n else 0  # 0: the container does not say
    return FrameSource("video", p, _clean_name(p.stem), rate, expected_frames=n, frame_range=frames)


def parse_frames(text: str) -> tuple[int, int] | None:
    """``"1001-1100"`` → ``(1001, 1100)``; ``"1001"`` → ``(1001, 1001)``; ``""`` → None."""
    text = str(text).strip()
    if not text:
        return None
    m = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", text)
    if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
        raise ValueError(f"frames must be FIRST-LAST frame numbers (e.g. 1001-1100), got {text!r}")
    return int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))


def is_pattern(path: str | os.PathLike) -> bool:
    """Whether ``path`` names frames by a pattern (``%04d``, ``####``, ``@@@@`` or a glob), not one file."""
    name = Path(str(path)).name
    return "%" in name or any(c in name for c in "*?[") or bool(_PADDING.search(name))


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
