"""compare/ on fixtures of scores: primary scores, leaderboard order and CIs, deltas, findings, the refusal of
incomparable studies, and escaping of real Z-Bench answers that contain <script>."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from llm4academic import compare
from llm4academic.compare import CompareError
from llm4academic.scoring import SCORER_VERSION, bootstrap_ci, group_rng
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
    truncated: dict[str, list[bool]] | None = None,
    info: dict | None = None,
):
    """A finished study's report folder: manifest + evaluate artifacts (studied models' scores given, the 14
    reference models scored for real by the kit's scorers on the same items). ``truncated``: per model, each
    answer's flag (with its finish_reason); ``info``: more evaluate.json fields (generation, backend, …)."""
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
    if truncated is not None:
        ans["truncated"] = [bool(t) for m in ours for t in truncated[m]]
        ans["finish_reason"] = ans["truncated"].map({True: "length", False: "eos"})
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
                **(info or {}),
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


CUT = {  # basic ×4, advanced ×4, domain ×2 (ITEMS)
    "good": [1, 0, 0, 0, 1, 1, 0, 0, 0, 0],  # basic 1/4, advanced 2/4, domain 0/2, overall 3/10
    "bad": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],  # domain 2/2, overall 2/10
}


def test_truncation_per_model_and_split(tmp_path):
    run = make_study(tmp_path, "a", {"good": GOOD, "bad": BAD}, truncated=CUT)
    c = compare.compare([run], n_boot=100)
    t = c.truncation
    assert list(t.columns) == ["model", "split", "n", "truncated", "rate"]
    assert t.values.tolist() == [
        ["good", "basic", 4, 1, 0.25],
        ["good", "advanced", 4, 2, 0.5],
        ["good", "domain", 2, 0, 0.0],
        ["good", "overall", 10, 3, 0.3],
        ["bad", "basic", 4, 0, 0.0],
        ["bad", "advanced", 4, 0, 0.0],
        ["bad", "domain", 2, 2, 1.0],
        ["bad", "overall", 10, 2, 0.2],
    ]
    written = compare.write_artifacts(c, run)
    csv = run / "artifacts" / "compare" / "truncation.csv"
    assert csv in written and pd.read_csv(csv).values.tolist() == t.values.tolist()
    h = json.loads((run / "artifacts" / "compare" / "headline.json").read_text())
    share = {r["model"]: r["truncated"] for r in h["rows"]}
    assert (share["good"], share["bad"], share["GPT4"]) == (0.3, 0.2, None)  # reference answers: not generated here
    # older answers tables: finish_reason alone still tells; without either the flag is unknown (no rows)
    answers = pd.read_parquet(run / "artifacts" / "evaluate" / "answers.parquet")
    pd.testing.assert_frame_equal(compare.truncation(answers.drop(columns="truncated")), compare.truncation(answers))
    assert compare.truncation(answers.drop(columns=["truncated", "finish_reason"])).empty
    assert compare.truncation(answers.assign(finish_reason="").drop(columns="truncated")).empty
    old = compare.compare([make_study(tmp_path, "old", {"good": GOOD})], n_boot=100)
    assert old.truncation.empty and all(r["truncated"] is None for r in compare.headline(old)["rows"])


SETTINGS = {
    "generation": {"max_new_tokens": 128, "do_sample": False},
    "backend": "transformers",
    "templates": {"m": "alpaca", "m-tuned": "alpaca"},
}


