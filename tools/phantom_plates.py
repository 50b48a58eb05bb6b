"""Phantom EXR plates: one numbered ACEScg sequence per identity, with its landmarks, as a
compositor would hand over a shot (the plate job, ``tools/plate_job.sh``, starts from these).

For identity ``k`` (seed ``1000 * seed + k``, as ``swap-phantom``), ``--frames`` phantom frames
of one smooth head motion are rendered at ``--size`` px, converted from their sRGB picture to
ACEScg (the plate's scene-linear values; the picture comes back exactly through the sRGB view)
and written as half-float ZIP EXRs numbered from 1001: ``OUT/NAME/plate.1001.exr …``, with AP1
``chromaticities``, the colour space's name, 24 fps and a timecode per frame, as a camera pipeline
writes them. A square of linear 16.0 (a practical light, far above the view's 1.0) sits in the
top-left corner, away from the face, so a composite can be checked where the layer is
transparent and the plate's values exceed 1. ``OUT/NAME/landmarks.json`` holds the rendered
68-point landmarks on the same frame numbers (``landmarks=given``: no detector needed).

Every file is written to a temporary name and renamed. Bad input: one line, exit code 2.

Usage:
    python tools/phantom_plates.py OUT [--frames 24] [--size 128] [--seed 0] [--names A B]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST = 1001  # the first frame number, as plates are numbered on set
FPS = 24
LIGHT = 16.0  # linear value of the corner light


def light_box(size: int) -> tuple[slice, slice]:
    """The corner light's rows and columns: 6 % of the side, at least 2 px, 1 px from the corner."""
    n = max(2, round(0.06 * size))
    return slice(1, 1 + n), slice(1, 1 + n)


def timecode(frame: int) -> list[int]:
    """SMPTE timecode (OpenImageIO's two-int ``timecode``) of ``frame`` at 24 fps from 01:00:00:00."""
    t = 3600 * FPS + frame - FIRST
    h, m, s, f = t // (3600 * FPS), t // (60 * FPS) % 60, t // FPS % 60, t % FPS
    bcd = lambda v: (v // 10) << 4 | v % 10  # noqa: E731
    return [bcd(h) << 24 | bcd(m) << 16 | bcd(s) << 8 | bcd(f), 0]


def write_plate(path: Path, rgb: np.ndarray, frame: int, colour) -> None:
    import OpenImageIO as oiio

    from progressive_swap.core.io import atomic_path
    from progressive_swap.footage.colour import CHROMATICITIES

    spec = oiio.ImageSpec(rgb.shape[1], rgb.shape[0], 3, "half")
    spec.channelnames = ("R", "G", "B")
    spec.attribute("compression", "zip")
    spec.attribute("chromaticities", oiio.TypeDesc("float[8]"), CHROMATICITIES[colour.plate])
    spec.attribute("oiio:ColorSpace", colour.plate)
    spec.attribute("FramesPerSecond", oiio.TypeDesc("rational"), [FPS, 1])
    spec.attribute("smpte:TimeCode", oiio.TypeDesc("timecode"), timecode(frame))
    with atomic_path(path) as tmp:
        out = oiio.ImageOutput.create(str(tmp))
        if out is None or not out.open(str(tmp), spec):
            raise OSError(f"cannot write {path}: {oiio.geterror()}")
        ok = out.write_image(np.ascontiguousarray(rgb, np.float32))
        err = out.geterror()
        out.close()
        if not ok:
            raise OSError(f"cannot write {path}: {err}")


def make_plates(out: Path, frames: int, size: int, seed: int, names: list[str]) -> list[Path]:
    """Write the sequences; returns each identity's folder."""
    from progressive_swap.core.io import atomic_write_json
    from progressive_swap.footage import colour as CO
    from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

    colour = CO.plate_colour(".exr", "half")  # ACEScg: the built-in config's scene_linear
    rows, cols = light_box(size)
    dirs = []
    for k, name in enumerate(names):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        ident = sample_identity(1000 * seed + k)
        truth = []
        for i, pose in enumerate(sample_trajectory(1000 * seed + k, frames, fps=FPS)):
            r = render(ident, pose, size)
            plate = colour.convert(r.image.astype(np.float32) / 255.0, colour.view_space, colour.plate)
            plate[rows, cols] = LIGHT
            write_plate(d / f"plate.{FIRST + i}.exr", plate, FIRST + i, colour)
            truth.append({"index": FIRST + i, "faces": [{"landmarks": r.landmarks.tolist()}]})
        atomic_write_json(d / "landmarks.json", {"fps": FPS, "size": [size, size], "frames": truth})
        dirs.append(d)
    return dirs


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage and error
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="phantom_plates.py", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=24, help="frames per identity")
    ap.add_argument("--size", type=int, default=128, help="plate side (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--names", nargs="+", default=["A", "B"], help="one folder per identity")
    a = ap.parse_args(argv)
    problems = []
    if a.frames < 1:
        problems.append(f"--frames {a.frames}: at least 1")
    if not 32 <= a.size <= 2048:
        problems.append(f"--size {a.size}: 32 to 2048")
    if a.seed < 0:
        problems.append(f"--seed {a.seed}: at least 0")
    for n in a.names:
        if n in (".", "..") or "/" in n or n.startswith("-") or a.names.count(n) > 1:
            problems.append(f"--names: {n!r} is not a distinct plain folder name")
    if problems:
        print(f"phantom_plates.py: error: {problems[0]}", file=sys.stderr)
        return 2
    try:
        import OpenImageIO  # noqa: F401
        import PyOpenColorIO  # noqa: F401
    except ImportError as e:
        print(f"phantom_plates.py: error: {e.name} is missing: pip install 'progressive-swap[plates]'", file=sys.stderr)
        return 2
    try:
        dirs = make_plates(a.out, a.frames, a.size, a.seed, a.names)
    except OSError as e:
        print(f"phantom_plates.py: error: {e}".replace("\n", " "), file=sys.stderr)
        return 3
    print(f"phantom_plates.py: wrote {a.frames} ACEScg EXR plates each to " + ", ".join(map(str, dirs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
