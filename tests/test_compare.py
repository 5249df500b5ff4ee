"""compare/ on fixtures of scores: primary scores, leaderboard order and CIs, deltas, findings, the refusal of
incomparable studies, and escaping of real Z-Bench answers that contain <script>."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from llm4academic import compare
from llm4academic.compare import CompareError
from llm4academic.scoring import bootstrap_ci, group_rng
from llm4academic.zbench import answers_long, load_zbench

ITEMS = [
    "basic-000",
    "basic-001",
    "basic-002",
    "basic-003",
    "advanced-000",
    "advanced-001",
    "advanced-002",
    "advanced-193",
    "domain-000",
    "domain-001",
]


def _scores(model_scores: dict[str, list[float]], items=ITEMS, scorer="contains") -> pd.DataFrame:
    rows = []
    for model, values in model_scores.items():
        for item, v in zip(items, values, strict=False):
            rows.append((item, item.split("-")[0], model, scorer, float(v), "reference"))
    return pd.DataFrame(rows, columns=["item_id", "split", "model", "scorer", "score", "against"])


def make_study(
    root,
    name,
    ours: dict[str, list[float]],
    *,
    items=ITEMS,
    scorers=("contains", "rouge_l"),
    seed=7,
    answers: dict[str, str] | None = None,
):
    """A finished study's report folder: manifest + evaluate artifacts (studied models' scores given, the 14
    reference models scored for real by the kit's scorers on the same items)."""
    from llm4academic.scoring import score_answers

    run = root / name
    ev = run / "artifacts" / "evaluate"
    ev.mkdir(parents=True)
    zb = load_zbench()
    zb = zb[zb["item_id"].isin(items)]
    theirs = score_answers(answers_long(zb), zb, list(scorers), fallback_model=None)
    scores = pd.concat([_scores(ours, items), theirs], ignore_index=True)
    scores.to_parquet(ev / "scores.parquet", index=False)
    ans = pd.DataFrame(
        [(i, i.split("-")[0], m, (answers or {}).get(m, f"answer of {m} to {i}")) for m in ours for i in items],
        columns=["item_id", "split", "model", "answer"],
    )
    ans.to_parquet(ev / "answers.parquet", index=False)
    (ev / "evaluate.json").write_text(
        json.dumps(
            {
                "models": list(ours),
                "scorers": list(scorers),
                "splits": ["basic", "advanced", "domain"],
                "limit": None,
                "item_ids": list(items),
                "generation": {"do_sample": False},
                "judge": None,
            }
        )
    )
    (run / "manifest.json").write_text(
        json.dumps({"study": name, "seed": seed, "params": {"name": name}, "git": {"sha": "a" * 40, "dirty": False}})
    )
    return run


GOOD = [1, 1, 1, 0, 1, 1, 1, 1, 1, 0]  # mean 0.8
BAD = [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]  # mean 0.2, never better than GOOD on an item


def test_primary_score_takes_the_most_specific_scorer():
    s = pd.concat(
        [
            _scores({"m": [0.3] * 3}, ITEMS[:3], "rouge_l"),
            _scores({"m": [1, 0, 1]}, ITEMS[:3], "contains"),
            _scores({"m": [0]}, ITEMS[:1], "option"),
        ],
        ignore_index=True,
    )
    s.loc[len(s)] = ("basic-009", "basic", "m", "rouge_l", 0.9, "GPT4")  # no reference: never counts
    p = compare.primary_scores(s).set_index("item_id")
    assert p.loc["basic-000", "scorer"] == "option" and p.loc["basic-000", "score"] == 0
    assert list(p.loc[["basic-001", "basic-002"], "scorer"]) == ["contains", "contains"]
    assert "basic-009" not in p.index and len(p) == 3


def test_leaderboard_order_ranks_and_bootstrap_ci(tmp_path):
    run = make_study(tmp_path, "a", {"good": GOOD, "bad": BAD})
    c = compare.compare([run], n_boot=500)
    overall = c.board[c.board["split"] == "overall"]
    assert list(overall["score"]) == sorted(overall["score"], reverse=True)  # best first
    good = overall.set_index("model").loc["good"]
    assert good["score"] == pytest.approx(0.8) and good["n"] == 10 and good["kind"] == "study"
    assert good["ci_low"] < 0.8 < good["ci_high"] and 0.4 <= good["ci_low"] and good["ci_high"] <= 1.0
    assert overall.set_index("model").loc["bad", "rank"] > good["rank"]
    assert set(c.board["split"]) == {"basic", "advanced", "domain", "overall"}
    assert set(overall.loc[overall["kind"] == "reference", "model"]) <= set(compare.REFERENCE_MODELS)
    # CIs are the seeded percentile bootstrap over items: a constant model has a zero-width interval
    c1 = compare.leaderboard(compare.primary_scores(_scores({"one": [1] * 10})), ["one"], seed=1)
    assert c1.loc[c1["split"] == "overall", ["score", "ci_low", "ci_high"]].iloc[0].tolist() == [1.0, 1.0, 1.0]