def _settings(**changes):
    return {**SETTINGS, "scorer_version": SCORER_VERSION, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"generation": {"max_new_tokens": 64, "do_sample": False}},
            r"studies 'a' and 'b' generated with different max_new_tokens \(128 vs 64\): answers cut at different "
            r"lengths do not compare; set the same evaluate\.max_new_tokens and rerun the evaluate step",
        ),
        (
            {"generation": {"max_new_tokens": 128, "do_sample": True, "temperature": 0.7, "top_p": 1.0, "seed": 7}},
            r"studies 'a' and 'b' decoded differently \(do_sample False vs True\): set the same evaluate\.do_sample "
            r"and rerun the evaluate step",
        ),
        (
            {"backend": "vllm"},
            r"studies 'a' and 'b' generated with different backends \(transformers vs vllm\): .*set the same "
            r"evaluate\.backend",
        ),
        (
            {"templates": {"m": "belle", "m-tuned": "belle", "other": "plain"}},
            r"studies 'a' and 'b' prompted the same model\(s\) with different templates \(m: alpaca vs belle; "
            r"m-tuned: alpaca vs belle\): set the same template for them \(models\[\]\.template",
        ),
        (
            {"scorer_version": "0"},
            rf"studies 'a' and 'b' were scored by different scorer versions \({SCORER_VERSION} vs 0\): rerun the "
            r"evaluate step of "
            r"b with this kit",
        ),
    ],
    ids=["max_new_tokens", "decoding", "backend", "template", "scorer_version"],
)
def test_studies_generated_or_scored_differently_are_refused(tmp_path, changes, message):
    a = make_study(tmp_path, "a", {"m": GOOD}, info=_settings())
    b = make_study(tmp_path, "b", {"m": GOOD}, info=_settings(**changes))
    with pytest.raises(CompareError, match=message):
        compare.load_studies([a, b])
    with pytest.raises(CompareError, match=message.replace("'a' and 'b'", "'c' and 'b'")):
        compare.compare([make_study(tmp_path, "c", {"m": GOOD}, info=_settings()), b])


def test_sampling_settings_and_unknown_settings(tmp_path):
    sampling = {"max_new_tokens": 128, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 1}
    a = make_study(tmp_path, "a", {"m": GOOD}, info=_settings(generation=sampling))
    b = make_study(tmp_path, "b", {"m": GOOD}, info=_settings(generation={**sampling, "temperature": 1.0, "seed": 2}))
    with pytest.raises(
        CompareError,
        match=r"decoded differently \(temperature 0\.7 vs 1\.0\): set the same evaluate\.temperature and",
    ):
        compare.load_studies([a, b])
    # another seed alone is the same decoding; other model names may use other templates
    c = make_study(
        tmp_path, "c", {"x": GOOD}, info=_settings(generation={**sampling, "seed": 3}, templates={"x": "belle"})
    )
    assert [s.name for s in compare.load_studies([a, c])] == ["a", "c"]
    # an older study that recorded only do_sample (greedy): the rest is unknown, never a difference
    old = make_study(tmp_path, "old", {"m": BAD})
    greedy = {"max_new_tokens": 64, "do_sample": False}
    d = make_study(tmp_path, "d", {"m": GOOD}, info=_settings(generation=greedy, backend="vllm", scorer_version="9"))
    assert len(compare.load_studies([old, d])) == 2
    with pytest.raises(CompareError, match=r"'old' and 'a' decoded differently \(do_sample False vs True\)"):
        compare.load_studies([old, a])  # what it did record still counts
    prov = compare.compare([old, d], n_boot=50).provenance.set_index("study")
    assert (prov.loc["d", "backend"], prov.loc["d", "scorer_version"]) == ("vllm", "9")
    assert pd.isna(prov.loc["old", "backend"])


def test_index_page_shows_the_truncated_share_escaped(tmp_path):
    from conftest import SMOKE

    from llm4academic import pipeline
    from llm4academic.config import load_params, resolved_dict

    name = "<b>m</b>"
    run = make_study(tmp_path, "a", {name: GOOD, "bad": BAD}, truncated={name: CUT["good"], "bad": CUT["bad"]})
    compare.write_artifacts(compare.compare([run], n_boot=100), run)
    manifest = {
        "study": "a",
        "params": resolved_dict(load_params(SMOKE)),
        "seed": 7,
        "git": {"sha": "a" * 40, "dirty": False},
        **pipeline.environment_info(),
        "params_path": "params/smoke.yaml",
        "overrides": [],
        "data_files": [],
        "notebooks": [],
        "started": "2024-01-01T00:00:00",
        "ended": "2024-01-01T00:01:00",
        "status": "ok",
    }
    page = pipeline.render_index(manifest, run)
    table = page[page.index('<table id="leaderboard">') : page.index("</table>", page.index('id="leaderboard"'))]
    assert '<th title="answers cut at max_new_tokens">truncated</th>' in table
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt; ★" in table
    rows = {r.split("</td>")[1]: r for r in table.split("<tr")[2:]}  # by the model cell
    assert '<td class="num truncated">30.0 %</td>' in rows["<td><strong>&lt;b&gt;m&lt;/b&gt; ★</strong>"]
    assert '<td class="num truncated">20.0 %</td>' in rows["<td><strong>bad ★</strong>"]
    assert '<td class="num truncated">—</td>' in rows["<td>GPT4"]


