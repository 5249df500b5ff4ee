"""The catalogues: the seed's 13 datasets and 6 model families as cards, lookups, frames and CLI tables."""

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llm4academic import catalog
from llm4academic.base import KitError, resolve_data_path
from llm4academic.catalog import (
    ALPACA_MIX,
    DatasetCard,
    ModelCard,
    card_for_config,
    catalog_frame,
    datasets,
    format_model_table,
    format_table,
    get_dataset,
    get_model_card,
    model_cards,
    model_frame,
)
from llm4academic.config import FORMAT_NAMES, MODEL_CARDS, TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
SEED_NAMES = (
    "OIG",
    "Alpaca",
    "BELLE",
    "Luotuo",
    "Guanaco",
    "Firefly",
    "GPT-4-LLM",
    "gpt4all",
    "hh-rlhf",
    "Dolly",
    "Alpaca-CoT",
    "Instruct-to-Code",
    "ShareGPT",
)


def test_every_seed_dataset_has_a_complete_card():
    cards = datasets()
    assert [c.name for c in cards] == list(SEED_NAMES)
    for card in cards:
        for field in ("name", "produced_by", "size", "link", "format", "licence", "description"):
            assert getattr(card, field).strip(), (card.name, field)
        assert card.languages and all(code.strip() for code in card.languages), card.name
        assert card.link.startswith("https://"), card.name
        assert card.records is None or card.records > 0, card.name
        assert "\n" not in card.description, card.name


def test_formats_are_the_kits_format_names():
    for card in datasets():
        assert card.format in FORMAT_NAMES, (card.name, card.format)


def test_alpaca_mix_resolves_to_alpaca_style_cards():
    cards = [get_dataset(name) for name in ALPACA_MIX]
    assert [c.name for c in cards] == ["Alpaca", "Luotuo", "BELLE", "Guanaco"]
    assert {c.format for c in cards} == {"alpaca"}


@pytest.mark.parametrize(
    "alias, name",
    [
        ("chinese_alpaca", "Luotuo"),
        ("chinese-alpaca", "Luotuo"),
        ("Chinese Alpaca", "Luotuo"),
        ("dolly-15k", "Dolly"),
        ("databricks_dolly_15k", "Dolly"),
        ("ALPACA", "Alpaca"),
        ("belle", "BELLE"),
        ("gpt-4-llm", "GPT-4-LLM"),
        ("instruct_to_code", "Instruct-to-Code"),
        ("HH_RLHF", "hh-rlhf"),
        ("guannaco", "Guanaco"),
        ("sharegpt", "ShareGPT"),
        ("  oig ", "OIG"),
    ],
)
def test_lookup_is_case_insensitive_and_takes_aliases(alias, name):
    assert get_dataset(alias).name == name


def test_every_alias_resolves_to_its_own_card():
    for card in datasets():
        for alias in (card.name, *card.aliases):
            assert get_dataset(alias) is card, alias


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KitError) as err:
        get_dataset("alpacca")
    message = str(err.value)
    assert "alpacca" in message
    for name in SEED_NAMES:
        assert name in message


def test_shipped_samples_exist():
    shipped = {c.name: c.shipped_sample for c in datasets() if c.shipped_sample}
    assert shipped == {
        "Alpaca": "pkg:instruct/alpaca/alpaca_data.first1825.json",
        "BELLE": "pkg:instruct/belle/dev1K.json",
        "Luotuo": "pkg:instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json",
    }
    for value in shipped.values():
        assert resolve_data_path(value, ROOT).is_file(), value


def test_stand_in_samples_say_so():
    assert "stand-in" in get_dataset("luotuo").notes.lower()
    assert "stand-in" in get_dataset("belle").notes.lower()


def test_cards_are_frozen_and_checked():
    card = get_dataset("alpaca")
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.size = "1"  # type: ignore[misc]
    with pytest.raises(ValueError, match="format"):
        dataclasses.replace(card, format="csv")
    with pytest.raises(ValueError, match="languages"):
        dataclasses.replace(card, languages=())
    with pytest.raises(ValueError, match="licence"):
        dataclasses.replace(card, licence=" ")
    with pytest.raises(ValueError, match="pkg:"):
        dataclasses.replace(card, shipped_sample="instruct/alpaca/alpaca_data.first1825.json")


def test_catalog_frame_has_one_row_per_card():
    frame = catalog_frame()
    assert list(frame["name"]) == list(SEED_NAMES)
    assert list(frame.columns[:4]) == ["name", "languages", "size", "records"]
    assert set(frame.columns) == {f.name for f in dataclasses.fields(DatasetCard)}
    assert frame.loc[frame["name"] == "Guanaco", "languages"].item() == "en, zh, zh-Hant, ja, de"
    assert frame.loc[frame["name"] == "Alpaca", "records"].item() == 52_002


def test_format_table_lists_every_name_within_the_width():
    table = format_table()
    for card in datasets():
        assert card.name in table
        assert card.link in table
    assert max(len(line) for line in table.splitlines()) <= catalog.TABLE_WIDTH <= 120


