"""Formats: instruction-data files in their original on-disk layout → the unified record.

Every format yields the columns of ``RECORD_FEATURES`` (DESIGN.md, "The unified record"); ``adapters.py`` holds one
adapter per format, this module the registry (``FORMATS``), detection and loading. Files may be a JSON array, JSON
Lines, or gzip of either; the layout is detected from the bytes, not the file name (BELLE ships JSON Lines named
``.json``). A bad record is an error naming ``file:line`` — or, with ``on_invalid="skip"``, counted by reason and
reported in the ``LoadReport``. Nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets.arrow_writer import ArrowWriter

from ..config import SourceParams
from . import adapters
from .cache import LOADER_VERSION, DataCache, key
from .parallel import map_items
from .raw import DataError, InvalidRecord, iter_raw
from .stats import detect_language

RECORD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "language": datasets.Value("string"),
        "instruction": datasets.Value("string"),
        "input": datasets.Value("string"),
        "output": datasets.Value("string"),
        "conversation": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "chosen": datasets.Value("string"),
        "rejected": datasets.Value("string"),
    }
)
COLUMNS = tuple(RECORD_FEATURES)
MAX_EXAMPLES = 5  # file:line examples kept per load report
BATCH = 20_000  # records per Arrow batch while loading
PARALLEL_BYTES = 32 * 2**20  # sources to load together at least this large go to forked workers


@dataclass(frozen=True)
class Format:
    name: str
    signatures: tuple[tuple[str, ...], ...]  # each a set of fields whose presence identifies the format
    description: str
    to_records: Callable[[dict], list[dict]]  # raw object → records without id/source/language (or InvalidRecord)

    def fits(self, obj: dict) -> bool:
        return any(all(k in obj for k in sig) for sig in self.signatures)

    def fields(self) -> str:
        """The identifying fields, alternatives separated by `` | ``: ``conversation | kind, input, target``."""
        return " | ".join(", ".join(sig) for sig in self.signatures)

    @property
    def required(self) -> tuple[str, ...]:
        """The first signature's fields (the one-signature API of earlier versions; ``fields()`` names them all)."""
        return self.signatures[0]


@dataclass
class LoadReport:
    """What loading one file did: counts, skipped records by reason, and the first few file:line examples.

    ``read`` counts the objects read from the file; ``kept`` the records made from them (a seed task makes one
    record per instance).
    """

    source: str
    path: str
    format: str
    layout: str  # "json-array" | "jsonl"
    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "path": self.path,
            "format": self.format,
            "layout": self.layout,
            "read": self.read,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "skipped_total": sum(self.skipped.values()),
            "examples": list(self.examples),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LoadReport:
        fields = ("source", "path", "format", "layout", "read", "kept", "examples")
        return cls(**{k: d[k] for k in fields}, skipped=Counter(d["skipped"]))


# Auto-detection tries the formats in this order and takes the first whose fields are all present. The signatures
# of the real formats are disjoint; where a file carries extra fields, the structured formats come before ``oig``
# (bare ``text``), so e.g. Hugging Face's Alpaca (instruction, input, output, text) stays Alpaca.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "alpaca",
            (("instruction", "output"),),
            "instruction, input (optional), output — Alpaca, Chinese Alpaca/Luotuo, BELLE, GPT-4-LLM, …",
            adapters.alpaca,
        ),
        Format(
            "seed_tasks",
            (("instruction", "instances"),),
            "Self-Instruct seed tasks: id, name, instruction, instances[{input, output}] — one record per instance",
            adapters.seed_tasks,
        ),
        Format(
            "firefly",
            (("conversation",), ("kind", "input", "target")),
            "Firefly: conversation[{human, assistant}] (multi-turn), or the 1.1M release's kind, input, target",
            adapters.firefly,
        ),
        Format(
            "sharegpt",
            (("conversations",),),
            "ShareGPT/Vicuna: conversations[{from: human|gpt|user|assistant|system|…, value}] (multi-turn)",
            adapters.sharegpt,
        ),
        Format("oig", (("text",),), "OIG: text with <human>: / <bot>: turns (or a named bot), metadata", adapters.oig),
        Format(
            "hh_rlhf",
            (("chosen", "rejected"),),
            "Anthropic HH-RLHF: chosen, rejected transcripts (\\n\\nHuman: / \\n\\nAssistant:) — preference pairs",
            adapters.hh_rlhf,
        ),
        Format(
            "dolly",
            (("instruction", "response"),),
            "Dolly: instruction, context (→ input), response, category",
            adapters.dolly,
        ),
        Format("gpt4all", (("prompt", "response"),), "GPT4All: prompt, response", adapters.gpt4all),
    )
}
DETECTION_ORDER = ("alpaca", "seed_tasks", "firefly", "sharegpt", "hh_rlhf", "dolly", "gpt4all", "oig")


