"""Z-Bench's answer key: the shipped key covers every referenced item exactly once, and the loader refuses what
does not fit Z-Bench or the entry format, naming file:line."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, write

from llm4academic.answer_key import (
    ANSWER_TYPES,
    KEY_DIR,
    AnswerKeyError,
    load_answer_key,
    load_key_file,
    summary,
)
from llm4academic.zbench import load_zbench


@pytest.fixture(scope="module")
def zbench():
    return load_zbench()


@pytest.fixture(scope="module")
def key(zbench):
    return load_answer_key(zbench=zbench)


def test_every_referenced_item_has_exactly_one_entry(key, zbench):
    referenced = zbench[zbench["reference"].astype(str).str.strip() != ""]
    assert len(referenced) == 242
    assert list(key.entries) == list(referenced["item_id"])  # Z-Bench's order, nothing else
    assert {e.type for e in key.entries.values()} <= set(ANSWER_TYPES)


def test_entries_fit_their_items(key, zbench):
    prompts = zbench.set_index("item_id")["prompt"]
    for item_id, e in key.entries.items():
        if e.type == "option":  # the letter or number is one the prompt offers
            text = str(prompts[item_id]).replace("（", "(").replace("）", ")").replace("：", ":")
            marks = (
                f"({e.answer})",
                f"{e.answer}.",
                f"{e.answer}、",
                f"{e.answer}:",
                f"选项{e.answer}",
                f"{e.answer} ",
            )
            assert any(m in text for m in marks), (item_id, e.answer)
        if e.type == "number":
            assert e.value is not None and e.answer, item_id
        if e.type in ("rubric",):
            assert e.rubric and len(e.rubric) > 8, item_id


def test_summary_counts_every_entry(key):
    table = summary(key)
    assert int(table["items"].sum()) == len(key) == 242
    assert int(table["flagged"].sum()) == len(key.flagged)
    assert set(table.index) == {"basic", "advanced", "domain"}


ONE = "items:\n  basic-001:\n    type: entity\n    answer: 艾森豪威尔\n    accept: [Eisenhower]\n"


def test_a_valid_file_loads_with_where_each_entry_stands(tmp_path, zbench):
    entries, where = load_key_file(write(tmp_path / "k.yaml", ONE), zbench)
    assert entries["basic-001"].accept == ["Eisenhower"] and where["basic-001"].endswith("k.yaml:2")


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "  basic-000:\n    type: entity\n    answer: x\n",
            "'basic-000' is not a Z-Bench item with a reference answer",
        ),
        ("  basic-999:\n    type: entity\n    answer: x\n", "'basic-999' is not a Z-Bench item"),
        ("  basic-003:\n    type: essay\n    answer: x\n", "type: Input should be"),
        (
            "  basic-003:\n    type: entity\n    answer: x\n    aliases: [y]\n",
            "aliases: Extra inputs are not permitted",
        ),
        (
            "  basic-003:\n    type: option\n    answer: c\n",
            "one upper-case letter A–H or, for numbered options, one digit 1–9, got 'c'",
        ),
        ("  basic-003:\n    type: number\n    answer: '4'\n", "needs its numeric value"),
        ("  basic-003:\n    type: yes_no\n    answer: 'no'\n    polarity: 'yes'\n", "both 'yes' or both 'no'"),
        ("  basic-003:\n    type: yes_no\n    answer: no\n    polarity: no\n", "answer, polarity: quote the value"),
        ("  basic-003:\n    type: entity\n    answer: 4\n", "answer: Input should be a valid"),
        ("  basic-003:\n    type: rubric\n", "needs its rubric"),
        ("  basic-003:\n    type: entity\n    answer: x\n    accept: [y]\n    reject: [y]\n", "accepted and rejected"),
        ("  basic-003:\n    type: entity\n    answer: x\n    value: 3\n", "belong to number entries"),
        ("  basic-003:\n    type: ordered_list\n    answer: [a]\n", "two or more items"),
    ],
)
def test_bad_entries_are_refused_naming_file_and_line(tmp_path, zbench, body, message):
    path = write(tmp_path / "k.yaml", ONE + body)
    with pytest.raises(AnswerKeyError, match=r"k\.yaml:6: ") as err:
        load_key_file(path, zbench)
    assert message in str(err.value)


def test_an_item_twice_in_one_file_is_refused(tmp_path, zbench):
    path = write(tmp_path / "k.yaml", ONE + "  basic-001:\n    type: entity\n    answer: x\n")
    with pytest.raises(AnswerKeyError, match=r"k\.yaml:6: 'basic-001' appears twice \(first on line 2\)"):
        load_key_file(path, zbench)


def test_an_item_in_two_files_and_a_missing_item_are_refused(tmp_path, zbench):
    a, b = write(tmp_path / "a.yaml", ONE), write(tmp_path / "b.yaml", ONE)
    with pytest.raises(AnswerKeyError, match=r"b\.yaml:2: basic-001 already has an entry at .*a\.yaml:2"):
        load_answer_key([a, b], zbench)
    with pytest.raises(AnswerKeyError, match=r"241 referenced Z-Bench item\(s\) have no entry: basic-002"):
        load_answer_key([a], zbench)
    assert len(load_answer_key([a], zbench, complete=False)) == 1


@pytest.mark.parametrize("text", ["- a\n- b\n", "entries: {}\n", "items: [basic-001]\n"])
def test_a_file_without_an_items_mapping_is_refused(tmp_path, zbench, text):
    with pytest.raises(AnswerKeyError, match=r"k\.yaml:1: expected one top-level key `items:`"):
        load_key_file(write(tmp_path / "k.yaml", text), zbench)


def test_cli_zbench_key(tmp_path):
    run = [sys.executable, "-m", "llm4academic", "zbench", "key"]
    r = subprocess.run([*run, "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 242 and {"item_id", "type", "answer", "flag"} <= set(rows[0])
    bad = write(tmp_path / "bad.yaml", "items:\n  basic-000:\n    type: entity\n    answer: x\n")
    r = subprocess.run([*run, str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "bad.yaml:2: 'basic-000' is not a Z-Bench item" in r.stderr


def test_the_key_ships_inside_the_package():
    assert KEY_DIR.is_relative_to(ROOT / "llm4academic" / "resources")
