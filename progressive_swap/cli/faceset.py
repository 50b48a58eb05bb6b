"""``swap-faceset``: inspect and manage face sets.

Usage:
    swap-faceset info DIR [--json] [--deep]
    swap-faceset sort DIR by=blur|yaw|pitch|size|identity [ref=FACE_OR_DIR] [out=DIR2] [order=asc|desc] [view=VIEWDIR]
    swap-faceset embed DIR [jitter=0]
    swap-faceset filter DIR ref=FACE_OR_DIR [threshold=0.6] [out=DIR.rejected]
    swap-faceset review DIR [port=8765] [host=127.0.0.1] [trash=DIR.trash]
    swap-faceset remove DIR ids=[a,b,...] | ids_file=FILE | view=VIEWDIR
    swap-faceset merge DIR1 DIR2 ... out=DIR
    swap-faceset repair DIR [adopt=true] [--json]
    swap-faceset import SRC out=DIR [format=auto|dfl|faceswap] [face_type=whole] [size=] [frames=DIR] [upscale=false]

Subcommands are plain functions taking their own argv; add one by writing ``cmd_<name>`` and
listing it in :data:`COMMANDS`. Exit codes: 0 valid, 2 bad input or an invalid set (one line
on stderr), 3 other I/O errors, 4 (import) some files refused (each named in one line).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from progressive_swap import faceset
from progressive_swap.cli.common import EXIT_INCOMPLETE, UserError, is_override, run_cli
from progressive_swap.cli.schema import closest, help_text
from progressive_swap.core.progress import Progress
from progressive_swap.extract.pipeline import extraction_problems
from progressive_swap.faceset import curate, identity, review
from progressive_swap.faceset import repair as repair_mod
from progressive_swap.faceset.migrate.importer import plan_import, write_import

PROG = "swap-faceset"


class _ArgParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit 2 via run_cli) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments: "):
            flags = [s for a in self._actions for s in a.option_strings]
            message += closest(message.split(": ", 1)[1].split()[0], flags)
        raise UserError(f"{self.prog.split()[-1]}: {message}")


def _summary(fs: faceset.FaceSet, problems: list[str]) -> dict[str, Any]:
    return {
        "path": str(fs.root),
        "valid": not problems,
        "problems": problems,
        "format_version": fs.format_version,
        "created_by": fs.header.get("created_by"),
        "count": len(fs),
        "face_type": fs.face_type,
        "size": fs.size,
        "image_format": fs.image_format,
        "identities": fs.identity_counts(),
        "masks": fs.mask_counts(),
        "shards": fs.shard_count,
    }


def _print_human(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=info["path"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    fmt = info["image_format"]
    rows = [
        ("faces", str(info["count"])),
        ("size", f"{info['size']} px"),
        ("face type", info["face_type"]),
        ("image format", fmt),
        ("identities", ", ".join(f"{k or '(none)'}: {v}" for k, v in info["identities"].items()) or "-"),
        ("masks", ", ".join(f"{k}: {v}" for k, v in info["masks"].items()) or "-"),
        ("format version", str(info["format_version"])),
        ("created by", str(info["created_by"])),
        ("index shards", str(info["shards"])),
        ("files not indexed", str(info["files_not_indexed"])),
        ("indexed, file missing", str(info["indexed_files_missing"])),
        ("with own record", f"{info['images_with_records']} of {info['count']} images"),
        ("status", "[green]valid[/green]" if info["valid"] else f"[red]{len(info['problems'])} problem(s)[/red]"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console = Console()
    console.print(table)
    for p in info["problems"]:
        console.print(f"[red]- {p}[/red]", markup=True, highlight=False)


def cmd_info(argv: Sequence[str]) -> int:
    """``info DIR [--json] [--deep]``: summary and validation of a face set."""
    ap = _ArgParser(prog=f"{PROG} info", description="Summarise and validate a face set.")
    ap.add_argument("dir", help="face set directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--deep", action="store_true",
                    help="also decode every image and mask and compare their records with the index")
    args = ap.parse_args(list(argv))
    try:
        fs = faceset.open(args.dir)
    except faceset.FaceSetError as e:
        if args.json:
            print(json.dumps({"path": args.dir, "valid": False, "problems": [str(e)]}))
        raise
    report = fs.check(deep=args.deep)
    problems = list(dict.fromkeys([*fs.problems, *report.problems]))[:20]
    problems += extraction_problems(fs.root)  # an interrupted extraction
    info = _summary(fs, problems)
    info.update(files_not_indexed=len(report.unindexed), indexed_files_missing=len(report.missing),
                nonfinite_faces=len(report.nonfinite), damaged_files=len(report.bad_files),
                images_with_records=report.with_record)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        _print_human(info)
    if problems:
        raise UserError(f"{args.dir}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return 0


# ---------------------------------------------------------------------- curation

SORT_USAGE = (f"usage: {PROG} sort DIR by=blur|yaw|pitch|size|identity [ref=FACE_OR_DIR] [out=DIR2] "
              "[order=asc|desc] [view=VIEWDIR]")
EMBED_USAGE = f"usage: {PROG} embed DIR [jitter=0] [progress_every=30]"
FILTER_USAGE = f"usage: {PROG} filter DIR ref=FACE_OR_DIR [threshold=0.6] [out=DIR.rejected]"
REVIEW_USAGE = f"usage: {PROG} review DIR [port=8765] [host=127.0.0.1] [trash=DIR.trash]"
REMOVE_USAGE = f"usage: {PROG} remove DIR ids=[a,b,...] | ids_file=FILE | view=VIEWDIR"
MERGE_USAGE = f"usage: {PROG} merge DIR1 DIR2 ... out=DIR"
IMPORT_USAGE = (f"usage: {PROG} import SRC out=DIR [format=auto|dfl|faceswap] [face_type=whole] [size=] "
                "[frames=DIR|VIDEO] [frame_base=1] [upscale=false] [identity=NAME]")


@dataclass
class SortOptions:
    """Options of ``swap-faceset sort``."""

    by: str = ""
    """Score to sort by (required): blur, yaw, pitch, size or identity."""
    ref: str = ""
    """by=identity: the person to sort by (a face image, a folder of them or a face set)."""
    out: str = ""
    """Write the sorted set here; default: sort in place."""
    order: str = ""
    """asc or desc; default: desc for blur and size (sharpest, largest first), else asc."""
    view: str = ""
    """Also write a review folder of numbered images here (delete faces there, then remove view=)."""


@dataclass
class EmbedOptions:
    """Options of ``swap-faceset embed``."""

    jitter: int = 0
    """Extra resampled views per face (dlib's num_jitters): slower, slightly steadier."""
    progress_every: float = 30.0
    """Seconds between progress lines when stderr is not a terminal (0: every face)."""


@dataclass
class FilterOptions:
    """Options of ``swap-faceset filter``."""

    ref: str = ""
    """The person to keep (required): a face image, a folder of them or a face set."""
    threshold: float = identity.DEFAULT_THRESHOLD
    """Embedding distance above which a face is someone else (between 0 and 2)."""
    out: str = ""
    """Where other people's faces go; default: DIR.rejected."""


@dataclass
class ReviewOptions:
    """Options of ``swap-faceset review``."""

    port: int = review.DEFAULT_PORT
    """Port of the reviewer (0: any free one)."""
    host: str = review.DEFAULT_HOST
    """Address to listen on (127.0.0.1: this machine only)."""
    trash: str = ""
    """Where removed faces go (undoable); default: DIR.trash."""


@dataclass
class RemoveOptions:
    """Options of ``swap-faceset remove`` (exactly one of them)."""

    ids: str = ""
    """Face ids to remove: [a,b,...]."""
    ids_file: str = ""
    """A file of face ids, one a line (# comments)."""
    view: str = ""
    """A review folder written by sort view=: the faces deleted there are removed."""


@dataclass
class MergeOptions:
    """Options of ``swap-faceset merge``."""

    out: str = ""
    """The new face set to write (required)."""


@dataclass
class ImportOptions:
    """Options of ``swap-faceset import`` (docs/migration.md)."""

    out: str = ""
    """The face set to write or resume (required)."""
    format: str = "auto"
    """auto (from each file), dfl (DeepFaceLab aligned JPG/PNG) or faceswap (face PNGs, alignments.fsa)."""
    face_type: str = "whole"
    """Our crop type: full, whole or head."""
    size: int = 0
    """Our crop side, a multiple of 16 (0: the largest every face's pixels hold)."""
    frames: str = ""
    """The source frames (a folder, a video or a numbered sequence): faces are cut from them at our geometry."""
    frame_base: int = 1
    """The number the tools gave a video's first frame in the names they recorded (both use 1)."""
    upscale: bool = False
    """Allow a size above what their pixels hold."""
    identity: str = ""
    """Identity label of the faces (default: a faceset.pak's person_name, else out's folder name)."""
    progress_every: float = 30.0
    """Seconds between progress lines when stderr is not a terminal (0: every batch)."""


def _help(usage_line: str, options: type) -> str:
    """``--help`` of a subcommand: its usage line and every key with its default and meaning."""
    return f"{usage_line}\n\noptions:\n{help_text(options)}"


def _split_args(
    argv: Sequence[str], options: type, usage_line: str, cmd: str
) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and ``key=value`` options (raw strings: face ids such as ``0001``
    and paths are taken literally; a path may hold ``=``, see :func:`is_override`). Unknown
    (with the closest valid keys) or repeated keys are one-line errors."""
    allowed = [f.name for f in dataclasses.fields(options)]
    pos: list[str] = []
    opts: dict[str, str] = {}
    for a in argv:
        if a in ("-h", "--help"):
            print(_help(usage_line, options))
            raise SystemExit(0)
        if not is_override(a):
            pos.append(a)
            continue
        key, _, value = a.partition("=")
        if key not in allowed:
            raise UserError(f"{cmd}: unknown key {key!r}{closest(key, allowed)}; known: {', '.join(allowed)}")
        if key in opts:
            raise UserError(f"{cmd}: {key}= given twice")
        if not value:
            raise UserError(f"{cmd}: {key}= needs a value")
        opts[key] = value
    return pos, opts


def _parse_ids(text: str) -> list[str]:
    """``[a,b,c]``, ``a,b,c`` or ``a`` -> ids (quotes and spaces around each id dropped)."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    return [i.strip().strip("'\"").strip() for i in t.split(",") if i.strip().strip("'\"").strip()]


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)  # whole lines: a log or a test reads them as printed


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.1f}" if abs(v) < 1e4 else f"{v:.3g}"


