"""The docs name only what exists: paths in the tree, modules and their names, and command keys.

Checked in ``README.md`` and ``docs/*.md``:

* **paths** under ``progressive_swap/``, ``tools/``, ``recipes/``, ``docs/`` and ``tests/`` (globs
  and ``{a,b}`` expanded), paths relative to the package (``footage/colour.py``), bare ``name.py``
  file names, and relative Markdown links;
* **dotted names**: ``progressive_swap.x.y`` anywhere, and inline code such as
  ``core.align.crop_matrix``: the module must exist and define the name;
* **keys**: every ``key=`` of a ``swap-…`` command line (code blocks and inline code) against that
  command's options dataclass (``tools/docs_tables.py`` maps them) and, for ``swap-train``, against
  the typed schema (``cli/schema.py``), the recipe groups and the keys of their YAML and
  ``_target_``; inline ``key=value`` and ``group.key`` code in prose against the keys of every
  command;
* the generated options tables are current (``tools/docs_tables.py --check``);
* **figures have a source** (issue #34): a paragraph (a block of text between blank lines, or a
  table) that states a measured figure (a number followed by ``dB``, a time such as ``2 min 41 s``,
  ``141 s``, ``35 ms``, ``3 minutes``, or a rate in ``img/s``, ``images/s``, ``it/s``) must name a
  file under ``docs/results/``, or an image under ``docs/`` that the same doc says is made from
  one, in itself or earlier in its section (from the previous heading of any level: a source
  named once covers the paragraphs after it, up to the next heading);
  where the output of a measurement was not kept, it says so (``not kept in docs/results/``).
  Exempt, and only these: fenced code blocks (quoted program output); inline code (option values
  such as ``schedule_seconds=125``); ``docs/results/*.md``, which are not read (generated next to
  their JSON); and the words listed in ``NOT_MEASURED``, settings and definitions rather than
  measurements, each with its reason: the polling intervals of the progress lines, the reviewer
  and the worker watchdog, the phantom trajectory's parameters, the time ``tools/gpu_check.sh``
  is sized for, the PSNR cap and two known answers of ``tests/test_quality.py``.

Nothing is imported but the options dataclasses; modules are read with ``ast``.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import re
import typing
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "progressive_swap"
PATH_ROOTS = ("progressive_swap", "tools", "recipes", "docs", "tests")
SUBPACKAGES = sorted(p.parent.name for p in PKG.glob("*/__init__.py"))
# First parts of dotted inline code that are not ours (libraries, state-dict keys, variables in examples).
FOREIGN = {"ast", "cp", "cv2", "dataclasses", "encoder", "fs", "multiarray", "nn", "np", "numeric", "numpy", "os",
           "pickle", "skimage", "smp", "torch", "hydra", "face_alignment"}
FILE_EXT = {"py", "json", "yaml", "md", "png", "jpg", "mp4", "mov", "ckpt", "dat", "pak", "fsa", "blend", "jsonl",
            "safetensors", "exr", "tif", "tiff", "dpx", "pth", "onnx", "dfm", "pt", "npz", "txt", "sh", "html"}
# key=value in prose that are other programs' arguments (Lightning, torch, a peer's), not ours.
FOREIGN_KEYS = {"key", "precision", "state_dict_type", "res"}
# Subcommands whose keys are parsed by hand rather than from an options dataclass.
HAND_KEYS = {"swap-faceset info": set(), "swap-faceset repair": {"adopt"}, "swap-faceset verify": set()}


def _load_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


docs_tables = _load_tables()


def doc_files() -> list[Path]:
    return docs_tables.doc_files(ROOT)


# ------------------------------------------------------------------------------- reading Markdown


def fences(text: str) -> list[str]:
    """The contents of the fenced code blocks."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def spans(text: str) -> list[str]:
    """Inline code outside the fenced blocks."""
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", prose)


# ------------------------------------------------------------------------------------------ paths


