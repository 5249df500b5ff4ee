"""The study runner: papermill executes the study's notebooks in order, nbconvert renders each to HTML, and
``manifest.json`` + ``index.html`` tell what ran, on what, with which code and data.

A run directory's layout is ``rundir.py``'s (``RunDir``): executed notebooks and their HTML, artifacts, the manifest
and the index page. Every file is written to a temporary name and renamed into place.
Each notebook runs in its own papermill process so that a per-notebook timeout can stop it (``notebook_run.py``).

Before anything runs, every model path (and a judge given as a path or hub id) must have a readable config. While a
study runs, its run directory is locked (``RunDir.lock``): a second run of the same study is refused. SIGINT and
SIGTERM stop the running notebook's whole process tree, mark it ``interrupted`` in the manifest and the report, and
exit with 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import signal
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .base import (
    KitError,
    atomic_write,
    default_reports_dir,
    git_info,
    now,
    project_root,
    setup_environment,
    sha256_file,
)
from .compare import load_studies
from .config import STEPS, ModelParams, StudyParams, load_params, resolved_dict
from .index_page import align_summaries, quiet_read, render_compare_index, render_index, train_summaries
from .notebook_run import Interrupted, ensure_kernel, execute_notebook, render_html, stop_on_signals
from .rundir import NOTEBOOKS, RunDir

VERSIONED = (
    "torch",
    "transformers",
    "accelerate",
    "trl",
    "datasets",
    "tokenizers",
    "pandas",
    "seaborn",
    "papermill",
    "nbconvert",
    "pydantic",
)


class StudyFailed(KitError):
    """A notebook failed or timed out; the report was still written."""

    exit_code = 1


class StudyInterrupted(KitError):
    """SIGINT or SIGTERM stopped the study; the report (the notebook marked ``interrupted``) was still written."""

    def __init__(self, message: str, signum: int):
        self.exit_code = 128 + signum
        super().__init__(message)


# --------------------------------------------------------------------------------------------- small helpers


def notebooks_dir() -> Path:
    root = project_root()
    if root is None or not (root / "notebooks").is_dir():
        raise KitError("the study notebooks were not found: run the kit from its checkout (pip install -e .)")
    return root / "notebooks"


def environment_info() -> dict[str, Any]:
    versions = {"python": platform.python_version(), "llm4academic": __version__}
    for pkg in VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "node": platform.node(),
        },
    }


def check_models(params: StudyParams, params_path: Path, run_root: Path) -> None:
    """Every model's config readable (``tiny:`` models built, hub ids found — in the HF cache when offline) and a
    judge given as a path or hub id likewise, before the first notebook runs: a ``ConfigError`` naming the key."""
    from .config import ConfigError
    from .models import read_config  # torch: imported only when a study is about to run

    problems = []
    for i, mp in enumerate(params.models):
        try:
            read_config(mp)
        except (KitError, OSError, ValueError) as e:
            problems.append(f"  {params_path}: models[{i}].path: {e}")
    judge = params.evaluate.judge.model
    if judge and judge not in {m.name for m in params.models}:
        local = Path(judge).expanduser()
        path = str(run_root / local) if not local.is_absolute() and (run_root / local).exists() else judge
        try:  # the notebook loads the judge with the run directory as its working directory
            read_config(ModelParams.model_construct(name="judge", path=path, revision=None))
        except (KitError, OSError, ValueError) as e:
            problems.append(f"  {params_path}: evaluate.judge.model: {e}")
    if problems:
        raise ConfigError(
            f"{params_path}: {len(problems)} model path(s) cannot be resolved (nothing was run):\n"
            + "\n".join(problems)
            + "\n  a hub id needs the network once (or HF_HUB_OFFLINE unset); a local folder needs its config.json"
        )


@contextlib.contextmanager
def run_lock(rd: RunDir):
    """Hold ``RunDir.lock`` (``fcntl.flock``) while the study runs; a second run of the same study is refused."""
    rd.root.mkdir(parents=True, exist_ok=True)
    fh = open(rd.lock, "a+", encoding="utf-8")  # closed below, which releases the lock
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise KitError(
                f"{rd.root} is in use: another run of this study is in progress ({holder}). Wait for it to "
                f"finish or stop it (Ctrl-C / kill PID), or run with another name (--set name=…)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()}, started {now()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


# --------------------------------------------------------------------------------------------- the study


def run_study(
    params_path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    only: list[str] | None = None,
    reports_dir: str | os.PathLike | None = None,
    notebooks: str | os.PathLike | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a study's notebooks in order and write its report; returns the manifest.

    Raises ``ConfigError`` before running anything when the params are invalid, and ``StudyFailed`` (after the
    report is written) when a notebook fails or times out.
    """
    setup_environment()
    params_path = Path(params_path).resolve()
    params = load_params(params_path, overrides)
    steps = list(params.steps)
    if only:
        unknown = [s for s in only if s not in STEPS]
        if unknown:
            raise KitError(f"--only: unknown step(s) {', '.join(unknown)}; steps are {', '.join(STEPS)}")
        steps = [s for s in steps if s in only]
        if not steps:
            raise KitError(
                f"--only {','.join(only)}: none of these is among the study's steps ({', '.join(params.steps)})"
            )
    nb_dir = Path(notebooks) if notebooks else notebooks_dir()
    rd = RunDir((Path(reports_dir) if reports_dir else default_reports_dir()).resolve() / params.name)
    check_models(params, params_path, rd.root)
    with run_lock(rd), stop_on_signals():
        return _run_steps(params, params_path, list(overrides), only, steps, rd, nb_dir, quiet)


