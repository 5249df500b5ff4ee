"""The seed project's catalogue of open instruction datasets, as data.

LLM4Academic (patrick-tssn/LM-Research-Hub, README "Instruction tuning / Datasets") lists the datasets a study
could start from; each is a frozen ``DatasetCard`` here: languages, how it was produced, size, upstream link,
the kit's on-disk format name, the licence as stated upstream and, where the package ships one, the ``pkg:`` path
of a sample. Facts were checked against the upstream pages where possible; ``notes`` says where a card departs
from the seed's table or where something could not be confirmed. Licences differ and several are
non-commercial or research-only: read ``licence`` and ``notes`` before any use beyond research.

The cards live in ``resources/catalog/datasets.yaml``. This module sits at the bottom of the package:
standard library, PyYAML and ``config`` only (pandas lazily).
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import yaml

from .config import FORMAT_NAMES, PKG_PREFIX, RESOURCES_DIR, KitError

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


CARDS_FILE = RESOURCES_DIR / "catalog" / "datasets.yaml"


def _load_cards() -> tuple[DatasetCard, ...]:
    """The cards of ``resources/catalog/datasets.yaml``, checked by ``DatasetCard``."""
    raw = yaml.safe_load(CARDS_FILE.read_text(encoding="utf-8"))["datasets"]
    return tuple(DatasetCard(**{**c, "languages": tuple(c["languages"]), "aliases": tuple(c.get("aliases", ()))})
                 for c in raw)


_CARDS: tuple[DatasetCard, ...] = _load_cards()


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