def test_catalog_imports_no_torch_and_no_datasets():
    code = (
        "import sys, llm4academic.catalog\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "assert 'datasets' not in sys.modules, 'datasets'\n"
        "assert 'pandas' not in sys.modules, 'pandas'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------------------------- model cards

SEED_MODELS = {
    "llama": "huggyllama/llama-7b",
    "bloom": "bigscience/bloomz-7b1-mt",
    "opt": "facebook/galactica-6.7b",
    "t5": "google/flan-t5-xxl",
    "glm": "zai-org/glm-4-9b-hf",
    "chatglm": "THUDM/chatglm-6b",
}


def test_every_model_family_has_a_complete_card():
    cards = model_cards()
    assert [c.name for c in cards] == list(MODEL_CARDS)
    assert {c.name: c.hub_id for c in cards} == SEED_MODELS
    for card in cards:
        for field in (
            "model",
            "hub_id",
            "architecture",
            "wrap_class",
            "pad_token",
            "parameters",
            "licence",
            "link",
            "description",
        ):
            assert getattr(card, field).strip(), (card.name, field)
        assert card.link == f"https://huggingface.co/{card.hub_id}", card.name
        assert card.template in TEMPLATES and card.kind in ("causal", "seq2seq"), card.name
        assert card.auto_class == ("AutoModelForSeq2SeqLM" if card.is_seq2seq else card.auto_class), card.name
        assert card.model_types and "\n" not in card.description, card.name
    assert [c.name for c in cards if c.is_seq2seq] == ["t5"]
    assert [c.name for c in cards if c.needs_remote_code] == ["chatglm"]
    assert {c.template for c in cards} == {"alpaca"}  # the seed trained every base with stanford_alpaca's template
    assert "[PAD]" in get_model_card("llama").pad_token


def test_wrap_and_architecture_classes_are_the_seeds():
    assert {c.name: (c.architecture, c.wrap_class) for c in model_cards()} == {
        "llama": ("LlamaForCausalLM", "LlamaDecoderLayer"),
        "bloom": ("BloomForCausalLM", "BloomBlock"),
        "opt": ("OPTForCausalLM", "OPTDecoderLayer"),
        "t5": ("T5ForConditionalGeneration", "T5Block"),
        "glm": ("GlmForCausalLM", "GlmDecoderLayer"),
        "chatglm": ("ChatGLMForConditionalGeneration", "GLMBlock"),
    }


@pytest.mark.parametrize(
    "name, card",
    [
        ("llama", "llama"),
        ("LLaMA-7B", "llama"),
        ("huggyllama/llama-7b", "llama"),
        ("bloomz", "bloom"),
        ("BLOOMZ-7B1-mt", "bloom"),
        ("galactica", "opt"),
        ("Galactica-6.7B", "opt"),
        ("flan_t5_xxl", "t5"),
        ("google/flan-t5-xxl", "t5"),
        ("GLM-4-9B", "glm"),
        ("THUDM/glm-4-9b-hf", "glm"),
        ("ChatGLM-6B", "chatglm"),
        (" chatglm ", "chatglm"),
    ],
)
def test_model_card_lookup_takes_models_hub_ids_and_aliases(name, card):
    assert get_model_card(name).name == card


def test_card_for_config_reads_model_type_from_configs_and_dicts():
    for card in model_cards():
        for model_type in card.model_types:
            assert card_for_config({"model_type": model_type}) is card
            assert card_for_config(SimpleNamespace(model_type=model_type)) is card
    with pytest.raises(KitError) as err:
        card_for_config({"model_type": "gpt2"})
    assert "gpt2" in str(err.value) and all(c.model in str(err.value) for c in model_cards())
    with pytest.raises(KitError, match="unknown model card 'gpt-2'.*llama \\(LLaMA-7B\\)"):
        get_model_card("gpt-2")


def test_model_cards_are_frozen_and_checked():
    card = get_model_card("llama")
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.kind = "seq2seq"  # type: ignore[misc]
    for field, value in [
        ("name", "gpt2"),
        ("template", "chatml"),
        ("kind", "encoder"),
        ("auto_class", "AutoModel"),
        ("wrap_class", " "),
        ("model_types", ()),
        ("needs_remote_code", "no"),
    ]:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(card, **{field: value})
    with pytest.raises(ValueError, match="AutoModelForSeq2SeqLM"):
        dataclasses.replace(card, kind="seq2seq")


def test_model_frame_and_table():
    frame = model_frame()
    assert list(frame["name"]) == list(MODEL_CARDS)
    assert set(frame.columns) == {f.name for f in dataclasses.fields(ModelCard)}
    assert frame.loc[frame["name"] == "chatglm", "needs_remote_code"].item()
    table = format_model_table()
    for card in model_cards():
        assert card.hub_id in table and card.wrap_class in table and card.link in table
    assert "chatglm *" in table and "trust_remote_code" in table
    assert max(len(line) for line in table.splitlines()) <= catalog.MODEL_TABLE_WIDTH <= 120