def cmd_sort(argv: Sequence[str]) -> int:
    """``sort DIR by=KEY [out=DIR2] [order=asc|desc] [view=VIEWDIR]``: reorder a set by a score."""
    from rich.table import Table

    pos, o = _split_args(argv, SortOptions, SORT_USAGE, "sort")
    if len(pos) != 1:
        raise UserError(f"sort: expected one face set directory, got {len(pos)}; {SORT_USAGE}")
    keys = (*curate.SORT_KEYS, "identity")
    if "by" not in o:
        raise UserError(f"sort: by= is required ({'|'.join(keys)})")
    if o["by"] not in keys:
        raise UserError(f"sort: unknown by={o['by']!r}; choose one of {', '.join(keys)}")
    if (o["by"] == "identity") != ("ref" in o):
        raise UserError("sort: by=identity needs ref=FACE_OR_DIR (a face image, a folder of them or a face set)"
                        if o["by"] == "identity" else "sort: ref= is only for by=identity")
    order = o.get("order")
    if order not in (None, "asc", "desc"):
        raise UserError(f"sort: order must be asc or desc, got {order!r}")
    if "view" in o:
        curate._check_new_dir(Path(o["view"]))  # fail before the (possibly slow) sort
    if o["by"] == "identity":
        _require_identity()
        res = identity.sort_by_identity(pos[0], o["ref"], out=o.get("out"), descending=order == "desc")
    else:
        res = curate.sort_faceset(pos[0], o["by"], out=o.get("out"),
                                  descending=None if order is None else order == "desc")
    console = _console()
    where = "in place" if res.in_place else f"into {res.path}"
    console.print(
        f"[bold]sorted[/bold] {len(res.ids)} faces of {pos[0]} by {res.by} "
        f"({'descending' if res.descending else 'ascending'}) {where}"
    )
    n = len(res.ids)
    if n:
        table = Table(show_header=True, header_style="bold")
        table.add_column("rank", justify="right")
        table.add_column("id")
        table.add_column(res.by, justify="right")
        shown = list(range(min(5, n))) + [k for k in range(max(5, n - 5), n)]
        for j, k in enumerate(shown):
            if j and k != shown[j - 1] + 1:
                table.add_row("…", "…", "…")
            table.add_row(str(k), res.ids[k], _fmt(float(res.scores[k])))
        console.print(table)
        fin = res.scores[np.isfinite(res.scores)]
        if len(fin):
            console.print(
                f"{res.by}: min {_fmt(fin.min())}, median {_fmt(float(np.median(fin)))}, max {_fmt(fin.max())}"
                + (f"; {n - len(fin)} face(s) without a score (last)" if len(fin) < n else "")
            )
    if "view" in o:
        curate.write_view(faceset.open(res.path), o["view"])
        console.print(
            f"review folder: {o['view']} (delete bad faces there, then {PROG} remove {res.path} view={o['view']})"
        )
    return 0


