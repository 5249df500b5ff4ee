"""Benchmarks: the kit against stanford_alpaca's way, side by side in one process (``llm4academic bench``).

Absolute times on a shared machine are noise; ratios measured in the same process, on the same data and tokenizer,
interleaved repeat by repeat, are not. Every case runs the kit and its baseline ``repeats`` times and reports the
median of the per-repeat ratios together with the raw numbers. stanford_alpaca's method is the anchor: per-example
tokenisation run twice (full text, then the prompt alone), random batches padded to their longest member, generation
one prompt at a time.

One module per case (``p1_preprocess`` … ``p7_scale``), each with its ``CASE`` (id, name, title and goals), its
``run(ctx, sizes) -> dict`` and its table ``row(entry)``; benchmarks/README.md describes the cases. ``run(quick,
cases, progress)`` here returns one JSON-ready dict (schema ``llm4academic.bench/1``: provenance + one entry per
case); ``format_table`` renders it as a Markdown table. The command is ``llm4academic bench [--quick] [--json]
[--case P1,P3] [--out FILE]`` (or ``python -m benchmarks`` with the same flags).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from typing import Any

import datasets
import torch
from transformers.utils import logging as hf_logging

from llm4academic.base import KitError, git_info, setup_environment, usable_cpus
from llm4academic.threads import ENV, inference_threads

from . import p1_preprocess, p2_packing, p3_training, p4_generation, p5_gpu, p6_study, p7_scale
from .common import FULL, QUICK, Case, Context, Skip, fmt_limit, rnd, verdict
from .machine import cpu_model, load_average, memory_gb

SCHEMA = "llm4academic.bench/1"
QUICK_NOTE = "quick run: smaller sizes, fewer steps and no profiles; its ratios are not comparable with a full run's"
MODULES = {m.CASE.id: m for m in (p1_preprocess, p2_packing, p3_training, p4_generation, p5_gpu, p6_study, p7_scale)}
CASES: dict[str, Case] = {cid: m.CASE for cid, m in MODULES.items()}


def parse_cases(cases: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Case ids in run order; ``None`` = all. Unknown names are a ``KitError`` listing the cases."""
    if cases is None:
        return list(CASES)
    names = [c.strip() for c in cases.split(",")] if isinstance(cases, str) else [str(c).strip() for c in cases]
    names = [n.upper() for n in names if n]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        listed = ", ".join(f"{c.id} ({c.name})" for c in CASES.values())
        what = f"unknown bench case {', '.join(map(repr, unknown))}" if unknown else "no bench case given"
        raise KitError(f"{what}; the cases are: {listed}")
    return [c for c in CASES if c in names]


def provenance(quick: bool) -> dict:
    """What a reader needs to rerun and compare: code, versions, machine, date."""
    versions = {"python": platform.python_version()}
    for pkg in ("llm4academic", "torch", "transformers", "tokenizers", "datasets", "accelerate"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "comparable_with_full_run": not quick,
        "note": QUICK_NOTE if quick else None,
        "git": git_info(),
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": usable_cpus(),
            "memory_gb": memory_gb(),
            "torch_threads": torch.get_num_threads(),
            "inference_threads": inference_threads(),  # what the kit's CPU inference runs on (P4)
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_start": load_average(),
        },
        "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", ENV)},
    }


# --------------------------------------------------------------------------------------------- run


def _limit(body: dict) -> tuple[dict | None, float | None]:
    """The case's limit (``common.limit``) with the share of it that was measured."""
    lim = body.get("limit")
    if not lim:
        return None, None
    measured = body.get(lim.get("of", "ratio"))
    share = lim.get("share")  # the case's own (e.g. the median of per-repeat shares), else measured / limit
    if share is None:
        share = measured / lim["value"] if measured is not None and lim["value"] else None
    return {**lim, "value": rnd(lim["value"]), "share": rnd(share)}, share


def _finish(case: Case, body: dict, status: str, reason: str | None, seconds: float) -> dict:
    lim, share = _limit(body)
    metrics = body.get("metrics", {}) | ({"share_of_limit": share} if share is not None else {})
    checks = body.get("checks", {})
    goals = [
        {**g.to_dict(), "measured": rnd(metrics.get(g.metric), 4), "met": g.met(metrics.get(g.metric))}
        for g in case.goals
    ]
    if status != "ok":
        passed = False if status == "error" else None
    else:
        verdicts = [g["met"] for g in goals]
        passed = None if None in verdicts else all(verdicts) and all(v is True for v in checks.values())
    return {
        "id": case.id,
        "name": case.name,
        "title": case.title,
        "status": status,
        "reason": reason,
        "goal": " and ".join(g.text for g in case.goals),
        "goals": goals,
        "ratio": rnd(body.get("ratio")),
        "value": rnd(body.get("value")),
        "limit": lim,
        "metrics": {k: rnd(v) for k, v in metrics.items()},
        "checks": checks,
        "passed": passed,
        "repeats": body.get("repeats", 0),
        "raw": body.get("raw", {}),
        "seconds": round(seconds, 2),
    }


