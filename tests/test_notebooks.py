"""The notebooks: committed clean, one literal `parameters` cell, thin, and runnable as "Run All" would."""

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

from conftest import ROOT
from llm4academic.config import STEPS
from llm4academic.pipeline import NOTEBOOKS, ensure_kernel

NB_DIR = ROOT / "notebooks"
ALL = sorted(NB_DIR.glob("*.ipynb"))


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_every_step_has_its_notebook():
    assert set(NOTEBOOKS) == set(STEPS)
    assert sorted(NOTEBOOKS.values()) == [p.name for p in ALL]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    for cell in code_cells(path):
        assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_one_parameters_cell_of_literals(path):
    cells = [c for c in code_cells(path) if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    names = []
    for stmt in ast.parse(cells[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        ast.literal_eval(stmt.value)  # raises on anything but a literal
        names.append(stmt.targets[0].id)
    assert {"params_path", "run_dir", "overrides"} <= set(names)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebooks_stay_thin(path):
    for cell in code_cells(path):
        tree = ast.parse(cell.source)
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defined, f"{path.name}: logic belongs in the package, not in a cell: {cell.source[:80]}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_runs_top_to_bottom_with_its_defaults(path, tmp_path):
    """As a user pressing "Run All" in JupyterLab: cwd = notebooks/, default parameters (the smoke study)."""
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), cwd=str(NB_DIR), kernel_name=ensure_kernel(),
                               progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    defaults = {}
    exec(next(c.source for c in code_cells(path) if "parameters" in c.metadata.get("tags", [])), defaults)
    assert (NB_DIR / defaults["params_path"]).resolve() == ROOT / "params" / "smoke.yaml"
    assert (NB_DIR / defaults["run_dir"]).resolve().is_relative_to(ROOT / "reports")