def test_same_inputs_same_numbers(tmp_path):
    run = make_study(tmp_path, "a", {"good": GOOD, "bad": BAD})
    a, b = compare.compare([run], n_boot=300), compare.compare([run], n_boot=300)
    pd.testing.assert_frame_equal(a.board, b.board)
    pd.testing.assert_frame_equal(a.findings, b.findings)
    other_seed = make_study(tmp_path, "b", {"good": GOOD, "bad": BAD}, seed=8)
    c = compare.compare([other_seed], n_boot=300)
    assert not np.allclose(a.board["ci_low"], c.board["ci_low"])  # the study's seed drives the bootstrap


def test_paired_difference_and_deltas():
    p = compare.primary_scores(_scores({"x": BAD, "x-tuned": GOOD}))
    d = compare.paired_diff(p, "x-tuned", "x", seed=3, n_boot=1000)
    diffs = np.array(GOOD) - np.array(BAD)
    assert d["n"] == 10 and d["delta"] == pytest.approx(diffs.mean())
    _, low, high = bootstrap_ci(diffs, n_boot=1000, rng=group_rng(3, "x-tuned", "x"))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((low, high)) and d["separated"] and low > 0
    same = compare.paired_diff(compare.primary_scores(_scores({"x": GOOD, "y": GOOD})), "x", "y")
    assert same["delta"] == 0 and not same["separated"]
    deltas = compare.tuning_deltas(p, ["x", "x-tuned"], seed=3)
    assert list(deltas["split"]) == ["basic", "advanced", "domain", "overall"]
    row = deltas.set_index("split").loc["overall"]
    assert row["base"] == "x" and row["tuned"] == "x-tuned" and row["delta"] == pytest.approx(0.6)
    assert row["base_score"] == pytest.approx(0.2) and row["tuned_score"] == pytest.approx(0.8)
    assert compare.tuning_pairs(["a", "b-tuned", "c", "c-tuned"]) == [("c", "c-tuned")]


def test_findings_best_runner_up_and_separation():
    zb = load_zbench()
    mixed = [0, 1, 0, 1, 0, 1, 0, 1, 1, 0]
    p = compare.primary_scores(_scores({"good": GOOD, "bad": BAD, "mixed": mixed}))
    f = compare.findings(p, zb, ["good", "bad", "mixed"], seed=0, min_tag_items=2)
    overall = f[f["facet"] == "overall"].iloc[0]
    assert overall["best"] == "good" and overall["runner_up"] == "mixed" and overall["items"] == 10
    assert overall["margin"] == pytest.approx(0.8 - 0.5) and overall["ci_low"] <= overall["margin"]
    assert list(f[f["facet"] == "split"]["value"]) == ["basic", "advanced", "domain"]
    # good vs bad: never worse on any item and better on six → the paired CI excludes zero
    vs_bad = compare.findings(p, zb, ["good", "bad"], seed=0)
    assert vs_bad.iloc[0]["separated"]
    # a tie on a split: margin 0, not separated
    domain = f[(f["facet"] == "split") & (f["value"] == "domain")].iloc[0]
    assert domain["margin"] == pytest.approx(0.5) or not domain["separated"]
    tags = f[f["facet"] == "tag"]
    assert len(tags) and (tags["items"] >= 2).all()
    text = compare.findings_text(f)
    assert text[0].startswith("overall: good 0.800 vs mixed 0.500") and "not separated" in text[0]
    solo = compare.findings(compare.primary_scores(_scores({"only": GOOD})), zb, ["only"])
    assert solo.iloc[0]["runner_up"] is None and "no other studied model" in compare.findings_text(solo)[0]


def test_several_studies_rename_models_and_keep_reference_once(tmp_path):
    a = make_study(tmp_path, "llama", {"base": GOOD, "base-tuned": GOOD})
    b = make_study(tmp_path, "bloom", {"base": BAD, "bloomz": BAD})
    c = compare.compare([a, b], n_boot=200)
    assert c.studied == ["llama/base", "llama/base-tuned", "bloom/base", "bloomz"]
    overall = c.board[c.board["split"] == "overall"].set_index("model")
    assert overall.loc["llama/base", "score"] == pytest.approx(0.8)
    assert overall.loc["bloom/base", "score"] == pytest.approx(0.2)
    assert (c.board.groupby(["model", "split"]).size() == 1).all()  # reference models once
    assert list(c.deltas["tuned"].unique()) == ["llama/base-tuned"]
    assert list(c.provenance["study"]) == ["llama", "bloom"]
    palette = c.colours
    assert len({palette[m] for m in c.studied}) == 4 and palette["GPT4"][0] == palette["GPT4"][2]  # grey