def detect_format(obj: Any, where: str) -> Format:
    """The format whose identifying fields the object has; otherwise an error listing what was found."""
    if isinstance(obj, dict):
        for name in DETECTION_ORDER:
            if FORMATS[name].fits(obj):
                return FORMATS[name]
        found = ", ".join(sorted(map(str, obj))) or "none"
    else:
        found = f"a JSON {type(obj).__name__}, not an object"
    known = "; ".join(f"{f.name} ({f.fields()})" for f in FORMATS.values())
    raise DataError(f"{where}: no known format fits this file. Fields found: {found}. Known formats: {known}")


# --------------------------------------------------------------------------------------------- loading


def record_language(rec: dict) -> str:
    """The language the instruction is written in (its input and output only when that is undecided).

    Translated datasets keep English inputs under Chinese instructions: the instruction decides.
    """
    lang = detect_language(rec["instruction"])
    return lang if lang != "und" else detect_language(" ".join((rec["instruction"], rec["input"], rec["output"])))


def load_file(
    path: str | Path,
    *,
    source: str,
    fmt: str = "auto",
    language: str | None = None,
    on_invalid: str = "error",
    max_records: int | None = None,
    arrow_path: str | Path | None = None,
) -> tuple[datasets.Dataset, LoadReport]:
    """Read one file into unified records (an Arrow-backed ``datasets.Dataset``) and its ``LoadReport``.

    Records go to Arrow ``BATCH`` at a time: into ``arrow_path`` (then memory-mapped) when given, else in memory.
    """
    path = Path(path)
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    layout, rows = iter_raw(path)
    report = LoadReport(source=source, path=str(path), format=fmt, layout=layout)
    writer = ArrowWriter(features=RECORD_FEATURES, path=str(arrow_path)) if arrow_path is not None else None
    parts = []
    for batch in _batches(rows, path, FORMATS.get(fmt), report, source, language, on_invalid, max_records):
        if writer is not None:
            writer.write_batch(batch)
        else:
            parts.append(datasets.Dataset.from_dict(batch, features=RECORD_FEATURES))
    if report.format == "auto" and report.read == 0:
        raise DataError(f"{path}: the file holds no records")
    if writer is not None:
        writer.finalize()
        return datasets.Dataset.from_file(str(arrow_path), in_memory=False), report
    if not parts:
        return datasets.Dataset.from_dict({c: [] for c in COLUMNS}, features=RECORD_FEATURES), report
    return (parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)), report