def _require_identity() -> None:
    try:
        identity.model_files()
        import dlib  # noqa: F401
    except ImportError as e:
        raise UserError(str(e) if isinstance(e, identity.IdentityUnavailableError)
                        else f"identity embeddings need dlib: {identity.DLIB_INSTALL}") from None


def cmd_embed(argv: Sequence[str]) -> int:
    """``embed DIR [jitter=0]``: compute and cache an identity embedding per face (resumable)."""
    pos, o = _split_args(argv, EmbedOptions, EMBED_USAGE, "embed")
    if len(pos) != 1:
        raise UserError(f"embed: expected one face set directory, got {len(pos)}; {EMBED_USAGE}")
    try:
        jitter = int(o.get("jitter", "0"))
    except ValueError:
        raise UserError(f"embed: jitter must be a whole number, got {o['jitter']!r}") from None
    try:
        every = float(o.get("progress_every", "30"))
    except ValueError:
        raise UserError(f"embed: progress_every must be a number, got {o['progress_every']!r}") from None
    if every < 0:
        raise UserError(f"embed: progress_every must be >= 0, got {every:g}")
    faceset.open(pos[0], verify=True)  # a damaged set fails here, before dlib loads
    _require_identity()
    with Progress(every) as bar:
        task = bar.task("embed", None, "faces")
        res = identity.embed_faceset(pos[0], jitter=jitter, progress=lambda k, n: task.update(k, total=n))
    _console().print(
        f"[bold]embedded[/bold] {res.computed} face(s) of {pos[0]} in {res.seconds:.1f} s; {res.cached} already "
        f"cached" + (f"; {len(res.failed)} failed: {', '.join(res.failed[:5])}" if res.failed else "")
    )
    return 0


