"""Format adapters: instruction-data files in their original on-disk layout → the unified record.

Every adapter yields the columns of ``RECORD_FEATURES`` (DESIGN.md, "The unified record"). Files may be a JSON
array, JSON Lines, or gzip of either; the layout is detected from the bytes, not the file name (BELLE ships JSON
Lines named ``.json``). A bad record is an error naming ``file:line`` — or, with ``on_invalid="skip"``, counted
by reason and reported in the ``LoadReport``. Nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from ..config import KitError, SourceParams
from .stats import detect_language

RECORD_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "source": datasets.Value("string"),
    "language": datasets.Value("string"),
    "instruction": datasets.Value("string"),
    "input": datasets.Value("string"),
    "output": datasets.Value("string"),
    "conversation": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
})
COLUMNS = tuple(RECORD_FEATURES)
MAX_EXAMPLES = 5  # file:line examples kept per load report


class DataError(KitError):
    """A data file that cannot be read as asked: the message names file:line and what was expected."""


class InvalidRecord(Exception):
    """One record that does not fit its format; ``reason`` is the counting key (e.g. ``missing:output``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]  # fields whose presence identifies the format
    description: str
    to_record: Callable[[dict], dict]  # raw object → instruction/input/output/conversation (raises InvalidRecord)


@dataclass
class LoadReport:
    """What loading one file did: counts, skipped records by reason, and the first few file:line examples."""

    source: str
    path: str
    format: str
    layout: str  # "json-array" | "jsonl"
    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "path": self.path, "format": self.format, "layout": self.layout,
                "read": self.read, "kept": self.kept, "skipped": dict(self.skipped),
                "skipped_total": sum(self.skipped.values()), "examples": list(self.examples)}


# --------------------------------------------------------------------------------------------- field checks


def _text(obj: dict, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise InvalidRecord(f"missing:{key}", f"missing field {key!r} (expected a string)")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidRecord(f"wrong_type:{key}", f"field {key!r} is {type(value).__name__}, expected a string")
    if not allow_empty and not value.strip():
        raise InvalidRecord(f"empty:{key}", f"field {key!r} is empty")
    return value


def _alpaca(obj: dict) -> dict:
    return {"instruction": _text(obj, "instruction"),
            "input": _text(obj, "input", required=False, allow_empty=True),
            "output": _text(obj, "output"),
            "conversation": []}


FORMATS: dict[str, Format] = {
    "alpaca": Format("alpaca", ("instruction", "output"),
                     "instruction, input (optional), output — Alpaca, Chinese Alpaca/Luotuo, BELLE, GPT-4-LLM, …",
                     _alpaca),
}


def detect_format(obj: Any, where: str) -> Format:
    """The format whose identifying fields the object has; otherwise an error listing what was found."""
    if isinstance(obj, dict):
        for fmt in FORMATS.values():
            if all(k in obj for k in fmt.required):
                return fmt
        found = ", ".join(sorted(map(str, obj))) or "none"
    else:
        found = f"a JSON {type(obj).__name__}, not an object"
    known = "; ".join(f"{f.name} ({', '.join(f.required)})" for f in FORMATS.values())
    raise DataError(f"{where}: no known format fits this file. Fields found: {found}. Known formats: {known}")


# --------------------------------------------------------------------------------------------- raw reading


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); "
                        "expected UTF-8 text") from None


def iter_raw(path: Path) -> tuple[str, Iterator[tuple[int, Any]]]:
    """Yield ``(line, object)`` for each element of a JSON array or each line of JSON Lines.

    A malformed JSON Lines line is yielded as ``(line, InvalidRecord)`` so the caller can skip it; a malformed
    JSON array cannot be resynchronised and raises ``DataError``.
    """
    text = _read_text(path)
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] == "[":
        return "json-array", _iter_array(path, text, start + 1)
    return "jsonl", _iter_lines(text)


def _iter_lines(text: str) -> Iterator[tuple[int, Any]]:
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield no, json.loads(line)
        except json.JSONDecodeError as e:
            yield no, InvalidRecord("malformed_json", f"malformed JSON ({e.msg} at column {e.colno})")


def _iter_array(path: Path, text: str, pos: int) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    line, counted = 1, 0  # line number at offset `counted`
    n = len(text)

    def line_at(offset: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    def skip_ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_at(e.pos)}: malformed JSON array element ({e.msg}); "
                            "expected a JSON object") from None
        yield line_at(pos), obj
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            return
        raise DataError(f"{path}:{line_at(pos)}: malformed JSON array: expected ',' or ']'")


# --------------------------------------------------------------------------------------------- loading


def record_language(rec: dict) -> str:
    """The language the instruction is written in (its input and output only when that is undecided).

    Translated datasets keep English inputs under Chinese instructions: the instruction decides.
    """
    lang = detect_language(rec["instruction"])
    return lang if lang != "und" else detect_language(" ".join((rec["instruction"], rec["input"], rec["output"])))


def load_file(path: str | Path, *, source: str, fmt: str = "auto", language: str | None = None,
              on_invalid: str = "error", max_records: int | None = None) -> tuple[datasets.Dataset, LoadReport]:
    """Read one file into unified records (an Arrow-backed ``datasets.Dataset``) and its ``LoadReport``."""
    path = Path(path)
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    layout, rows = iter_raw(path)
    chosen = FORMATS.get(fmt)
    report = LoadReport(source=source, path=str(path), format=fmt, layout=layout)
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
            rec = chosen.to_record(obj)
        except InvalidRecord as bad:
            where = f"{path}:{line}: {bad.detail}"
            if on_invalid == "error":
                raise DataError(f"{where} ({chosen.name if chosen else 'unknown'} format; "
                                "set data.on_invalid: skip to count and skip such records)") from None
            report.skipped[bad.reason] += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(where)
            continue
        rec["id"] = f"{source}-{report.kept:06d}"
        rec["source"] = source
        rec["language"] = language or record_language(rec)
        for c in COLUMNS:
            cols[c].append(rec[c])
        report.kept += 1
    if chosen is None and report.read == 0:
        raise DataError(f"{path}: the file holds no records")
    return datasets.Dataset.from_dict(cols, features=RECORD_FEATURES), report


def load_source(src: SourceParams, on_invalid: str = "error") -> tuple[datasets.Dataset, LoadReport]:
    return load_file(src.path, source=src.name, fmt=src.format, language=src.language,
                     on_invalid=on_invalid, max_records=src.max_records)


def load_sources(params) -> tuple[datasets.Dataset, list[LoadReport]]:
    """All sources of a study, concatenated in params order, with one report per file."""
    parts, reports = [], []
    for src in params.data.sources:
        ds, rep = load_source(src, params.data.on_invalid)
        parts.append(ds)
        reports.append(rep)
    return datasets.concatenate_datasets(parts), reports
