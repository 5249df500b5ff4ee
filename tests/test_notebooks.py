"""The notebooks: committed clean, one literal `parameters` cell, thin, and runnable as "Run All" would."""

import ast
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from conftest import ROOT

from llm4academic.config import STEPS
from llm4academic.pipeline import NOTEBOOKS, ensure_kernel

NB_DIR = ROOT / "notebooks"
ALL = sorted(NB_DIR.glob("*.ipynb"))

MAX_LINES = 8  # non-blank lines of a cell, the set-up cell excepted
MAX_SETUP_LINES = 30
# An artifact's path is the run directory's business (llm4academic.rundir.RunDir), never a cell's.
ARTIFACT_PATH = re.compile(r"\bartifacts\b|\.jsonl\b|\.parquet\b|checkpoints\.json\b|metrics\.jsonl\b")
LOOPS = (ast.For, ast.AsyncFor, ast.While)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
SETUP_STATEMENTS = (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.Expr)


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def is_parameters(cell) -> bool:
    return "parameters" in cell.metadata.get("tags", [])


def _python(source: str) -> str:
    """The cell as Python: IPython magics (``%matplotlib``, ``!cmd``) become calls, as the kernel runs them."""
    if re.search(r"^\s*[%!]", source, flags=re.M):
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    return source


def _display_only(stmts: list[ast.stmt]) -> bool:
    """An `if` branch that only chooses what to show: expression statements (``display(x)``, ``plt.show()``,
    ``compare.plot_deltas(...)``), or an ``elif`` of the same kind — no assignment, no nested logic."""
    return all(
        isinstance(s, ast.Expr) or (isinstance(s, ast.If) and _display_only(s.body) and _display_only(s.orelse))
        for s in stmts
    )


def cell_problems(source: str, setup: bool = False) -> list[str]:
    """Why a code cell is not thin; [] when it is.

    A cell is one package call and what it displays: no def/class/lambda, no loop, no comprehension, an ``if``
    only to choose what to display, at most ``MAX_LINES`` non-blank lines, and no artifact path spelled out.
    The set-up cell (the first code cell after ``parameters``) may be longer, but holds only imports, calls
    (``setup_environment()``, display) and assignments (``params = load_params(...)``).
    """
    problems = []
    tree = ast.parse(_python(source))
    nodes = list(ast.walk(tree))
    if any(isinstance(n, DEFINITIONS) for n in nodes):
        problems.append("defines a function, class or lambda: logic belongs in the package")
    if any(isinstance(n, LOOPS) for n in nodes):
        problems.append("loops: a loop over data belongs in the package")
    if any(isinstance(n, COMPREHENSIONS) for n in nodes):
        problems.append("has a comprehension: a loop over data belongs in the package")
    for n in nodes:
        if isinstance(n, ast.If) and not (_display_only(n.body) and _display_only(n.orelse)):
            problems.append(f"line {n.lineno}: an `if` may only choose what to display (no assignment in it)")
    lines = sum(1 for line in source.splitlines() if line.strip())
    if setup:
        odd = [s for s in tree.body if not isinstance(s, SETUP_STATEMENTS)]
        if odd:
            problems.append(
                f"set-up cell: line {odd[0].lineno} is a {type(odd[0]).__name__}; the set-up cell holds "
                "imports, setup_environment(), load_params(...) and simple assignments"
            )
        if lines > MAX_SETUP_LINES:
            problems.append(f"set-up cell: {lines} non-blank lines (at most {MAX_SETUP_LINES})")
    elif lines > MAX_LINES:
        problems.append(f"{lines} non-blank lines (at most {MAX_LINES}): one package call and its display per cell")
    spelled = sorted(
        {
            n.value
            for n in nodes
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and ARTIFACT_PATH.search(n.value)
        }
    )
    if spelled:
        problems.append(f"spells an artifact path {spelled!r}: ask llm4academic.rundir.RunDir for it")
    return problems


