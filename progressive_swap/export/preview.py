"""Previews of an export: an H.264 composite video (with the source's audio) and a contact sheet.

The preview is the layer composited over the plate in sRGB (``composite.over``): a quick look,
not the final comp. Frames keep the source's presentation times (variable frame rate stays
variable) and the source's first audio stream is copied without re-encoding. The video is
written to a temporary file and renamed when complete, so an interrupted export leaves no
truncated preview.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from progressive_swap.core.io import atomic_write_bytes, fsync_dir

TIME_BASE = Fraction(1, 90000)  # fine enough for any frame rate, variable ones included


class PreviewWriter:
    """Stream composite frames into an H.264 mp4, interleaving the source's audio packets.

    Args:
        path: output ``.mp4``.
        fps: nominal rate (used when a frame has no timestamp: ``index / fps``).
        audio_from: media file whose first audio stream is copied (None: no audio).
        crf: x264 quality.

    Use as a context manager; :meth:`write` one frame at a time.
    """

    def __init__(self, path: str | os.PathLike, fps: float, audio_from: str | os.PathLike | None = None, crf: int = 20):
        self.path = Path(path)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 25.0
        self.crf = crf
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4", dir=self.path.parent)
        os.close(fd)
        self._out = av.open(self._tmp, mode="w")
        self._video = None
        self._last_pts = -1
        self._audio_in = None
        self._audio_packets: Iterator | None = None
        self._pending = None
        self._audio = None
        if audio_from is not None and Path(audio_from).is_file():
            try:
                src = av.open(str(audio_from))
            except av.FFmpegError:
                src = None
            if src is not None and src.streams.audio:
                self._audio_in = src
                self._audio = self._out.add_stream_from_template(src.streams.audio[0])
                self._audio_packets = src.demux(src.streams.audio[0])
            elif src is not None:
                src.close()

    def __enter__(self) -> "PreviewWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _mux_audio_until(self, t: float) -> None:
        if self._audio_packets is None:
            return
        while True:
            pkt = self._pending
            if pkt is None:
                pkt = next(self._audio_packets, None)
                if pkt is None:
                    self._audio_packets = None
                    return
            if pkt.dts is None:  # the demuxer's flush packet
                self._pending = None
                continue
            if pkt.pts is not None and float(pkt.pts * pkt.time_base) > t:
                self._pending = pkt
                return
            self._pending = None
            pkt.stream = self._audio
            self._out.mux(pkt)

    def write(self, rgb: np.ndarray, index: int, time: float) -> None:
        """Add one uint8 ``(H, W, 3)`` RGB frame shown at ``time`` seconds (NaN: ``index / fps``)."""
        h, w = rgb.shape[:2]
        if self._video is None:
            self._video = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(100000))
            self._video.width, self._video.height = w - w % 2, h - h % 2
            self._video.pix_fmt = "yuv420p"
            self._video.codec_context.time_base = TIME_BASE
            self._video.options = {"crf": str(int(self.crf))}
        t = time if math.isfinite(time) else index / self.fps
        pts = max(int(round(t / TIME_BASE)), self._last_pts + 1)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2]), format="rgb24")
        frame.pts, frame.time_base = pts, TIME_BASE
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        self._mux_audio_until(t)

    def close(self) -> None:
        """Flush, finish the file and rename it into place."""
        try:
            if self._video is not None:
                for packet in self._video.encode():
                    self._out.mux(packet)
            self._mux_audio_until(float("inf"))
            self._out.close()
            self._close_audio()
            if self._video is None:
                raise ValueError("preview has no frames")
            with open(self._tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise

    def _close_audio(self) -> None:
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None

    def abort(self) -> None:
        """Drop the unfinished preview."""
        with contextlib.suppress(Exception):
            self._out.close()
        self._close_audio()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class ContactSheet:
    """A grid of evenly spaced preview thumbnails, collected while streaming.

    Args:
        total: expected frame count (None: the first ``cells`` frames).
        cells: thumbnails in the sheet.
        width: thumbnail width in pixels.
    """

    def __init__(self, total: int | None, cells: int = 12, width: int = 320, columns: int = 4):
        n = max(1, int(total or cells))
        self.want = sorted({int(round(x)) for x in np.linspace(0, n - 1, min(cells, n))})
        self.width, self.columns = width, columns
        self.thumbs: dict[int, np.ndarray] = {}

    def wants(self, index: int) -> bool:
        return index in self.want

    def add(self, index: int, rgb: np.ndarray) -> None:
        """Keep a thumbnail of uint8 RGB frame ``index`` if it is one of the chosen ones."""
        if not self.wants(index):
            return
        h, w = rgb.shape[:2]
        th = max(1, round(h * self.width / w))
        small = cv2.resize(rgb, (self.width, th), interpolation=cv2.INTER_AREA)
        cv2.putText(small, str(index), (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        self.thumbs[index] = small

    def save(self, path: str | os.PathLike) -> Path | None:
        """Write the sheet as an 8-bit PNG (atomically); None if no thumbnail was collected."""
        if not self.thumbs:
            return None
        tiles = [self.thumbs[k] for k in sorted(self.thumbs)]
        th = max(t.shape[0] for t in tiles)
        cols = min(self.columns, len(tiles))
        rows = math.ceil(len(tiles) / cols)
        sheet = np.zeros((rows * th, cols * self.width, 3), np.uint8)
        for k, t in enumerate(tiles):
            r, c = divmod(k, cols)
            sheet[r * th : r * th + t.shape[0], c * self.width : (c + 1) * self.width] = t
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("contact sheet encoding failed")
        atomic_write_bytes(path, buf.tobytes())
        return Path(path)
