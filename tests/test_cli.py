"""The data commands of the CLI: catalogue, formats, inspect (exit codes and output)."""

import json
import subprocess
import sys

from conftest import ROOT, SAMPLES, write


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "llm4academic", *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )


def test_data_catalog_and_formats():
    r = cli("data", "catalog")
    assert r.returncode == 0 and "Alpaca" in r.stdout and "hh-rlhf" in r.stdout and "CC BY-NC 4.0" in r.stdout
    rows = json.loads(cli("data", "catalog", "--json").stdout)
    assert len(rows) == 13 and {"name", "languages", "licence", "link", "format"} <= set(rows[0])
    r = cli("data", "formats")
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == [
        "alpaca",
        "seed_tasks",
        "firefly",
        "sharegpt",
        "oig",
        "hh_rlhf",
        "dolly",
        "gpt4all",
    ]


def test_data_inspect_clean_file_exits_0():
    r = cli("data", "inspect", SAMPLES / "belle" / "dev1K.json", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["format"], info["layout"], info["records"], info["invalid_total"]) == ("alpaca", "jsonl", 1000, 0)
    assert info["languages"] == {"zh": 1000}


def test_data_inspect_reports_invalid_records_and_exits_1():
    r = cli("data", "inspect", SAMPLES / "alpaca" / "alpaca_data.first1825.json")
    assert r.returncode == 1
    assert "records: 1,821 of 1,825 read" in r.stdout and "empty:output: 4" in r.stdout
    assert "alpaca_data.first1825.json:1422: field 'output' is empty" in r.stdout


def test_data_inspect_unreadable_file_exits_2(tmp_path):
    f = write(tmp_path / "x.jsonl", json.dumps({"question": "q", "answer": "a"}) + "\n")
    r = cli("data", "inspect", f)
    assert r.returncode == 2 and f"error: {f}:1: no known format fits this file" in r.stderr
    assert "Fields found: answer, question" in r.stderr and "Traceback" not in r.stderr


def test_models_catalog():
    r = cli("models", "catalog")
    assert r.returncode == 0 and "LlamaDecoderLayer" in r.stdout and "BloomBlock" in r.stdout
    cards = json.loads(cli("models", "catalog", "--json").stdout)
    assert {c["name"] for c in cards} == {"llama", "bloom", "opt", "t5", "glm", "chatglm"}


def test_zbench_leaderboard_headline_json():
    r = cli("zbench", "leaderboard", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 14 and rows[0]["model"] == "GPT4" and rows[0]["overall"]["rank"] == 1
    assert set(rows[0]) == {"model", "basic", "advanced", "domain", "overall"}
    assert set(rows[0]["overall"]) == {"score", "ci_low", "ci_high", "rank", "n"}


def test_zbench_leaderboard_json_schema():
    r = cli("zbench", "leaderboard", "--split", "domain", "--by-scorer", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(set(row) >= {"model", "split", "scorer", "n", "score", "ci_low", "ci_high"} for row in rows)
    assert {row["split"] for row in rows} == {"domain", "overall"}
    assert len({row["model"] for row in rows}) == 14
