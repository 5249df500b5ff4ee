"""`llm4academic bench`: the quick run's JSON schema (not its speed), the P5 GPU script's dry run, bad input."""

import json
import os
import statistics
import subprocess
import sys

import pytest
from conftest import ROOT

from benchmarks import harness as bench
from benchmarks.common import Goal
from llm4academic import cli
from llm4academic.base import KitError

CASE_KEYS = {
    "id",
    "name",
    "title",
    "status",
    "reason",
    "goal",
    "goals",
    "ratio",
    "value",
    "limit",
    "metrics",
    "checks",
    "passed",
    "repeats",
    "raw",
    "seconds",
}


def _run(*args, timeout=600):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def quick():
    proc = _run("-m", "llm4academic", "bench", "--quick", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # stdout holds the JSON object only; progress goes to stderr


@pytest.mark.slow
def test_quick_json_schema(quick):
    assert quick["schema"] == bench.SCHEMA and quick["quick"] is True
    assert quick["comparable_with_full_run"] is False and "not comparable" in quick["note"]  # --quick says so
    assert {"sha", "dirty"} <= set(quick["git"])
    assert {"torch", "transformers", "tokenizers", "datasets"} <= set(quick["versions"])
    assert quick["machine"]["cpu_count"] >= 1 and quick["machine"]["platform"] and quick["date"]
    assert list(quick["cases"]) == list(bench.CASES)  # every case, in order
    for cid, c in quick["cases"].items():
        assert CASE_KEYS <= set(c), cid
        assert c["id"] == cid and c["name"] and c["goal"] and c["goals"]
        assert c["status"] in ("ok", "skipped", "error"), (cid, c["reason"])
        assert c["status"] != "error", (cid, c["reason"], c["raw"].get("traceback"))
        assert c["passed"] in (True, False, None)
        if c["status"] == "ok":
            assert c["ratio"] is not None or c["value"] is not None, cid
            assert isinstance(c["passed"], bool) and c["repeats"] >= 1 and c["raw"], cid
            assert all(g["measured"] is not None and isinstance(g["met"], bool) for g in c["goals"]), cid
        else:
            assert c["passed"] is None and c["reason"], cid
    for cid in ("P1", "P2", "P3", "P4"):  # these always run on CPU
        assert quick["cases"][cid]["status"] == "ok"
    for cid in ("P1", "P3", "P4"):
        assert quick["cases"][cid]["repeats"] >= 3  # medians of at least three
    s = quick["summary"]
    assert sorted(s["met"] + s["missed"] + s["not_judged"]) == sorted(quick["cases"]) and s["errors"] == []


@pytest.mark.slow
def test_quick_run_checks_correctness_alongside_speed(quick):
    c = quick["cases"]
    assert c["P1"]["checks"]["labels_identical"] is True
    assert {"baseline", "kit", "bare"} == set(c["P1"]["raw"]["median_seconds"])
    assert c["P2"]["raw"]["packed"]["dropped_tokens"] == 0 and "truncated_tokens" in c["P2"]["raw"]
    assert c["P3"]["checks"]["loss_agrees"] is True
    assert c["P3"]["raw"]["loss_check"]["relative_difference"] <= 1e-4
    for cid in ("P1", "P2", "P3", "P4"):  # measured against their limit: the share is in the entry and in the metrics
        lim = c[cid]["limit"]
        assert lim["name"] and lim["value"] > 0 and lim["share"] == pytest.approx(c[cid]["metrics"]["share_of_limit"])
        if "per_repeat" in lim:  # a case's own shares (kit and limit timed in the same repeat): their median
            per = lim["per_repeat"]
            assert len(per) == c[cid]["repeats"] and lim["share"] == pytest.approx(statistics.median(per), rel=1e-3)
        else:  # the others: the measured ratio (or value) over the limit
            assert lim["share"] == pytest.approx(c[cid][lim["of"]] / lim["value"], rel=1e-3)
    assert "share_of_limit" in {g["metric"] for g in c["P3"]["goals"]}
    assert c["P3"]["raw"]["packed"]["peak_rss_mb"] > 0
    assert c["P4"]["checks"]["outputs_identical"] is True  # every path, the one on one thread too
    p4 = c["P4"]["raw"]  # the kit's CPU threads (the tests' one, from LLM4A_CPU_THREADS) for every timed path
    assert p4["torch_threads"] == int(os.environ["LLM4A_CPU_THREADS"]) and "batched_one_thread" in p4["seconds"]
    assert len(p4["thread_gain_per_repeat"]) == c["P4"]["repeats"]
    p5 = c["P5"]
    if p5["status"] == "skipped":  # no GPU: the dry run of benchmarks/gpu.py ran instead
        assert p5["checks"]["dry_run_ok"] is True and p5["raw"]["dry_run"]["dry_run"] is True
    p7 = c["P7"]  # the data step at scale: a 1/20 corpus in --quick, said to be not comparable
    assert p7["status"] == "ok" and p7["raw"]["quick"] is True and p7["raw"]["comparable"] is False
    assert p7["checks"]["exact_and_contamination_found"] is True and p7["checks"]["cached_run_identical"] is True
    assert p7["checks"]["near_recall_as_reference"] is True and p7["raw"]["first"]["unplanted_removed"] == 0
    assert p7["raw"]["corpus"]["records"] >= 50_000 and p7["metrics"]["cached_run_s"] < p7["metrics"]["first_run_s"]
    assert set(p7["raw"]["first"]["seconds"]) >= {"load", "exact_dedup", "near_dedup", "contamination", "mix"}
    assert c["P6"]["status"] in ("ok", "skipped")  # --quick never runs the study
    if c["P6"]["status"] == "ok":
        assert c["P6"]["raw"]["source"] == "manifest" and c["P6"]["raw"]["timestamp"]


@pytest.mark.slow
def test_table_has_a_row_per_case(quick):
    table = bench.format_table(quick)
    assert "quick run" in table and "not comparable with a full run" in table.splitlines()[0]
    assert "| vs limit |" in table and "(token-efficiency bound)" in table
    for cid in bench.CASES:
        assert f"| {cid} |" in table


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run(
        "benchmarks/gpu.py",
        "--dry-run",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--seq-len",
        "128",
        "--peak-tflops",
        "1",
        "--json-out",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res == json.loads(out.read_text())
    assert {
        "tokens_per_s_per_gpu",
        "mfu",
        "mfu_6n",
        "peak_memory_gib",
        "peak_memory_gb",
        "achieved_tflops_per_gpu",
        "flops_per_token",
        "step_time_s",
        "fsdp",
        "model",
        "attn_implementation",
        "packing_efficiency",
        "loss_first",
        "loss_last",
        "goal",
        "passed",
        "versions",
        "mfu_logged",
    } <= set(res)
    assert res["trainer"].startswith("llm4academic.train.launch")  # the kit's own trainer, not a side loop
    assert res["dry_run"] is True and res["device"] == "cpu" and res["passed"] is None  # the goal is a GPU's
    fsdp = res["fsdp"]  # read back from the run's summary: FSDP2 really wrapped the model on 2 processes
    assert fsdp["distributed_type"] == "FSDP" and fsdp["parameter_types"] == ["DTensor"] and fsdp["sharded"]
    assert res["world_size"] == 2 and res["packing"] is True and res["packing_efficiency"] > 0.5
    assert res["steps"] == 2 and len(res["step_time_s"]["all"]) == 2 and res["tokens_per_s_per_gpu"] > 0
    assert 0 < res["mfu"] < 1 and res["flops_per_token"] > 6 * res["model"]["matmul_parameters"]
    assert res["losses_finite"] and res["peak_memory_gb"] > 0


def test_unknown_case_is_a_clear_error():
    with pytest.raises(KitError, match="unknown bench case 'P9'.*P1 \\(preprocessing\\)"):
        bench.parse_cases("P1,P9")
    assert bench.parse_cases("p3, P1") == ["P1", "P3"]
    assert bench.parse_cases(None) == list(bench.CASES)
    proc = _run("-m", "benchmarks", "--case", "nope", timeout=120)
    assert proc.returncode == 2 and "unknown bench case 'NOPE'" in proc.stderr and not proc.stdout


def test_goal_target_is_written_once():
    """The JSON's goal text and the table's goal cell both come from the Goal's target."""
    assert Goal("x", ">=", 6.0, "×", "of it").text == "≥ 6× of it" and Goal("x", ">=", 0.7, "%").short == "≥ 70%"
    assert Goal("x", "<=", 300.0, "s").text == "≤ 5 minutes" and Goal("x", "<=", 300.0, "s").short == "≤ 300 s"
    assert bench.CASES["P1"].goal_cell == "≥ 90% · ≥ 1.6× · ≥ 5×"
    assert [g.text for g in bench.CASES["P1"].goals] == [
        "≥ 90% of the tokenizer's raw encode_batch speed, one process",
        "≥ 1.6× the raw encode_batch speed with 2 processes",
        "≥ 5× stanford's per-example preprocess with 2 processes",
    ]


def test_cli_bench_command():
    proc = _run("-m", "llm4academic", "bench", "--case", "P9", timeout=120)
    assert proc.returncode == 2 and "unknown bench case 'P9'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("-m", "llm4academic", "bench", "--help", timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--json" in proc.stdout


def test_an_installed_wheel_says_the_benchmarks_need_the_checkout(monkeypatch):
    monkeypatch.setattr(cli, "project_root", lambda: None)
    with pytest.raises(KitError, match="the benchmarks ship with the checkout"):
        cli.bench_harness()
