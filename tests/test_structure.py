"""The package's layering, as docs/DESIGN.md states it: every import of a kit module by another — at module level,
inside functions and methods, under ``if TYPE_CHECKING`` — is an edge that the ``imports`` block allows.

Granularity: top-level modules and subpackages (``llm4academic/scoring/judge.py`` counts as ``scoring``);
``__main__.py`` counts as ``cli``; the package's ``__init__.py`` holds only metadata, imports no kit module, and anyone
may import it. The light modules import no torch stack at module level, so that the CLI, the params checks and the
notebooks' set-up cells start fast.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PKG = "llm4academic"
PKG_DIR = ROOT / PKG
DESIGN = ROOT / "docs" / "DESIGN.md"
ROOT_MODULE = ""  # llm4academic/__init__.py: metadata only
LIGHT = ("base", "config", "rundir", "catalog", "zbench")
HEAVY = ("torch", "transformers", "accelerate", "peft")


# --------------------------------------------------------------------------------------------- the checker


def parse_design(text: str) -> dict[str, set[str]]:
    """The ``imports`` fenced block of DESIGN.md: ``{module: allowed modules}`` (``{"*"}`` = any)."""
    blocks = re.findall(r"^```imports[ \t]*\n(.*?)^```", text, flags=re.M | re.S)
    if len(blocks) != 1:
        raise ValueError(f"docs/DESIGN.md: expected one ```imports block, found {len(blocks)}")
    allowed: dict[str, set[str]] = {}
    for n, line in enumerate(blocks[0].splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        module, colon, rest = line.partition(":")
        module = module.strip()
        if not colon or not re.fullmatch(r"[a-z_][a-z0-9_]*", module):
            raise ValueError(f"docs/DESIGN.md imports block, line {n}: expected `module: a, b`, got {line!r}")
        if module in allowed:
            raise ValueError(f"docs/DESIGN.md imports block: {module} is listed twice")
        allowed[module] = {name.strip() for name in rest.split(",") if name.strip()}
    unknown = {f"{m} → {a}" for m, names in allowed.items() for a in names if a != "*" and a not in allowed}
    if unknown:
        raise ValueError(f"docs/DESIGN.md imports block names modules it does not list: {', '.join(sorted(unknown))}")
    return allowed


def module_of(relpath: str) -> str:
    """The kit module a file belongs to: ``llm4academic/scoring/judge.py`` → ``scoring``."""
    parts = Path(relpath).with_suffix("").parts
    assert parts[0] == PKG, relpath
    if len(parts) == 2 and parts[1] == "__init__":
        return ROOT_MODULE
    if len(parts) == 2 and parts[1] == "__main__":
        return "cli"
    return parts[1]


def package_modules(pkg_dir: Path = PKG_DIR) -> set[str]:
    """Top-level modules and subpackages on disk (what ``from . import x`` may name)."""
    names = {p.stem for p in pkg_dir.glob("*.py") if not p.stem.startswith("__")}
    return names | {p.name for p in pkg_dir.iterdir() if (p / "__init__.py").is_file()}


def _package_of(relpath: str) -> list[str]:
    """The dotted package a relative import starts from (``from . import``): the file's folder."""
    return list(Path(relpath).parent.parts)


def kit_imports(source: str, relpath: str, known: set[str]) -> list[tuple[str, int, str]]:
    """Every import of a kit module in ``source``, anywhere in the file: ``(module, line, statement)``."""
    out = []
    for node in ast.walk(ast.parse(source, filename=relpath)):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(relpath)
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            else:
                base = []
            dotted = base + (node.module.split(".") if node.module else [])
            if dotted == [PKG]:  # from . import x / from llm4academic import x: x is a module or an attribute
                targets = [[PKG, alias.name] if alias.name in known else [PKG] for alias in node.names]
            else:
                targets = [dotted]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            targets = [node.args[0].value.split(".")]
        for dotted in targets:
            if dotted and dotted[0] == PKG:
                module = ROOT_MODULE if len(dotted) == 1 else ("cli" if dotted[1] == "__main__" else dotted[1])
                out.append((module, node.lineno, ast.get_source_segment(source, node) or ""))
    return out


