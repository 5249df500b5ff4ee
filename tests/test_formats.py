import gzip
import json
from pathlib import Path

import datasets
import pytest
from conftest import SAMPLES, write

from llm4academic.config import FORMAT_NAMES
from llm4academic.data.formats import (
    COLUMNS,
    DETECTION_ORDER,
    FORMATS,
    RECORD_FEATURES,
    DataError,
    detect_format,
    inspect_file,
    iter_raw,
    load_file,
)

ALPACA = SAMPLES / "alpaca" / "alpaca_data.first1825.json"
ZH = SAMPLES / "chinese_alpaca" / "alpaca_data-0-3252-zh.first2000.json"
BELLE = SAMPLES / "belle" / "dev1K.json"
FIXTURES = Path(__file__).parent / "fixtures" / "instruct"
SEED = FIXTURES / "alpaca" / "seed_tasks.first30.jsonl"
FIREFLY = FIXTURES / "firefly" / "dummy_data.first10.jsonl"
SHAREGPT = FIXTURES / "sharegpt" / "dummy_conversation.first30.json"
OIG = FIXTURES / "oig" / "unified_joke_explanations.slice30.jsonl"
HH = FIXTURES / "hh_rlhf" / "helpful-base-test.slice28.jsonl.gz"


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
    assert (first["id"], first["source"], first["language"], first["conversation"]) == (
        "alpaca-000000",
        "alpaca",
        "en",
        [],
    )
    assert set(ds["chosen"]) == set(ds["rejected"]) == {""}


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


@pytest.mark.parametrize(
    "line,expected,reason",
    [
        ('{"instruction": "a", "output": ', "malformed JSON", "malformed_json"),
        ('{"instruction": "a", "input": ""}', "missing field 'output' (expected a string)", "missing:output"),
        (
            '{"instruction": 3, "output": "b"}',
            "field 'instruction' is int, expected a string",
            "wrong_type:instruction",
        ),
        ('{"instruction": "  ", "output": "b"}', "field 'instruction' is empty", "empty:instruction"),
        ('["a", "b"]', "expected a JSON object, got list", "not_an_object"),
    ],
)
def test_bad_jsonl_lines(tmp_path, line, expected, reason):
    p = write(tmp_path / "bad.jsonl", "\n".join([rec(), rec(), line, rec()]) + "\n")
    with pytest.raises(DataError) as e:
        load_file(p, source="s")
    assert str(e.value).startswith(f"{p}:3: {expected}")
    ds, rep = load_file(p, source="s", on_invalid="skip")
    assert len(ds) == 3 and rep.read == 4 and rep.skipped == {reason: 1}
    assert rep.examples == [f"{p}:3: {str(e.value).split(': ', 1)[1].split(' (alpaca format')[0]}"]


def test_malformed_json_array_names_line(tmp_path):
    p = write(tmp_path / "arr.json", "[\n" + rec() + ",\n" + rec() + ',\n{"instruction": oops}\n]\n')
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
    with pytest.raises(DataError, match="unknown format 'guanaco'"):
        load_file(q, source="s", fmt="guanaco")
    with pytest.raises(DataError, match="holds no records"):
        load_file(write(tmp_path / "empty.json", "[]"), source="s")


def test_max_records_keeps_first_valid_ones(tmp_path):
    p = write(tmp_path / "x.jsonl", "\n".join([rec(output=""), rec(output="1"), rec(output="2"), rec(output="3")]))
    ds, rep = load_file(p, source="s", on_invalid="skip", max_records=2)
    assert ds["output"] == ["1", "2"] and rep.kept == 2 and rep.skipped == {"empty:output": 1}
    ds, _ = load_file(p, source="s", on_invalid="skip", language="fr")
    assert set(ds["language"]) == {"fr"}


# --------------------------------------------------------------------------------------------- formats and detection


def test_format_names_and_detection_order():
    assert tuple(FORMATS) == FORMAT_NAMES and sorted(DETECTION_ORDER) == sorted(FORMAT_NAMES)
    with pytest.raises(DataError) as e:
        detect_format({"b": 1, "a": 2}, "f.jsonl:1")
    assert str(e.value).startswith("f.jsonl:1: no known format fits this file. Fields found: a, b. Known formats: ")
    assert "; firefly (conversation | kind, input, target); " in str(e.value)
    assert FORMATS["firefly"].required == ("conversation",)  # the first signature, for one-signature callers


