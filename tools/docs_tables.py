"""Write the options tables of the docs from the typed schema, so they cannot drift from ``--help``.

A table lives between two marker comments in a Markdown file::

    <!-- options: swap-extract -->
    | option | default | meaning |
    ...
    <!-- /options -->

Everything between the markers is replaced by the rows of :func:`progressive_swap.cli.schema.describe`
for that command's options dataclass: the same key, default and one-line help that ``--help``
prints. Write longer explanations beside the table, not in it.

    python tools/docs_tables.py            # rewrite the tables in README.md and docs/*.md
    python tools/docs_tables.py --check    # exit 1 and name the files whose tables are stale

``tests/test_docs.py`` runs the check.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# command (as the marker names it) -> (module, options dataclass)
COMMANDS = {
    "swap-extract": ("progressive_swap.extract.options", "ExtractOptions"),
    "swap-export": ("progressive_swap.cli.export", "ExportOptions"),
    "swap-export-model": ("progressive_swap.cli.export_model", "ExportModelOptions"),
    "swap-phantom": ("progressive_swap.cli.phantom", "PhantomOptions"),
    "swap-faceset embed": ("progressive_swap.cli.faceset", "EmbedOptions"),
    "swap-faceset filter": ("progressive_swap.cli.faceset", "FilterOptions"),
    "swap-faceset sort": ("progressive_swap.cli.faceset", "SortOptions"),
    "swap-faceset review": ("progressive_swap.cli.faceset", "ReviewOptions"),
    "swap-faceset remove": ("progressive_swap.cli.faceset", "RemoveOptions"),
    "swap-faceset merge": ("progressive_swap.cli.faceset", "MergeOptions"),
    "swap-faceset import": ("progressive_swap.cli.faceset", "ImportOptions"),
    "swap-mask train": ("progressive_swap.cli.mask", "TrainOptions"),
    "swap-mask apply": ("progressive_swap.cli.mask", "ApplyOptions"),
    "swap-mask import": ("progressive_swap.cli.mask", "ImportOptions"),
    "swap-mask convert": ("progressive_swap.cli.mask", "ConvertOptions"),
}

BLOCK = re.compile(r"(<!-- options: (?P<cmd>[\w -]+?) -->\n)(?P<body>.*?)(<!-- /options -->)", re.S)


def options_class(command: str) -> type:
    """The options dataclass of ``command`` (a key of :data:`COMMANDS`)."""
    if command not in COMMANDS:
        raise KeyError(f"no options table for {command!r}; known: {', '.join(COMMANDS)}")
    module, name = COMMANDS[command]
    return getattr(importlib.import_module(module), name)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(text: str) -> str:
    """A default as it is typed on the command line: ``srgb``, ``true``, ``[]``; "" for none, "required"."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return f"`{text}`"
    if value == "???":
        return "required"
    if value == "" or value is None:
        return ""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def render(command: str) -> str:
    """The Markdown table of ``command``'s options, one row per key, as ``--help`` lists them."""
    from progressive_swap.cli.schema import describe

    rows = [f"`{command} --help`:", "", "| option | default | meaning |", "|---|---|---|"]
    for key, default, note in describe(options_class(command)):
        rows.append(f"| `{key}` | {_cell(_default(default))} | {_cell(note)} |")
    return "\n".join(rows) + "\n"


def rewrite(text: str) -> str:
    """``text`` with every marked table regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("cmd")) + m.group(4), text)


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def stale(root: Path = ROOT) -> list[Path]:
    """The docs whose marked tables differ from the schema."""
    return [p for p in doc_files(root) if BLOCK.search(t := p.read_text()) and rewrite(t) != t]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report stale tables (exit 1)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    bad = stale()
    if args.check:
        for p in bad:
            print(f"{p.relative_to(ROOT)}: options table out of date; run python tools/docs_tables.py")
        return 1 if bad else 0
    for p in bad:
        p.write_text(rewrite(p.read_text()))
        print(f"rewrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
