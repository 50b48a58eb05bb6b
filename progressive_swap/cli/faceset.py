"""``swap-faceset``: inspect and manage face sets.

Usage:
    swap-faceset info DIR [--json] [--deep]

Subcommands are plain functions taking their own argv; add one by writing ``cmd_<name>`` and
listing it in :data:`COMMANDS`. Exit codes: 0 valid, 2 bad input or an invalid set (one line
on stderr), 3 other I/O errors.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from progressive_swap.cli.common import UserError, run_cli
from progressive_swap.data import faceset

PROG = "swap-faceset"


class _ArgParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit 2 via run_cli) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
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
    ap.add_argument("--deep", action="store_true", help="also decode every image and mask")
    args = ap.parse_args(list(argv))
    try:
        fs = faceset.open(args.dir)
    except faceset.FaceSetError as e:
        if args.json:
            print(json.dumps({"path": args.dir, "valid": False, "problems": [str(e)]}))
        raise
    problems = fs.validate(deep=args.deep)
    info = _summary(fs, problems)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        _print_human(info)
    if problems:
        raise UserError(f"{args.dir}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "info": cmd_info,
}

USAGE = f"usage: {PROG} {{{','.join(COMMANDS)}}} ...   (try: {PROG} info --help)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"{PROG}: error: unknown command {argv[0]!r}; {USAGE}", file=sys.stderr)
        return 2

    def run() -> int:
        try:
            return cmd(argv[1:])
        except SystemExit as e:  # argparse --help
            return int(e.code or 0)

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