@pytest.mark.parametrize(
    "path,fmt",
    [
        (ALPACA, "alpaca"),
        (BELLE, "alpaca"),
        (SEED, "seed_tasks"),
        (FIREFLY, "firefly"),
        (SHAREGPT, "sharegpt"),
        (OIG, "oig"),
        (HH, "hh_rlhf"),
    ],
)
def test_each_real_sample_fits_exactly_one_format(path, fmt):
    """The signatures are disjoint on real data: detection does not depend on the order for them."""
    _, rows = iter_raw(path)
    for _, obj in rows:
        assert [f.name for f in FORMATS.values() if f.fits(obj)] == [fmt]


def test_detection_prefers_structured_fields_over_bare_text():
    # Hugging Face's tatsu-lab/alpaca adds a formatted `text` column; dolly and gpt4all records may carry one too.
    assert detect_format({"instruction": "a", "input": "", "output": "b", "text": "x"}, "f:1").name == "alpaca"
    assert detect_format({"instruction": "a", "response": "b", "text": "x"}, "f:1").name == "dolly"
    assert detect_format({"prompt": "a", "response": "b", "text": "x"}, "f:1").name == "gpt4all"
    assert detect_format({"text": "<human>: a\n<bot>: b"}, "f:1").name == "oig"


# --------------------------------------------------------------------------------------------- real samples (fixtures)


def load_clean(path, fmt):
    ds, rep = load_file(path, source=fmt)
    assert (rep.format, rep.skipped) == (fmt, {}) and rep.kept == len(ds)
    assert ds.features == RECORD_FEATURES and len(set(ds["id"])) == len(ds)
    return ds, rep


def roles(rec):
    return [t["role"] for t in rec["conversation"]]


def test_seed_tasks_fixture_one_record_per_instance():
    ds, rep = load_clean(SEED, "seed_tasks")
    assert (rep.layout, rep.read, rep.kept) == ("jsonl", 30, 30)  # every seed task here has one instance
    first = ds[0]
    assert first["instruction"].startswith("Is there anything I can eat for a breakfast that doesn't include eggs")
    assert first["input"] == "" and first["output"].startswith("Yes, you can have 1 oatmeal banana protein shake")
    assert ds[1]["input"] == "Night : Day :: Right : Left" and first["conversation"] == []
    assert set(ds["language"]) == {"en"}


def test_seed_tasks_several_instances_and_max_records(tmp_path):
    task = {
        "id": "t",
        "name": "n",
        "instruction": "Add.",
        "is_classification": False,
        "instances": [{"input": "1+1", "output": "2"}, {"input": "2+2", "output": "4"}, {"output": "0"}],
    }
    p = write(tmp_path / "seed.jsonl", json.dumps(task) + "\n" + json.dumps(task) + "\n")
    ds, rep = load_file(p, source="s")
    assert (rep.read, rep.kept) == (2, 6) and ds["id"][:3] == ["s-000000", "s-000001", "s-000002"]
    assert ds["input"][:3] == ["1+1", "2+2", ""] and set(ds["instruction"]) == {"Add."}
    ds, rep = load_file(p, source="s", max_records=4)
    assert (rep.read, rep.kept, len(ds)) == (2, 4, 4) and ds["output"] == ["2", "4", "0", "2"]


def test_firefly_fixture_multi_turn():
    ds, rep = load_clean(FIREFLY, "firefly")
    assert (rep.layout, rep.read, rep.kept) == ("jsonl", 10, 10)
    first = ds[0]
    assert first["instruction"] == "如何保障工作中遵循正确的安全准则？" and first["input"] == ""
    assert first["output"].startswith("为了保障工作中遵循正确的安全准则，以下是一些建议")
    assert roles(first) == ["user", "assistant"] * 5 and first["conversation"][2]["content"] == "如何应对突发紧急情况？"
    assert first["conversation"][1]["content"] == first["output"] and first["language"] == "zh"
    assert [len(c) for c in ds["conversation"]] == [10, 8, 8, 8, 10, 10, 10, 8, 8, 10]