def test_judge_means_and_the_leaderboard_without_flagged_items():
    scores = pd.DataFrame(
        {
            "item_id": ["basic-001", "basic-002", "basic-001", "basic-001"],
            "split": ["basic"] * 4,
            "model": ["m", "m", "m", "n"],
            "scorer": ["keyed", "keyed", "judge", "keyed"],
            "score": [1.0, 0.0, 0.75, 1.0],
            "against": ["reference", "reference", "reference", "reference"],
        }
    )
    judge = compare.judge_means(scores)
    assert judge.to_dict() == {"m": 0.75} and compare.judge_means(scores[scores["scorer"] != "judge"]) is None
    primary = compare.primary_scores(scores)
    assert set(primary["scorer"]) == {"keyed"}  # the judge never enters the primary score
    assert list(compare.without_flagged(primary, ["basic-002"])["item_id"]) == ["basic-001", "basic-001"]
    board = compare.leaderboard(primary, ["m", "n"], n_boot=100)
    wide = compare.wide_leaderboard(board, judge=judge)
    assert wide.loc["m", "judge (0-1)"] == "0.750" and wide.loc["n", "judge (0-1)"] == "—"


# --------------------------------------------------------------------------------------------- base → SFT → DPO

MIXED = [0, 1, 0, 1, 0, 1, 0, 1, 1, 0]  # mean 0.5
LINEAGE = {"x": BAD, "x-tuned": MIXED, "x-tuned-dpo": GOOD, "y": BAD, "y-dpo": GOOD}


def test_lineage_steps_deltas_with_paired_cis_and_kinds():
    p = compare.primary_scores(_scores(LINEAGE))
    assert compare.lineage_steps(list(LINEAGE)) == [
        ("base→sft", "x", "x-tuned"),
        ("sft→sft+dpo", "x-tuned", "x-tuned-dpo"),
        ("base→sft+dpo", "x", "x-tuned-dpo"),
        ("base→dpo", "y", "y-dpo"),
    ]
    assert compare.tuning_pairs(["a", "b-tuned", "c", "c-tuned"]) == [("c", "c-tuned")]  # unchanged without DPO
    assert compare.tuning_pairs(["z-dpo", "z-tuned-dpo"]) == []  # no start model present: no step
    deltas = compare.tuning_deltas(p, list(LINEAGE), seed=3, n_boot=500)
    overall = deltas[deltas["split"] == "overall"].set_index("step")
    assert list(overall.index) == ["base→sft", "sft→sft+dpo", "base→sft+dpo", "base→dpo"]
    assert list(overall["foundation"]) == ["x", "x", "x", "y"]
    assert list(overall["tuned"]) == ["x-tuned", "x-tuned-dpo", "x-tuned-dpo", "y-dpo"]
    wide = p.pivot_table(index="item_id", columns="model", values="score")  # items in the order paired_diff takes
    for step, row in overall.iloc[:3].iterrows():
        diffs = (wide[row["tuned"]] - wide[row["base"]]).to_numpy()
        _, low, high = bootstrap_ci(diffs, n_boot=500, rng=group_rng(3, row["tuned"], row["base"], "overall"))
        assert row["delta"] == pytest.approx(diffs.mean()), step
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high)) and row["separated"] == (
            low > 0 or high < 0
        )
        assert row["base_score"] == pytest.approx(wide[row["base"]].mean())
    assert overall["delta"].iloc[:3].tolist() == pytest.approx([0.3, 0.3, 0.6])
    assert overall.loc["base→dpo", "delta"] == pytest.approx(0.6) and overall.loc["base→dpo", "separated"]
    assert len(deltas) == 4 * 4  # three splits and overall per step
    kinds = compare.model_kinds([*LINEAGE, "GPT4"], list(LINEAGE))
    assert kinds == {"x": "study", "x-tuned": "tuned", "x-tuned-dpo": "tuned-dpo", "y": "study", "y-dpo": "dpo",
                     "GPT4": "reference"}  # fmt: skip


