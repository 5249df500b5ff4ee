"""The data layer end to end: load → clean → contamination → mix, and its artifacts."""

import json

import pytest
from conftest import SMOKE, write

from llm4academic import data
from llm4academic.config import load_params
from llm4academic.data.clean import column
from llm4academic.rundir import RunDir
from llm4academic.zbench import load_zbench

SMALL = [
    "data.sources[0].max_records=150",
    "data.sources[1].max_records=150",
    "data.sources[2].max_records=100",
    "data.clean.max_total_tokens=null",
]


@pytest.fixture(scope="module")
def zbench():
    return load_zbench()


def test_prepare_and_save_are_reproducible(tmp_path, zbench):
    params = load_params(SMOKE, SMALL)
    a = data.prepare(params, zbench=zbench)
    b = data.prepare(params, zbench=zbench)
    sa, sb = data.save(a, tmp_path / "a", params.seed), data.save(b, tmp_path / "b", params.seed)
    assert RunDir(tmp_path / "a").mix.read_bytes() == RunDir(tmp_path / "b").mix.read_bytes()
    assert sa["mix_sha256"] == sb["mix_sha256"]
    assert sa["records_loaded"] == 400 and sa["records_in_mix"] == len(a.mix) < sa["records_after_cleaning"] + 1
    taken = {d["source"]: d["taken"] for d in sa["mix"]}
    assert taken["alpaca"] == taken["chinese_alpaca"] and abs(taken["alpaca"] - 2 * taken["belle"]) <= 1  # 2:2:1
    for name in (
        "mix.jsonl",
        "mix_summary.json",
        "load_report.json",
        "clean_report.json",
        "contamination.json",
        "data_summary.json",
    ):
        assert (RunDir(tmp_path / "a").data_dir / name).is_file(), name
    steps = json.loads(RunDir(tmp_path / "a").clean_report.read_text())
    assert [s["step"] for s in steps] == ["exact_dedup", "near_dedup", "decontaminate"]
    first = json.loads(RunDir(tmp_path / "a").mix.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {
        "id",
        "source",
        "language",
        "instruction",
        "input",
        "output",
        "conversation",
        "chosen",
        "rejected",
    }


def test_planted_zbench_prompt_is_dropped_before_mixing(tmp_path, zbench):
    prompt = zbench.loc[zbench["split"] == "advanced", "prompt"].iloc[3]
    rows = [
        {
            "instruction": f"Question {i}: name a prime number above {i * 7}.",
            "input": "",
            "output": f"{i * 7 + 1} is not always prime; try checking divisors up to its square root.",
        }
        for i in range(20)
    ]
    rows[5]["input"] = prompt
    f = write(tmp_path / "planted.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    params = load_params(SMOKE, [*SMALL, "data.sources[2].path=" + str(f), "data.sources[2].max_records=null"])
    kept = data.prepare(params, zbench=zbench)
    assert "belle-000005" in kept.contamination.contaminated_ids()
    assert "belle-000005" not in column(kept.mix, "id")
    assert kept.clean_reports[-1].step == "decontaminate" and kept.clean_reports[-1].removed >= 1
    loose = data.prepare(
        load_params(
            SMOKE,
            [
                *SMALL,
                "data.sources[2].path=" + str(f),
                "data.sources[2].max_records=null",
                "data.decontaminate=false",
                "data.sources[2].weight=null",
            ],
        ),
        zbench=zbench,
    )
    assert "belle-000005" in column(loose.mix, "id")
    summary = data.save(loose, tmp_path / "art", 1)
    assert summary["contamination"]["records_in_mix"] >= 1
