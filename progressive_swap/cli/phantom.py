"""``swap-phantom``: write a phantom data set (face sets per identity, videos with truth).

    swap-phantom out=DIR                                   # 2 identities, 200 faces, 128 px
    swap-phantom out=DIR identities=4 faces=1000 size=512 face_type=head
    swap-phantom out=DIR videos=2 frames=96 occluders=0.5 frame_size=512

Identity ``i`` uses seed ``seed * 1000 + i`` (see ``docs/phantom.md``). Bad input gives a
one-line error and exit code 2 before anything is written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

from progressive_swap.cli.common import UserError, parse_overrides, run_cli, usage
from progressive_swap.phantom.dataset import generate_phantom_dataset

PROG = "swap-phantom"


@dataclass
class PhantomOptions:
    """Options of ``swap-phantom`` (``key=value`` on the command line)."""

    out: str = ""
    """Output directory (required)."""
    identities: int = 2
    faces: int = 200
    """Faces per identity."""
    size: int = 128
    """Crop side of the face sets: a multiple of 16, at most 2048."""
    face_type: str = "whole"
    """``full``, ``whole`` or ``head``."""
    seed: int = 0
    videos: int = 1
    """Videos per identity (0 for none)."""
    frames: int = 48
    """Frames per video."""
    fps: float = 24.0
    occluders: float = 0.3
    """Probability of an occluder per face and per video."""
    frame_size: int = 0
    """Side of the rendered frames and videos; 0 means ``2 * size``."""
    image_format: str = "png"
    progress: bool = True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 3 I/O error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\noptions: " + usage(PhantomOptions()))
        return 0

    def run() -> int:
        cfg = parse_overrides(argv, PhantomOptions(), PROG)
        if not cfg.out:
            raise UserError("out=DIR is required")
        result = generate_phantom_dataset(
            out=cfg.out, identities=cfg.identities, faces=cfg.faces, size=cfg.size, face_type=cfg.face_type,
            seed=cfg.seed, videos=cfg.videos, frames=cfg.frames, occluders=cfg.occluders,
            frame_size=cfg.frame_size or None, fps=cfg.fps, image_format=cfg.image_format, progress=cfg.progress,
        )
        print(f"{PROG}: wrote {len(result['faces'])} face sets and {len(result['videos'])} videos to {cfg.out}")
        return 0

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