def test_base_sft_dpo_table_per_foundation_model():
    p = compare.primary_scores(_scores(LINEAGE))
    board = compare.leaderboard(p, list(LINEAGE), seed=1, n_boot=300)
    stages = compare.stage_scores(board, ["y", "y-dpo", "x-tuned-dpo", "x", "x-tuned"])
    assert stages[["foundation", "stage", "model"]].values.tolist() == [
        ["y", "base", "y"],
        ["y", "dpo", "y-dpo"],
        ["x", "base", "x"],
        ["x", "sft", "x-tuned"],
        ["x", "sft+dpo", "x-tuned-dpo"],
    ]
    assert stages.set_index("model").loc["x-tuned-dpo", "score"] == pytest.approx(0.8)
    deltas = compare.tuning_deltas(p, list(LINEAGE), seed=1, n_boot=300)
    table = compare.stage_table(stages, deltas)
    assert list(table.index) == ["y", "x"]
    assert list(table.columns) == ["base", "sft", "dpo", "sft+dpo", "base→sft", "sft→sft+dpo", "base→sft+dpo",
                                   "base→dpo"]  # fmt: skip
    x = board[(board["model"] == "x-tuned-dpo") & (board["split"] == "overall")].iloc[0]
    assert table.loc["x", "sft+dpo"] == f"0.800 [{x['ci_low']:.2f}, {x['ci_high']:.2f}]"
    assert table.loc["x", "dpo"] == "—" and table.loc["y", "sft"] == "—" and table.loc["y", "base→sft"] == "—"
    assert table.loc["y", "base→dpo"].startswith("+0.600 [+") and table.loc["y", "base→dpo"].endswith(" *")
    assert compare.stage_table(stages.iloc[:0], deltas).empty


def _pairwise(model, against, verdicts, consistent, items=ITEMS):
    score = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    return pd.DataFrame(
        {
            "item_id": items[: len(verdicts)],
            "split": [i.split("-")[0] for i in items[: len(verdicts)]],
            "model": model,
            "scorer": "pairwise_start",
            "score": [score[v] for v in verdicts],
            "against": against,
            "verdict": verdicts,
            "first": "A",
            "second": "B",
            "consistent": consistent,
        }
    )


def test_dpo_models_renamed_with_their_base_and_judged_against_their_start(tmp_path):
    from llm4academic.rundir import RunDir

    a = make_study(tmp_path, "a", {"m": BAD, "m-tuned": MIXED, "m-tuned-dpo": GOOD})
    b = make_study(tmp_path, "b", {"m": BAD, "m-dpo": GOOD})
    verdicts = ["win"] * 6 + ["tie"] * 2 + ["loss"] * 2
    consistent = [True] * 6 + [False, False] + [True, True]
    RunDir(a).write_evaluate_table(
        "pairwise",
        pd.concat(
            [
                _pairwise("m-tuned-dpo", "m-tuned", verdicts, consistent),
                _pairwise("m-tuned-dpo", "GPT4", ["loss"] * 10, [True] * 10).assign(scorer="pairwise"),
            ]
        ),
    )
    c = compare.compare([a, b], n_boot=400)
    assert c.studied == ["a/m", "a/m-tuned", "a/m-tuned-dpo", "b/m", "b/m-dpo"]  # renamed with their base
    kinds = dict(zip(c.board["model"], c.board["kind"], strict=True))
    assert (kinds["a/m-tuned-dpo"], kinds["b/m-dpo"], kinds["a/m"]) == ("tuned-dpo", "dpo", "study")
    steps = c.deltas[c.deltas["split"] == "overall"][["foundation", "step", "tuned"]].values.tolist()
    assert steps == [
        ["a/m", "base→sft", "a/m-tuned"],
        ["a/m", "sft→sft+dpo", "a/m-tuned-dpo"],
        ["a/m", "base→sft+dpo", "a/m-tuned-dpo"],
        ["b/m", "base→dpo", "b/m-dpo"],
    ]
    assert list(c.stages["foundation"].unique()) == ["a/m", "b/m"]
    # the judge's verdicts against the start model: the baseline is renamed with the study's models
    agreement = c.agreement.set_index("baseline")
    assert set(agreement.index) == {"a/m-tuned", "GPT4"} and agreement.loc["GPT4", "losses"] == 10
    row = c.dpo_vs_start.iloc[0]
    assert len(c.dpo_vs_start) == 1 and (row["model"], row["baseline"], row["step"]) == (
        "a/m-tuned-dpo",
        "a/m-tuned",
        "sft→sft+dpo",
    )
    assert (row["n"], row["wins"], row["ties"], row["losses"], row["inconsistent"]) == (10, 6, 2, 2, 2)
    assert row["win_rate"] == pytest.approx(0.7) and row["ci_low"] <= 0.7 <= row["ci_high"] < 1
    assert row["consistent_n"] == 8 and row["consistent_win_rate"] == pytest.approx(0.75)
    assert row["consistent_ci_low"] <= 0.75 <= row["consistent_ci_high"]
    assert row["order_consistency"] == pytest.approx(0.8)
    assert compare.start_pairwise(None, c.studied) is None
    assert compare.start_pairwise(_pairwise("x", "GPT4", ["win"], [True]), ["x"]) is None  # no DPO model
    # one hue per foundation model: SFT darker, SFT+DPO darker still, DPO from the base a lighter tint
    col = {m: np.asarray(c.colours[m]) for m in c.studied}
    assert np.allclose(col["a/m-tuned"], 0.6 * col["a/m"]) and np.allclose(col["a/m-tuned-dpo"], 0.35 * col["a/m"])
    assert np.allclose(col["b/m-dpo"], col["b/m"] + 0.45 * (1 - col["b/m"])) and not np.allclose(col["a/m"], col["b/m"])


