"""``swap-extract``: footage → aligned face set (resumable, tracked, smoothed).

    swap-extract input=shot.mp4 out=faces/B size=512 face_type=whole
    swap-extract input=frames/ out=faces/A identity=A track=largest
    swap-extract input=clip.mp4 out=faces/B landmarks=given landmarks_file=clip.truth.json
    swap-extract input=clip.mp4 out=faces/B --json      # summary as JSON on stdout

Rerunning the same command after an interruption resumes it. Exit codes: 0 done, 2 bad options
or nothing usable in the input (one line on stderr), 3 other I/O errors, 4 incomplete: frames
that could not be decoded (the faces of the others are written; listed in the summary; exit 0
with allow_missing=true), 130 interrupted (143 on SIGTERM). A second extraction into the same
output folder stops at once. Details: ``docs/extract.md``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Sequence

from omegaconf import OmegaConf

from progressive_swap.cli.common import EXIT_INCOMPLETE, parse_overrides, run_cli, split_deprecated, usage
from progressive_swap.extract.options import detector_lines
from progressive_swap.extract.pipeline import ExtractOptions, crop_space_for, extract, format_summary, precheck

PROG = "swap-extract"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\noptions: " + usage(ExtractOptions()))
        return 0 if argv else 2
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]

    def run() -> int:
        args = split_deprecated(argv, "landmarks", "given", "landmarks_file", PROG)
        args = split_deprecated(args, "boxes", "given", "boxes_file", PROG)
        cfg = parse_overrides(args, ExtractOptions(), PROG)
        opt = ExtractOptions(**OmegaConf.to_container(cfg))  # type: ignore[arg-type]
        src = precheck(opt)  # the input and its colour space, checked before anything is written
        colour = [src.colour.line()] if src.colour is not None else []  # which space, and why
        space, why = crop_space_for(opt, src)
        opt = replace(opt, crop_space=space)  # resolved once: extract() takes it as given
        if src.colour is not None or space != "srgb":  # what the crops will hold (8-bit footage: as always)
            crop = f"crop space {space} ({why})"
            colour = [f"{colour[0]}; {crop}"] + colour[1:] if colour else [crop]
        if src.aspect_line():  # an anamorphic plate: said on the first line
            colour = [f"{src.aspect_line()}; {colour[0]}" if colour else src.aspect_line()] + colour[1:]
        lines = detector_lines(opt)  # which detector runs (auto would fall back to dlib silently otherwise)
        if not as_json:  # first on stdout; stderr stays for the one-line errors
            print("\n".join(f"{PROG}: {line}" for line in colour + lines), flush=True)
        summary = extract(opt)
        summary["detector"] = lines
        if src.colour is not None:
            summary["colour"] = {"plate": src.colour.plate, "reason": src.colour.reason, "config": src.colour.config}
        if as_json:
            print(json.dumps(summary, indent=1))
        else:
            print(format_summary(summary))
        missing = int(summary.get("frames_missing") or 0)
        if missing and not opt.allow_missing:
            print(f"{PROG}: error: incomplete: {missing} frame(s) of {opt.input} could not be decoded (listed above); "
                  "the faces of the others are written; allow_missing=true accepts that", file=sys.stderr)
            return EXIT_INCOMPLETE
        return 0

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