def test_incomparable_studies_are_refused(tmp_path):
    a = make_study(tmp_path, "a", {"m": GOOD})
    b = make_study(tmp_path, "b", {"m": GOOD[:8]}, items=ITEMS[:8])
    with pytest.raises(
        CompareError,
        match=r"studies 'a' and 'b' evaluated different Z-Bench slices \(10 vs 8 "
        r"items; only in a: domain-000, domain-001; only in b: none\)",
    ):
        compare.load_studies([a, b])
    c = make_study(tmp_path, "c", {"m": GOOD}, scorers=("contains",))
    with pytest.raises(CompareError, match="studies 'a' and 'c' used different scorers"):
        compare.load_studies([a, c])
    with pytest.raises(CompareError, match="the same study name appears twice: a"):
        compare.load_studies([a, a])
    with pytest.raises(CompareError, match="no Z-Bench evaluation found"):
        compare.load_studies([tmp_path / "nowhere"])


def test_cli_compare_refuses_before_running(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    a = make_study(tmp_path, "a", {"m": GOOD})
    b = make_study(tmp_path, "b", {"m": GOOD}, scorers=("contains", "option"))
    r = subprocess.run(
        [sys.executable, "-m", "llm4academic", "compare", str(a), str(b), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "used different scorers (contains, rouge_l vs contains, option)" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_length_bias_and_judge_agreement(tmp_path):
    run = make_study(tmp_path, "a", {"m": GOOD})
    c = compare.compare([run], n_boot=200)
    bias = c.bias.set_index("model")
    lengths = [len(f"answer of m to {i}") for i in ITEMS]
    assert bias.loc["m", "items"] == 10 and bias.loc["m", "median_chars"] == np.median(lengths)
    assert "(all answers)" in bias.index and -1 <= bias.loc["(all answers)", "spearman"] <= 1
    x = pd.Series([1, 2, 3, 4, 5])
    assert compare.spearman(x, x * 10) == pytest.approx(1) and compare.spearman(x, -x) == pytest.approx(-1)
    assert math.isnan(compare.spearman(x, pd.Series([1] * 5)))  # constant scores: undefined, not 0
    pairwise = pd.DataFrame(
        {
            "item_id": ITEMS[:4],
            "split": "basic",
            "model": "m",
            "scorer": "pairwise",
            "score": [1, 0.5, 0.5, 0],
            "against": "GPT4",
            "verdict": ["win", "tie", "tie", "loss"],
            "first": "A",
            "second": "A",
            "consistent": [True, False, True, True],
        }
    )
    agree = compare.judge_agreement(pairwise).iloc[0]
    assert (agree["wins"], agree["ties"], agree["losses"]) == (1, 2, 1)
    assert agree["order_consistency"] == pytest.approx(0.75) and agree["baseline"] == "GPT4"
    assert compare.judge_agreement(None) is None


def test_script_in_real_zbench_answers_is_escaped(tmp_path):
    """advanced-193 (a Flappy Bird page): several reference models answered with <script> tags."""
    zb = load_zbench()
    item = zb.set_index("item_id").loc["advanced-193"]
    assert "<script>" in item["GPT3.5"]
    run = make_study(tmp_path, "a", {"m": GOOD}, answers={"m": "<script>window.__pwned = 1</script><b>bold</b>"})
    c = compare.compare([run], n_boot=200)
    table = compare.sample_answers(c, ["advanced-193"], reference_models=["GPT3.5"])
    assert list(table.loc["advanced-193"].index) == ["(Z-Bench reference)", "m", "GPT3.5"]
    html = table.to_html()  # what the notebook shows (DataFrame._repr_html_ escapes the same way)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;!DOCTYPE html&gt;" in html  # GPT-3.5's page, as text
    with pytest.raises(CompareError, match="compare.examples: item.* basic-050 not in the compared Z-Bench slice"):
        compare.sample_answers(c, ["basic-050"])


def test_headline_and_artifacts(tmp_path):
    run = make_study(tmp_path, "a", {"good": GOOD, "bad": BAD})
    c = compare.compare([run], n_boot=200)
    written = compare.write_artifacts(c, run)
    assert {p.name for p in written} >= {"leaderboard.csv", "findings.csv", "deltas.csv", "headline.json"}
    h = json.loads((run / "artifacts" / "compare" / "headline.json").read_text())
    assert h["splits"] == ["basic", "advanced", "domain", "overall"] and h["seed"] == 7 and h["n_items"] == 10
    first = h["rows"][0]
    assert first["scores"]["overall"]["rank"] == 1 and len(h["rows"]) == 16  # 2 studied + 14 reference
    good = next(r for r in h["rows"] if r["model"] == "good")
    assert good["kind"] == "study" and good["scores"]["overall"]["score"] == 0.8
    assert h["findings"][0].startswith("overall: good 0.800 vs bad 0.200")
    assert not list((run / "artifacts" / "compare").glob(".*partial*"))


def test_compare_sits_below_the_runner_and_the_trainer():
    """DESIGN: compare/ never imports train.py (nor torch), and the runner (pipeline.py) sits above it."""
    import subprocess
    import sys

    code = (
        "import sys, llm4academic.compare; bad = [m for m in ('torch', 'llm4academic.train', "
        "'llm4academic.pipeline') if m in sys.modules]; assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