def test_align_curves_and_held_out_table_join_the_comparison(tmp_path):
    from llm4academic.rundir import RunDir

    run = make_study(tmp_path, "a", {"m": BAD, "m-tuned": MIXED, "m-tuned-dpo": GOOD})
    rd = RunDir(run)
    rd.write_checkpoint_index([{"model": "m", "final": "unused"}])
    rd.metrics("m").parent.mkdir(parents=True)
    rd.metrics("m").write_text('{"step": 1, "loss": 2.0, "lr": 0.001}\n{"step": 2, "loss": 1.5, "lr": 0.0005}\n')
    rd.write_align_index([{"model": "m-tuned-dpo", "base": "m", "start": "m-tuned", "final": "unused"}])
    rd.align_metrics("m-tuned-dpo").parent.mkdir(parents=True)
    rows = [
        {"step": s, "loss": 0.69 - 0.1 * s, "lr": 1e-6, "rewards/accuracies": 0.5 + 0.1 * s, "rewards/margins": 0.1 * s,
         "kl/implicit": 0.01 * s, "logps/chosen": -10.0}
        for s in (1, 2, 3)
    ]  # fmt: skip
    rd.align_metrics("m-tuned-dpo").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame({"model": ["m-tuned", "m-tuned-dpo"], "accuracy": [0.5, 0.75]}).to_csv(rd.align_held_out, index=False)
    c = compare.compare([run], n_boot=100)
    curves = c.curves
    assert list(curves.columns) == ["model", "step", "metric", "value", "study", "run"]
    train = curves[curves["run"] == "train"]
    assert set(train["model"]) == {"m-tuned"} and set(train["metric"]) == {"loss", "lr"}
    align = curves[curves["run"] == "align"]
    assert set(align["model"]) == {"m-tuned-dpo"} and len(align) == 4 * 3
    assert set(align["metric"]) == {"DPO loss", "reward accuracy", "reward margin", "implicit KL"}
    acc = align[align["metric"] == "reward accuracy"].sort_values("step")["value"].tolist()
    assert acc == pytest.approx([0.6, 0.7, 0.8])
    assert c.held_out[["model", "accuracy", "study"]].values.tolist() == [
        ["m-tuned", 0.5, "a"],
        ["m-tuned-dpo", 0.75, "a"],
    ]
    assert compare.compare([make_study(tmp_path, "plain", {"m": GOOD})], n_boot=50).held_out is None
