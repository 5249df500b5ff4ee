import json

import pandas as pd
import pytest
from conftest import SMOKE

from llm4academic.config import load_params
from llm4academic.data import formats, stats
from llm4academic.rundir import RunDir


@pytest.mark.parametrize(
    "text,lang",
    [
        ("Give three tips for staying healthy.", "en"),
        ("给出三个保持健康的提示。", "zh"),
        ("题目：小明每天走 2 km to school", "zh"),
        ("東京はどこですか", "ja"),
        ("안녕하세요 세계", "ko"),
        ("12345 + 678", "und"),
        ("Ça va très bien", "en"),
    ],
)
def test_detect_language(text, lang):
    assert stats.detect_language(text) == lang


@pytest.fixture(scope="module")
def frame():
    params = load_params(
        SMOKE, ["data.sources[0].max_records=30", "data.sources[1].max_records=20", "data.sources[2].max_records=10"]
    )
    ds, reports = formats.load_sources(params)
    return stats.records_frame(ds), reports


def test_counts_languages_and_empty_inputs(frame):
    df, _ = frame
    per = stats.records_per_source(df)
    assert per.set_index("source")["records"].to_dict() == {"alpaca": 30, "chinese_alpaca": 20, "belle": 10}
    assert per["share"].sum() == pytest.approx(1)
    langs = stats.language_mix(df).set_index(["source", "language"])["share"]
    assert langs[("alpaca", "en")] == 1 and langs[("belle", "zh")] == 1
    empty = stats.empty_input_share(df).set_index("source")
    assert empty.loc["belle", "share"] == 1  # BELLE's school-math problems carry everything in the instruction
    assert empty.loc["alpaca", "empty_inputs"] == (df[df.source == "alpaca"]["input"] == "").sum()


def test_lengths_and_summary(frame, tiny_models):
    from llm4academic.config import ModelParams
    from llm4academic.models import load_tokenizer

    df, reports = frame
    chars = stats.char_lengths(df)
    assert len(chars) == 3 * len(df)
    assert chars.query("field == 'instruction'")["chars"].tolist() == df["instruction"].str.len().tolist()
    tok = load_tokenizer(ModelParams(name="l", path=str(tiny_models("llama"))))
    tokens = stats.token_lengths(df, {"l": tok})
    assert len(tokens) == 3 * len(df)
    one = df.iloc[0]
    assert tokens.query("field == 'output'")["tokens"].iloc[0] == len(
        tok(one["output"], add_special_tokens=False)["input_ids"]
    )
    cpt = stats.chars_per_token(chars, tokens)
    assert (cpt["chars_per_token"] > 0.5).all()
    summary = stats.explore_summary(df, chars, tokens, reports)
    back = json.loads(json.dumps(summary))
    assert back["records"] == 60 and {r["source"] for r in back["load"]} == {"alpaca", "chinese_alpaca", "belle"}
    table = stats.length_summary(chars, "chars", ["source", "field"])
    assert list(table.columns) == ["source", "field", "count", "mean", "min", "p50", "p90", "p99", "max"]
    assert isinstance(stats.load_table(reports), pd.DataFrame)


def test_write_explore_artifacts(frame, tmp_path):
    df, reports = frame
    chars = stats.char_lengths(df)
    written = stats.write_explore_artifacts(
        tmp_path / "a", stats.explore_summary(df, chars, None, reports), chars, None
    )
    assert [p.name for p in written] == ["summary.json", "char_lengths.csv"]
    assert json.loads(written[0].read_text())["records"] == 60
    assert not list(RunDir(tmp_path / "a").explore_dir.glob(".*partial"))
