"""The package's rooms and the direction of its imports (docs/architecture.md, "Layout").

Imports point one way along the pipeline: a room may import from rooms before it, never after.
Read from the source with :mod:`ast`, so nothing here imports the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "progressive_swap"

# The pipeline's order. A module may import its own room and the rooms to its left.
ORDER = ["core", "footage", "faceset", "masks", "extract", "phantom", "model", "train", "export", "eval", "cli"]

# The package's own optional-dependency guard: a function-level import of the package's own
# modules is allowed only with this comment on its line, saying which optional package it needs.
OPTIONAL_MARK = "# optional dependency:"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str, imported: str | None) -> str:
    """The module an import statement loads: ``from a.b import c`` loads ``a.b.c`` if that is
    a module, else ``a.b``."""
    if imported and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name


def _is_package(name: str) -> bool:
    return name in MODULES and MODULES[name].name == "__init__.py"


class _Imports(ast.NodeVisitor):
    """Own-package imports of one module: (target, line, at module level?)."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.found: list[tuple[str, int, bool]] = []
        self.depth = 0  # inside a def or class body

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _nested

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] == "progressive_swap":
                self.found.append((a.name, node.lineno, self.depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            raise AssertionError(f"line {node.lineno}: relative import; write the absolute path")
        if node.module and node.module.split(".")[0] == "progressive_swap":
            for a in node.names:
                target = _resolve(node.module, a.name)
                self.found.append((target, node.lineno, self.depth == 0))
                if target != node.module and _is_package(node.module):
                    # ``from pkg import mod`` goes through pkg's __init__ (the facade) to reach
                    # mod: when that facade imports this module, it is a cycle through the facade.
                    self.found.append((node.module, node.lineno, self.depth == 0))


def _imports(path: Path) -> tuple[list[tuple[str, int, bool]], list[str]]:
    v = _Imports(path.read_text())
    v.visit(ast.parse(path.read_text()))
    return v.found, v.lines


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent)) if path.is_relative_to(PACKAGE.parent) else str(path)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_room_of_the_pipeline():
    stray = [m for m in MODULES if m != "progressive_swap" and _room(m) not in ORDER]
    assert not stray, f"modules outside the rooms {ORDER}: {stray}"


def test_imports_point_one_way_along_the_pipeline():
    bad = []
    for module, path in MODULES.items():
        room = _room(module)
        for target, line, _ in _imports(path)[0]:
            other = _room(target)
            if room and other and ORDER.index(other) > ORDER.index(room):
                bad.append(f"{_rel(path)}:{line} {room} imports {target}")
    assert not bad, "imports against the pipeline's order:\n" + "\n".join(bad)


def test_no_function_level_imports_of_the_package_except_for_optional_dependencies():
    bad = []
    for path in MODULES.values():
        found, lines = _imports(path)
        for target, line, top in found:
            if not top and OPTIONAL_MARK not in lines[line - 1]:
                bad.append(f"{_rel(path)}:{line} {target}")
    assert not bad, "function-level imports of the package (move them to the top):\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
    graph = {m: sorted({t for t, _, top in _imports(p)[0] if top and t in MODULES and t != m})
             for m, p in MODULES.items()}
    # A package's __init__ is entered before any of its submodules; an edge to one's own
    # package therefore cannot form a cycle in practice, but a facade that imports a submodule
    # which imports the facade back would: keep those edges in.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles_between_modules():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_level_getattr():
    bad = [_rel(p) for p in MODULES.values()
           if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in ast.parse(p.read_text()).body)]
    assert not bad, f"module-level __getattr__ (import the name where it lives): {bad}"


@pytest.mark.parametrize("bad_source, rule", [
    ("from progressive_swap.cli import common\n", "imports_point_one_way"),
    ("def f():\n    from progressive_swap.core import io\n", "function_level"),
])
def test_the_layout_rules_catch_a_violation(tmp_path, monkeypatch, bad_source, rule):
    # The checks above must be able to fail: plant a violation in a copy of the module table.
    planted = tmp_path / "progressive_swap" / "core" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(bad_source)
    monkeypatch.setitem(MODULES, "progressive_swap.core.planted", planted)
    check = {"imports_point_one_way": test_imports_point_one_way_along_the_pipeline,
             "function_level": test_no_function_level_imports_of_the_package_except_for_optional_dependencies}[rule]
    with pytest.raises(AssertionError):
        check()


def test_the_cycle_rule_catches_a_cycle_through_a_facade(tmp_path, monkeypatch):
    """``from pkg import mod`` inside a module that pkg's __init__ imports is a cycle through the
    facade (``pkg -> pkg.user -> pkg``), though the names alone point at ``pkg.mod``; importing the
    module directly (``from pkg.mod import x``, ``import pkg.mod as m``) is not."""
    root = tmp_path / "progressive_swap" / "core" / "planted"
    root.mkdir(parents=True)
    files = {
        "__init__": "from progressive_swap.core.planted.user import thing\n",
        "user": "from progressive_swap.core.planted import helper\n\nthing = helper\n",
        "helper": "",
    }
    for name, source in files.items():
        (root / f"{name}.py").write_text(source)
        monkeypatch.setitem(MODULES, "progressive_swap.core.planted" + ("" if name == "__init__" else f".{name}"),
                            root / f"{name}.py")

    def planted_cycles() -> list[str]:
        return [" -> ".join(c) for c in _cycles() if any("planted" in m for m in c)]

    assert planted_cycles() == ["progressive_swap.core.planted -> progressive_swap.core.planted.user -> "
                                "progressive_swap.core.planted"]
    for direct in ("from progressive_swap.core.planted.helper import x\n",
                   "import progressive_swap.core.planted.helper as helper\n"):
        (root / "user.py").write_text(direct)
        assert planted_cycles() == [], direct