def cmd_filter(argv: Sequence[str]) -> int:
    """``filter DIR ref=FACE_OR_DIR [threshold=0.6] [out=DIR.rejected]``: move other people's faces out."""
    pos, o = _split_args(argv, FilterOptions, FILTER_USAGE, "filter")
    if len(pos) != 1:
        raise UserError(f"filter: expected one face set directory, got {len(pos)}; {FILTER_USAGE}")
    if "ref" not in o:
        raise UserError(f"filter: ref= is required (a face image, a folder of them or a face set); {FILTER_USAGE}")
    try:
        threshold = float(o.get("threshold", identity.DEFAULT_THRESHOLD))
    except ValueError:
        raise UserError(f"filter: threshold must be a number, got {o['threshold']!r}") from None
    if not 0 < threshold < 2:
        raise UserError(f"filter: threshold must be in (0, 2), got {threshold}")
    faceset.open(pos[0], verify=True)
    _require_identity()
    res = identity.filter_faceset(pos[0], o["ref"], threshold=threshold, out=o.get("out"))
    console = _console()
    console.print(f"[bold]filtered[/bold] {pos[0]} against {o['ref']} at distance {threshold}: kept {res.kept}, "
                  f"moved {len(res.moved)} to {res.out}")
    if res.moved:
        shown = ", ".join(f"{i} ({res.distances[i]:.2f})" for i in res.moved[:8])
        console.print(f"moved: {shown}" + (f", … (+{len(res.moved) - 8})" if len(res.moved) > 8 else ""))
        console.print(f"(nothing is deleted: move faces back with {PROG} review {res.out}, or merge the sets)")
    if res.unembedded:
        console.print(f"kept {len(res.unembedded)} face(s) that could not be embedded: {', '.join(res.unembedded[:5])}")
    return 0


