"""A reduced study (evaluate + compare on five Z-Bench items, tiny models, CPU) run twice: the same params and seed
give the same leaderboard; the page shows real Z-Bench answers with <script> as text; two finished studies
compare in one report (`llm4academic compare`)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, SMOKE

from llm4academic.pipeline import render_index, run_study

pytestmark = pytest.mark.slow

ITEMS = "[basic-000, basic-001, advanced-000, advanced-193, domain-000]"
REDUCED = [
    "steps=[evaluate, compare]",
    "evaluate.limit=null",
    f"evaluate.items={ITEMS}",
    "evaluate.max_new_tokens=8",
    "evaluate.judge={model: tiny-llama, baseline: GPT3.5}",
    "compare.examples=[advanced-193]",
    "compare.reference_models=[GPT3.5]",
    "compare.n_boot=300",
]


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    a = run_study(SMOKE, [*REDUCED, "name=repro-a"], reports_dir=reports, quiet=True)
    b = run_study(SMOKE, [*REDUCED, "name=repro-b"], reports_dir=reports, quiet=True)
    return reports, a, b


def test_same_params_and_seed_same_leaderboard(twice):
    reports, a, b = twice
    assert a["status"] == b["status"] == "ok" and a["seed"] == b["seed"] == 42
    ra, rb = reports / "repro-a", reports / "repro-b"
    board_a = pd.read_csv(ra / "artifacts/compare/leaderboard.csv")
    board_b = pd.read_csv(rb / "artifacts/compare/leaderboard.csv")
    assert len(board_a) == 16 * 4 and set(board_a["model"]) >= {"tiny-llama", "tiny-bloom", "GPT3.5"}
    pd.testing.assert_frame_equal(board_a, board_b)  # scores and bootstrap intervals, to the last digit
    for name in ("findings.csv", "primary_scores.csv", "judge_agreement.csv", "deltas.csv", "by_tag.csv"):
        frames = [pd.read_csv(r / "artifacts/compare" / name).drop(columns="study", errors="ignore") for r in (ra, rb)]
        pd.testing.assert_frame_equal(*frames, obj=name)
    answers_a = pd.read_parquet(ra / "artifacts/evaluate/answers.parquet")
    answers_b = pd.read_parquet(rb / "artifacts/evaluate/answers.parquet")
    assert list(answers_a["answer"]) == list(answers_b["answer"])  # regenerated, not copied: same text
    ha = json.loads((ra / "artifacts/compare/headline.json").read_text())
    hb = json.loads((rb / "artifacts/compare/headline.json").read_text())
    # basic-000 has no reference and advanced-193 (code) is a judge's: the keyed primary score counts 3 items
    assert ha["rows"] == hb["rows"] and ha["seed"] == 42 and ha["n_items"] == 3


def test_report_states_the_seed_and_flags_a_dirty_tree(twice):
    reports, a, _ = twice
    run_dir = reports / "repro-a"
    assert "seed <code>42</code>" in (run_dir / "index.html").read_text()
    dirty = {**a, "git": {"sha": "0" * 40, "dirty": True}}
    clean = {**a, "git": {"sha": "0" * 40, "dirty": False}}
    assert "dirty tree: uncommitted changes" in render_index(dirty, run_dir)
    assert "dirty tree" not in render_index(clean, run_dir)
    page = (run_dir / "05_compare_models.html").read_text()
    assert "bootstrap seed <strong>42</strong>" in page


@pytest.mark.browser
def test_script_in_zbench_answers_renders_as_text(twice, tmp_path):
    """advanced-193 asks for a Flappy Bird page: GPT-3.5's answer is HTML with a <script> that declares globals
    (`var bird`, `var gravity`). The comparison page shows it as text; a browser does not run it."""
    from browser import Browser

    reports, _, _ = twice
    page_path = reports / "repro-a" / "05_compare_models.html"
    page = page_path.read_text()
    assert "&lt;script&gt; var bird = document.getElementById" in page
    assert "<script> var bird" not in page and '<div id="bird">' not in page
    with Browser() as b:
        report = b.check(page_path, tmp_path / "compare.png", {"figures": "img", "tables": "table.dataframe"})
        assert b.evaluate("typeof window.gravity") == "undefined"  # GPT-3.5's script never ran
        assert b.evaluate("document.getElementById('bird')") is None
    assert report.problems() == [], report.problems()
    assert "<script> var bird = document.getElementById('bird');" in report.inner_text  # visible, as text


def test_compare_two_finished_studies(twice):
    reports, _, _ = twice
    out = reports / "compare-ab"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4academic",
            "compare",
            str(reports / "repro-a"),
            str(reports / "repro-b"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    headline = json.loads((out / "artifacts/compare/headline.json").read_text())
    studied = {row["model"] for row in headline["rows"] if row["kind"] != "reference"}
    assert studied == {"repro-a/tiny-llama", "repro-a/tiny-bloom", "repro-b/tiny-llama", "repro-b/tiny-bloom"}
    scores = {row["model"]: row["scores"]["overall"]["score"] for row in headline["rows"]}
    assert scores["repro-a/tiny-llama"] == scores["repro-b/tiny-llama"]  # same study, run twice
    index = (out / "index.html").read_text()
    assert 'id="studies"' in index and "repro-a" in index and 'id="leaderboard"' in index
    assert json.loads((out / "manifest.json").read_text())["kind"] == "comparison"
