import json

import pandas as pd
import pytest
from conftest import SAMPLES, SHIPPED

from llm4academic.config import KitError
from llm4academic.data import contamination as cont
from llm4academic.data import formats
from llm4academic.zbench import load_zbench


@pytest.fixture(scope="module")
def zb():
    return load_zbench()


@pytest.fixture(scope="module")
def samples():
    """All records the package ships (alpaca, chinese_alpaca, belle) as one DataFrame."""
    parts = [
        formats.load_file(SAMPLES / path, source=name, on_invalid="skip")[0].to_pandas()
        for name, path in SHIPPED.items()
    ]
    return pd.concat(parts, ignore_index=True)


def prompt(zb, item_id, field="prompt"):
    return zb.set_index("item_id").loc[item_id, field]


def planted(samples, **texts):
    """Copies of real records, one per keyword (its id), with the given text appended to their fields."""
    rows = []
    for i, (rid, fields) in enumerate(texts.items()):
        row = samples.iloc[i * 997].to_dict()  # a spread of sources
        row["id"] = rid
        for fld, text in fields.items():
            row[fld] = text if fld == "conversation" else f"{row[fld]}\n{text}".strip()
        rows.append(row)
    return pd.DataFrame(rows)


def hits(report) -> dict[str, list[str]]:
    return dict(zip(report.records["id"], report.records["item_ids"], strict=False))


def test_normalise():
    chars, words = cont.normalise("Ｈｅｌｌｏ，ＷＯＲＬＤ！　你好，世界。1955 年\ttab_sep")
    assert chars == "你好世界年" and words == ["hello", "world", "1955", "tab", "sep"]
    assert list(cont.char_ngrams("abcd", 3)) == ["abc", "bcd"] and list(cont.char_ngrams("ab", 3)) == []
    assert list(cont.word_ngrams(["a", "b", "c"], 2)) == ["a b", "b c"]


def test_shipped_samples_are_clean(samples, zb):
    report = cont.find_contamination(samples, zb, progress=False)
    counts = report.counts
    assert counts["records_scanned"] == len(samples) > 4000
    assert counts["records_contaminated"] == 0 and counts["items_affected"] == 0
    assert report.records.empty and report.items.empty and report.matches.empty
    assert counts["items"] == 311 and counts["items_checked"] + counts["items_too_short"] == 311
    assert len(report.drop(samples)) == len(samples)


def test_planted_prompts_found(samples, zb):
    zh = prompt(zb, "domain-000")  # multi-line Chinese multiple choice
    full_width = prompt(zb, "advanced-000").translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    mixed = prompt(zb, "advanced-150")  # 请分析这段话：RAID 45 (a combination of RAID 4 …) …
    english = prompt(zb, "advanced-145").upper()  # Let's write a tetris game in Golang …
    records = planted(
        samples,
        zh_input={"input": zh},
        zh_output={"output": "题目如下。" + full_width},
        mixed={"output": mixed},
        en={"input": english},
        chat={
            "conversation": [{"role": "user", "content": "你好"}, {"role": "user", "content": zh.replace("\n", " ")}]
        },
    )
    report = cont.find_contamination(records, zb, progress=False)
    assert hits(report) == {
        "zh_input": ["domain-000"],
        "zh_output": ["advanced-000"],
        "mixed": ["advanced-150"],
        "en": ["advanced-145"],
        "chat": ["domain-000"],
    }
    m = report.matches.set_index("id")
    assert (m["field"] == "prompt").all()
    assert m.loc["zh_input", "shared_ngrams"] == m.loc["zh_input", "item_ngrams"] > 50  # all of its n-grams
    assert m.loc["en", "example"].startswith("let s write a tetris")
    assert report.items.set_index("item_id").loc["domain-000", "records"] == 2
    assert report.items["item_id"].tolist() == ["advanced-000", "advanced-145", "advanced-150", "domain-000"]


def test_planted_reference_found(samples, zb):
    ref = prompt(zb, "advanced-101", "reference")  # a long Chinese passage
    records = planted(samples, ref={"output": ref[:40]}, short_ref={"output": prompt(zb, "domain-000", "reference")})
    report = cont.find_contamination(records, zb, progress=False)
    assert hits(report) == {"ref": ["advanced-101"]}
    assert report.records.set_index("id").loc["ref", "fields"] == ["reference"]
    only_prompts = cont.find_contamination(records, zb, fields=["prompt"], progress=False)
    assert only_prompts.records.empty and only_prompts.counts["fields"].keys() == {"prompt"}


