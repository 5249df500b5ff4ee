"""The seed project's catalogue of open instruction datasets, as data.

LLM4Academic (patrick-tssn/LM-Research-Hub, README "Instruction tuning / Datasets") lists the datasets a study
could start from; each is a frozen ``DatasetCard`` here: languages, how it was produced, size, upstream link,
the kit's on-disk format name, the licence as stated upstream and, where the package ships one, the ``pkg:`` path
of a sample. Facts were checked against the upstream pages where possible; ``notes`` says where a card departs
from the seed's table or where something could not be confirmed. Licences differ and several are
non-commercial or research-only: read ``licence`` and ``notes`` before any use beyond research.

This module sits at the bottom of the package: standard library and ``config`` only (pandas lazily).
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .config import FORMAT_NAMES, PKG_PREFIX, KitError

if TYPE_CHECKING:
    import pandas

# The seed's `alpaca_mix` (Alpaca + Chinese Alpaca + BELLE-0.5M + Guanaco), used for its Z-Bench experiments.
ALPACA_MIX: tuple[str, ...] = ("alpaca", "luotuo", "belle", "guanaco")


@dataclass(frozen=True)
class DatasetCard:
    """One instruction dataset from the seed's table. Every text field is non-empty."""

    name: str
    languages: tuple[str, ...]  # ISO 639 codes ("zh-Hant" for Traditional Chinese, "mul" for many more)
    produced_by: str  # how the records were made
    size: str  # human-readable, as upstream counts it ("52K", "1.5M")
    records: int | None  # approximate record count; None where unknown
    link: str  # where the data is distributed
    format: str  # one of config.FORMAT_NAMES: the layout the data is distributed in
    licence: str  # as stated upstream; "unclear" where nothing reliable is stated
    description: str  # one line
    shipped_sample: str | None = None  # `pkg:` path of the sample shipped with the package
    notes: str = ""  # departures from the seed, stand-ins, facts that could not be confirmed
    aliases: tuple[str, ...] = ()  # other names `get_dataset` accepts

    def __post_init__(self) -> None:
        for f in ("name", "produced_by", "size", "link", "licence", "description"):
            if not getattr(self, f).strip():
                raise ValueError(f"dataset card {self.name!r}: {f} is empty")
        if not self.languages or not all(code.strip() for code in self.languages):
            raise ValueError(f"dataset card {self.name!r}: languages must be a non-empty tuple of ISO codes")
        if self.format not in FORMAT_NAMES:
            raise ValueError(f"dataset card {self.name!r}: format {self.format!r} is not one of "
                             f"{', '.join(FORMAT_NAMES)}")
        if self.shipped_sample is not None and not self.shipped_sample.startswith(PKG_PREFIX):
            raise ValueError(f"dataset card {self.name!r}: shipped_sample must be a {PKG_PREFIX}… path")
        if self.records is not None and self.records <= 0:
            raise ValueError(f"dataset card {self.name!r}: records must be positive or None")


