"""The seed project's catalogues, as data: open instruction datasets and the foundation models it compares.

LLM4Academic (patrick-tssn/LM-Research-Hub, README "Instruction tuning / Datasets") lists the datasets a study
could start from; each is a frozen ``DatasetCard`` here: languages, how it was produced, size, upstream link,
the kit's on-disk format name, the licence as stated upstream and, where the package ships one, the ``pkg:`` path
of a sample. Facts were checked against the upstream pages where possible; ``notes`` says where a card departs
from the seed's table or where something could not be confirmed. Licences differ and several are
non-commercial or research-only: read ``licence`` and ``notes`` before any use beyond research.

The seed fine-tunes several open foundation models (LLaMA-7B, BLOOMZ-7B1-mt, Galactica-6.7B, Flan-T5-XXL, GLM,
ChatGLM-6B) on the same instruction mix; each family is a frozen ``ModelCard``: the seed's model and hub id, the
``model_type`` values it covers (``card_for_config`` finds a checkpoint's card by them), the model class and the
Auto class that loads it, causal or seq2seq, the block FSDP wraps, the default prompt template, whether its code
ships with the checkpoint, what stanford_alpaca's special-token step does to its tokenizer, size, licence, link.

The cards live in ``resources/catalog/datasets.yaml`` and ``resources/catalog/models.yaml``. This module sits at
the bottom of the package: standard library, PyYAML and ``config`` only (pandas lazily); no torch, no transformers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from .base import PKG_PREFIX, RESOURCES_DIR, KitError
from .config import FORMAT_NAMES, MODEL_CARDS, TEMPLATES

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
        _check_text(self, "dataset", ("name", "produced_by", "size", "link", "licence", "description"))
        if not self.languages or not all(code.strip() for code in self.languages):
            raise ValueError(f"dataset card {self.name!r}: languages must be a non-empty tuple of ISO codes")
        _check_choice(self, "dataset", "format", FORMAT_NAMES)
        if self.shipped_sample is not None and not self.shipped_sample.startswith(PKG_PREFIX):
            raise ValueError(f"dataset card {self.name!r}: shipped_sample must be a {PKG_PREFIX}… path")
        if self.records is not None and self.records <= 0:
            raise ValueError(f"dataset card {self.name!r}: records must be positive or None")


MODEL_KINDS: tuple[str, ...] = ("causal", "seq2seq")
AUTO_CLASSES: tuple[str, ...] = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM")


@dataclass(frozen=True)
class ModelCard:
    """One foundation-model family the seed fine-tunes, with its seed model. Every text field is non-empty."""

    name: str  # the family, one of config.MODEL_CARDS (`models[i].card` in the params)
    model: str  # the seed's model of this family ("LLaMA-7B")
    hub_id: str  # where the seed's model is on the hub (`models[i].path`)
    model_types: tuple[str, ...]  # config.json `model_type` values this card covers
    architecture: str  # the model class the checkpoint loads as ("LlamaForCausalLM")
    auto_class: str  # the transformers Auto class that loads it (AUTO_CLASSES)
    kind: str  # "causal" (decoder-only) or "seq2seq" (encoder-decoder)
    wrap_class: str  # the block FSDP's auto-wrap policy wraps ("LlamaDecoderLayer")
    template: str  # default prompt template, one of config.TEMPLATES
    needs_remote_code: bool  # its code ships with the checkpoint: loading needs trust_remote_code
    pad_token: str  # what stanford_alpaca's special-token step does to this tokenizer
    parameters: str  # human-readable, as upstream counts them ("6.7B")
    licence: str  # as stated upstream
    link: str
    description: str  # one line
    notes: str = ""  # facts that could not be confirmed, caveats
    aliases: tuple[str, ...] = ()  # other names `get_model_card` accepts (the model and hub id always are)

    def __post_init__(self) -> None:
        _check_text(
            self,
            "model",
            (
                "name",
                "model",
                "hub_id",
                "architecture",
                "wrap_class",
                "pad_token",
                "parameters",
                "licence",
                "link",
                "description",
            ),
        )
        _check_choice(self, "model", "name", MODEL_CARDS)
        _check_choice(self, "model", "template", TEMPLATES)
        _check_choice(self, "model", "kind", MODEL_KINDS)
        _check_choice(self, "model", "auto_class", AUTO_CLASSES)
        if not self.model_types or not all(t.strip() for t in self.model_types):
            raise ValueError(f"model card {self.name!r}: model_types must be a non-empty tuple of model_type names")
        if self.kind == "seq2seq" and self.auto_class != "AutoModelForSeq2SeqLM":
            raise ValueError(f"model card {self.name!r}: a seq2seq model loads with AutoModelForSeq2SeqLM")
        if not isinstance(self.needs_remote_code, bool):
            raise ValueError(f"model card {self.name!r}: needs_remote_code must be true or false")

    @property
    def is_seq2seq(self) -> bool:
        return self.kind == "seq2seq"


def _check_text(card: Any, what: str, names: Sequence[str]) -> None:
    for f in names:
        if not getattr(card, f).strip():
            raise ValueError(f"{what} card {card.name!r}: {f} is empty")


def _check_choice(card: Any, what: str, field: str, allowed: Sequence[str]) -> None:
    if getattr(card, field) not in allowed:
        raise ValueError(
            f"{what} card {card.name!r}: {field} {getattr(card, field)!r} is not one of {', '.join(allowed)}"
        )


CATALOG_DIR = RESOURCES_DIR / "catalog"
CARDS_FILE = CATALOG_DIR / "datasets.yaml"
MODEL_CARDS_FILE = CATALOG_DIR / "models.yaml"

_Card = TypeVar("_Card", DatasetCard, ModelCard)


def _load(cls: type[_Card], path, key: str) -> tuple[_Card, ...]:
    """The cards under ``key`` in the YAML file ``path``, checked by ``cls``; YAML lists become tuples."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))[key]
    tuples = [f.name for f in fields(cls) if str(f.type).startswith("tuple")]
    return tuple(cls(**{**c, **{t: tuple(c[t]) for t in tuples if t in c}}) for c in raw)