def notebook_problems(path: Path) -> list[str]:
    """Every thin-cell problem of a notebook, by code cell; the set-up cell is the first after `parameters`."""
    cells = code_cells(path)
    params_at = next((i for i, c in enumerate(cells) if is_parameters(c)), -1)
    out = []
    for i, cell in enumerate(cells):
        if i == params_at:
            continue  # test_one_parameters_cell_of_literals
        for problem in cell_problems(cell.source, setup=(i == params_at + 1)):
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            out.append(f"{path.name}, code cell {i + 1} ({first[:60]!r}): {problem}")
    return out


def test_every_step_has_its_notebook():
    assert set(NOTEBOOKS) == set(STEPS)
    assert sorted(NOTEBOOKS.values()) == [p.name for p in ALL]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    for cell in code_cells(path):
        assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_one_parameters_cell_of_literals(path):
    cells = [c for c in code_cells(path) if is_parameters(c)]
    assert len(cells) == 1
    names = []
    for stmt in ast.parse(cells[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        ast.literal_eval(stmt.value)  # raises on anything but a literal
        names.append(stmt.targets[0].id)
    assert {"params_path", "run_dir", "overrides"} <= set(names)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebooks_stay_thin(path):
    problems = notebook_problems(path)
    assert not problems, "\n".join(problems)


HEATMAP_LOOP = """\
heat = {}
for model, part in tags.groupby("model"):
    heat[model] = part.groupby("tag")["score"].mean()
sns.heatmap(pd.DataFrame(heat).T)
"""
LONG_PLOT = "\n".join(
    [
        "fig, axes = plt.subplots(1, 2, figsize=(12, 4))",
        'sns.barplot(data=board, x="model", y="score", ax=axes[0])',
        'axes[0].set_title("Leaderboard")',
        "axes[0].set_ylim(0, 1)",
        'axes[0].tick_params(axis="x", rotation=45)',
        'sns.barplot(data=splits, x="split", y="score", hue="model", ax=axes[1])',
        'axes[1].set_title("Per split")',
        "axes[1].set_ylim(0, 1)",
        'axes[1].legend(loc="upper right")',
        'axes[1].set_xlabel("")',
        'fig.suptitle("Z-Bench")',
        "plt.tight_layout()",
        "",
        'fig.savefig("leaderboard.png")',
        "plt.show()",
        "board.round(3)",
    ]
)
ARTIFACT_PATHS = [
    'artifacts = Path(run_dir) / "artifacts"',
    'curves = pd.read_json(Path(run_dir) / "train" / "metrics.jsonl", lines=True)',
    'answers = pd.read_parquet(f"{run_dir}/evaluate/answers.parquet")',
    'index = json.loads((out / "checkpoints.json").read_text())',
    'mix = datasets.load_dataset("json", data_files=str(data_dir / "mix.jsonl"))',
]


def test_rule_flags_a_loop_computing_a_heatmap():
    assert any("loops" in p for p in cell_problems(HEATMAP_LOOP))
    assert any("loops" in p for p in cell_problems(HEATMAP_LOOP, setup=True))  # not even in the set-up cell


def test_rule_flags_comprehensions_and_definitions():
    assert any("comprehension" in p for p in cell_problems("display({m: s.mean() for m, s in scores.items()})"))
    assert any("comprehension" in p for p in cell_problems("total = sum(len(x) for x in parts)"))
    assert any("function" in p for p in cell_problems("f = lambda d: d.mean()"))
    assert any("function" in p for p in cell_problems("def heat(tags):\n    return tags"))


def test_rule_flags_a_fifteen_line_plotting_cell():
    problems = cell_problems(LONG_PLOT)
    assert problems == [f"15 non-blank lines (at most {MAX_LINES}): one package call and its display per cell"]


@pytest.mark.parametrize("source", ARTIFACT_PATHS)
def test_rule_flags_a_spelled_artifact_path(source):
    assert any("artifact path" in p for p in cell_problems(source)), source


def test_rule_flags_logic_hidden_in_an_if():
    cell = "if len(verbs):\n    fig, ax = plt.subplots()\n    sns.barplot(data=verbs, ax=ax)\nelse:\n    display(x)"
    assert any("`if` may only choose what to display" in p for p in cell_problems(cell))


def test_rule_lets_thin_cells_and_the_set_up_cell_through():
    thin = [
        "compare.plot_leaderboard(c)\nplt.show()\ncompare.wide_leaderboard(c.board)",
        "if len(c.deltas):\n    compare.plot_deltas(c.deltas, c.colours)\n    plt.show()\n"
        "elif c.agreement is None:\n    display(Markdown('No judge ran.'))\nelse:\n    display(c.deltas.round(3))",
        "result = evaluate.run(params, run_dir)\nresult.cache_table()",
        "with pd.option_context('display.max_colwidth', None):\n    display(compare.sample_answers(c))",
        '%matplotlib inline\nrd = RunDir(run_dir)\ndisplay(Markdown(f\'Mix: `{rd.path("data", "mix")}`\'))',
        "params = None if studies else load_params(params_path, overrides)",
        "display(Markdown('## Artifacts'))",  # a heading is no path
    ]
    for cell in thin:
        assert cell_problems(cell) == [], cell
    setup = "\n".join(
        [
            "from llm4academic.base import setup_environment",
            "from llm4academic.config import load_params",
            "",
            "setup_environment()",
            "",
            *[f"import mod{i}" for i in range(12)],
            "params = load_params(params_path, overrides)",
            "sns.set_theme(style='whitegrid')",
            "display(Markdown(f'**Study `{params.name}`**'))",
        ]
    )
    assert cell_problems(setup, setup=True) == []
    assert cell_problems(setup) != []  # the same cell anywhere else is too long
    assert any("set-up cell: line 2 is a If" in p for p in cell_problems("import x\nif a:\n    b = 1", setup=True))


# The smoke study cut down to what shows every cell working: fewer records, a few optimiser steps, two Z-Bench
# prompts per split, a hundred bootstrap resamples. 01 writes what 02-04 read, in one run directory.
RUN_ALL_OVERRIDES = [
    "data.sources[0].max_records=60",
    "data.sources[1].max_records=60",
    "data.sources[2].max_records=30",
    "train.max_length=128",
    "train.per_device_batch_size=2",
    "train.gradient_accumulation_steps=1",
    "train.max_steps=4",
    "train.save_steps=4",
    "train.main_process_port=29651",
    "align.sources[0].max_records=80",
    "align.max_pairs=16",
    "align.max_steps=2",
    "align.save_steps=2",
    "align.main_process_port=29652",
    "align.examples=1",
    "align.example_max_new_tokens=4",
    "evaluate.limit=2",
    "evaluate.max_new_tokens=8",
    "evaluate.batch_size=8",
    "compare.n_boot=100",
]


@pytest.mark.slow
def test_runs_top_to_bottom_with_its_defaults(tmp_path):
    """As a user pressing "Run All" in JupyterLab: cwd = notebooks/, the default params file (the smoke study),
    here reduced through the `overrides` parameter; the five notebooks in order share one run directory."""
    run_dir = tmp_path / "run"
    for path in ALL:
        defaults = {}
        exec(next(c.source for c in code_cells(path) if is_parameters(c)), defaults)
        assert (NB_DIR / defaults["params_path"]).resolve() == ROOT / "params" / "smoke.yaml"
        assert (NB_DIR / defaults["run_dir"]).resolve().is_relative_to(ROOT / "reports")
        out = tmp_path / path.name
        papermill.execute_notebook(
            str(path),
            str(out),
            cwd=str(NB_DIR),
            kernel_name=ensure_kernel(),
            parameters={"overrides": RUN_ALL_OVERRIDES, "run_dir": str(run_dir)},
            progress_bar=False,
        )
        executed = nbformat.read(out, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}" if errors else ""


def test_run_all_overrides_are_valid_and_small():
    from llm4academic.config import load_params

    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    p = load_params(ROOT / "params" / "smoke.yaml", RUN_ALL_OVERRIDES)
    assert p.steps == smoke["steps"] and p.train.max_steps < smoke["train"]["max_steps"]
    assert p.evaluate.limit <= 2 and p.compare.n_boot == 100
    assert sum(s.max_records for s in p.data.sources) < sum(s["max_records"] for s in smoke["data"]["sources"])
