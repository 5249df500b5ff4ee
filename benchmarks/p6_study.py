"""P6: wall time of the default study (params/smoke.yaml), per notebook. ``--quick`` does not run it: it reads the
newest reports/<study>/manifest.json instead."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

from llm4academic.base import project_root
from llm4academic.pipeline import run_study

from .common import Case, Context, Goal, Sizes, Skip, fmt_n, rnd, verdict, yes
from .machine import free_port

CASE = Case(
    "P6",
    "study_wall_time",
    "wall time of the default study (params/smoke.yaml) after set-up",
    (Goal("wall_s", "<=", 300.0, "s"),),
)


def study_numbers(manifest: dict) -> dict:
    notebooks = [
        {"notebook": nb.get("notebook"), "status": nb.get("status"), "duration_s": nb.get("duration_s")}
        for nb in manifest.get("notebooks", [])
    ]
    return {
        "status": manifest.get("status"),
        "notebooks": notebooks,
        "sum_of_notebooks_s": rnd(sum(nb["duration_s"] or 0 for nb in notebooks), 1),
        "started": manifest.get("started"),
        "ended": manifest.get("ended"),
        "git": manifest.get("git"),
        "only": manifest.get("only"),
    }


def _span_s(manifest: dict) -> float | None:
    try:
        a, b = (dt.datetime.fromisoformat(manifest[k]) for k in ("started", "ended"))
    except (KeyError, TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def _measure(ctx: Context, path: Path) -> dict:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="llm4a-bench-study-"))
    ctx.progress(f"  P6: the default study into {tmp} (takes a few minutes) …")
    try:
        t0 = time.perf_counter()
        manifest = run_study(path, [f"train.main_process_port={port}"], reports_dir=tmp, quiet=True)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nums = study_numbers(manifest)
    return {
        "value": wall,
        "metrics": {"wall_s": wall},
        "checks": {"study_ok": manifest.get("status") == "ok"},
        "repeats": 1,
        "raw": {
            "source": "run",
            "wall_s": rnd(wall, 1),
            "params": "params/smoke.yaml",
            "overrides": [f"train.main_process_port={port}"],
            **nums,
        },
    }


def run(ctx: Context, sz: Sizes) -> dict:
    path, params = ctx.smoke_params()
    if sz.p6_run:
        return _measure(ctx, path)
    manifest_path = (project_root() or Path.cwd()) / "reports" / params.name / "manifest.json"
    if not manifest_path.is_file():
        raise Skip(
            f"--quick does not run the study (a few minutes) and there is no {manifest_path} to read: "
            "run `make study` or the bench without --quick"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    nums = study_numbers(manifest)
    base = {"source": "manifest", "manifest": str(manifest_path), "timestamp": manifest.get("ended"), **nums}
    if (
        manifest.get("status") != "ok"
        or not nums["notebooks"]
        or any(nb["status"] != "ok" or nb["duration_s"] is None for nb in nums["notebooks"])
    ):
        raise Skip(
            f"{manifest_path}: not every notebook of the study ran ok (status {manifest.get('status')}), so "
            "it gives no study time",
            base,
        )
    reused = [nb.get("notebook") for nb in manifest.get("notebooks", []) if nb.get("from_previous_run")]
    span = _span_s(manifest)
    if manifest.get("only") or span is None:  # a partial rerun: its notebooks' times, some from earlier runs
        wall, kind = nums["sum_of_notebooks_s"], "sum of the notebooks' durations"
    else:
        wall, kind = span, "manifest start → end"
    return {
        "value": wall,
        "metrics": {"wall_s": wall},
        "checks": {"study_ok": True},
        "repeats": 1,
        "raw": {
            **base,
            "wall_s": rnd(wall, 1),
            "wall_from": kind,
            "notebooks_from_previous_runs": reused,
            "note": "read from the newest default-study report, not measured in this run",
        },
    }


def row(c: dict) -> list[str] | None:
    if c["status"] != "ok":
        return None
    raw = c["raw"]
    nbs = ", ".join(
        f"{nb['notebook'].split('_')[0]} {nb['duration_s']:.0f} s"
        for nb in raw["notebooks"]
        if nb.get("duration_s") is not None
    )
    src = (
        "measured now"
        if raw["source"] == "run"
        else f"not measured now: {raw['wall_from']} in the manifest of {raw.get('timestamp')}"
    )
    return [
        c["id"],
        f"default study wall time (params/smoke.yaml), {src}",
        f"{fmt_n(c['value'])} s ({nbs})",
        "",
        f"{fmt_n(c['value'])} s",
        CASE.goal_cell,
        f"study ok: {yes(c['checks'].get('study_ok'))}",
        verdict(c),
    ]