def test_short_items(samples, zb):
    report = cont.find_contamination(samples.iloc[:0], zb, progress=False)
    short = report.too_short.set_index(["item_id", "field"])["text"]
    assert short[("basic-000", "prompt")] == "谁是蝙蝠侠" and short[("domain-000", "reference")] == "d"
    fields = report.counts["fields"]
    assert fields["prompt"]["too_short"] == 7 and fields["reference"]["empty"] == 69
    assert fields["reference"]["too_short"] == len(report.too_short.query("field == 'reference'"))
    assert report.counts["items_too_short"] == 7  # basic-000 & co: short prompt, short or empty reference

    records = planted(
        samples,
        whole={"input": "香蕉的平方根是多少？"},
        part={"input": "香蕉的平方根"},
        batman={"output": "谁是蝙蝠侠？"},
        split={"instruction": "将此更正为标准英语：", "input": "She no went to the market."},
        other={"instruction": "将此更正为标准英语：", "input": "I has an apple."},
    )
    report = cont.find_contamination(records, zb, progress=False)
    assert hits(report) == {"whole": ["basic-006"], "split": ["basic-020"]}
    assert report.matches.set_index("id").loc["split", "example"] == "将此更正为标准英语 she no went to the market"
    looser = cont.find_contamination(records, zb, min_zh=4, progress=False)
    assert hits(looser)["batman"] == ["basic-000"]


def test_configurable_n(samples, zb):
    fragment = prompt(zb, "advanced-000")[2:13]  # 10 CJK characters (and a comma) of a 20-character prompt
    records = planted(samples, frag={"output": fragment})
    found = {n: hits(cont.find_contamination(records, zb, n_zh=n, progress=False)) for n in (8, 10, 13)}
    assert found[8] == found[10] == {"frag": ["advanced-000"]} and found[13] == {}
    chinese = samples[samples["source"] == "chinese_alpaca"]
    strict, loose = (cont.find_contamination(chinese, zb, n_en=n, n_zh=n, progress=False) for n in (13, 8))
    assert strict.counts["records_contaminated"] == 0 < loose.counts["records_contaminated"]
    assert set(strict.records["id"]) <= set(loose.records["id"])
    # a prompt split across two fields shares no n-gram: fields and turns are read separately
    zh = prompt(zb, "advanced-000")
    split = planted(samples, split={"instruction": zh[:10], "input": zh[10:]}, one={"input": zh})
    assert hits(cont.find_contamination(split, zb, progress=False)) == {"one": ["advanced-000"]}
    with pytest.raises(cont.ContaminationError, match="n_zh must be a positive integer, got 0"):
        cont.find_contamination(split, zb, n_zh=0)


def test_drop_and_json(samples, zb):
    clean = samples.iloc[::50]
    dirty = planted(samples, a={"input": prompt(zb, "domain-000")}, b={"output": prompt(zb, "advanced-145")})
    records = pd.concat([clean, dirty], ignore_index=True)
    report = cont.find_contamination(records, zb)  # with its tqdm progress bar
    kept = report.drop(records)
    assert kept["id"].tolist() == clean["id"].tolist()
    data = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert data["counts"]["records_contaminated"] == 2 and data["counts"]["records_scanned"] == len(records)
    assert data["settings"]["n_zh"] == 13 and data["settings"]["fields"] == ["prompt", "reference"]
    assert data["settings"]["zbench"]["dataset"] == "Z-Bench 1.0"
    assert data["seconds"] >= 0 and "seconds" not in data["counts"]  # counts stay reproducible
    assert {r["id"] for r in data["records"]} == {"a", "b"} and data["records"][0]["item_ids"] == ["domain-000"]
    assert {r["item_id"] for r in data["too_short"]} >= {"basic-000"}


def test_bad_input(samples, zb):
    with pytest.raises(cont.ContaminationError, match="need an `id` column") as e:
        cont.find_contamination(samples[["source", "output"]], zb)
    assert isinstance(e.value, KitError)
    with pytest.raises(cont.ContaminationError, match="at least one of instruction, input"):
        cont.find_contamination(samples[["id", "source"]], zb)
    twice = pd.concat([samples.iloc[:2], samples.iloc[:1]])
    with pytest.raises(cont.ContaminationError, match="ids must be unique.*alpaca-000000"):
        cont.find_contamination(twice, zb)
    with pytest.raises(cont.ContaminationError, match="no column GPT5"):
        cont.find_contamination(samples.iloc[:2], zb, fields=["GPT5"])