def test_firefly_flat_1_1m_layout(tmp_path):
    rec = {"kind": "Couplet", "input": "对联：春风得意", "target": "秋月扬辉"}
    p = write(tmp_path / "firefly.jsonl", json.dumps(rec, ensure_ascii=False) + "\n")
    ds, rep = load_file(p, source="f")
    assert rep.format == "firefly" and ds[0]["instruction"] == "对联：春风得意" and ds[0]["output"] == "秋月扬辉"
    assert (ds[0]["input"], ds[0]["conversation"], ds[0]["language"]) == ("", [], "zh")


def test_sharegpt_fixture_json_array():
    ds, rep = load_clean(SHAREGPT, "sharegpt")
    assert (rep.layout, rep.read, rep.kept) == ("json-array", 30, 30)
    first = ds[0]
    assert (first["instruction"], first["input"]) == ("Who are you?", "")
    assert first["output"] == (
        "I am Vicuna, a language model trained by researchers from Large Model Systems Organization (LMSYS)."
    )
    assert roles(first) == ["user", "assistant"] * 2 and first["conversation"][3]["content"] == "You too!"
    assert sorted({len(c) for c in ds["conversation"]}) == [2, 4, 6]


def test_sharegpt_speaker_names_and_system_turn(tmp_path):
    turns = [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("chatgpt", "Hello"),
        ("human", "Again"),
        ("bing", "Hi"),
        ("human", "More"),
        ("bard", "Yes"),
        ("human", "Last"),
        ("assistant", "Ok"),
    ]
    obj = {"id": "x", "conversations": [{"from": f, "value": v} for f, v in turns]}
    ds, _ = load_file(write(tmp_path / "s.json", json.dumps([obj])), source="s")
    assert roles(ds[0]) == ["system"] + ["user", "assistant"] * 4
    assert (ds[0]["instruction"], ds[0]["output"]) == ("Hi", "Hello")


def test_oig_fixture_named_bot_tag():
    ds, rep = load_clean(OIG, "oig")
    assert (rep.layout, rep.read, rep.kept) == ("jsonl", 30, 30)
    first = ds[0]
    assert first["instruction"] == "Why is this joke funny? Q: What does a computer do when it is tired? A: It crashes!"
    assert first["output"].startswith("Did your computer ever stop working (freeze)")
    assert {tuple(roles(r)) for r in ds} == {("user", "assistant")}
    # Lines 185 and 252: "Q:"/"A:" at a line start belong to the human turn; only "Rosey:" is a speaker tag.
    assert ds[28]["instruction"].endswith(
        "\nQ:What do you call a very fast llama?\nA:A Llamaghini! Why is this joke funny?"
    )
    assert ds[29]["instruction"].endswith("A: It was rated arrrrrgh!\nA: It was rated arrrrrgh!")
    assert ds[29]["output"].startswith("In the U. S. there is a system of rating movies:")


def test_oig_bot_tags_multi_turn(tmp_path):
    text = "<human>: What is 2+2?\n<bot>: 4.\n<human>: And 3+3?\n<bot>: 6."
    ds, _ = load_file(write(tmp_path / "o.jsonl", json.dumps({"text": text, "metadata": {"source": "x"}})), source="o")
    assert [(t["role"], t["content"]) for t in ds[0]["conversation"]] == [
        ("user", "What is 2+2?"),
        ("assistant", "4."),
        ("user", "And 3+3?"),
        ("assistant", "6."),
    ]


def test_hh_rlhf_fixture_preference_pairs():
    ds, rep = load_clean(HH, "hh_rlhf")
    assert (rep.layout, rep.read, rep.kept) == ("jsonl", 28, 28)
    first = ds[0]
    assert first["instruction"] == "Do you know why turkeys became the official food of thanksgiving?"
    assert (
        first["chosen"].startswith("To be honest, I don’t know anything about that.")
        and first["output"] == first["chosen"]
    )
    assert first["rejected"].startswith("I know that the American Indians were the first to celebrate")
    assert roles(first) == ["user", "assistant"] and first["conversation"][-1]["content"] == first["chosen"]
    assert all(r["conversation"][-1]["content"] == r["chosen"] != r["rejected"] for r in ds)
    # Line 121: an empty reply inside the shared prompt, and an empty rejected reply; line 741: empty rejected.
    assert roles(ds[20]) == ["user", "assistant"] * 3 and ds[20]["conversation"][3]["content"] == ""
    assert (ds[20]["chosen"], ds[20]["rejected"], ds[24]["rejected"]) == ("The sky’s the limit!", "", "")
    # Line 169: the rejected reply went on with "\n\nAssistant:" — one reply, not a new turn; line 1167: the chosen.
    assert (
        ds[21]["rejected"].startswith("A complete list would be quite long")
        and "Alright, let’s see" in ds[21]["rejected"]
    )
    assert ds[26]["chosen"] == (
        "Umm. Just a second...\n\nA solar panel should cost about $50 to $80, depending on the size and quality."
    )
    assert not any("\n\nAssistant:" in r["chosen"] + r["rejected"] for r in ds)


