"""``swap-export-model``: write one trained swap as a standalone model file.

Usage:
    swap-export-model checkpoint=RUN/model.safetensors identity=NAME [from_identity=NAME] \\
        format=dfm|onnx|torchscript out=FILE [morph=false] [face_type=] [allow_same=false]

Formats: ``dfm`` for live-swapping tools that read ``.dfm`` files (DeepFaceLive, FaceFusion's
deep swapper, VisoMaster), ``onnx`` with this project's conventions (any ONNX runtime) and
``torchscript`` for Nuke's CatFileCreator / Inference nodes. The model runs at the
checkpoint's stage resolution and fade alpha. Contracts and consumer settings: ``docs/export.md``.
Exit codes: 0 done, 2 bad input (one line on stderr; nothing is written), 3 I/O error.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from progressive_swap.cli.common import UserError, parse_overrides, run_cli, usage
from progressive_swap.core.io import check_writable_dir
from progressive_swap.export.model_export import FORMATS, export_model
from progressive_swap.export.swapper import load_model

PROG = "swap-export-model"


@dataclass
class ExportModelOptions:
    """Options of ``swap-export-model`` (``key=value``)."""

    checkpoint: str = ""  # last.ckpt or model.safetensors of a run
    identity: str = ""  # decoder to swap to: a name from the checkpoint, or its index
    from_identity: str = ""  # whose faces come in (name or index); default: the other of two; none: someone unknown
    format: str = ""  # dfm | onnx | torchscript
    out: str = ""  # the file to write (its directory is created)
    morph: bool = False  # dfm: add the morph_value input (0: the input's own reconstruction, 1: the swap)
    face_type: str = ""  # refuse a checkpoint of another face type (what the consuming tool aligns)
    allow_same: bool = False  # allow from_identity == identity (a reconstruction, not a swap)


def _source(o, identity: int, info) -> int | None:
    """Whose faces come in; with more than two identities they must be named (a file is exported
    for one pairing)."""
    if not str(o.from_identity).strip() and len(info.identities) > 2:
        known = ", ".join(info.identities)
        raise UserError(f"the checkpoint has {len(info.identities)} identities ({known}): name whose faces come in "
                        "with from_identity=NAME (or none)")
    return info.from_identity(o.from_identity, identity)


def _export(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("options: " + usage(ExportModelOptions()))
        return 0
    o = parse_overrides(argv, ExportModelOptions(), PROG)
    for key in ("checkpoint", "identity", "format", "out"):
        if not str(o[key]).strip():
            raise UserError(f"{key}= is required (e.g. {PROG} checkpoint=RUN/model.safetensors identity=NAME "
                            "format=dfm out=NAME.dfm)")
    if o.format not in FORMATS:
        raise UserError(f"unknown format {o.format!r}; choose one of {', '.join(FORMATS)}")
    if o.format in ("dfm", "onnx"):
        missing = [m for m in ("onnx",) if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"format={o.format} needs the {missing[0]!r} package: "
                            "pip install 'progressive-swap[export]'")
    if o.morph and o.format != "dfm":
        raise UserError("morph=true is a dfm option")
    out = Path(o.out)
    if out.is_dir():
        raise UserError(f"out={o.out!r} is a directory; name the file to write")
    net, info = load_model(o.checkpoint, device="cpu")
    if o.face_type and info.face_type != o.face_type:
        raise UserError(f"face type mismatch: the checkpoint was trained on {info.face_type!r} faces, "
                        f"not {o.face_type!r}")
    identity = info.identity_index(o.identity)
    source = _source(o, identity, info)
    if source == identity and not o.allow_same:
        raise UserError(f"from_identity is the identity swapped to ({info.identities[identity]!r}): that is a "
                        "reconstruction, not a swap; pass allow_same=true if you mean it")
    if o.morph and source is None:
        raise UserError("morph=true blends with the input's own reconstruction: name from_identity")
    check_writable_dir(out.parent)  # last: bad input leaves nothing behind, not even a directory
    meta = export_model(net, info, identity, source, o.format, out, morph=o.morph)
    print(f"{PROG}: wrote {out} ({o.format}, {meta['resolution']} px, {meta['from_identity']} -> {meta['identity']})",
          file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _export(list(sys.argv[1:] if argv is None else argv)), PROG)


if __name__ == "__main__":
    sys.exit(main())