_CARDS: tuple[DatasetCard, ...] = _load(DatasetCard, CARDS_FILE, "datasets")
_MODEL_CARDS: tuple[ModelCard, ...] = _load(ModelCard, MODEL_CARDS_FILE, "models")


def _key(name: str) -> str:
    """Lookup key: case-insensitive, with '_' and spaces read as '-'."""
    return "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def _index(cards: Sequence[_Card], names: Callable[[_Card], Sequence[str]], what: str) -> dict[str, _Card]:
    index: dict[str, _Card] = {}
    for card in cards:
        for name in names(card):
            key = _key(name)
            if key in index and index[key] is not card:
                raise ValueError(f"{what} {name!r} names both {index[key].name} and {card.name}")
            index[key] = card
    return index


_BY_KEY = _index(_CARDS, lambda c: (c.name, *c.aliases), "dataset name")
_MODEL_BY_KEY = _index(_MODEL_CARDS, lambda c: (c.name, c.model, c.hub_id, *c.aliases), "model name")
_MODEL_BY_TYPE = _index(_MODEL_CARDS, lambda c: c.model_types, "model_type")


def datasets() -> list[DatasetCard]:
    """Every dataset card, in the seed's order."""
    return list(_CARDS)


def get_dataset(name: str) -> DatasetCard:
    """The card for ``name``: case-insensitive, aliases accepted (``chinese_alpaca`` → Luotuo, ``dolly-15k``)."""
    card = _BY_KEY.get(_key(name))
    if card is None:
        raise KitError(f"unknown dataset {name!r}; known datasets: {', '.join(c.name for c in _CARDS)}")
    return card


def model_cards() -> list[ModelCard]:
    """Every model card, in the order of ``config.MODEL_CARDS``."""
    return list(_MODEL_CARDS)


def get_model_card(name: str) -> ModelCard:
    """The card for a family name, the seed model's name, its hub id or an alias (case-insensitive)."""
    card = _MODEL_BY_KEY.get(_key(name))
    if card is None:
        raise KitError(
            f"unknown model card {name!r}; known cards: " + ", ".join(f"{c.name} ({c.model})" for c in _MODEL_CARDS)
        )
    return card


def model_type_of(config: Any) -> str | None:
    """``config.model_type`` of a transformers config, or ``config["model_type"]`` of a config.json dict."""
    return config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)


def find_card_for_config(config: Any) -> ModelCard | None:
    """The card covering ``config``'s ``model_type`` (a transformers config or a config.json dict), or None."""
    model_type = model_type_of(config)
    return _MODEL_BY_TYPE.get(_key(model_type)) if model_type else None


def card_for_config(config: Any) -> ModelCard:
    """The card covering ``config``'s ``model_type`` (a transformers config or a config.json dict)."""
    card = find_card_for_config(config)
    if card is None:
        model_type = model_type_of(config)
        raise KitError(
            f"no model card covers model_type {model_type!r}; the cards cover "
            + ", ".join(f"{'/'.join(c.model_types)} ({c.name}: {c.model})" for c in _MODEL_CARDS)
        )
    return card