def _expand(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [x for alt in m.group(1).split(",") for x in _expand(path[: m.start()] + alt + path[m.end():])]


def _exists(path: str, base: Path = ROOT) -> bool:
    return all((any(base.glob(p)) if "*" in p else (base / p).exists()) for p in _expand(path))


@functools.lru_cache(maxsize=1)
def _py_names() -> frozenset[str]:
    return frozenset(p.name for d in ("progressive_swap", "tools", "tests") for p in (ROOT / d).rglob("*.py"))


def bad_paths(text: str, doc_dir: Path = ROOT / "docs") -> list[str]:
    """Paths named in ``text`` that are not in the tree."""
    bad = []
    roots = "|".join(PATH_ROOTS)
    for m in re.finditer(rf"(?<![\w/.~$-])((?:{roots})/[\w.*{{}},/@#%<>-]*)", text):
        path = m.group(1).rstrip(".,:;")
        if "<" in path or "#" in path or "%" in path or "@" in path:
            continue  # a placeholder or a frame pattern, not a file of ours
        if not _exists(path):
            bad.append(path)
    subs = "|".join(SUBPACKAGES)
    for m in re.finditer(rf"(?<![\w/.~$-])((?:{subs})/[\w/]*\w\.py)\b", text):
        if not (PKG / m.group(1)).is_file():
            bad.append(m.group(1))
    for s in spans(text):
        if re.fullmatch(r"\w+\.py", s) and s not in _py_names():
            bad.append(s)
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1).split("#")[0]
        if target and not re.match(r"[a-z]+:", target) and not (doc_dir / target).exists():
            bad.append(target)
    return bad


# ------------------------------------------------------------------------------- modules and names


@functools.lru_cache(maxsize=None)
def _module_names(path: Path) -> dict[str, set[str]]:
    """Top-level names of a module file, each with the names in its body (a class's methods)."""
    tree = ast.parse(path.read_text())
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = set()
            for n in getattr(node, "body", []):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner.add(n.name)
                elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                    inner.add(n.target.id)
                elif isinstance(n, ast.Assign):
                    inner |= {t.id for t in n.targets if isinstance(t, ast.Name)}
            names[node.name] = inner
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = set()
    return names


def _module_file(parts: list[str]) -> Path | None:
    base = PKG.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def module_name_exists(dotted: str) -> bool:
    """Whether ``a.b.c`` (relative to ``progressive_swap``, or a module's short name such as
    ``curate.move_faces``) names a module of the package and, after it, names it defines."""
    parts = dotted.removesuffix("()").split(".")
    if parts[0] == "progressive_swap":
        parts = parts[1:]
    if not parts:
        return True
    if parts[0] not in SUBPACKAGES:  # a module's short name: faceset/curate.py for curate
        found = [p.relative_to(PKG).with_suffix("").parts for p in PKG.rglob(parts[0] + ".py")]
        if len(found) != 1:
            return False
        parts = [*found[0], *parts[1:]]
    for k in range(len(parts), 0, -1):
        f = _module_file(parts[:k])
        if f is None:
            continue
        rest = parts[k:]
        if not rest:
            return True
        names = _module_names(f)
        if rest[0] not in names:
            return False
        return len(rest) == 1 or rest[1] in names[rest[0]] or not names[rest[0]]
    return False


@functools.lru_cache(maxsize=1)
def _classes() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        for name, _ in _module_names(f).items():
            if name[:1].isupper() and re.search(rf"^class {name}\b", f.read_text(), re.M):
                out[name] = f
    return out


# ------------------------------------------------------------------------------------------- keys


@functools.lru_cache(maxsize=1)
def command_keys() -> dict[str, set[str]]:
    """Keys of every command (``swap-faceset sort`` for subcommands), from the options dataclasses."""
    keys = {}
    for cmd, (module, name) in docs_tables.COMMANDS.items():  # read with ast: importing them takes seconds
        f = _module_file(module.split(".")[1:])
        assert f is not None, module
        fields = _module_names(f).get(name)
        assert fields, f"{module}.{name} not found (tools/docs_tables.py)"
        keys[cmd] = {k for k in fields if not k.startswith("_")}
    return {**keys, **HAND_KEYS}