def test_dolly_and_gpt4all_synthetic(tmp_path):
    dolly = {
        "instruction": "Summarise the text.",
        "context": "Dolly is a sheep.",
        "response": "A sheep.",
        "category": "summarization",
    }
    ds, rep = load_file(write(tmp_path / "d.jsonl", json.dumps(dolly) + "\n"), source="d")
    assert rep.format == "dolly" and (ds[0]["instruction"], ds[0]["input"], ds[0]["output"]) == (
        "Summarise the text.",
        "Dolly is a sheep.",
        "A sheep.",
    )
    ds, rep = load_file(write(tmp_path / "g.json", json.dumps([{"prompt": "Hi?", "response": "Hello."}])), source="g")
    assert rep.format == "gpt4all" and (ds[0]["instruction"], ds[0]["input"], ds[0]["output"]) == ("Hi?", "", "Hello.")


def test_all_formats_concatenate(tmp_path):
    files = (ALPACA, SEED, FIREFLY, SHAREGPT, OIG, HH)
    parts = [load_file(p, source=p.parent.name, on_invalid="skip")[0] for p in files]
    ds = datasets.concatenate_datasets(parts)
    assert len(ds) == 1821 + 30 + 10 + 30 + 30 + 28 and tuple(ds.column_names) == COLUMNS


def test_inspect_file(tmp_path):
    info = inspect_file(HH)
    assert info == {
        "path": str(HH),
        "format": "hh_rlhf",
        "layout": "jsonl",
        "read": 28,
        "records": 28,
        "invalid": {},
        "invalid_total": 0,
        "examples": [],
        "languages": {"en": 28},
        "multi_turn": 28,
        "preference_pairs": 28,
    }
    info = json.loads(json.dumps(inspect_file(ALPACA)))
    assert (info["format"], info["records"], info["invalid"], info["invalid_total"]) == (
        "alpaca",
        1821,
        {"empty:output": 4},
        4,
    )
    assert info["examples"][0] == f"{ALPACA}:1422: field 'output' is empty" and info["languages"] == {"en": 1821}
    assert inspect_file(FIREFLY, fmt="firefly")["languages"] == {"zh": 7, "en": 3}
    with pytest.raises(DataError, match=":1422: field 'output' is empty"):
        inspect_file(ALPACA, on_invalid="error")


# --------------------------------------------------------------------------------------------- bad input, per format