def _batches(rows, path: Path, chosen, report: LoadReport, source, language, on_invalid, max_records):
    """Unified records as column batches of ``BATCH`` records; invalid ones counted in ``report`` (or raised)."""
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for line, obj in rows:
        if max_records is not None and report.kept >= max_records:
            break
        report.read += 1
        try:
            if isinstance(obj, InvalidRecord):
                raise obj
            if chosen is None:
                chosen = detect_format(obj, f"{path}:{line}")
                report.format = chosen.name
            if not isinstance(obj, dict):
                raise InvalidRecord("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
            recs = chosen.to_records(obj)
        except InvalidRecord as bad:
            where = f"{path}:{line}: {bad.detail}"
            if on_invalid == "error":
                raise DataError(
                    f"{where} ({chosen.name if chosen else 'unknown'} format; "
                    "set data.on_invalid: skip to count and skip such records)"
                ) from None
            report.skipped[bad.reason] += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(where)
            continue
        for rec in recs[: None if max_records is None else max_records - report.kept]:
            rec.update(id=f"{source}-{report.kept:06d}", source=source, language=language or record_language(rec))
            for c in COLUMNS:
                cols[c].append(rec[c])
            report.kept += 1
        if len(cols["id"]) >= BATCH:
            yield cols
            cols = {c: [] for c in COLUMNS}
    if cols["id"]:
        yield cols


def source_key(src: SourceParams, on_invalid: str, cache: DataCache) -> str:
    """The cache key of a source's loaded records: the file's sha256, the loader version, the load parameters."""
    path = Path(src.path)
    digest = cache.file_sha256(path) if path.is_file() else "missing"
    return key(
        "source", LOADER_VERSION, digest, str(path), src.name, src.format, src.language, src.max_records, on_invalid
    )


def load_source(
    src: SourceParams, on_invalid: str = "error", cache: DataCache | None = None
) -> tuple[datasets.Dataset, LoadReport]:
    """One source's records: from the cache when it holds them, else loaded (and stored when the cache is on)."""
    kw = {"source": src.name, "fmt": src.format, "language": src.language, "on_invalid": on_invalid}
    if cache is None or not cache.enabled:
        return load_file(src.path, **kw, max_records=src.max_records)
    k = source_key(src, on_invalid, cache)
    hit = cache.get_records(k)
    if hit is not None:
        return hit[0], LoadReport.from_dict(hit[1])
    tmp = cache.records_path(k)
    try:
        _, rep = load_file(src.path, **kw, max_records=src.max_records, arrow_path=tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return cache.commit_records(k, tmp, rep.to_dict()), rep


def _load_one(state, i: int) -> dict:
    sources, on_invalid, cache = state
    return load_source(sources[i], on_invalid, cache)[1].to_dict()


def load_sources(params, cache: DataCache | None = None, num_proc: int | None = 1):
    """All sources of a study, concatenated in params order, with one report per file. With the cache on, sources
    it lacks are loaded in ``num_proc`` forked workers when there are several and they are large."""
    d = params.data
    if cache is not None and cache.enabled:
        missing = [i for i, s in enumerate(d.sources) if cache.get_records(source_key(s, d.on_invalid, cache)) is None]
        big = sum(Path(d.sources[i].path).stat().st_size for i in missing if Path(d.sources[i].path).is_file())
        if len(missing) > 1 and big >= PARALLEL_BYTES:
            map_items(_load_one, missing, (d.sources, d.on_invalid, cache), num_proc)
    parts, reports = [], []
    for src in d.sources:
        ds, rep = load_source(src, d.on_invalid, cache)
        parts.append(ds)
        reports.append(rep)
    return datasets.concatenate_datasets(parts), reports


def inspect_file(path: str | Path, fmt: str = "auto", on_invalid: str = "skip") -> dict:
    """What one file holds, JSON-ready (``llm4academic data inspect``): format, layout, counts, invalid records by
    reason with the first ``file:line`` examples, and the language mix of the records kept."""
    path = Path(path)
    ds, rep = load_file(path, source=path.name, fmt=fmt, on_invalid=on_invalid)
    return {
        "path": str(path),
        "format": rep.format,
        "layout": rep.layout,
        "read": rep.read,
        "records": rep.kept,
        "invalid": dict(rep.skipped.most_common()),
        "invalid_total": sum(rep.skipped.values()),
        "examples": list(rep.examples),
        "languages": dict(Counter(ds["language"]).most_common()),
        "multi_turn": sum(1 for turns in ds["conversation"] if turns),
        "preference_pairs": sum(1 for reply in ds["chosen"] if reply),
    }
