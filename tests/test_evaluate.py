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


def test_dpo_models_join_from_the_align_index_and_face_their_start_model(tmp_path):
    """The align step's DPO models are evaluated with their base model's params, and the judge compares each with
    the model its DPO run started from, in both orders (scorer pairwise_start), besides the configured baseline."""
    from llm4academic.models import build_tiny, resolve_model_path
    from llm4academic.rundir import RunDir

    rd = RunDir(tmp_path)
    rd.write_checkpoint_index([{"model": "tiny-llama", "final": resolve_model_path("tiny:llama")}])
    dpo = build_tiny("llama", tmp_path / "dpo-final", seed=1)
    rd.write_align_index(
        [
            {"model": "tiny-llama-tuned-dpo", "base": "tiny-llama", "start": "tiny-llama-tuned", "final": str(dpo)},
            {"model": "tiny-bloom-dpo", "base": "tiny-bloom", "start": "tiny-bloom", "final": str(tmp_path / "gone")},
        ]
    )
    judged = [*FAST, "evaluate.splits=[basic]", "evaluate.judge.model=tiny-llama", "evaluate.judge.baseline=GPT4"]
    params = load_params(SMOKE, judged)
    models = evaluate.evaluated_models(params, tmp_path)
    assert [m.name for m in models] == ["tiny-llama", "tiny-bloom", "tiny-llama-tuned", "tiny-llama-tuned-dpo"]
    same = {"name": "x", "path": "y"}  # the base model's params otherwise (template, card, dtype)
    assert models[-1].path == str(dpo) and models[-1].model_copy(update=same) == models[0].model_copy(update=same)
    off = evaluate.evaluated_models(load_params(SMOKE, [*FAST, "evaluate.aligned=false"]), tmp_path)
    assert [m.name for m in off] == ["tiny-llama", "tiny-bloom", "tiny-llama-tuned"]
    assert evaluate.dpo_starts(params, tmp_path, ["tiny-llama-tuned-dpo"]) == {}  # its start did not answer

    result = evaluate.run(params, tmp_path, progress=False)
    assert result["info"]["models"] == [m.name for m in models]
    assert result["info"]["judge"]["starts"] == {"tiny-llama-tuned-dpo": "tiny-llama-tuned"}
    pairwise = result["pairwise"]
    vs_gpt4, vs_start = pairwise[pairwise["scorer"] == "pairwise"], pairwise[pairwise["scorer"] == "pairwise_start"]
    assert set(vs_gpt4["against"]) == {"GPT4"} and set(vs_gpt4["model"]) <= {m.name for m in models}
    answered = result["answers"].pivot_table(index="item_id", columns="model", values="answer", aggfunc="first")
    both = answered[["tiny-llama-tuned-dpo", "tiny-llama-tuned"]].apply(lambda c: c.str.strip() != "").all(axis=1)
    assert len(vs_start) == int(both.sum()) > 0 and set(vs_start["model"]) == {"tiny-llama-tuned-dpo"}
    assert set(vs_start["against"]) == {"tiny-llama-tuned"}
    assert set(vs_start["first"]) | set(vs_start["second"]) <= {"A", "B"}  # both orders asked
    assert (vs_start["verdict"] == "tie").eq(~vs_start["consistent"].astype(bool)).all()  # inconsistent → tie
    summary = {(r["model"], r["baseline"]): r for r in result["info"]["pairwise"]}
    assert summary[("tiny-llama-tuned-dpo", "tiny-llama-tuned")]["n"] == len(vs_start)
    assert "pairwise_start" in set(result["summary"]["scorer"])  # summarised apart from the baseline's verdicts


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