def check_source(source: str, relpath: str, allowed: dict[str, set[str]], known: set[str] | None = None) -> list[str]:
    """The layering problems of one file: a module DESIGN.md does not list, or an edge it does not allow."""
    known = package_modules() if known is None else known
    importer = module_of(relpath)
    edges = kit_imports(source, relpath, known | set(allowed))
    if importer == ROOT_MODULE:
        return [
            f"{relpath}:{line}: the package's __init__.py imports {m or PKG} ({stmt}); it holds metadata only"
            for m, line, stmt in edges
        ]
    if importer not in allowed:
        return [f"{relpath}: module {importer!r} is not listed in docs/DESIGN.md's imports block"]
    problems = []
    for imported, line, stmt in edges:
        if imported in (importer, ROOT_MODULE) or "*" in allowed[importer] or imported in allowed[importer]:
            continue
        problems.append(f"{relpath}:{line}: {importer} → {imported or PKG} not allowed by docs/DESIGN.md ({stmt})")
    return problems


def heavy_imports_at_module_level(source: str, heavy=HEAVY) -> list[tuple[int, str]]:
    """Imports of ``heavy`` packages that run when the module is imported: module level, class bodies and
    top-level if/try/with blocks — not function bodies, not ``if TYPE_CHECKING``."""
    found = []

    def visit(stmts):
        for s in stmts:
            if isinstance(s, ast.Import):
                found.extend((s.lineno, a.name) for a in s.names if a.name.split(".")[0] in heavy)
            elif isinstance(s, ast.ImportFrom) and not s.level and s.module.split(".")[0] in heavy:
                found.append((s.lineno, s.module))
            elif isinstance(s, ast.If):
                test = ast.unparse(s.test)
                if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(s.body)
                visit(s.orelse)
            elif isinstance(s, (ast.Try, ast.TryStar)):
                visit(s.body + s.orelse + s.finalbody + [x for h in s.handlers for x in h.body])
            elif isinstance(s, (ast.With, ast.ClassDef)):
                visit(s.body)

    visit(ast.parse(source).body)
    return found


def sources() -> list[tuple[str, str]]:
    return [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in sorted(PKG_DIR.rglob("*.py"))]