SEED_OK = {"id": "t", "name": "n", "instruction": "Add.", "instances": [{"input": "1+1", "output": "2"}]}
FIREFLY_OK = {"category": "c", "conversation": [{"human": "Hi", "assistant": "Hello"}]}
SHAREGPT_OK = {"id": "x", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
OIG_OK = {"text": "<human>: Hi\n<bot>: Hello", "metadata": {}}
HH_OK = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"}


def sgpt(*turns):
    return {"id": "y", "conversations": [{"from": f, "value": v} for f, v in turns]}


BAD = [  # (good record, bad record, the start of the message after "file:line: ", reason)
    (
        SEED_OK,
        {**SEED_OK, "instances": None},
        "missing field 'instances' (expected a list of objects)",
        "missing:instances",
    ),
    (
        SEED_OK,
        {**SEED_OK, "instances": "2"},
        "field 'instances' is str, expected a list of objects",
        "wrong_type:instances",
    ),
    (SEED_OK, {**SEED_OK, "instances": []}, "field 'instances' is an empty list", "empty:instances"),
    (SEED_OK, {**SEED_OK, "instances": [3]}, "field 'instances[0]' is int, expected an object", "wrong_type:instances"),
    (
        SEED_OK,
        {**SEED_OK, "instances": [{"input": "", "output": "1"}, {"input": "x", "output": " "}]},
        "field 'instances[1].output' is empty",
        "empty:instances.output",
    ),
    (
        FIREFLY_OK,
        {"conversation": [{"human": "Hi", "assistant": "Hello"}, {"human": "More"}]},
        "missing field 'conversation[1].assistant' (expected a string)",
        "missing:conversation.assistant",
    ),
    (
        FIREFLY_OK,
        {"conversation": [{"human": 7, "assistant": "Hello"}]},
        "field 'conversation[0].human' is int, expected a string",
        "wrong_type:conversation.human",
    ),
    (
        FIREFLY_OK,
        {"conversation": [{"human": "", "assistant": "Hello"}]},
        "field 'conversation[0].human' is empty",
        "empty:conversation.human",
    ),
    (
        SHAREGPT_OK,
        sgpt(("human", "Hi"), ("robot", "Hello")),
        "field 'conversations[1].from' is 'robot', expected one of human, user, gpt, assistant, chatgpt, bing, bard, "
        "system",
        "unknown_role:conversations",
    ),
    (
        SHAREGPT_OK,
        sgpt(("gpt", "Hello"), ("human", "Hi"), ("gpt", "Yes")),
        "conversations[0] has role 'assistant', expected 'user' (user and assistant turns alternate",
        "not_alternating:conversations",
    ),
    (
        SHAREGPT_OK,
        sgpt(("human", "Hi"), ("system", "Be brief."), ("gpt", "Yes")),
        "conversations[1] has role 'system', expected 'assistant'",
        "not_alternating:conversations",
    ),
    (
        SHAREGPT_OK,
        sgpt(("human", "Hi"), ("gpt", "Hello"), ("human", "Bye")),
        "field 'conversations' ends with a user turn, expected it to end with an assistant reply",
        "not_alternating:conversations",
    ),
    (
        SHAREGPT_OK,
        sgpt(("human", "Hi"), ("gpt", "")),
        "field 'conversations[1].value' is empty",
        "empty:conversations.value",
    ),
    (
        SHAREGPT_OK,
        {"id": "z", "conversations": {"from": "human"}},
        "field 'conversations' is dict, expected a list of objects",
        "wrong_type:conversations",
    ),
    (
        OIG_OK,
        {"text": "Just some prose, no speakers."},
        "field 'text' cannot be split into turns: it holds no speaker tag; expected turns tagged <human>: and <bot>:",
        "unsplittable:text",
    ),
    (
        OIG_OK,
        {"text": "Preamble\n<human>: Hi\n<bot>: Hello"},
        "field 'text' cannot be split into turns: it starts with untagged text 'Preamble'; expected turns tagged",
        "unsplittable:text",
    ),
    (
        OIG_OK,
        {"text": "<human>: Hi\n<human>: Hello?\n<bot>: Yes"},
        "text turn 2 (<human>:) has role 'user', expected 'assistant'",
        "not_alternating:text",
    ),
    (
        OIG_OK,
        {"text": "<human>: Hi\n<bot>:  \n<human>: Well?\n<bot>: Yes"},
        "text turn 2 (<bot>:) is empty (expected the assistant turn's text)",
        "empty:text",
    ),
    (OIG_OK, {"text": ["<human>: Hi"]}, "field 'text' is list, expected a string", "wrong_type:text"),
    (
        HH_OK,
        {**HH_OK, "rejected": "\n\nHuman: Hello there\n\nAssistant: Go away"},
        "field 'rejected' does not share the prompt of 'chosen' (they differ at turn 1); expected the two transcripts "
        "to differ only in the final Assistant reply",
        "prompt_mismatch:rejected",
    ),
    (
        HH_OK,
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant: Bye",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Bye\n\nAssistant: No",
        },
        "field 'rejected' does not share the prompt of 'chosen' (they differ at turn 2)",
        "prompt_mismatch:rejected",
    ),
    (
        HH_OK,
        {**HH_OK, "chosen": "Hi there. Hello."},
        "field 'chosen' cannot be split into turns: it holds no speaker "
        "tag; expected turns tagged '\\n\\nHuman:' and '\\n\\nAssistant:'",
        "unsplittable:chosen",
    ),
    (
        HH_OK,
        {**HH_OK, "chosen": "\n\nHuman: Hi\n\nAssistant: "},
        "chosen turn 2 (Assistant:), the chosen final reply, is empty",
        "empty:chosen",
    ),
    (
        HH_OK,
        {**HH_OK, "chosen": "\n\nHuman: Hi\n\nHuman: Hi?\n\nAssistant: Hello"},
        "chosen turn 2 (Human:) has role 'user', expected 'assistant'",
        "not_alternating:chosen",
    ),
    (
        HH_OK,
        {**HH_OK, "rejected": "\n\nHuman: Hi"},
        "field 'rejected' ends with a user turn, expected it to end with an assistant reply",
        "not_alternating:rejected",
    ),
    (HH_OK, {"chosen": HH_OK["chosen"]}, "missing field 'rejected' (expected a string)", "missing:rejected"),
    (
        {"instruction": "a", "context": "", "response": "b"},
        {"instruction": " ", "context": "", "response": "b"},
        "field 'instruction' is empty",
        "empty:instruction",
    ),
    (
        {"prompt": "a", "response": "b"},
        {"prompt": "a", "response": ["b"]},
        "field 'response' is list, expected a string",
        "wrong_type:response",
    ),
    (
        {"kind": "k", "input": "a", "target": "b"},
        {"kind": "k", "input": "a", "target": ""},
        "field 'target' is empty",
        "empty:target",
    ),
    (HH_OK, '{"chosen": "\\n\\nHuman: Hi", ', "malformed JSON", "malformed_json"),
]


