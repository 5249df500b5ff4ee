import datasets
import pytest

from llm4academic.config import CleanParams, ModelParams
from llm4academic.data.clean import clean, column, exact_dedup, language_filter, length_filter, near_dedup, normalise
from llm4academic.data.formats import COLUMNS, RECORD_FEATURES


def ids(ds):
    return column(ds, "id")


def records(rows):
    """rows: (source, instruction, output[, language]) → a unified-record Dataset."""
    cols = {c: [] for c in COLUMNS}
    for n, row in enumerate(rows):
        src, ins, out, *lang = row
        rec = {
            "id": f"{src}-{n}",
            "source": src,
            "language": lang[0] if lang else "en",
            "instruction": ins,
            "input": "",
            "output": out,
            "conversation": [],
            "chosen": "",
            "rejected": "",
        }
        for c in COLUMNS:
            cols[c].append(rec[c])
    return datasets.Dataset.from_dict(cols, features=RECORD_FEATURES)


LONG = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch and "
    "drinks a cup of coffee in the early morning sun."
)


def test_normalise_folds_width_case_space_punctuation():
    assert normalise("Ｈｅｌｌｏ，  World!") == normalise("hello world") == "helloworld"
    assert normalise("你好，世界！") == "你好世界"


def test_exact_dedup_within_and_across_sources():
    ds = records([("a", "Say hi", "Hi!"), ("a", "say  HI", "hi"), ("b", "Say hi.", "Hi"), ("b", "Other", "x")])
    kept, rep = exact_dedup(ds)
    assert ids(kept) == ["a-0", "b-3"]
    assert rep.removed == 2 and rep.by_source == {"a": 1, "b": 1}
    assert rep.detail == {"within_source": 1, "across_sources": 1}
    assert rep.examples[0] == {"removed": "a-1", "duplicate_of": "a-0"}


def test_near_dedup_finds_small_edits_not_different_texts():
    edited = LONG.replace("early morning", "early mornin")
    ds = records(
        [
            ("a", "Describe the scene.", LONG),
            ("b", "Describe the scene.", edited),
            ("a", "Write a haiku.", "Autumn moonlight, a worm digs silently into the chestnut."),
            ("b", "给出三个保持健康的提示。", "饮食要均衡，确保包括足够的水果和蔬菜。"),
        ]
    )
    kept, rep = near_dedup(ds, threshold=0.8)
    assert ids(kept) == ["a-0", "a-2", "b-3"]
    assert rep.removed == 1 and rep.detail["across_sources"] == 1
    assert rep.examples[0]["similar_to"] == "a-0" and rep.examples[0]["similarity"] >= 0.8
    assert near_dedup(ds, threshold=1.0)[1].removed == 0  # only identical shingle sets at 1.0


def test_language_and_length_filters(tiny_models):
    from llm4academic.models import load_tokenizer

    ds = records([("a", "Say hi", "Hi there, how are you today?"), ("b", "说你好", "你好", "zh"), ("a", "Count", "1")])
    kept, rep = language_filter(ds, ["en"])
    assert ids(kept) == ["a-0", "a-2"] and rep.detail["removed_by_language"] == {"zh": 1}
    tok = load_tokenizer(ModelParams(name="l", path=str(tiny_models("llama"))))
    kept, rep = length_filter(ds, tok, "l", min_output_tokens=2)
    assert "a-2" not in ids(kept) and rep.detail["reasons"] == {"output_too_short": 1}
    totals = [
        len(tok(i + o, add_special_tokens=False)["input_ids"])
        for i, o in zip(column(ds, "instruction"), column(ds, "output"), strict=False)
    ]
    assert totals[0] > max(totals[1:])
    kept, rep = length_filter(ds, tok, "l", max_total_tokens=max(totals[1:]) + 1)
    assert ids(kept) == ["b-1", "a-2"] and rep.by_source == {"a": 1} and rep.detail["reasons"] == {"too_long": 1}


def test_clean_runs_the_asked_steps_in_order():
    ds = records([("a", "Say hi", "Hi"), ("a", "Say hi", "Hi"), ("b", "说你好", "你好", "zh")])
    kept, reports = clean(ds, CleanParams(languages=["zh"]))
    assert [r.step for r in reports] == ["exact_dedup", "near_dedup", "language_filter"]
    assert ids(kept) == ["b-2"] and [r.removed for r in reports] == [1, 0, 1]
    assert [r.to_dict()["after"] for r in reports] == [2, 2, 1]
    with pytest.raises(ValueError, match="length filters need the tokenizer"):
        clean(ds, CleanParams(min_output_tokens=3))
