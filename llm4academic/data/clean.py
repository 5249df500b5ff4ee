"""Cleaning a pool of unified records: exact and near-duplicate removal, language and length filters.

Each step returns the kept records and a ``StepReport`` saying how many it removed, from which source and why
(with a few examples), so the explore notebook and the manifest can show every record that left the pool.
Records keep their order; the first occurrence of a duplicate is the one kept.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from hashlib import blake2b

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import minhash
from .cache import STEP_VERSION
from .cache import key as cache_key
from .parallel import map_shards

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

    @classmethod
    def from_dict(cls, d: dict) -> StepReport:
        return cls(d["step"], d["before"], d["removed"], Counter(d["by_source"]), d["detail"], d["examples"])


def arrow_column(ds: datasets.Dataset, name: str) -> pa.ChunkedArray:
    """A column as Arrow (respecting any ``select``-ed rows; no Python objects)."""
    return ds.select_columns([name]).with_format("arrow")[:][name]


def column(ds: datasets.Dataset, name: str) -> list:
    """A column as a plain Python list (respecting any ``select``-ed rows)."""
    return arrow_column(ds, name).to_pylist()


def normalise(text: str) -> str:
    """Text for duplicate detection: NFKC (full-width → half-width), lower case, punctuation and spaces dropped."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).lower())


TEXT_COLUMNS = ["instruction", "input", "output", "conversation"]


def _texts(cols: dict) -> list[str]:
    return [
        "\n".join([i, x, o, *(t["content"] for t in conv)])
        for i, x, o, conv in zip(cols["instruction"], cols["input"], cols["output"], cols["conversation"], strict=False)
    ]


def record_texts(ds: datasets.Dataset) -> list[str]:
    """One string per record: instruction, input, output and every conversation turn."""
    return _texts(ds.select_columns(TEXT_COLUMNS).to_dict())


def _keep(ds: datasets.Dataset, removed) -> datasets.Dataset:
    if not len(removed):
        return ds
    keep = np.ones(len(ds), bool)
    keep[np.fromiter(removed, np.int64, len(removed))] = False
    return ds.select(np.flatnonzero(keep))


def _fingerprint_shard(state, start: int, stop: int) -> tuple[bytes, np.ndarray | None]:
    ds, exact, near = state
    digests, sigs = [], []
    texts = ds.select_columns(TEXT_COLUMNS)
    for a in range(start, stop, 5_000):
        codes, lens = minhash.normalised_codes(_texts(texts[a : min(a + 5_000, stop)]))
        if exact:  # equal digests ⇔ equal normalised texts (up to a 2^-128 chance)
            buf, ends = codes.tobytes(), (np.cumsum(lens) * 4).tolist()
            digests += [blake2b(buf[x:y], digest_size=16).digest() for x, y in zip([0, *ends[:-1]], ends, strict=True)]
        if near is not None:
            sigs.append(minhash.signatures(codes, lens, near["shingle"], near["num_perm"], near["seed"]))
    return b"".join(digests), (np.concatenate(sigs) if sigs else None) if near is not None else None


