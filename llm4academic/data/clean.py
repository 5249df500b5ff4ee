"""Cleaning a pool of unified records: exact and near-duplicate removal, language and length filters.

Each step returns the kept records and a ``StepReport`` saying how many it removed, from which source and why
(with a few examples), so the explore notebook and the manifest can show every record that left the pool.
Records keep their order; the first occurrence of a duplicate is the one kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import datasets
from datasketch import MinHash, MinHashLSH

MAX_EXAMPLES = 5
_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass
class StepReport:
    step: str
    before: int
    removed: int = 0
    by_source: Counter = field(default_factory=Counter)
    detail: dict = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def note(self, source: str, example: dict, across: bool | None = None) -> None:
        """Count one removed record (``across``: a duplicate of a record from another source)."""
        self.removed += 1
        self.by_source[source] += 1
        if across is not None:
            self.detail["across_sources" if across else "within_source"] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "before": self.before,
            "removed": self.removed,
            "after": self.before - self.removed,
            "by_source": dict(self.by_source),
            "detail": self.detail,
            "examples": self.examples,
        }


def column(ds: datasets.Dataset, name: str) -> list:
    """A column as a plain Python list (respecting any ``select``-ed rows)."""
    return ds.select_columns([name]).to_dict()[name]


def normalise(text: str) -> str:
    """Text for duplicate detection: NFKC (full-width → half-width), lower case, punctuation and spaces dropped."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).lower())


def record_texts(ds: datasets.Dataset) -> list[str]:
    """One string per record: instruction, input, output and every conversation turn."""
    cols = ds.select_columns(["instruction", "input", "output", "conversation"]).to_dict()
    return [
        "\n".join([i, x, o, *(t["content"] for t in conv)])
        for i, x, o, conv in zip(cols["instruction"], cols["input"], cols["output"], cols["conversation"], strict=False)
    ]


def _keep(ds: datasets.Dataset, removed: set[int]) -> datasets.Dataset:
    return ds.select([i for i in range(len(ds)) if i not in removed]) if removed else ds


def exact_dedup(ds: datasets.Dataset) -> tuple[datasets.Dataset, StepReport]:
    """Drop records whose normalised text equals an earlier record's."""
    rep = StepReport("exact_dedup", len(ds), detail={"within_source": 0, "across_sources": 0})
    ids, sources = column(ds, "id"), column(ds, "source")
    first: dict[str, int] = {}
    removed: set[int] = set()
    for i, key in enumerate(map(normalise, record_texts(ds))):
        j = first.setdefault(key, i)
        if j != i:
            removed.add(i)
            rep.note(sources[i], {"removed": ids[i], "duplicate_of": ids[j]}, across=sources[i] != sources[j])
    return _keep(ds, removed), rep


def _shingles(text: str, k: int) -> list[bytes]:
    norm = normalise(text)
    if len(norm) <= k:
        return [norm.encode("utf-8")]
    return list({norm[i : i + k].encode("utf-8") for i in range(len(norm) - k + 1)})


def near_dedup(
    ds: datasets.Dataset, threshold: float = 0.85, num_perm: int = 128, shingle: int = 5, seed: int = 1
) -> tuple[datasets.Dataset, StepReport]:
    """Drop records whose character-shingle MinHash (datasketch LSH) is ≥ ``threshold`` similar to a kept one.

    LSH (with a looser band setting) proposes candidates; the MinHash Jaccard estimate confirms them, so a pair
    is removed only when its estimated similarity reaches the threshold. Works within and across sources; the
    report counts both.
    """
    rep = StepReport("near_dedup", len(ds), detail={"within_source": 0, "across_sources": 0})
    ids, sources = column(ds, "id"), column(ds, "source")
    # Candidates come from a looser LSH band setting, so pairs just above the threshold are not missed by chance.
    lsh = MinHashLSH(threshold=max(0.1, threshold - 0.15), num_perm=num_perm)
    hashes = MinHash.bulk((_shingles(t, shingle) for t in record_texts(ds)), num_perm=num_perm, seed=seed)
    removed: set[int] = set()
    rep.detail.update(threshold=threshold, num_perm=num_perm, shingle=shingle)
    for i, mh in enumerate(hashes):
        match = [int(j) for j in lsh.query(mh) if hashes[int(j)].jaccard(mh) >= threshold]
        if match:
            j = min(match)
            removed.add(i)
            rep.note(
                sources[i],
                {"removed": ids[i], "similar_to": ids[j], "similarity": round(hashes[j].jaccard(mh), 3)},
                across=sources[i] != sources[j],
            )
        else:
            lsh.insert(str(i), mh)
    return _keep(ds, removed), rep


