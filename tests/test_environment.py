"""The set-up files agree with each other: pyproject ranges, the constraints pins, environment.yml, CI, README."""

import re
import tomllib

import yaml
from conftest import ROOT
from packaging.requirements import Requirement


def pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: not an exact pin: {line}"
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_design_card_packages_are_declared():
    names = {Requirement(r).name for r in pyproject_requirements()}
    assert {"jupyterlab", "papermill", "torch", "transformers", "accelerate", "datasets", "pandas", "seaborn"} <= names


def test_environment_yml_lists_the_same_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if p != "-e .") == sorted(pyproject_requirements())
    assert "-e ." in pip and any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_constraints_pin_every_requirement_within_its_range():
    pinned = pins()
    for req in map(Requirement, pyproject_requirements()):
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        assert key in pinned, f"{req.name} is not pinned in constraints.txt"
        version = pinned[key].split("+")[0]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} outside {req.specifier}"
    assert pinned["torch"] == "2.13.0"


def test_torch_pin_has_no_local_build_tag():
    """`torch==2.13.0` resolves on any machine (PyPI's default build, CUDA on Linux; a local `2.13.0+cpu` wheel or
    PyTorch's CPU/CUDA index where given); `==2.13.0+cpu` exists only where that wheel lies on disk."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        assert "+" not in line, f"constraints.txt: a local version tag only one machine can satisfy: {line}"
    readme = (ROOT / "README.md").read_text()
    assert "download.pytorch.org/whl/cpu" in readme and "TORCH_INDEX_URL" in readme
    assert "TORCH_INDEX_URL" in (ROOT / "Makefile").read_text()
    assert "download.pytorch.org/whl/cpu" in (ROOT / "environment.yml").read_text()


def _fake_path_without_apt(tmp_path):
    """A PATH with the few tools `make test-sysdeps` needs, but neither dpkg nor apt-get nor sudo."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "make", "id", "grep", "dirname", "mkdir"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def test_make_test_goes_on_without_system_packages_unless_ci(tmp_path):
    """Where Chromium cannot be installed, `make test` goes on (saying why) and the browser tests skip;
    under CI=true it stops."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=_fake_path_without_apt(tmp_path), LLM4A_CACHE_DIR=str(tmp_path / "cache"))
    cmd = ["make", "-s", "-C", str(ROOT), "test-sysdeps"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "apt-get not found" in out.stderr and "sudo apt-get install" in out.stderr
    assert "the browser tests will be skipped" in out.stderr
    out = subprocess.run(cmd, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "CI=true" in out.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert "test: $(STAMP) test-sysdeps" in makefile and "test-fast: $(STAMP) test-sysdeps" in makefile


def test_ci_and_readme_use_the_two_commands():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make study" in readme and "make test" in readme and "make lab" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "--sys-prefix" in makefile and "torch" in makefile


def test_test_tiers_and_lint_are_wired():
    """`make test-fast` skips the tests marked slow; CI lints before it runs every test; ruff has real rules."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and 0 <= ci.index("make lint") < ci.index("make test")
    makefile = (ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split()
    assert {"test", "test-fast", "lint"} <= set(phony)
    assert '-m pytest -q -m "not slow"' in makefile and "ruff check ." in makefile
    assert "ruff format --check ." in makefile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_ini = pyproject["tool"]["pytest"]["ini_options"]
    assert "-ra" in pytest_ini["addopts"] and "--durations=15" in pytest_ini["addopts"]
    assert {m.split(":")[0] for m in pytest_ini["markers"]} >= {"slow", "browser"}
    ruff = pyproject["tool"]["ruff"]
    assert (ruff["line-length"], ruff["target-version"]) == (120, "py311")
    assert set(ruff["lint"]["select"]) >= {"E", "F", "W", "I", "B", "UP"}
    assert "llm4academic" in ruff["lint"]["isort"]["known-first-party"]
    assert "ruff" in {Requirement(r).name for r in pyproject["project"]["optional-dependencies"]["dev"]}


def test_layout_and_ignored_reports():
    for d in ("notebooks", "llm4academic", "params", "reports", "tests"):
        assert (ROOT / d).is_dir(), d
    assert (ROOT / "environment.yml").is_file() and (ROOT / "reports" / "README.md").is_file()
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "/reports/*" in ignore and "!/reports/README.md" in ignore