@functools.lru_cache(maxsize=None)
def _target_params(target: str) -> set[str]:
    """Argument names of a ``_target_`` of ours (a dataclass's fields or ``__init__``'s arguments), read with ast."""
    module, _, name = target.rpartition(".")
    f = _module_file(module.split(".")[1:]) if module.startswith("progressive_swap.") else None
    if f is None:
        return set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            if isinstance(node, ast.FunctionDef):
                return {a.arg for a in node.args.args + node.args.kwonlyargs}
            params = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            for n in node.body:
                if isinstance(n, ast.FunctionDef) and n.name == "__init__":
                    params |= {a.arg for a in n.args.args + n.args.kwonlyargs}
            return params
    return set()


@functools.lru_cache(maxsize=1)
def train_keys() -> tuple[set[str], dict[str, set[str]]]:
    """``swap-train``'s top-level keys and, per group, the keys below it: the typed schema's fields,
    the recipe groups (``recipes/<group>/``) and the keys their YAML and ``_target_`` take."""
    from progressive_swap.cli import schema

    hints = typing.get_type_hints(schema.TrainConfig)
    top = {f.name for f in dataclasses.fields(schema.TrainConfig)}
    below: dict[str, set[str]] = {}
    for f in dataclasses.fields(schema.TrainConfig):
        if dataclasses.is_dataclass(hints[f.name]):
            below[f.name] = {g.name for g in dataclasses.fields(hints[f.name])}
    groups = [d for d in (ROOT / "recipes").iterdir() if d.is_dir()]
    top |= {d.name for d in groups}
    root_yaml = [yaml.safe_load((ROOT / "recipes" / "train.yaml").read_text())]
    for d in groups:
        for y in d.glob("*.yaml"):
            doc = yaml.safe_load(y.read_text()) or {}
            root_yaml.append(doc if d.name in ("recipe", "debug") else {d.name: doc})
    for doc in root_yaml:
        for group, value in doc.items():
            if isinstance(value, dict):
                below.setdefault(group, set()).update(value)
                if "_target_" in value:
                    below[group] |= _target_params(value["_target_"])
    return top, below


def train_key_ok(key: str, value: str | None = None) -> bool:
    """Whether ``key`` (``seed``, ``model``, ``model.channel_base``, ``augment.geometry.flip``) is one
    of swap-train's; a group chosen by name (``model=half``) must have that recipe file."""
    top, below = train_keys()
    parts = key.lstrip("+~").split(".")
    if parts[0] not in top:
        return False
    if len(parts) == 1:
        group_dir = ROOT / "recipes" / parts[0]
        if value is not None and group_dir.is_dir() and re.fullmatch(r"\w+", value):
            return (group_dir / f"{value}.yaml").is_file() or value == "null"
        return True
    return parts[1] in below.get(parts[0], set())


def _all_keys() -> set[str]:
    return set().union(*command_keys().values())


COMMAND = re.compile(r"\b(swap-(?:train|extract|export-model|export|faceset|mask|phantom))\b(.*)")


def bad_keys(text: str) -> list[str]:
    """``key=`` options of the command lines in ``text`` (and key-like inline code) that do not exist."""
    bad = []
    lines = [ln for block in fences(text) for ln in block.replace("\\\n", " ").splitlines()]
    lines += spans(text)
    keys = command_keys()
    for line in lines:
        m = COMMAND.search(line)
        if not m:
            continue
        cmd, rest = m.group(1), m.group(2).split(" #")[0].split()
        if cmd in ("swap-faceset", "swap-mask"):
            sub = rest[0] if rest and "=" not in rest[0] else ""
            if sub and not re.fullmatch(r"[a-z]+(/[a-z]+)*", sub):
                continue  # a message such as "swap-faceset import: refused ...", or "swap-mask …"
            allowed = [keys.get(f"{cmd} {s}") for s in sub.split("/")] if sub else []
            if not sub or any(a is None for a in allowed):
                if sub:
                    bad.append(f"{cmd} {sub}: no such subcommand")
                continue
            for tok in rest[1:]:
                k = tok.split("=", 1)[0]
                if "=" in tok and re.fullmatch(r"[A-Za-z_]\w*", k) and not all(k in a for a in allowed):
                    bad.append(f"{cmd} {sub} {k}=")
            continue
        for tok in rest:
            k, eq, v = tok.partition("=")
            if not eq or not re.fullmatch(r"[+~]?[A-Za-z_][\w.]*", k):
                continue
            ok = train_key_ok(k, v) if cmd == "swap-train" else k.split(".")[0] in keys[cmd]
            if not ok:
                bad.append(f"{cmd} {k}={v if cmd == 'swap-train' else ''}")
    for s in spans(text):
        if COMMAND.search(s):
            continue
        m = re.fullmatch(r"([a-z_][\w.]*)=(\S*)", s)
        if not m or m.group(1) in FOREIGN_KEYS or re.match(r"True|False|None|[\"']", m.group(2)):
            continue  # Python's keyword arguments and others' options
        if not (m.group(1) in _all_keys() or train_key_ok(m.group(1), m.group(2))):
            bad.append(s)
    return bad