def cmd_review(argv: Sequence[str]) -> int:
    """``review DIR [port=8765] [host=127.0.0.1] [trash=DIR.trash]``: the face-set reviewer in a browser."""
    pos, o = _split_args(argv, ReviewOptions, REVIEW_USAGE, "review")
    if len(pos) != 1:
        raise UserError(f"review: expected one face set directory, got {len(pos)}; {REVIEW_USAGE}")
    try:
        port = int(o.get("port", str(review.DEFAULT_PORT)))
    except ValueError:
        raise UserError(f"review: port must be a whole number, got {o['port']!r}") from None
    if not 0 <= port <= 65535:
        raise UserError(f"review: port must be in 0..65535, got {port}")
    return review.serve(pos[0], host=o.get("host", review.DEFAULT_HOST), port=port, trash=o.get("trash"))


def cmd_remove(argv: Sequence[str]) -> int:
    """``remove DIR ids=[a,b,...] | ids_file=FILE | view=VIEWDIR``: remove faces by id."""
    pos, o = _split_args(argv, RemoveOptions, REMOVE_USAGE, "remove")
    if len(pos) != 1:
        raise UserError(f"remove: expected one face set directory, got {len(pos)}; {REMOVE_USAGE}")
    given = [k for k in ("ids", "ids_file", "view") if k in o]
    if len(given) != 1:
        raise UserError(f"remove: give exactly one of ids=, ids_file=, view=; {REMOVE_USAGE}")
    if "ids" in o:
        ids = _parse_ids(o["ids"])
    elif "ids_file" in o:
        text = Path(o["ids_file"]).read_text()
        ids = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        ids = curate.removed_in_view(o["view"], pos[0])
        if not ids:
            _console().print(f"nothing deleted in {o['view']}; {pos[0]} unchanged")
            return 0
    if not ids:
        raise UserError("remove: no face ids given")
    n = curate.remove_faces(pos[0], ids)
    left = len(faceset.open(pos[0]))
    shown = ", ".join(ids[:8]) + (f", … (+{len(ids) - 8})" if len(ids) > 8 else "")
    _console().print(f"[bold]removed[/bold] {n} face(s) from {pos[0]} ({left} left): {shown}")
    return 0


def cmd_merge(argv: Sequence[str]) -> int:
    """``merge DIR1 DIR2 ... out=DIR``: merge face sets into a new one."""
    from rich.table import Table

    pos, o = _split_args(argv, MergeOptions, MERGE_USAGE, "merge")
    if "out" not in o:
        raise UserError(f"merge: out= is required; {MERGE_USAGE}")
    if len(pos) < 2:
        raise UserError(f"merge: needs at least two face sets, got {len(pos)}; {MERGE_USAGE}")
    merged = curate.merge_facesets(pos, o["out"])
    table = Table(title=f"merged into {o['out']}", title_justify="left", header_style="bold")
    table.add_column("face set")
    table.add_column("faces", justify="right")
    for p in pos:
        table.add_row(p, str(len(faceset.open(p))))
    table.add_row(f"[bold]{o['out']}[/bold]", f"[bold]{len(merged)}[/bold]")
    console = _console()
    console.print(table)
    console.print(
        f"{merged.face_type}, {merged.size} px, {merged.image_format}; identities: "
        + (", ".join(f"{k or '(none)'}: {v}" for k, v in merged.identity_counts().items()) or "-")
    )
    return 0