_CARDS: tuple[DatasetCard, ...] = (
    DatasetCard(
        name="OIG",
        languages=("en",),
        produced_by="mixed: converted existing datasets + synthetic (LAION, Together, Ontocord)",
        size="43M",
        records=43_000_000,
        link="https://huggingface.co/datasets/laion/OIG",
        format="oig",
        licence="Apache-2.0",
        description="LAION's Open Instruction Generalist: ~30 JSONL files of '<human>: … <bot>: …' dialogues",
        notes="The seed leaves language and source blank. Apache-2.0 per OIG's 40M/README.md for the parts "
              "authored by LAION volunteers; source datasets keep their own terms.",
        aliases=("laion-oig", "open-instruction-generalist"),
    ),
    DatasetCard(
        name="Alpaca",
        languages=("en",),
        produced_by="text-davinci-003 (self-instruct)",
        size="52K",
        records=52_002,
        link="https://github.com/tatsu-lab/stanford_alpaca/blob/main/alpaca_data.json",
        format="alpaca",
        licence="CC BY-NC 4.0",
        description="Stanford Alpaca: 52K instruction/input/output records generated from 175 seed tasks",
        shipped_sample="pkg:instruct/alpaca/alpaca_data.first1825.json",
        notes="Sample: the first 1,825 records of alpaca_data.json (via a verbatim split mirror). The 175 seed "
              "tasks (seed_tasks.jsonl) use the kit's seed_tasks format.",
        aliases=("stanford-alpaca", "alpaca-52k"),
    ),
    DatasetCard(
        name="BELLE",
        languages=("zh",),
        produced_by="text-davinci-003 (self-instruct, Chinese seed tasks)",
        size="0.5M",
        records=500_000,
        link="https://huggingface.co/datasets/BelleGroup/train_0.5M_CN",
        format="alpaca",
        licence="ODC-By (DATA_LICENSE); research use only (README); hub card says GPL-3.0",
        description="BELLE 0.5M: Chinese instructions generated the Alpaca way from 175 Chinese seed tasks",
        shipped_sample="pkg:instruct/belle/dev1K.json",
        notes="The seed lists 543K and links BelleGroup/generated_train_0.5M_CN, the earlier name of this data, "
              "whose first upload used input/target fields; the current file has instruction/input/output. "
              "The exact record count was not checked. The shipped sample is BELLE's dev1K.json, the first "
              "1,000 records of school_math_0.25M (another BELLE release, same fields), as a stand-in.",
        aliases=("belle-0.5m", "belle0.5m", "belle-0.5m-cn", "generated-train-0.5m-cn"),
    ),
    DatasetCard(
        name="Luotuo",
        languages=("zh",),
        produced_by="ChatGPT translation of Alpaca (text-davinci-003)",
        size="52K",
        records=52_000,
        link="https://github.com/LC1332/Chinese-alpaca-lora/blob/main/data/trans_chinese_alpaca_data.json",
        format="alpaca",
        licence="unclear; derived from Alpaca (CC BY-NC 4.0)",
        description="Chinese Alpaca: Stanford Alpaca's 52K records translated into Chinese with the ChatGPT API",
        shipped_sample="pkg:instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json",
        notes="Stand-in sample: Luotuo's trans_chinese_alpaca_data.json could not be had, so the package ships "
              "another Chinese translation of Alpaca (hikariming/alpaca_chinese_dataset, records 0-3251, "
              "machine-translated then proofread by hand; repository MIT), its first 2,000 records. Same "
              "source records and fields, different translation.",
        aliases=("chinese-alpaca", "alpaca-cn", "alpaca-zh", "alpaca-chinese", "luotuo-alpaca"),
    ),
    DatasetCard(
        name="Guanaco",
        languages=("en", "zh", "zh-Hant", "ja", "de"),
        produced_by="text-davinci-003 (self-instruct, multilingual seed tasks)",
        size="534K",
        records=534_530,
        link="https://huggingface.co/datasets/JosephusCheung/GuanacoDataset",
        format="alpaca",
        licence="GPL-3.0",
        description="GuanacoDataset: Alpaca's seed tasks rewritten in several languages plus new multilingual tasks",
        notes="The seed spells it 'Guannaco'. 534,530 entries per the dataset card (Alpaca-CoT counts 534,610). "
              "No sample ships: none could be found outside the hub.",
        aliases=("guannaco", "guanaco-dataset", "guanacodataset"),
    ),
    DatasetCard(
        name="Firefly",
        languages=("zh",),
        produced_by="human-written templates over 23 Chinese NLP datasets",
        size="1.65M",
        records=1_649_398,
        link="https://huggingface.co/datasets/YeungNLP/firefly-train-1.1M",
        format="firefly",
        licence="none stated",
        description="firefly-train-1.1M: Chinese tasks (couplets, poetry, classical Chinese, NLU …) as instructions",
        notes="The seed says 1.1M (the first upload); the hub file holds about 1.65M records (Alpaca-CoT counts "
              "1,649,398). The hub file has kind/input/target fields; Firefly's own training layout "
              "(conversation_id, conversation[{human, assistant}]) is the kit's firefly format. No licence "
              "file in the repository and none on the hub card; BELLE's data list reports Apache-2.0, "
              "unconfirmed.",
        aliases=("firefly-train-1.1m", "firefly-1.1m"),
    ),
    DatasetCard(
        name="GPT-4-LLM",
        languages=("en", "zh"),
        produced_by="GPT-4 (Alpaca's prompts; Chinese prompts translated by ChatGPT)",
        size="52K en + 52K zh",
        records=104_000,
        link="https://github.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM",
        format="alpaca",
        licence="CC BY-NC 4.0",
        description="Instruction Tuning with GPT-4: Alpaca's 52K prompts answered by GPT-4, in English and Chinese",
        notes="Files alpaca_gpt4_data.json and alpaca_gpt4_data_zh.json; the release also has GPT-4 comparison "
              "data and unnatural-instruction answers.",
        aliases=("gpt4-llm", "alpaca-gpt4", "instruction-tuning-with-gpt-4"),
    ),
    DatasetCard(
        name="gpt4all",
        languages=("en",),
        produced_by="gpt-3.5-turbo (distillation)",
        size="438K",
        records=437_604,
        link="https://huggingface.co/datasets/nomic-ai/gpt4all_prompt_generations",
        format="gpt4all",
        licence="Apache-2.0 (hub card)",
        description="GPT4All prompt generations: prompt/response/source pairs used to train GPT4All",
        notes="The seed says 'GPT4' as source; per Nomic's technical report and the data card the responses "
              "came from GPT-3.5-Turbo (~800K collected, 437,604 kept after cleaning). The seed links "
              "github.com/nomic-ai/gpt4all#Reproducibility.",
        aliases=("gpt4all-prompt-generations", "gpt4all-data"),
    ),
    DatasetCard(
        name="hh-rlhf",
        languages=("en",),
        produced_by="human preference (Anthropic)",
        size="169K pairs (+39K red-team)",
        records=169_352,
        link="https://github.com/anthropics/hh-rlhf",
        format="hh_rlhf",
        licence="MIT",
        description="Anthropic helpful/harmless preference pairs: chosen vs rejected dialogue transcripts",
        notes="Preference data (chosen/rejected), for reward modelling or DPO rather than SFT. The red-teaming "
              "transcripts are a separate release in the same repository.",
        aliases=("anthropic-hh", "anthropic-hh-rlhf", "hh"),
    ),
    DatasetCard(
        name="Dolly",
        languages=("en",),
        produced_by="human (Databricks employees)",
        size="15K",
        records=15_011,
        link="https://github.com/databrickslabs/dolly/tree/master/data",
        format="dolly",
        licence="CC BY-SA 3.0",
        description="databricks-dolly-15k: human-written instruction/context/response records in 7 categories",
        notes="Also on the hub as databricks/databricks-dolly-15k.",
        aliases=("dolly-15k", "databricks-dolly-15k", "dolly-2.0", "dolly2"),
    ),
    DatasetCard(
        name="Alpaca-CoT",
        languages=("en", "zh"),
        produced_by="human-annotated CoT rationales in FLAN templates",
        size="75K",
        records=74_771,
        link="https://github.com/PhoebusSi/Alpaca-CoT",
        format="alpaca",
        licence="Apache-2.0 (repository); source datasets keep their own terms",
        description="Alpaca-CoT's chain-of-thought data: 9 FLAN CoT datasets in instruction/input/output form",
        notes="The seed lists 'English, 9 datasets (75k)'; Alpaca-CoT's README gives 74,771 records and a "
              "Chinese translation (CoT_CN_data.json). Data files are on the hub: QingyiSi/Alpaca-CoT.",
        aliases=("alpaca-cot-data", "cot", "flan-cot"),
    ),
    DatasetCard(
        name="Instruct-to-Code",
        languages=("en",),
        produced_by="unclear",
        size="700K",
        records=700_000,
        link="https://huggingface.co/datasets/Graverman/Instruct-to-Code",
        format="alpaca",
        licence="unclear",
        description="Natural-language instructions paired with code, for code generation",
        notes="Only the seed's size (700K) and link could be found; producer, licence and field names were not "
              "confirmed. Language 'en' is the instructions' language, assumed.",
        aliases=("instruct-2-code",),
    ),
    DatasetCard(
        name="ShareGPT",
        languages=("en", "es", "de", "mul"),
        produced_by="ChatGPT conversations shared by users",
        size="52K / 90K",
        records=90_000,
        link="https://huggingface.co/datasets/RyokoAI/ShareGPT52K",
        format="sharegpt",
        licence="unclear (RyokoAI's card says CC0-1.0)",
        description="Multi-turn user/ChatGPT conversations scraped from sharegpt.com (Vicuna's training data)",
        notes="The RyokoAI repackaging first held 52K conversations, then a 90K version. CC0 is the "
              "repackager's tag; the rights in the users' chats and OpenAI's terms are unsettled. The kit's "
              "sharegpt format is FastChat's {id, conversations[{from, value}]} layout.",
        aliases=("sharegpt52k", "sharegpt-52k", "sharegpt90k", "sharegpt-90k"),
    ),
)