def bad_names(text: str) -> list[str]:
    """Dotted module names and config keys in ``text`` that name nothing of ours."""
    bad = []
    for m in re.finditer(r"\bprogressive_swap((?:\.\w+)+)", text):
        first = m.group(1).split(".")[1]
        if (first in SUBPACKAGES or (PKG / f"{first}.py").is_file()) and not module_name_exists(m.group(0)):
            bad.append(m.group(0))  # (progressive_swap.json, progressive_swap.face: names of files and chunks)
    top, _ = train_keys()
    for span in spans(text):
        m = re.fullmatch(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\(.*\))?", span)  # a name, or a call of one
        if not m or span.startswith("progressive_swap"):
            continue
        s = m.group(1)
        parts = s.split(".")
        if m.group(2) and len(parts) == 2 and parts[0] in top:
            continue  # model.scaled(...): a method called on a variable named like a config group
        if parts[-1] in FILE_EXT or parts[0] in FOREIGN or parts[0].isupper():
            continue
        if parts[0][:1].isupper():  # Class.attr: checked when the class is ours
            f = _classes().get(parts[0])
            if f is not None and parts[1] not in _module_names(f)[parts[0]]:
                bad.append(s)
            continue
        if parts[0] in top and train_key_ok(s):
            continue
        if not module_name_exists(s):
            bad.append(s)
    return bad


# ---------------------------------------------------------------------------------------- figures

# A measured figure: a number and a unit of level (dB), time or rate. "2 min 41 s" is two of them.
FIGURE = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?:[ \u00a0\u202f]|-)?"
                    r"(?:dB|ms|µs|s|min|h|seconds?|minutes?|hours?|img/s|images/s|it/s|steps/s)(?![\w/])")
RESULTS = re.compile(r"(?<![\w/.])docs/results/[\w.*{},/-]*\w|\]\((results/[^)\s#]+)\)")
NOT_KEPT = re.compile(r"not\s+kept\s+in\s+`?docs/results/")
IMAGE = re.compile(r"(?<![\w/.])(?:docs/)?([\w-]+\.(?:png|jpg))\b")
# Figures in prose that are settings or definitions, not measurements: (doc, the words around it) -> why.
NOT_MEASURED: dict[tuple[str, str], str] = {
    ("README.md", "a plain line every 30 s"): "the default of progress_every=, a setting",
    ("faceset.md", "polls the set every 3 s"): "the reviewer page's polling interval, a setting",
    ("phantom.md", "(15–30° in 0.15–0.35 s)"): "what sample_trajectory draws from, its parameters",
    ("phantom.md", "blinks every 1.5–5 s (~0.2 s each)"): "what sample_trajectory draws from, its parameters",
    ("training.md", "it polls every 0.5 s"): "the worker watchdog's polling interval, a setting",
    ("scaling.md", "about 8 minutes on one H100/H200"): "the time tools/gpu_check.sh is sized for (its header)",
    ("quality.md", "PSNR is capped at 60 dB"): "the metric's cap, a definition",
    ("quality.md", "the truth 60 dB minus the reference"): "a known answer of the definition (tests/test_quality.py)",
    ("quality.md", "(half the error) +6.02 dB"): "a known answer, 20 log10(2) (tests/test_quality.py)",
}


@dataclasses.dataclass
class Paragraph:
    heading: str
    section: int
    line: int
    text: str


