"""The dataset catalogue: the seed's 13 datasets as cards, lookups, the frame and the CLI table."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from llm4academic import catalog
from llm4academic.catalog import ALPACA_MIX, DatasetCard, catalog_frame, datasets, format_table, get_dataset
from llm4academic.config import FORMAT_NAMES, KitError, resolve_data_path

ROOT = Path(__file__).resolve().parents[1]
SEED_NAMES = ("OIG", "Alpaca", "BELLE", "Luotuo", "Guanaco", "Firefly", "GPT-4-LLM", "gpt4all", "hh-rlhf", "Dolly",
              "Alpaca-CoT", "Instruct-to-Code", "ShareGPT")


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


@pytest.mark.parametrize("alias, name", [
    ("chinese_alpaca", "Luotuo"), ("chinese-alpaca", "Luotuo"), ("Chinese Alpaca", "Luotuo"),
    ("dolly-15k", "Dolly"), ("databricks_dolly_15k", "Dolly"), ("ALPACA", "Alpaca"), ("belle", "BELLE"),
    ("gpt-4-llm", "GPT-4-LLM"), ("instruct_to_code", "Instruct-to-Code"), ("HH_RLHF", "hh-rlhf"),
    ("guannaco", "Guanaco"), ("sharegpt", "ShareGPT"), ("  oig ", "OIG"),
])
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
    code = ("import sys, llm4academic.catalog\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "assert 'datasets' not in sys.modules, 'datasets'\n"
            "assert 'pandas' not in sys.modules, 'pandas'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