def _run_case(cid: str, ctx: Context, quick: bool) -> dict:
    t0 = time.perf_counter()
    try:
        body, status, reason = MODULES[cid].run(ctx, QUICK if quick else FULL), "ok", None
    except Skip as s:
        body = {"raw": s.args[1] if len(s.args) > 1 else {}}
        body["checks"] = {"dry_run_ok": body["raw"]["dry_run_ok"]} if "dry_run_ok" in body["raw"] else {}
        status, reason = "skipped", s.args[0]
    except Exception as e:
        body, status = {"raw": {"traceback": traceback.format_exc(limit=8)}}, "error"
        reason = f"{type(e).__name__}: {e}"
    return _finish(CASES[cid], body, status, reason, time.perf_counter() - t0)


def run(quick: bool = False, cases: list[str] | str | None = None, progress: Callable[[str], Any] = print) -> dict:
    """Run the benchmark cases (all by default) and return one JSON-ready dict: provenance, then ``cases`` (by id)
    with each case's goal(s), ratio / value, checks, ``passed`` (null when not judged), raw numbers and repeats."""
    ids = parse_cases(cases)
    setup_environment()
    t_start = time.perf_counter()
    result: dict[str, Any] = {"schema": SCHEMA, **provenance(quick), "cases": {}}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    ctx = Context(progress)
    try:
        for cid in ids:
            progress(f"{cid} {CASES[cid].name}: {CASES[cid].title}")
            entry = result["cases"][cid] = _run_case(cid, ctx, quick)
            progress(f"  → {verdict(entry)} ({entry['seconds']:.0f} s)")
    finally:
        if bars:
            datasets.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()
    entries = result["cases"].values()
    result["summary"] = {
        "met": [c["id"] for c in entries if c["passed"] is True],
        "missed": [c["id"] for c in entries if c["passed"] is False and c["status"] == "ok"],
        "not_judged": [c["id"] for c in entries if c["passed"] is None],
        "errors": [c["id"] for c in entries if c["status"] == "error"],
    }
    result["machine"]["load_average_end"] = load_average()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    return result


# --------------------------------------------------------------------------------------------- table


def _row(c: dict) -> list[str]:
    """case · what · kit · baseline · result · vs limit · goal · check · met: the case's own row (all but "vs limit",
    which comes from the entry's ``limit``), else a generic one."""
    if c["status"] == "error":
        return [c["id"], c["title"], "error", "", c["reason"][:80], "", c["goal"], "", "error"]
    own = MODULES[c["id"]].row(c) if c["id"] in MODULES else None
    own = own or [c["id"], c["title"], c["status"], "", (c["reason"] or "")[:120], c["goal"], "", verdict(c)]
    return [*own[:5], fmt_limit(c.get("limit")), *own[5:]]


def format_table(result: dict) -> str:
    """The run as Markdown: a provenance line, one row per case, and what the ratios mean."""
    mach, ver, git = result["machine"], result["versions"], result.get("git") or {}
    sha = (git.get("sha") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    gpu = mach.get("gpu") or "no GPU"
    inference = f" (inference {mach['inference_threads']})" if mach.get("inference_threads") else ""
    head = (
        f"llm4academic bench ({QUICK_NOTE if result['quick'] else 'full run'}) · {result['date']} · git {sha} · "
        f"{mach.get('cpus_usable')} of {mach.get('cpu_count')} CPUs ({mach.get('cpu') or mach.get('machine')}), "
        f"{gpu}, torch threads {mach.get('torch_threads')}{inference} · "
        f"load average {mach.get('load_average_start')} → {mach.get('load_average_end')} · "
        f"torch {ver.get('torch')}, transformers {ver.get('transformers')}, "
        f"tokenizers {ver.get('tokenizers')}, datasets {ver.get('datasets')} · {result.get('seconds')} s"
    )
    cols = ["case", "what is measured", "kit", "baseline", "result", "vs limit", "goal", "check", "goal met"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in result["cases"].values():
        lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in _row(c)) + " |")
    reps = sorted({c["repeats"] for c in result["cases"].values() if c["repeats"]})
    lines += [
        "",
        f"Ratios are medians of per-repeat ratios (kit and baseline interleaved in one run, in one process but for "
        f"P1's stanford baseline, timed in a process of its own; repeats: "
        f"{', '.join(map(str, reps)) or '–'}); raw numbers in --json. "
        "vs limit: the measured result as a share of the best the case could reach (its bound).",
    ]
    return "\n".join(lines)