def paragraphs(text: str) -> list[Paragraph]:
    """The paragraphs of a Markdown text outside its fenced code blocks, with their section: a
    block of lines between blank lines, a heading or a fence; a table is a paragraph of its own."""
    out: list[Paragraph] = []
    cur: list[str] = []
    heading, section, start, fenced = "", 0, 0, False

    def close() -> None:
        if cur:
            out.append(Paragraph(heading, section, start, "\n".join(cur)))
            cur.clear()

    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            close()
            fenced = not fenced
        elif fenced:
            continue
        elif re.match(r"#{1,6} ", line):
            close()
            heading, section = line.lstrip("# ").strip(), section + 1
        elif not line.strip():
            close()
        else:
            if cur and cur[-1].lstrip().startswith("|") != line.lstrip().startswith("|"):
                close()  # a table begins or ends without a blank line
            if not cur:
                start = n
            cur.append(line)
    close()
    return out


def figures(text: str) -> list[str]:
    """The measured figures a paragraph states (inline code left out: option values, not figures)."""
    prose = re.sub(r"`[^`\n]+`", "", text)
    return [re.sub(r"\s+", " ", m.group(0)) for m in FIGURE.finditer(prose)]


def _results_named(text: str) -> list[str]:
    return [m.group(1) and "docs/" + m.group(1) or m.group(0) for m in RESULTS.finditer(text)]


def unsourced_figures(text: str, doc: str = "") -> list[str]:
    """The paragraphs of ``text`` that state a measured figure and name no file of
    ``docs/results/`` (nor an image the text says is made from one, nor that the measurement was
    not kept), neither in themselves nor earlier in their section (up to the previous heading)."""
    paras = paragraphs(text)
    made = {i for p in paras if _results_named(p.text) for i in IMAGE.findall(p.text)}

    def sourced(s: str) -> bool:
        return bool(_results_named(s) or NOT_KEPT.search(s) or made & set(IMAGE.findall(s)))

    sourced_sections, bad = set(), []
    for p in paras:  # a source named once covers the rest of its section, not what came before it
        if sourced(p.text):
            sourced_sections.add(p.section)
        prose = re.sub(r"\s+", " ", p.text)
        for words in (w for d, w in NOT_MEASURED if d == doc):
            prose = prose.replace(words, " ")
        figs = figures(prose)
        if figs and p.section not in sourced_sections:
            bad.append(f"line {p.line} ({p.heading or 'top'}): {', '.join(figs[:4])}")
    return bad


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.name)
def test_docs_name_only_what_exists(doc: Path) -> None:
    text = doc.read_text()
    problems = bad_paths(text, doc.parent) + bad_names(text) + bad_keys(text)
    assert not problems, f"{doc.relative_to(ROOT)} names what does not exist: {problems}"


def test_the_checks_catch_a_bad_path_module_and_key() -> None:
    text = """
See `progressive_swap/footage/nothing.py`, `footage/colour.py`, `tools/no_tool.py`, [x](gone.md),
`faces.align.crop_matrix`, `core.align.no_such_function`, `progressive_swap.core.alignment`.

```
swap-extract input=a.mp4 out=faces/B colourspace=ACEScg
swap-train recipe=256 model=huge model.channel_bass=8
swap-faceset embed faces/B ref=faces/A
```
`swap-export no_key=1` and `crop_spaces=acescct`.
"""
    assert bad_paths(text) == ["progressive_swap/footage/nothing.py", "tools/no_tool.py", "gone.md"]
    assert bad_names(text) == ["progressive_swap.core.alignment", "faces.align.crop_matrix",
                               "core.align.no_such_function"]
    assert bad_keys(text) == ["swap-extract colourspace=", "swap-train model=huge", "swap-train model.channel_bass=8",
                              "swap-faceset embed ref=", "swap-export no_key=", "crop_spaces=acescct"]
    good = """`progressive_swap/footage/colour.py`, `core.align.crop_matrix`, `curate.move_faces`,
`docs/results/export_{half,comb}_cpu.json`, `model.channel_base`, `swap-train recipe=1024 model=half trainer=gpu`,
`swap-faceset filter faces/B ref=faces/A`, `swap-export-model format=onnx`, `crop_space=acescct`."""
    assert bad_paths(good) == bad_names(good) == bad_keys(good) == []


def test_the_readme_layout_names_every_doc() -> None:
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    missing = [p.stem for p in (ROOT / "docs").glob("*.md") if not re.search(rf"\b{p.stem}\b", layout)]
    assert not missing, f"README.md's layout does not name docs {missing}"