@pytest.fixture(scope="module")
def allowed() -> dict[str, set[str]]:
    return parse_design(DESIGN.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- the package


def test_every_import_is_an_edge_design_allows(allowed):
    problems = [p for relpath, src in sources() for p in check_source(src, relpath, allowed)]
    assert not problems, "\n".join(problems)


def used_edges() -> dict[str, set[str]]:
    """The edges the code has: ``{importer: kit modules it imports}``."""
    known = package_modules()
    edges: dict[str, set[str]] = {}
    for relpath, src in sources():
        importer = module_of(relpath)
        for imported, _, _ in kit_imports(src, relpath, known):
            if imported not in (importer, ROOT_MODULE):
                edges.setdefault(importer, set()).add(imported)
    return edges


def test_design_lists_no_edge_the_code_does_not_have(allowed):
    """DESIGN.md's block is the code's picture: an allowed edge nobody uses is stale, and so is a listed module
    that no longer exists."""
    used = used_edges()
    stale = sorted(f"{m} → {a}" for m, names in allowed.items() for a in names - {"*"} if a not in used.get(m, set()))
    gone = sorted(set(allowed) - package_modules())
    assert not stale and not gone, f"stale edges: {stale}; modules that do not exist: {gone}"


def test_cli_and_pipeline_sit_on_top(allowed):
    """Nothing imports the CLI; only modules whose DESIGN line names it import the runner."""
    known = package_modules() | set(allowed)
    offenders = []
    for relpath, src in sources():
        importer = module_of(relpath)
        for imported, line, stmt in kit_imports(src, relpath, known):
            if imported == importer:
                continue
            if imported == "cli" or (
                imported == "pipeline"
                and "pipeline" not in allowed.get(importer, set())
                and "*" not in allowed.get(importer, set())
            ):
                offenders.append(f"{relpath}:{line}: {stmt}")
    assert not offenders, "\n".join(offenders)


def test_design_layers_have_no_cycle(allowed):
    """Apart from the CLI's `*`, the allowed edges form layers: no module may reach itself."""
    graph = {m: {a for a in names if a != "*"} for m, names in allowed.items() if "*" not in names}

    def reach(start):
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    cyclic = sorted(m for m in graph if m in reach(m))
    assert not cyclic, f"docs/DESIGN.md allows import cycles through: {', '.join(cyclic)}"


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_no_torch_at_module_level(module):
    path = PKG_DIR / f"{module}.py"
    files = [path] if path.is_file() else sorted((PKG_DIR / module).rglob("*.py"))
    assert files, f"no llm4academic/{module}.py nor llm4academic/{module}/"
    found = [
        f"{p.relative_to(ROOT)}:{line}: {name}"
        for p in files
        for line, name in heavy_imports_at_module_level(p.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)


def test_light_modules_load_without_torch():
    """The same, at run time and transitively: importing the light modules leaves torch unloaded."""
    code = (
        f"import sys; import {', '.join(f'{PKG}.{m}' for m in LIGHT)}; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]", f"importing {', '.join(LIGHT)} loads {r.stdout.strip()}"


# --------------------------------------------------------------------------------------------- the checker itself

DESIGN_SAMPLE = """# x

```imports
base:
config: base
train: base, config
compare: base, config
cli: *
```
"""
KNOWN = {"base", "config", "train", "compare", "cli", "scoring"}


def test_planted_import_inside_a_function_is_reported():
    allowed = parse_design(DESIGN_SAMPLE)
    problems = check_source("def f():\n    from .train import worker\n", "llm4academic/compare.py", allowed, KNOWN)
    assert len(problems) == 1 and "compare → train" in problems[0] and "llm4academic/compare.py:2" in problems[0]


@pytest.mark.parametrize(
    "source",
    [
        "import llm4academic.train",
        "from llm4academic import train",
        "from llm4academic.train import worker",
        "from . import train",
        "from .train.fsdp import worker",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .train import Worker",
        "class A:\n    def m(self):\n        import llm4academic.train.fsdp as f",
        "import importlib\nw = importlib.import_module('llm4academic.train')",
    ],
)
def test_every_import_form_is_seen(source):
    problems = check_source(source, "llm4academic/compare.py", parse_design(DESIGN_SAMPLE), KNOWN)
    assert [p.split(": ", 1)[1].split(" not allowed")[0] for p in problems] == ["compare → train"], problems


def test_relative_imports_resolve_from_the_files_package():
    allowed = parse_design(DESIGN_SAMPLE)
    inside = "from .judge import grade\nfrom ..config import X\nfrom .. import base\nfrom ..train import w\n"
    problems = check_source(inside, "llm4academic/compare/tables.py", allowed, KNOWN)
    assert len(problems) == 1 and "llm4academic/compare/tables.py:4: compare → train" in problems[0]
    assert (
        check_source("from . import __version__\nfrom .base import x", "llm4academic/config.py", allowed, KNOWN) == []
    )
    assert check_source("from .cli import main", "llm4academic/__main__.py", allowed, KNOWN) == []


def test_unknown_module_is_reported_by_file():
    allowed = parse_design(DESIGN_SAMPLE)
    problems = check_source("from .base import x\n", "llm4academic/fsdp.py", allowed, KNOWN)
    assert problems == ["llm4academic/fsdp.py: module 'fsdp' is not listed in docs/DESIGN.md's imports block"]
    problems = check_source("", "llm4academic/scoring/judge.py", allowed, KNOWN)
    assert problems and "'scoring' is not listed" in problems[0]


def test_package_init_imports_nothing():
    problems = check_source("from .cli import main\n", "llm4academic/__init__.py", parse_design(DESIGN_SAMPLE), KNOWN)
    assert len(problems) == 1 and "metadata only" in problems[0]


def test_design_block_is_validated():
    with pytest.raises(ValueError, match="names modules it does not list: config → bsae"):
        parse_design("```imports\nbase:\nconfig: bsae\n```\n")
    with pytest.raises(ValueError, match="listed twice"):
        parse_design("```imports\nbase:\nbase:\n```\n")
    with pytest.raises(ValueError, match="expected one"):
        parse_design("no block here")


def test_heavy_imports_at_module_level_are_found():
    src = (
        "import os\nimport torch.nn as nn\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import transformers\n"
        "try:\n    from accelerate import Accelerator\nexcept ImportError:\n    pass\n"
        "def f():\n    import torch\n"
    )
    assert heavy_imports_at_module_level(src) == [(2, "torch.nn"), (7, "accelerate")]


# ----------------------------------------------------------------------------------------- the run-directory contract

# Names of the files and folders inside a run directory: only rundir.py spells them (docs/DESIGN.md, "The run
# directory"). Docstrings may describe the layout in prose; code and templates ask a RunDir.
RUN_DIR_NAMES = re.compile(
    r"(?<![\w.])(artifacts|manifest\.json|index\.html|mix\.jsonl|mix_summary\.json|load_report\.json|clean_report\.json"
    r"|contamination\.json|data_summary\.json|checkpoints\.json|metrics\.jsonl|fsdp\.json|data_stats\.json"
    r"|summary\.json|evaluate\.json|headline\.json|leaderboard\.png|\w*\.parquet|zbench_\w*\.csv|checkpoint-"
    r"|generations|char_lengths\.csv|token_lengths\.csv)(?![\w.])"
)


def spelled_run_dir_paths(source: str, relpath: str) -> list[tuple[int, str]]:
    """String constants (docstrings excepted) that name a file or folder of the run directory."""
    tree = ast.parse(source, filename=relpath)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, m.group(1))
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and (m := RUN_DIR_NAMES.search(node.value))
    ]


def test_no_module_but_rundir_spells_a_run_directory_path():
    found = [
        f"{rel}:{line}: {name}"
        for rel, src in sources()
        if rel != f"{PKG}/rundir.py"
        for line, name in spelled_run_dir_paths(src, rel)
    ]
    assert not found, "ask llm4academic.rundir.RunDir instead of spelling these:\n" + "\n".join(found)


def test_templates_spell_no_run_directory_path():
    found = [
        f"{p.relative_to(ROOT)}: {m.group(1)}"
        for p in sorted((PKG_DIR / "resources" / "templates").rglob("*"))
        if p.is_file()
        for m in RUN_DIR_NAMES.finditer(p.read_text(encoding="utf-8"))
    ]
    assert not found, found


@pytest.mark.parametrize(
    "planted",
    [
        'out = Path(run_dir) / "artifacts" / "evaluate"',
        'p = d / "metrics.jsonl"',
        'name = f"{split}.parquet"',
        'rd.root / "checkpoints.json"',
    ],
)
def test_a_planted_run_directory_path_is_reported(planted):
    docstring = '"""A docstring may say artifacts/evaluate/scores.parquet."""'
    source = f"{docstring}\n\n\ndef f(run_dir, d, split, rd):\n    {planted}\n"
    assert [line for line, _ in spelled_run_dir_paths(source, "llm4academic/x.py")] == [5]


def test_docstrings_may_describe_the_layout():
    assert spelled_run_dir_paths('"""Writes artifacts/evaluate/scores.parquet."""\n', "llm4academic/x.py") == []