def fingerprints(
    ds: datasets.Dataset, exact: bool = True, near: dict | None = None, num_proc: int | None = 1
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per record, from its normalised text: a 128-bit digest (exact dedup) and a MinHash signature (near dedup;
    ``near`` = shingle, num_perm, seed), computed in ``num_proc`` forked workers for a large corpus."""
    parts = map_shards(_fingerprint_shard, len(ds), (ds, exact, near), num_proc)
    digests = np.frombuffer(b"".join(p[0] for p in parts), dtype="V16") if exact else None
    sigs = None
    if near is not None:
        sigs = np.concatenate([p[1] for p in parts if p[1] is not None] or [np.zeros((0, near["num_perm"]), np.uint32)])
    return digests, sigs


def _exact(ds: datasets.Dataset, digests: np.ndarray) -> tuple[np.ndarray, StepReport]:
    rep = StepReport("exact_dedup", len(ds), detail={"within_source": 0, "across_sources": 0})
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    first_of = first[inverse.reshape(-1)]
    dup = np.flatnonzero(first_of != np.arange(len(ds)))
    if len(dup):
        ids, sources = column(ds, "id"), column(ds, "source")
        for i, j in zip(dup.tolist(), first_of[dup].tolist(), strict=True):
            rep.note(sources[i], {"removed": ids[i], "duplicate_of": ids[j]}, across=sources[i] != sources[j])
    return dup, rep


def exact_dedup(ds: datasets.Dataset, num_proc: int | None = 1) -> tuple[datasets.Dataset, StepReport]:
    """Drop records whose normalised text equals an earlier record's (compared by a 128-bit BLAKE2 digest)."""
    removed, rep = _exact(ds, fingerprints(ds, exact=True, num_proc=num_proc)[0])
    return _keep(ds, removed), rep


def _near(ds: datasets.Dataset, sigs: np.ndarray, threshold: float, num_perm: int, shingle: int):
    rep = StepReport("near_dedup", len(ds), detail={"within_source": 0, "across_sources": 0})
    rep.detail.update(threshold=threshold, num_perm=num_perm, shingle=shingle)
    bands, rows = minhash.optimal_bands(max(0.1, threshold - 0.15), num_perm)
    found = minhash.duplicates(sigs, threshold, bands, rows)
    if found:
        ids, sources = column(ds, "id"), column(ds, "source")
        for i, (j, sim) in found.items():
            rep.note(
                sources[i],
                {"removed": ids[i], "similar_to": ids[j], "similarity": round(sim, 3)},
                across=sources[i] != sources[j],
            )
    return np.fromiter(found, np.int64, len(found)), rep


def near_dedup(
    ds: datasets.Dataset,
    threshold: float = 0.85,
    num_perm: int = 128,
    shingle: int = 5,
    seed: int = 1,
    num_proc: int | None = 1,
) -> tuple[datasets.Dataset, StepReport]:
    """Drop records whose character-shingle MinHash is ≥ ``threshold`` similar to an earlier kept one.

    LSH (with a looser band setting) proposes candidates; the MinHash Jaccard estimate confirms them, so a pair
    is removed only when its estimated similarity reaches the threshold (``minhash.py``: rensa signatures, the
    datasketch semantics). Works within and across sources; the report counts both.
    """
    near = {"shingle": shingle, "num_perm": num_perm, "seed": seed}
    removed, rep = _near(ds, fingerprints(ds, False, near, num_proc)[1], threshold, num_perm, shingle)
    return _keep(ds, removed), rep


def _language(ds: datasets.Dataset, languages: list[str]) -> tuple[np.ndarray, StepReport]:
    rep = StepReport("language_filter", len(ds))
    langs = np.asarray(column(ds, "language"), dtype=object)
    removed = np.flatnonzero(~np.isin(langs, list(languages)))
    if len(removed):
        ids, sources = column(ds, "id"), column(ds, "source")
        for i in removed.tolist():
            rep.note(sources[i], {"removed": ids[i], "language": langs[i]})
    rep.detail = {"kept_languages": list(languages), "removed_by_language": dict(Counter(langs[removed].tolist()))}
    return removed, rep


def language_filter(ds: datasets.Dataset, languages: list[str]) -> tuple[datasets.Dataset, StepReport]:
    removed, rep = _language(ds, languages)
    return _keep(ds, removed), rep


def _token_lengths(ds: datasets.Dataset, tokenizer, field: str, batch: int = 10_000) -> np.ndarray:
    out = []
    col = ds.select_columns([field])
    for a in range(0, len(ds), batch):
        texts = col[a : a + batch][field]
        out += [len(x) for x in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    return np.asarray(out, dtype=np.int64)


def _length(ds, tokenizer, tokenizer_name, min_output_tokens, max_total_tokens) -> tuple[np.ndarray, StepReport]:
    rep = StepReport("length_filter", len(ds))
    lengths = {f: _token_lengths(ds, tokenizer, f) for f in ("instruction", "input", "output")}
    total = lengths["instruction"] + lengths["input"] + lengths["output"]
    short = lengths["output"] < min_output_tokens if min_output_tokens else np.zeros(len(ds), bool)
    long = ~short & (total > max_total_tokens) if max_total_tokens else np.zeros(len(ds), bool)
    removed = np.flatnonzero(short | long)
    reasons: Counter = Counter()
    if len(removed):
        ids, sources = column(ds, "id"), column(ds, "source")
        for i in removed.tolist():
            why = "output_too_short" if short[i] else "too_long"
            reasons[why] += 1
            out, tot = int(lengths["output"][i]), int(total[i])
            rep.note(sources[i], {"removed": ids[i], "reason": why, "output_tokens": out, "total_tokens": tot})
    rep.detail = {
        "tokenizer": tokenizer_name,
        "min_output_tokens": min_output_tokens,
        "max_total_tokens": max_total_tokens,
        "reasons": dict(reasons),
    }
    return removed, rep


def length_filter(
    ds: datasets.Dataset,
    tokenizer,
    tokenizer_name: str,
    min_output_tokens: int | None = None,
    max_total_tokens: int | None = None,
) -> tuple[datasets.Dataset, StepReport]:
    """Drop records whose output is shorter than ``min_output_tokens`` or whose instruction + input + output is
    longer than ``max_total_tokens``, counted in ``tokenizer``'s tokens (batched calls; only lengths are kept)."""
    removed, rep = _length(ds, tokenizer, tokenizer_name, min_output_tokens, max_total_tokens)
    return _keep(ds, removed), rep


def drop_ids(ds: datasets.Dataset, ids: set[str], step: str) -> tuple[datasets.Dataset, StepReport]:
    """Drop the records whose id is in ``ids`` (e.g. those that overlap Z-Bench)."""
    rep = StepReport(step, len(ds))
    hit = pc.is_in(arrow_column(ds, "id"), value_set=pa.array(sorted(ids), pa.string())) if ids else None
    removed = np.flatnonzero(hit.to_numpy(zero_copy_only=False)) if ids else np.zeros(0, np.int64)
    if len(removed):
        got = ds.select(removed).select_columns(["id", "source"]).to_dict()
        for rid, src in zip(got["id"], got["source"], strict=True):
            rep.note(src, {"removed": rid})
    return _keep(ds, removed), rep


def tokenizer_fingerprint(tokenizer) -> str | None:
    """sha256 of a fast tokenizer's full definition (vocabulary, merges, normaliser…); None for others."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest() if backend is not None else None
    except Exception:
        return None


def clean(
    ds: datasets.Dataset,
    params,
    tokenizer=None,
    tokenizer_name: str = "",
    seed: int = 1,
    *,
    num_proc: int | None = 1,
    cache=None,
    key: str | None = None,
    timings: dict | None = None,
):
    """Run the cleaning steps ``params`` (a ``CleanParams``) asks for, in order; returns (records, reports).

    With a ``cache`` (``cache.DataCache``) and the ``key`` of ``ds``, each step's removed rows and report are
    reused when the same step ran on the same input before (the key after the last step is ``timings["key"]``).
    Exact and near dedup share one pass over the texts (``fingerprints``); ``timings`` gets seconds per step.
    """
    timings = {} if timings is None else timings
    nd = params.near_dedup
    near = {"shingle": nd.shingle, "num_perm": nd.num_perm, "seed": seed} if nd.enabled else None
    plan: list[tuple[str, dict]] = []
    if params.exact_dedup:
        plan.append(("exact_dedup", {}))
    if nd.enabled:
        plan.append(("near_dedup", {"threshold": nd.threshold, **near}))
    if params.languages:
        plan.append(("language_filter", {"languages": list(params.languages)}))
    if params.min_output_tokens or params.max_total_tokens:
        if tokenizer is None:
            raise ValueError("length filters need the tokenizer of data.clean.tokenizer")
        lp = {"min": params.min_output_tokens, "max": params.max_total_tokens, "name": tokenizer_name}
        plan.append(("length_filter", {**lp, "tokenizer": tokenizer_fingerprint(tokenizer)}))
    keys, hits, k = [], [], key
    for name, p in plan:
        k = cache_key(k, "step", name, p, STEP_VERSION) if k and p.get("tokenizer", "") is not None else None
        keys.append(k)
        hits.append(cache.get_step(k) if cache is not None and k else None)
    reports, sigs = [], None
    for (name, p), k, hit in zip(plan, keys, hits, strict=True):
        t0 = time.perf_counter()
        if hit is not None:
            removed, rep = hit[0], StepReport.from_dict(hit[1])
        else:
            if name in ("exact_dedup", "near_dedup") and sigs is None:
                want_near = near if nd.enabled and (name == "near_dedup" or hits[len(reports) + 1] is None) else None
                digests, sigs = fingerprints(ds, name == "exact_dedup", want_near, num_proc)
                timings["fingerprints"] = time.perf_counter() - t0
                t0 = time.perf_counter()
            if name == "exact_dedup":
                removed, rep = _exact(ds, digests)
            elif name == "near_dedup":
                removed, rep = _near(ds, sigs, nd.threshold, nd.num_perm, nd.shingle)
            elif name == "language_filter":
                removed, rep = _language(ds, p["languages"])
            else:
                removed, rep = _length(ds, tokenizer, tokenizer_name, p["min"], p["max"])
            if cache is not None and k:
                cache.put_step(k, removed, rep.to_dict())
        removed = np.asarray(removed, dtype=np.int64)
        if sigs is not None and name == "exact_dedup" and len(removed):
            sigs = np.delete(sigs, removed, axis=0)  # kept aligned with the records left
        ds = _keep(ds, removed)
        reports.append(rep)
        timings[name] = time.perf_counter() - t0
    timings["key"] = keys[-1] if keys else key
    return ds, reports