def language_filter(ds: datasets.Dataset, languages: list[str]) -> tuple[datasets.Dataset, StepReport]:
    rep = StepReport("language_filter", len(ds))
    removed = set()
    for i, (rid, src, lang) in enumerate(
        zip(column(ds, "id"), column(ds, "source"), column(ds, "language"), strict=False)
    ):
        if lang not in languages:
            removed.add(i)
            rep.note(src, {"removed": rid, "language": lang})
    rep.detail = {
        "kept_languages": list(languages),
        "removed_by_language": dict(Counter(lang for i, lang in enumerate(column(ds, "language")) if i in removed)),
    }
    return _keep(ds, removed), rep


def length_filter(
    ds: datasets.Dataset,
    tokenizer,
    tokenizer_name: str,
    min_output_tokens: int | None = None,
    max_total_tokens: int | None = None,
) -> tuple[datasets.Dataset, StepReport]:
    """Drop records whose output is shorter than ``min_output_tokens`` or whose instruction + input + output is
    longer than ``max_total_tokens``, counted in ``tokenizer``'s tokens (one batched call per field)."""
    rep = StepReport("length_filter", len(ds))
    lengths = {
        f: [len(x) for x in tokenizer(column(ds, f), add_special_tokens=False, verbose=False)["input_ids"]]
        for f in ("instruction", "input", "output")
    }
    removed = set()
    reasons: Counter = Counter()
    for i, (rid, src) in enumerate(zip(column(ds, "id"), column(ds, "source"), strict=False)):
        total = lengths["instruction"][i] + lengths["input"][i] + lengths["output"][i]
        why = (
            "output_too_short"
            if min_output_tokens and lengths["output"][i] < min_output_tokens
            else "too_long"
            if max_total_tokens and total > max_total_tokens
            else None
        )
        if why:
            removed.add(i)
            reasons[why] += 1
            rep.note(src, {"removed": rid, "reason": why, "output_tokens": lengths["output"][i], "total_tokens": total})
    rep.detail = {
        "tokenizer": tokenizer_name,
        "min_output_tokens": min_output_tokens,
        "max_total_tokens": max_total_tokens,
        "reasons": dict(reasons),
    }
    return _keep(ds, removed), rep


def drop_ids(ds: datasets.Dataset, ids: set[str], step: str) -> tuple[datasets.Dataset, StepReport]:
    """Drop the records whose id is in ``ids`` (e.g. those that overlap Z-Bench)."""
    rep = StepReport(step, len(ds))
    removed = set()
    for i, (rid, src) in enumerate(zip(column(ds, "id"), column(ds, "source"), strict=False)):
        if rid in ids:
            removed.add(i)
            rep.note(src, {"removed": rid})
    return _keep(ds, removed), rep


def clean(ds: datasets.Dataset, params, tokenizer=None, tokenizer_name: str = "", seed: int = 1):
    """Run the cleaning steps ``params`` (a ``CleanParams``) asks for, in order; returns (records, reports)."""
    reports = []
    if params.exact_dedup:
        ds, rep = exact_dedup(ds)
        reports.append(rep)
    if params.near_dedup.enabled:
        nd = params.near_dedup
        ds, rep = near_dedup(ds, nd.threshold, nd.num_perm, nd.shingle, seed=seed)
        reports.append(rep)
    if params.languages:
        ds, rep = language_filter(ds, params.languages)
        reports.append(rep)
    if params.min_output_tokens or params.max_total_tokens:
        if tokenizer is None:
            raise ValueError("length filters need the tokenizer of data.clean.tokenizer")
        ds, rep = length_filter(ds, tokenizer, tokenizer_name, params.min_output_tokens, params.max_total_tokens)
        reports.append(rep)
    return ds, reports