def _key(name: str) -> str:
    """Lookup key: case-insensitive, with '_' and spaces read as '-'."""
    return "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def _index(cards: tuple[DatasetCard, ...]) -> dict[str, DatasetCard]:
    index: dict[str, DatasetCard] = {}
    for card in cards:
        for name in (card.name, *card.aliases):
            key = _key(name)
            if key in index and index[key] is not card:
                raise ValueError(f"dataset name {name!r} names both {index[key].name} and {card.name}")
            index[key] = card
    return index


_BY_KEY = _index(_CARDS)


def datasets() -> list[DatasetCard]:
    """Every dataset card, in the seed's order."""
    return list(_CARDS)


def get_dataset(name: str) -> DatasetCard:
    """The card for ``name``: case-insensitive, aliases accepted (``chinese_alpaca`` → Luotuo, ``dolly-15k``)."""
    card = _BY_KEY.get(_key(name))
    if card is None:
        raise KitError(f"unknown dataset {name!r}; known datasets: {', '.join(c.name for c in _CARDS)}")
    return card


_FRAME_COLUMNS = ("name", "languages", "size", "records", "produced_by", "format", "licence",
                  "shipped_sample", "link", "description", "notes", "aliases")


def catalog_frame() -> pandas.DataFrame:
    """One row per card (a ``pandas.DataFrame``), readable column order; tuples joined with ', '."""
    import pandas as pd

    rows = []
    for card in _CARDS:
        row = asdict(card)
        row["languages"] = ", ".join(card.languages)
        row["aliases"] = ", ".join(card.aliases)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(_FRAME_COLUMNS))
    frame["records"] = frame["records"].astype("Int64")
    return frame


