"""Contamination check: n-gram overlap between training records and Z-Bench prompts and reference answers.

Every text is normalised (NFKC, so full-width forms become half-width; lower case) and read two ways: its CJK
characters alone (whitespace, punctuation, digits and Latin dropped) and its words (runs of letters and digits
outside CJK). A Z-Bench text enters the index as all its ``n_zh``-character and ``n_en``-word n-grams. A text
too short for either is taken whole if it has at least ``min_zh`` CJK characters or ``min_en`` words; a shorter
one cannot be judged and is reported as too short to check. A training record (instruction, input, output,
every conversation turn, chosen, rejected) is contaminated by an item when it shares an n-gram with it, or holds
both readings of a short item whole. No n-gram spans two fields or turns: the record's text carries a
``FIELD_BREAK`` between them that both readings keep. Records as pandas or an Arrow-backed dataset (scanned in
batches, in forked workers when large); pandas out; no torch.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain

import datasets
import pandas as pd
from tqdm.auto import tqdm

from ..base import KitError
from ..zbench import load_zbench
from .parallel import map_shards

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # ideographs, extensions A to H
FIELD_BREAK = "\ue000"  # a private-use character: kept by both readings, in no Z-Bench gram
_NOT_CJK = re.compile(f"[^{CJK}{FIELD_BREAK}]+")
_WORD = re.compile(f"[^\\W_{CJK}]+|{FIELD_BREAK}")
RECORD_TEXT = ("instruction", "input", "output", "conversation", "chosen", "rejected")
Key = tuple[str, str]  # (Z-Bench item_id, field)


class ContaminationError(KitError):
    """The records or the Z-Bench table lack what the check needs: the message names the column."""


@dataclass(frozen=True)
class Settings:
    n_en: int = 13  # words per n-gram (any non-CJK script)
    n_zh: int = 13  # CJK characters per n-gram
    min_en: int = 5  # a shorter text is matched whole if it has this many words …
    min_zh: int = 8  # … or this many CJK characters; otherwise it is too short to check
    fields: tuple[str, ...] = ("prompt", "reference")

    def __post_init__(self):
        for name in ("n_en", "n_zh", "min_en", "min_zh"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ContaminationError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.fields:
            raise ContaminationError("fields is empty: name the Z-Bench columns to check, e.g. prompt, reference")


# --------------------------------------------------------------------------------------------- text → grams


def normalise(text: str) -> tuple[str, list[str]]:
    """A text's two readings: its CJK characters as one string, and its words (NFKC, lower case)."""
    norm = unicodedata.normalize("NFKC", text).lower()
    return _NOT_CJK.sub("", norm), _WORD.findall(norm)


def char_ngrams(chars: str, n: int) -> Iterator[str]:
    """Every window of ``n`` characters (no Python-level loop: this is the hot path)."""
    return map(chars.__getitem__, map(slice, range(len(chars) - n + 1), range(n, len(chars) + 1)))


def word_ngrams(words: list[str], n: int) -> Iterator[str]:
    """Every window of ``n`` words, joined by single spaces."""
    return map(" ".join, zip(*(words[i:] for i in range(n)), strict=False))


def padded(words: list[str]) -> str:
    """Words between single spaces, a space at each end: ``" a b "`` (``" "`` for none), for whole-word search."""
    return f" {' '.join(words)} " if words else " "


def _ngrams(chars: str, words: list[str], s: Settings) -> Iterator[str]:
    return chain(char_ngrams(chars, s.n_zh), word_ngrams(words, s.n_en))


def item_grams(text: str, s: Settings) -> tuple[str, list]:
    """``(status, grams)`` of one Z-Bench text; status is ``ngrams``, ``whole``, ``too_short`` or ``empty``.

    A ``whole`` gram is the pair ``(cjk_chars, " words joined by spaces ")``: a record holds it when its
    CJK reading contains the first and its padded word reading the second.
    """
    if not text.strip():
        return "empty", []
    chars, words = normalise(text)
    grams = list(dict.fromkeys(_ngrams(chars, words, s)))
    if grams:
        return "ngrams", grams
    if len(chars) >= s.min_zh or len(words) >= s.min_en:
        return "whole", [(chars, padded(words))]
    return "too_short", []


# --------------------------------------------------------------------------------------------- the index


@dataclass
class ZBenchIndex:
    """Z-Bench grams → the ``(item_id, field)`` pairs holding them, built once per check."""

    settings: Settings
    ngrams: dict[str, set[Key]] = field(default_factory=lambda: defaultdict(set))
    whole: dict[str, dict[str, set[Key]]] = field(default_factory=dict)  # CJK reading → padded words → pairs
    items: pd.DataFrame | None = None  # one row per (item, field): item_id, split, field, status, ngrams, text


