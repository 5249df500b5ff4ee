"""The evaluation step: base + tuned models answer a Z-Bench slice, scored next to the 14 reference models."""

import json

import pandas as pd
import pytest
from conftest import SMOKE, write

from llm4academic import evaluate
from llm4academic.config import load_params
from llm4academic.zbench import REFERENCE_MODELS

FAST = ["evaluate.limit=2", "evaluate.max_new_tokens=6", "evaluate.batch_size=4"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    params = load_params(SMOKE, FAST)
    return run_dir, evaluate.run(params, run_dir, progress=False)


def test_seed_layout_csvs(evaluated):
    run_dir, result = evaluated
    out = run_dir / "artifacts" / "evaluate"
    for split in ("basic", "advanced", "domain"):
        table = pd.read_csv(out / f"zbench_{split}.csv", keep_default_na=False)
        assert list(table.columns) == ["Prompt", "任务类型", "参考回答", "tiny-llama", "tiny-bloom", *REFERENCE_MODELS]
        assert len(table) == 2 and table["任务类型"].str.startswith("`").all()
    first = pd.read_csv(out / "zbench_basic.csv", keep_default_na=False).iloc[0]
    assert first["Prompt"] == "谁是蝙蝠侠" and "蝙蝠侠" in first["GPT4"]


def test_scores_and_summary(evaluated):
    run_dir, result = evaluated
    scores = pd.read_parquet(run_dir / "artifacts" / "evaluate" / "scores.parquet")
    assert {"item_id", "split", "model", "scorer", "score", "against"} <= set(scores.columns)
    assert set(scores["model"]) >= {"tiny-llama", "tiny-bloom", "GPT4"}
    summary = result["summary"]
    assert {"overall", "basic", "advanced", "domain"} <= set(summary["split"])
    assert ((summary["ci_low"] <= summary["score"] + 1e-9) & (summary["score"] <= summary["ci_high"] + 1e-9)).all()
    info = json.loads((run_dir / "artifacts" / "evaluate" / "evaluate.json").read_text())
    assert info["models"] == ["tiny-llama", "tiny-bloom"] and info["items"] == 6
    assert all(c["generated"] + c["cached"] == 6 for c in info["cache"])


def test_rerun_uses_the_cache_and_tuned_models_join(evaluated, tmp_path):
    run_dir, _ = evaluated
    again = evaluate.run(load_params(SMOKE, FAST), run_dir, progress=False)
    assert all(c["generated"] == 0 and c["cached"] == 6 for c in again["info"]["cache"])
    final = run_dir / "artifacts" / "train" / "tiny-llama" / "final"
    final.mkdir(parents=True)
    write(
        run_dir / "artifacts" / "train" / "checkpoints.json",
        json.dumps({"models": [{"model": "tiny-llama", "final": str(final)}]}),
    )
    names = [m.name for m in evaluate.evaluated_models(load_params(SMOKE, FAST), run_dir)]
    assert names == ["tiny-llama", "tiny-bloom", "tiny-llama-tuned"]
    assert [m.name for m in evaluate.evaluated_models(load_params(SMOKE, [*FAST, "evaluate.base=false"]), run_dir)] == [
        "tiny-llama-tuned"
    ]


def test_judge_grades_and_pairwise_both_orders(tmp_path):
    params = load_params(
        SMOKE,
        [
            *FAST,
            "evaluate.splits=[basic]",
            "evaluate.base=true",
            "evaluate.judge.model=tiny-llama",
            "evaluate.judge.baseline=GPT4",
        ],
    )
    result = evaluate.run(params, tmp_path, progress=False)
    judged = result["judge"]
    assert set(judged["model"]) == {"tiny-llama", "tiny-bloom"} and judged["judge_expected"].between(1, 10).all()
    pairwise = result["pairwise"]
    assert set(pairwise["verdict"]) <= {"win", "tie", "loss"} and "consistent" in pairwise
    assert not pairwise.loc[~pairwise["consistent"].astype(bool), "verdict"].ne("tie").any()  # inconsistent → tie
    summary = {r["model"]: r for r in result["info"]["pairwise"]}
    assert set(summary) == {"tiny-llama", "tiny-bloom"} and all(0 <= r["position_bias"] <= 1 for r in summary.values())
    assert {"judge", "pairwise"} <= set(result["scores"]["scorer"])
    assert (tmp_path / "artifacts" / "evaluate" / "pairwise.parquet").is_file()


def test_answers_say_whether_they_were_cut_and_scores_carry_it(evaluated):
    """max_new_tokens=6 cuts the tiny models' answers: the answers table says so per answer, the scores carry the
    flag (reference models' shipped answers: never cut), evaluate.json records what compare checks."""
    from llm4academic.scoring import SCORER_VERSION

    run_dir, result = evaluated
    answers = pd.read_parquet(run_dir / "artifacts" / "evaluate" / "answers.parquet")
    assert set(answers["model"]) == {"tiny-llama", "tiny-bloom"} and answers["truncated"].dtype == bool
    assert set(answers["finish_reason"]) <= {"eos", "length"} and answers["truncated"].any()
    assert list(answers["truncated"]) == list(answers["finish_reason"] == "length")
    assert answers.loc[answers["truncated"], "new_tokens"].eq(6).all()
    scores = pd.read_parquet(run_dir / "artifacts" / "evaluate" / "scores.parquet")
    judged = scores["scorer"].isin(["judge", "pairwise"])  # the judge's rows: flag unknown (<NA>) for now
    assert str(scores["truncated"].dtype) == "boolean" and scores["truncated"].isna().eq(judged).all()
    scores = scores[~judged]
    flag = answers.set_index(["item_id", "model"])["truncated"]
    ours = scores[scores["model"].isin(flag.index.get_level_values("model"))]
    assert list(ours["truncated"]) == [flag[(i, m)] for i, m in zip(ours["item_id"], ours["model"], strict=True)]
    assert not scores.loc[scores["model"].isin(REFERENCE_MODELS), "truncated"].any()
    info = json.loads((run_dir / "artifacts" / "evaluate" / "evaluate.json").read_text())
    assert info["backend"] == "transformers" and info["scorer_version"] == SCORER_VERSION
    assert info["templates"] == {"tiny-llama": "alpaca", "tiny-bloom": "alpaca"}
    assert info["generation"] == {"max_new_tokens": 6, "do_sample": False}