def test_options_tables_are_generated_from_the_schema(tmp_path) -> None:
    stale = docs_tables.stale(ROOT)
    assert not stale, f"options tables out of date in {stale}: run python tools/docs_tables.py"
    marked = {m.group("cmd") for p in doc_files() for m in docs_tables.BLOCK.finditer(p.read_text())}
    assert {"swap-extract", "swap-export", "swap-export-model"} <= marked
    changed = docs_tables.rewrite("<!-- options: swap-export-model -->\n| old |\n<!-- /options -->")
    assert "| `allow_same` | `false` |" in changed and "| old |" not in changed
    (tmp_path / "docs").mkdir()  # a stale table is found
    (tmp_path / "README.md").write_text(changed)
    (tmp_path / "docs" / "x.md").write_text(changed.replace("`allow_same`", "`allow_sames`"))
    assert docs_tables.stale(tmp_path) == [tmp_path / "docs" / "x.md"]


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.name)
def test_figures_name_their_results_file(doc: Path) -> None:
    bad = unsourced_figures(doc.read_text(), doc.name)
    assert not bad, (f"{doc.relative_to(ROOT)}: figures without a source; name the file of docs/results/ they come "
                     f"from, or say the measurement was not kept in docs/results/: {bad}")


def test_results_files_named_next_to_figures_exist() -> None:
    missing = [(p.name, r) for p in doc_files() for r in _results_named(p.read_text())
               if not _exists(r.rstrip(".,:;"))]
    assert not missing, missing


def test_not_measured_figures_are_still_there() -> None:
    texts = {p.name: re.sub(r"\s+", " ", p.read_text()) for p in doc_files()}
    stale = [k for k in NOT_MEASURED if k[1] not in texts.get(k[0], "") or not figures(k[1])]
    assert not stale, f"NOT_MEASURED names words no longer in the docs, or without a figure: {stale}"


def test_the_figure_check_catches_a_figure_without_a_source() -> None:
    text = """# Results

The demo reaches 23.4 dB in 2 min 41 s.

| run | swap PSNR |
|---|---:|
| a | 22.1 dB |

## Sourced

Swap PSNR 23.37 dB (`docs/results/demo_cpu.json`).

Another paragraph of the same section: 141 s.

## Named too late

A figure first: 12 ms.

Its source after it: `docs/results/demo_cpu.json`.

## Not kept

An older run: 4.1 dB (measurement not kept in docs/results/).

## Made from a JSON

![plot](efficiency_h100.png)

`docs/efficiency_h100.png` is drawn from `docs/results/efficiency_h100_report.json`.

## Elsewhere

A rate of 250 img/s and `schedule_seconds=125` ([plot](efficiency_h100.png)).

## Quoted

```
epoch 3: 22.9 dB, 35 ms a step
```
Not a figure: 16 px, 2 seeds, 3 steps.

### Below a sourced section

Its heading starts a new section: 3 minutes.
"""
    assert figures("2 min 41 s, 141 s, 35 ms, 3 minutes, 22.1 dB, 250 img/s, 1,024 images/s, a 20-minute run") == [
        "2 min", "41 s", "141 s", "35 ms", "3 minutes", "22.1 dB", "250 img/s", "1,024 images/s", "20-minute"]
    assert figures("16 px, 2 seeds, 3 steps, H100 s, `budget=800s`, model_3s, v1.5s") == []
    bad = unsourced_figures(text)
    assert [b.split(":")[0] for b in bad] == ["line 3 (Results)", "line 5 (Results)", "line 17 (Named too late)",
                                              "line 44 (Below a sourced section)"], bad
    assert "23.4 dB, 2 min, 41 s" in bad[0] and "22.1 dB" in bad[1]
    # a setting listed in NOT_MEASURED is passed over in its doc only, and only in its words
    setting = "The watchdog: it polls every 0.5 s, and a kill took 0.5 s."
    assert unsourced_figures(setting, "training.md") == ["line 1 (top): 0.5 s"]
    assert unsourced_figures(setting, "README.md") == ["line 1 (top): 0.5 s, 0.5 s"]