def build_index(zbench: pd.DataFrame, settings: Settings) -> ZBenchIndex:
    missing = [c for c in ("item_id", "split", *settings.fields) if c not in zbench.columns]
    if missing:
        raise ContaminationError(
            f"the Z-Bench table has no column {', '.join(missing)}; it has: {', '.join(map(str, zbench.columns))}"
        )
    index, rows = ZBenchIndex(settings), []
    for item_id, split, *texts in zbench[["item_id", "split", *settings.fields]].itertuples(index=False):
        for fld, text in zip(settings.fields, texts, strict=False):
            status, grams = item_grams(_as_text(text), settings)
            for g in grams:
                if status == "whole":
                    index.whole.setdefault(g[0], defaultdict(set))[g[1]].add((item_id, fld))
                else:
                    index.ngrams[g].add((item_id, fld))
            rows.append(
                {
                    "item_id": item_id,
                    "split": split,
                    "field": fld,
                    "status": status,
                    "ngrams": len(grams),
                    "text": _as_text(text),
                }
            )
    index.items = pd.DataFrame(rows, columns=["item_id", "split", "field", "status", "ngrams", "text"])
    return index


def text_hits(text: str, index: ZBenchIndex) -> dict[Key, list[str]]:
    """``(item_id, field)`` → the Z-Bench grams found in one training text (in order of appearance)."""
    chars, words = normalise(text)
    found: dict[Key, list[str]] = defaultdict(list)
    if not index.ngrams.keys().isdisjoint(_ngrams(chars, words, index.settings)):  # the common case stops here
        for g in dict.fromkeys(_ngrams(chars, words, index.settings)):
            for key in index.ngrams.get(g, ()):
                found[key].append(g)
    spaced = padded(words)
    for c in filter(chars.__contains__, index.whole):  # C-level filters: few short items ever pass
        for w in filter(spaced.__contains__, index.whole[c]):
            for key in index.whole[c][w]:
                found[key].append(f"{c}{w}".strip())
    return found


# --------------------------------------------------------------------------------------------- records


def _checked_columns(names: list[str], ids) -> list[str]:
    """The record text columns present among ``names``; an error without ids, text, or with repeated ids."""
    cols = [c for c in RECORD_TEXT if c in names]
    if "id" not in names or not cols:
        raise ContaminationError(
            "the training records need an `id` column and at least one of "
            f"{', '.join(RECORD_TEXT)}; they have: {', '.join(map(str, names))}"
        )
    ids = pd.Series(ids() if callable(ids) else ids, dtype=object)
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise ContaminationError(
            f"record ids must be unique to report and drop records; repeated: {', '.join(map(str, dupes.unique()[:5]))}"
        )
    return cols


def _text_columns(records: pd.DataFrame) -> list[str]:
    return _checked_columns(list(records.columns), lambda: records["id"])


def _as_text(value) -> str:
    """A text cell, or a conversation (list of ``{role, content}``) as its turns' contents between breaks."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, float):  # missing cell
        return ""
    return FIELD_BREAK.join(str(turn.get("content") or "") for turn in value)


def record_texts(records: pd.DataFrame) -> Iterator[str]:
    """Each record's text fields and conversation turns as one text, with a ``FIELD_BREAK`` between them."""
    cols = [records[c].tolist() for c in _text_columns(records)]
    for values in zip(*cols, strict=False):
        yield FIELD_BREAK.join(map(_as_text, values))


# --------------------------------------------------------------------------------------------- the report

MATCH_COLUMNS = ["id", "source", "item_id", "split", "field", "shared_ngrams", "item_ngrams", "example"]


@dataclass
class ContaminationReport:
    """What the check found; every table is a pandas DataFrame, ``to_dict()`` is the JSON artifact.

    ``counts``: records_scanned, records_contaminated, items, items_checked (≥ 1 field could be judged),
    items_too_short (no field could be judged), items_affected, fields ({field: {status: items}}).
    """

    matches: pd.DataFrame  # one row per (record, item, field)
    records: pd.DataFrame  # one row per contaminated record: id, source, item_ids, fields, shared_ngrams, example
    items: pd.DataFrame  # one row per affected Z-Bench item: item_id, split, records, fields
    too_short: pd.DataFrame  # Z-Bench texts that could not be judged: item_id, split, field, text
    counts: dict
    settings: dict
    seconds: float = 0.0  # index + scan time (kept out of ``counts``, which are reproducible)

    def contaminated_ids(self) -> set[str]:
        return set(self.records["id"])

    def drop(self, records: pd.DataFrame) -> pd.DataFrame:
        """``records`` without the contaminated ones (for ``data.decontaminate: true``)."""
        return records[~records["id"].isin(self.contaminated_ids())]

    def to_dict(self) -> dict:
        tables = {"records": self.records, "items": self.items, "matches": self.matches, "too_short": self.too_short}
        out = {"settings": self.settings, "counts": self.counts, "seconds": self.seconds}
        out.update({k: json.loads(v.to_json(orient="records", force_ascii=False)) for k, v in tables.items()})
        return out