# format_table's columns: (header, card → text, width); a longer cell wraps onto further lines of its row.
_TABLE_COLUMNS = (
    ("dataset", lambda c: c.name + (" *" if c.shipped_sample else ""), 18),
    ("languages", lambda c: ", ".join(c.languages), 13),
    ("size", lambda c: c.size, 12),
    ("format", lambda c: c.format, 8),
    ("produced by", lambda c: c.produced_by, 30),
    ("licence", lambda c: c.licence, 29),
)
TABLE_WIDTH = sum(w for _, _, w in _TABLE_COLUMNS) + 2 * (len(_TABLE_COLUMNS) - 1)  # 120


def _row(cells: list[list[str]]) -> list[str]:
    height = max(len(c) for c in cells)
    return ["  ".join((cell[i] if i < len(cell) else "").ljust(w)
                      for cell, (_, _, w) in zip(cells, _TABLE_COLUMNS)).rstrip() for i in range(height)]


def format_table() -> str:
    """A plain-text table of the catalogue for the CLI (``TABLE_WIDTH`` columns), then each dataset's link."""
    cards = datasets()
    lines = _row([[head] for head, _, _ in _TABLE_COLUMNS]) + _row([["-" * w] for _, _, w in _TABLE_COLUMNS])
    for card in cards:
        lines += _row([textwrap.wrap(get(card), w, break_on_hyphens=False) or [""] for _, get, w in _TABLE_COLUMNS])
    name_width = max(len(c.name) for c in cards)
    lines += ["", "* a sample ships with the package (pkg:instruct/…). Licences differ; several are "
                  "non-commercial or research-only.", "", "links"]
    lines += [f"  {c.name.ljust(name_width)}  {c.link}" for c in cards]
    return "\n".join(lines) + "\n"