@pytest.mark.parametrize("good,bad,expected,reason", BAD, ids=[b[3] for b in BAD])
def test_bad_records_in_every_format(tmp_path, good, bad, expected, reason):
    lines = [json.dumps(good), json.dumps(good), bad if isinstance(bad, str) else json.dumps(bad), json.dumps(good)]
    fmt = detect_format(good, "-").name
    p = tmp_path / "bad.jsonl.gz"  # gzip: line numbers count in the decompressed text
    p.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(DataError) as e:
        load_file(p, source="s")
    assert str(e.value).startswith(f"{p}:3: {expected}") and f"({fmt} format; set data.on_invalid: skip" in str(e.value)
    ds, rep = load_file(p, source="s", on_invalid="skip")
    assert (len(ds), rep.read, rep.kept, rep.skipped, rep.format) == (3, 4, 3, {reason: 1}, fmt)
    assert rep.examples == [str(e.value).split(f" ({fmt} format;")[0]]


def test_skip_counts_by_reason_with_examples(tmp_path):
    bad = [sgpt(("human", "Hi"), ("robot", "x")), sgpt(("gpt", "x"), ("human", "y")), sgpt(("human", "Hi"))]
    lines = [SHAREGPT_OK, *bad, *bad, SHAREGPT_OK]
    p = write(tmp_path / "s.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    ds, rep = load_file(p, source="s", on_invalid="skip")
    assert rep.kept == len(ds) == 2 and rep.skipped == {
        "unknown_role:conversations": 2,
        "not_alternating:conversations": 4,
    }
    assert [e.split(": ")[0] for e in rep.examples] == [f"{p}:{n}" for n in (2, 3, 4, 5, 6)]  # the first MAX_EXAMPLES
    assert inspect_file(p)["invalid"] == {"not_alternating:conversations": 4, "unknown_role:conversations": 2}


def test_named_format_that_does_not_fit(tmp_path):
    p = write(tmp_path / "a.jsonl", rec() + "\n")
    with pytest.raises(
        DataError,
        match=rf"{p}:1: missing field 'conversations' \(expected a list of objects\) "
        r"\(sharegpt format",
    ):
        load_file(p, source="s", fmt="sharegpt")


def test_non_utf8_inside_gzip(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(gzip.compress((json.dumps(HH_OK) + "\n" + json.dumps(HH_OK)[:-2]).encode() + b'\xff"}\n'))
    with pytest.raises(DataError, match=rf"{p}:2: not valid UTF-8 \(byte 0xff"):
        load_file(p, source="s", on_invalid="skip")
