"""``swap-phantom``: write a phantom data set (face sets per identity, videos with truth).

    swap-phantom out=DIR                                   # 2 identities, 1,024 faces each, 128 px
    swap-phantom out=DIR identities=4 faces=1000 size=512 face_type=head
    swap-phantom out=DIR videos=2 frames=96 occluders=0.5 frame_size=512

Identity ``i`` uses seed ``seed * 1000 + i`` (see ``docs/phantom.md``). Bad input gives a
one-line error and exit code 2 before anything is written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Sequence

from progressive_swap.cli.common import UserError, parse_overrides, run_cli, usage
from progressive_swap.phantom.dataset import DEFAULT_FACES, generate_phantom_dataset

PROG = "swap-phantom"


@dataclass
class PhantomOptions:
    """Options of ``swap-phantom`` (``key=value`` on the command line)."""

    out: str = ""
    """Output directory (required)."""
    identities: int = field(default=2, metadata={"min": 2})
    """Identities (one face set each)."""
    faces: int = field(default=DEFAULT_FACES, metadata={"min": 1})
    """Faces per identity."""
    size: int = field(default=128, metadata={"min": 16})
    """Crop side of the face sets: a multiple of 16, at most 2048."""
    face_type: Literal["full", "whole", "head"] = "whole"
    """``full``, ``whole`` or ``head``."""
    seed: int = field(default=0, metadata={"min": 0})
    """Seed of the identities, poses and lighting."""
    videos: int = field(default=1, metadata={"min": 0})
    """Videos per identity (0 for none)."""
    frames: int = field(default=48, metadata={"min": 1})
    """Frames per video."""
    fps: float = field(default=24.0, metadata={"gt": 0.0})
    """Frame rate of the videos."""
    occluders: float = field(default=0.3, metadata={"min": 0.0})
    """Probability of an occluder per face and per video."""
    frame_size: int = field(default=0, metadata={"min": 0})
    """Side of the rendered frames and videos; 0 means ``2 * size``."""
    image_format: Literal["png", "jpg"] = "png"
    """Crop files: png (lossless) or jpg."""
    progress: bool = True
    """Show progress on stderr: a bar on a terminal, plain lines in a log."""
    progress_every: float = field(default=30.0, metadata={"min": 0.0})
    """Seconds between progress lines when stderr is not a terminal (0: every face)."""
    workers: int = field(default=-1, metadata={"min": -1})
    """Processes that render faces: -1 one per core (none for under 256 faces), 0 none; same output for any."""


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
            progress_every=cfg.progress_every, workers=None if cfg.workers < 0 else cfg.workers,
        )
        print(f"{PROG}: wrote {len(result['faces'])} face sets and {len(result['videos'])} videos to {cfg.out}")
        return 0

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
