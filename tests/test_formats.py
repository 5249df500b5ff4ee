import gzip
import json

import pytest

from conftest import SAMPLES, write
from llm4academic.data.formats import COLUMNS, RECORD_FEATURES, DataError, load_file

ALPACA = SAMPLES / "alpaca" / "alpaca_data.first1825.json"
ZH = SAMPLES / "chinese_alpaca" / "alpaca_data-0-3252-zh.first2000.json"
BELLE = SAMPLES / "belle" / "dev1K.json"


def rec(**kw):
    return json.dumps({"instruction": "Say hi", "input": "", "output": "hi", **kw}, ensure_ascii=False)


def test_shipped_alpaca_json_array():
    ds, rep = load_file(ALPACA, source="alpaca", on_invalid="skip")
    assert (rep.layout, rep.format, rep.read) == ("json-array", "alpaca", 1825)
    # The real file holds 4 records whose output is empty (fixed later by alpaca-cleaned): counted, not hidden.
    assert rep.skipped == {"empty:output": 4} and rep.kept == 1821 == len(ds)
    assert rep.examples[0].startswith(f"{ALPACA}:1422: field 'output' is empty")
    assert ds.features == RECORD_FEATURES and tuple(ds.column_names) == COLUMNS
    first = ds[0]
    assert first["instruction"] == "Give three tips for staying healthy."
    assert (first["id"], first["source"], first["language"], first["conversation"]) == ("alpaca-000000", "alpaca",
                                                                                        "en", [])


def test_shipped_chinese_and_belle_jsonl_named_json():
    zh, rep = load_file(ZH, source="zh", on_invalid="skip", max_records=50)
    assert rep.kept == 50 and set(zh["language"]) == {"zh"}
    belle, rep = load_file(BELLE, source="belle")
    assert (rep.layout, rep.kept, rep.skipped) == ("jsonl", 1000, {})
    assert belle[0]["instruction"].startswith("题目：小明每天早上花费10分钟")


def test_default_on_invalid_is_error_with_file_line():
    with pytest.raises(DataError) as e:
        load_file(ALPACA, source="alpaca")
    assert str(e.value).startswith(f"{ALPACA}:1422: field 'output' is empty")
    assert "data.on_invalid: skip" in str(e.value)


def test_gzip_jsonl_and_missing_input(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(gzip.compress((json.dumps({"instruction": "a", "output": "b"}) + "\n\n" + rec() + "\n").encode()))
    ds, rep = load_file(p, source="g")
    assert rep.layout == "jsonl" and len(ds) == 2 and ds[0]["input"] == ""


@pytest.mark.parametrize("line,expected,reason", [
    ('{"instruction": "a", "output": ', "malformed JSON", "malformed_json"),
    ('{"instruction": "a", "input": ""}', "missing field 'output' (expected a string)", "missing:output"),
    ('{"instruction": 3, "output": "b"}', "field 'instruction' is int, expected a string", "wrong_type:instruction"),
    ('{"instruction": "  ", "output": "b"}', "field 'instruction' is empty", "empty:instruction"),
    ('["a", "b"]', "expected a JSON object, got list", "not_an_object"),
])
def test_bad_jsonl_lines(tmp_path, line, expected, reason):
    p = write(tmp_path / "bad.jsonl", "\n".join([rec(), rec(), line, rec()]) + "\n")
    with pytest.raises(DataError) as e:
        load_file(p, source="s")
    assert str(e.value).startswith(f"{p}:3: {expected}")
    ds, rep = load_file(p, source="s", on_invalid="skip")
    assert len(ds) == 3 and rep.read == 4 and rep.skipped == {reason: 1}
    assert rep.examples == [f"{p}:3: {str(e.value).split(': ', 1)[1].split(' (alpaca format')[0]}"]


def test_malformed_json_array_names_line(tmp_path):
    p = write(tmp_path / "arr.json", "[\n" + rec() + ",\n" + rec() + ",\n{\"instruction\": oops}\n]\n")
    with pytest.raises(DataError, match=rf"{p}:4: malformed JSON array element"):
        load_file(p, source="s", on_invalid="skip")  # an array cannot be resynchronised: always an error
    q = write(tmp_path / "arr2.json", "[" + rec() + " " + rec() + "]")
    with pytest.raises(DataError, match="expected ',' or ']'"):
        load_file(q, source="s")


def test_non_utf8_and_unknown_format(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes((rec() + "\n" + rec(output="caf\xe9") + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=rf"{p}:2: not valid UTF-8 \(byte 0xe9"):
        load_file(p, source="s")
    q = write(tmp_path / "chat.jsonl", json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    with pytest.raises(DataError) as e:
        load_file(q, source="s")
    assert f"{q}:1: no known format fits this file. Fields found: completion, prompt" in str(e.value)
    assert "Known formats: alpaca (instruction, output)" in str(e.value)
    with pytest.raises(DataError, match="unknown format 'firefly'"):
        load_file(q, source="s", fmt="firefly")
    with pytest.raises(DataError, match="holds no records"):
        load_file(write(tmp_path / "empty.json", "[]"), source="s")


def test_max_records_keeps_first_valid_ones(tmp_path):
    p = write(tmp_path / "x.jsonl", "\n".join([rec(output=""), rec(output="1"), rec(output="2"), rec(output="3")]))
    ds, rep = load_file(p, source="s", on_invalid="skip", max_records=2)
    assert ds["output"] == ["1", "2"] and rep.kept == 2 and rep.skipped == {"empty:output": 1}
    ds, _ = load_file(p, source="s", on_invalid="skip", language="fr")
    assert set(ds["language"]) == {"fr"}