def cmd_repair(argv: Sequence[str]) -> int:
    """``repair DIR [adopt=true] [--json]``: rebuild a damaged or missing index from the images' own records."""
    ap = _ArgParser(prog=f"{PROG} repair", description="Rebuild a face set's index from its files; "
                    "what cannot be used goes to DIR.damaged (nothing is deleted).")
    ap.add_argument("dir", help="face set directory")
    ap.add_argument("keys", nargs="*", help="adopt=true: make a face set of a folder without faceset.json "
                    "even though some of its images carry no face record (they go to DIR.damaged)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(list(argv))
    adopt = False
    for kv in args.keys:
        key, sep, value = kv.partition("=")
        if key != "adopt" or not sep or value.lower() not in ("true", "false"):
            raise UserError(f"repair: unknown argument {kv!r}; usage: {PROG} repair DIR [adopt=true] [--json]")
        adopt = value.lower() == "true"
    res = repair_mod.repair(args.dir, adopt=adopt)
    after = faceset.open(args.dir).check()
    if args.json:
        print(json.dumps({**res.summary(), "valid": after.ok}, indent=1))
    elif not res.changed:
        _console().print(f"{args.dir}: index and files agree ({after.faces} faces); nothing to repair")
    else:
        def some(items: list[str]) -> str:
            return f"{len(items)}" + (f" ({', '.join(items[:4])}{', …' if len(items) > 4 else ''})" if items else "")

        console = _console()
        console.print(f"[bold]repaired[/bold] {args.dir}: {res.faces} faces ({res.from_index} from the index, "
                      f"{res.from_records} recovered from their images' records)"
                      + ("; header rebuilt" if res.header_rebuilt else ""))
        console.print(f"index entries without files: {some(res.entries_without_files)}; files without records: "
                      f"{some(res.files_without_records)}; non-finite entries: {some(res.nonfinite)}; "
                      f"unreadable shards: {some(res.unreadable_shards)}; renamed: {some(res.renamed)}; "
                      f"records rewritten: {some(res.rerecorded)}")
        if res.moved:
            console.print(f"moved {len(res.moved)} file(s) it could not use to {res.damaged_dir} (nothing deleted)")
    if not after.ok:
        raise UserError(f"repair of {args.dir} left a problem: {after.problems[0]}")
    return 0


def cmd_import(argv: Sequence[str]) -> int:
    """``import SRC out=DIR ...``: a DeepFaceLab or FaceSwap face set becomes one of ours.

    Exit 4 when some files were refused (unsafe or unreadable metadata): each is named in one
    line on stderr, nothing is written for it, and the rest is imported.
    """
    pos, o = _split_args(argv, ImportOptions, IMPORT_USAGE, "import")
    if len(pos) != 1 or "out" not in o:
        raise UserError(f"import: expected one source folder and out=; {IMPORT_USAGE}")
    try:
        size = int(o.get("size", "0"))
        frame_base = int(o.get("frame_base", "1"))
        every = float(o.get("progress_every", "30"))
    except ValueError:
        raise UserError("import: size=, frame_base= and progress_every= must be numbers") from None
    upscale = o.get("upscale", "false").lower()
    if upscale not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"import: upscale= must be true or false, got {o['upscale']!r}")

    def refuse(name: str, why: str) -> None:
        print(f"{PROG} import: refused {Path(pos[0]) / name}: {why}", file=sys.stderr)

    plan = plan_import(
        pos[0], o["out"], fmt=o.get("format", "auto"), face_type=o.get("face_type", "whole"),
        size=size or None, frames=o.get("frames") or None, frame_base=frame_base,
        upscale=upscale in ("true", "1", "yes"), identity=o.get("identity") or None, refuse=refuse,
    )
    with Progress(every) as bar:
        task = bar.task("import", len(plan.faces), "faces")
        res = write_import(plan, progress=lambda k, n: task.update(k, total=n))
    _console().print(
        f"[bold]imported[/bold] {len(res.written)} face(s) into {res.out} ({res.face_type}, {res.size} px; "
        f"{res.from_frames} cut from their frames, {len(res.skipped)} already there); "
        f"{len(res.refused)} file(s) refused"
    )
    return EXIT_INCOMPLETE if res.refused else 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "info": cmd_info,
    "sort": cmd_sort,
    "remove": cmd_remove,
    "merge": cmd_merge,
    "embed": cmd_embed,
    "filter": cmd_filter,
    "review": cmd_review,
    "repair": cmd_repair,
    "import": cmd_import,
}

USAGE = f"usage: {PROG} {{{','.join(COMMANDS)}}} ...   ({PROG} COMMAND --help lists its keys)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("Subcommands are")[0].strip() + "\n\n" + USAGE)
        return 0 if argv else 2
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"{PROG}: error: unknown command {argv[0]!r}{closest(argv[0], COMMANDS)}; {USAGE}", file=sys.stderr)
        return 2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no warnings under a one-line error

    def run() -> int:
        try:
            return cmd(argv[1:])
        except SystemExit as e:  # argparse --help
            return int(e.code or 0)

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