def _frame(cards: Sequence[DatasetCard | ModelCard], columns: Sequence[str]) -> pandas.DataFrame:
    """One row per card in ``columns`` order; tuples joined with ', '."""
    import pandas as pd

    rows = [{k: ", ".join(v) if isinstance(v, tuple) else v for k, v in asdict(card).items()} for card in cards]
    return pd.DataFrame(rows, columns=list(columns))


_FRAME_COLUMNS = (
    "name",
    "languages",
    "size",
    "records",
    "produced_by",
    "format",
    "licence",
    "shipped_sample",
    "link",
    "description",
    "notes",
    "aliases",
)
_MODEL_FRAME_COLUMNS = (
    "name",
    "model",
    "hub_id",
    "parameters",
    "kind",
    "architecture",
    "wrap_class",
    "template",
    "needs_remote_code",
    "model_types",
    "auto_class",
    "pad_token",
    "licence",
    "link",
    "description",
    "notes",
    "aliases",
)


def catalog_frame() -> pandas.DataFrame:
    """One row per dataset card (a ``pandas.DataFrame``), readable column order; tuples joined with ', '."""
    frame = _frame(_CARDS, _FRAME_COLUMNS)
    frame["records"] = frame["records"].astype("Int64")
    return frame


def model_frame() -> pandas.DataFrame:
    """One row per model card (a ``pandas.DataFrame``), readable column order; tuples joined with ', '."""
    return _frame(_MODEL_CARDS, _MODEL_FRAME_COLUMNS)


# A table's columns: (header, card → text, width); a longer cell wraps onto further lines of its row.
Column = tuple[str, Callable[[Any], str], int]
_TABLE_COLUMNS: tuple[Column, ...] = (
    ("dataset", lambda c: c.name + (" *" if c.shipped_sample else ""), 18),
    ("languages", lambda c: ", ".join(c.languages), 13),
    ("size", lambda c: c.size, 12),
    ("format", lambda c: c.format, 8),
    ("produced by", lambda c: c.produced_by, 30),
    ("licence", lambda c: c.licence, 29),
)
_MODEL_TABLE_COLUMNS: tuple[Column, ...] = (
    ("card", lambda c: c.name + (" *" if c.needs_remote_code else ""), 9),
    ("model", lambda c: c.model, 15),
    ("hub id", lambda c: c.hub_id, 24),
    ("params", lambda c: c.parameters, 6),
    ("kind", lambda c: c.kind, 7),
    ("FSDP wrap", lambda c: c.wrap_class, 17),
    ("template", lambda c: c.template, 8),
    ("licence", lambda c: c.licence, 20),
)


def _width(columns: Sequence[Column]) -> int:
    return sum(w for _, _, w in columns) + 2 * (len(columns) - 1)


TABLE_WIDTH = _width(_TABLE_COLUMNS)  # 120
MODEL_TABLE_WIDTH = _width(_MODEL_TABLE_COLUMNS)  # 120


def _row(cells: list[list[str]], columns: Sequence[Column]) -> list[str]:
    height = max(len(c) for c in cells)
    return [
        "  ".join(
            (cell[i] if i < len(cell) else "").ljust(w) for cell, (_, _, w) in zip(cells, columns, strict=False)
        ).rstrip()
        for i in range(height)
    ]


def _table(cards: Sequence[DatasetCard | ModelCard], columns: Sequence[Column], footnote: str) -> str:
    """Header, one wrapped row per card, the footnote, then each card's link."""
    lines = _row([[head] for head, _, _ in columns], columns) + _row([["-" * w] for _, _, w in columns], columns)
    for card in cards:
        lines += _row([textwrap.wrap(get(card), w, break_on_hyphens=False) or [""] for _, get, w in columns], columns)
    name_width = max(len(c.name) for c in cards)
    lines += ["", footnote, "", "links"]
    lines += [f"  {c.name.ljust(name_width)}  {c.link}" for c in cards]
    return "\n".join(lines) + "\n"


def format_table() -> str:
    """A plain-text table of the dataset catalogue for the CLI (``TABLE_WIDTH`` columns), then each link."""
    return _table(
        datasets(),
        _TABLE_COLUMNS,
        "* a sample ships with the package (pkg:instruct/…). Licences "
        "differ; several are non-commercial or research-only.",
    )


def format_model_table() -> str:
    """A plain-text table of the model cards for the CLI (``MODEL_TABLE_WIDTH`` columns), then each link."""
    return _table(
        model_cards(),
        _MODEL_TABLE_COLUMNS,
        "* its code ships with the checkpoint: set trust_remote_code: "
        "true on the model in the params.\nLicences differ; several are non-commercial or research-only.",
    )