def _match_rows(ids, sources, texts: Iterable[str], index: ZBenchIndex) -> list[dict]:
    split_of = dict(zip(index.items["item_id"], index.items["split"], strict=False))
    size = {(r.item_id, r.field): r.ngrams for r in index.items.itertuples()}
    rows = []
    for rid, src, text in zip(ids, sources, texts, strict=False):
        for (item_id, fld), grams in text_hits(text, index).items():
            rows.append(
                {
                    "id": rid,
                    "source": src,
                    "item_id": item_id,
                    "split": split_of[item_id],
                    "field": fld,
                    "shared_ngrams": len(grams),
                    "item_ngrams": size[item_id, fld],
                    "example": grams[0],
                }
            )
    return rows


def _per_record(matches: pd.DataFrame) -> pd.DataFrame:
    g = matches.groupby("id", sort=False)
    return pd.DataFrame(
        {
            "source": g["source"].first(),
            "item_ids": g["item_id"].unique().map(sorted),
            "fields": g["field"].unique().map(sorted),
            "shared_ngrams": g["shared_ngrams"].sum(),
            "example": g["example"].first(),
        }
    ).reset_index()


def _per_item(matches: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    g = matches.groupby("item_id")
    out = pd.DataFrame(
        {"split": g["split"].first(), "records": g["id"].nunique(), "fields": g["field"].unique().map(sorted)}
    ).reset_index()
    rank = {k: i for i, k in enumerate(order)}
    return out.sort_values("item_id", key=lambda s: s.map(rank)).reset_index(drop=True)


def _counts(records_scanned: int, matches: pd.DataFrame, items: pd.DataFrame) -> dict:
    checkable = items[items["status"].isin(["ngrams", "whole"])]
    by_field = items.groupby("field", sort=False)["status"].value_counts()
    return {
        "records_scanned": records_scanned,
        "records_contaminated": int(matches["id"].nunique()),
        "items": int(items["item_id"].nunique()),
        "items_checked": int(checkable["item_id"].nunique()),
        "items_too_short": int(items["item_id"].nunique() - checkable["item_id"].nunique()),
        "items_affected": int(matches["item_id"].nunique()),
        "fields": {f: {k: int(v) for k, v in by_field[f].items()} for f in items["field"].unique()},
    }


def _scan_shard(state, start: int, stop: int) -> list[dict]:
    ds, index, cols = state
    part = ds.select_columns(["id", "source", *cols])
    rows = []
    for a in range(start, stop, 5_000):
        batch = part[a : min(a + 5_000, stop)]
        texts = (FIELD_BREAK.join(map(_as_text, v)) for v in zip(*(batch[c] for c in cols), strict=True))
        rows += _match_rows(batch["id"], batch["source"], texts, index)
    return rows


def _check_dataset(records: datasets.Dataset) -> list[str]:
    return _checked_columns(records.column_names, lambda: records.select_columns(["id"]).to_dict()["id"])


def find_contamination(
    records: pd.DataFrame | datasets.Dataset,
    zbench: pd.DataFrame | None = None,
    *,
    n_en: int = 13,
    n_zh: int = 13,
    min_en: int = 5,
    min_zh: int = 8,
    fields: Iterable[str] = ("prompt", "reference"),
    progress: bool = True,
    num_proc: int | None = 1,
    matches: pd.DataFrame | None = None,
) -> ContaminationReport:
    """Which training records overlap which Z-Bench items (``zbench`` defaults to the shipped Z-Bench).

    ``records``: a DataFrame, or an Arrow-backed ``datasets.Dataset`` (read in batches, in ``num_proc`` forked
    workers when large; needs a ``source`` column). ``matches``: the match table of an earlier identical check (the
    data cache), so that only the report is rebuilt.
    """
    zbench = load_zbench() if zbench is None else zbench
    fields = (fields,) if isinstance(fields, str) else tuple(dict.fromkeys(fields))
    settings = Settings(n_en=n_en, n_zh=n_zh, min_en=min_en, min_zh=min_zh, fields=fields)
    is_ds = isinstance(records, datasets.Dataset)
    cols = _check_dataset(records) if is_ds and matches is None else None if is_ds else _text_columns(records)
    start, index = time.perf_counter(), build_index(zbench, settings)
    if matches is None and is_ds:
        rows = [r for part in map_shards(_scan_shard, len(records), (records, index, cols), num_proc) for r in part]
        matches = pd.DataFrame(rows, columns=MATCH_COLUMNS)
    elif matches is None:
        texts = tqdm(record_texts(records), total=len(records), desc="contamination", unit="rec", disable=not progress)
        sources = records["source"].tolist() if "source" in records.columns else [""] * len(records)
        matches = pd.DataFrame(_match_rows(records["id"].tolist(), sources, texts, index), columns=MATCH_COLUMNS)
    seconds = round(time.perf_counter() - start, 3)
    info = {**asdict(settings), "fields": list(settings.fields), "zbench": zbench.attrs.get("zbench", {})}
    too_short = index.items.loc[index.items["status"] == "too_short", ["item_id", "split", "field", "text"]]
    return ContaminationReport(
        matches=matches,
        records=_per_record(matches),
        items=_per_item(matches, zbench["item_id"].tolist()),
        too_short=too_short.reset_index(drop=True),
        counts=_counts(len(records), matches, index.items),
        settings=info,
        seconds=seconds,
    )