def _run_steps(
    params: StudyParams,
    params_path: Path,
    overrides: list[str],
    only: list[str] | None,
    steps: list[str],
    rd: RunDir,
    nb_dir: Path,
    quiet: bool,
) -> dict[str, Any]:
    rd.artifacts.mkdir(parents=True, exist_ok=True)
    kernel = ensure_kernel()
    say = (lambda *_: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    previous = _previous_notebooks(rd)
    manifest: dict[str, Any] = {
        "study": params.name,
        "description": params.description,
        "params_path": str(params_path),
        "overrides": overrides,
        "only": list(only) if only else None,
        "params": resolved_dict(params),
        "seed": params.seed,
        "git": git_info(),
        **environment_info(),
        "data_files": [
            {"source": s.name, "path": s.path, "bytes": Path(s.path).stat().st_size, "sha256": sha256_file(s.path)}
            for s in params.data.sources
        ]
        + [
            {
                "source": f"align:{s.name}",
                "path": s.path,
                "bytes": Path(s.path).stat().st_size,
                "sha256": sha256_file(s.path),
            }
            for s in (params.align.sources if "align" in params.steps else [])
        ],  # fmt: skip
        "started": now(),
        "ended": None,
        "status": "running",
        "notebooks": [],
    }
    parameters = {"params_path": str(params_path), "run_dir": str(rd.root), "overrides": overrides}
    failed: dict[str, Any] | None = None
    signum: int | None = None  # the signal that stopped the study
    rd.write_manifest(manifest)
    for i, step in enumerate(params.steps, 1):
        entry = _entry(rd, step)
        name = entry["notebook"]
        if step not in steps:
            prev = previous.get(name)
            entry.update(prev if prev else {"status": "skipped"})
            entry["from_previous_run"] = bool(prev)
        elif failed:
            entry["status"] = "not run"
        else:
            say(f"[{i}/{len(params.steps)}] {name} …")
            try:
                entry.update(
                    execute_notebook(
                        nb_dir / name,
                        rd.notebook(step),
                        parameters,
                        kernel=kernel,
                        cwd=rd.root,
                        timeout_s=params.report.notebook_timeout_s,
                    )
                )
                if rd.notebook(step).exists():
                    render_html(rd.notebook(step), rd.html(step), params.report.show_inputs)
            except Interrupted as e:  # between the notebook's end and its HTML: the notebook's record stands
                signum = e.signum
                entry.setdefault("status", "interrupted")
                entry.setdefault("error", {"ename": "Interrupted", "evalue": str(e)})
            if entry.get("signal"):
                signum = signal.Signals[entry["signal"]]
            if entry["status"] != "ok" or signum:
                failed = entry
            say(f"    {entry['status']} in {entry.get('duration_s', 0):.1f} s → {rd.html(step)}")
        manifest["notebooks"].append(entry)
        rd.write_manifest(manifest)
    manifest["ended"] = now()
    manifest["status"] = "interrupted" if signum else "failed" if failed else "ok"
    manifest["data"] = quiet_read(rd.read_data_summary)
    manifest["train"] = train_summaries(rd)
    manifest["align"] = align_summaries(rd)
    rd.write_manifest(manifest)
    atomic_write(rd.index, render_index(manifest, rd))
    if failed:
        err = failed.get("error") or {}
        where = (
            f"cell {err['cell']} (In [{err.get('execution_count')}]): {err.get('source', '')}"
            if err.get("cell")
            else "before any cell finished"
        )
        if signum:
            raise StudyInterrupted(
                f"{signal.Signals(signum).name}: study stopped during notebook {failed['notebook']} at {where}; its "
                f"kernel and workers were stopped and it is marked interrupted. Run the study again to continue "
                f"(training resumes from its latest checkpoint).\n  report: {rd.index}",
                signum,
            )
        raise StudyFailed(
            f"notebook {failed['notebook']} {failed['status']} at {where}\n"
            f"  {err.get('ename', 'Error')}: {err.get('evalue', '')}\n"
            f"  report: {rd.index} · executed notebook: {rd.root / failed['ipynb']}"
        )
    say(f"Report: {rd.index}")
    return manifest


def _entry(rd: RunDir, step: str) -> dict[str, Any]:
    """A notebook's record in the manifest: the step, its notebook and the names of its executed files."""
    name = NOTEBOOKS[step]
    return {"step": step, "notebook": name, "ipynb": rd.relative(rd.notebook(step)), "html": rd.relative(rd.html(step))}


def _previous_notebooks(rd: RunDir) -> dict[str, dict]:
    old = quiet_read(rd.read_manifest) or {}
    return {
        nb["notebook"]: {k: v for k, v in nb.items() if k != "from_previous_run"}
        for nb in old.get("notebooks", [])
        if nb.get("status") in ("ok", "failed", "timeout", "interrupted")
    }


# --------------------------------------------------------------------------------------------- several studies


def run_comparison(
    study_dirs: list[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    timeout_s: int = 3600,
    notebooks: str | os.PathLike | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """``05_compare_models`` over finished studies (e.g. the seed's recipes run separately on a cluster) →
    ``<out>/index.html``. Refuses (``CompareError``, before running anything) studies whose Z-Bench slices,
    scorers or judges differ."""
    setup_environment()
    dirs = [Path(d).resolve() for d in study_dirs]
    if len(dirs) < 2:
        raise KitError(
            "compare: give at least two study report folders (reports/<study> …); a single study "
            "already has its comparison notebook"
        )
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise KitError(f"compare: no such report folder: {', '.join(missing)}")
    studies = load_studies(dirs)
    names = [s.name for s in studies]
    rd = RunDir(Path(out).resolve() if out else default_reports_dir().resolve() / ("compare-" + "-".join(names)))
    if rd.root in dirs:
        raise KitError(f"compare: --out {rd.root} is one of the compared studies; choose another folder")
    rd.artifacts.mkdir(parents=True, exist_ok=True)
    kernel = ensure_kernel()
    manifest: dict[str, Any] = {
        "kind": "comparison",
        "study": rd.root.name,
        "status": "running",
        "started": now(),
        "ended": None,
        "studies": [
            {
                "study": s.name,
                "run_dir": str(s.run_dir),
                "index": os.path.relpath(RunDir(s.run_dir).index, rd.root),
                "seed": s.seed,
                "models": [s.renamed[m] for m in s.study_models],
                "git": (s.manifest or {}).get("git"),
                "started": (s.manifest or {}).get("started"),
                "evaluate": {k: s.evaluate.get(k) for k in ("splits", "limit", "scorers", "generation", "judge")},
            }
            for s in studies
        ],
        "git": git_info(),
        **environment_info(),
        "notebooks": [],
    }
    say = (lambda *_: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"comparing {', '.join(names)} → {rd.root}")
    entry = _entry(rd, "compare")
    name = entry["notebook"]
    params = {"params_path": "", "run_dir": str(rd.root), "overrides": [], "studies": [str(d) for d in dirs]}
    entry.update(
        execute_notebook(
            (Path(notebooks) if notebooks else notebooks_dir()) / name,
            rd.notebook("compare"),
            params,
            kernel=kernel,
            cwd=rd.root,
            timeout_s=timeout_s,
        )
    )
    if rd.notebook("compare").exists():
        render_html(rd.notebook("compare"), rd.html("compare"), False)
    manifest["notebooks"].append(entry)
    manifest["ended"] = now()
    manifest["status"] = "ok" if entry["status"] == "ok" else "failed"
    rd.write_manifest(manifest)
    atomic_write(rd.index, render_compare_index(manifest, rd))
    if entry["status"] != "ok":
        err = entry.get("error") or {}
        raise StudyFailed(
            f"notebook {name} {entry['status']}: {err.get('ename', 'Error')}: {err.get('evalue', '')}"
            f"\n  report: {rd.index}"
        )
    say(f"Report: {rd.index}")
    return manifest
