"""Format adapters: instruction-data files in their original on-disk layout → the unified record.

Every adapter yields the columns of ``RECORD_FEATURES`` (DESIGN.md, "The unified record"). Files may be a JSON
array, JSON Lines, or gzip of either; the layout is detected from the bytes, not the file name (BELLE ships JSON
Lines named ``.json``). A bad record is an error naming ``file:line`` — or, with ``on_invalid="skip"``, counted
by reason and reported in the ``LoadReport``. Nothing is dropped silently.

Record conventions. Single-turn formats fill ``instruction``/``input``/``output`` and keep ``conversation`` empty.
Multi-turn formats (firefly, sharegpt, oig, hh_rlhf) fill ``conversation`` with ``{role, content}`` turns (role:
system, user, assistant; an optional system turn first, then user and assistant alternating, ending with an
assistant reply) and set ``instruction`` = the first user turn, ``input`` = "", ``output`` = the first assistant
reply. Preference data (hh_rlhf) also fills ``chosen``/``rejected`` with the final reply of each transcript;
``conversation`` is the chosen transcript. Every other record has ``chosen`` = ``rejected`` = "".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import datasets

from ..config import SourceParams
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


# --------------------------------------------------------------------------------------------- field checks


def _reason(kind: str, path: str) -> str:
    """Counting key for a field path: ``empty:conversations.value`` for ``conversations[3].value``."""
    return kind + ":" + re.sub(r"\[\d+\]", "", path)


def _text(obj: dict, key: str, *, required: bool = True, allow_empty: bool = False, path: str | None = None) -> str:
    path = path or key
    if key not in obj or obj[key] is None:
        if required:
            raise InvalidRecord(_reason("missing", path), f"missing field {path!r} (expected a string)")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidRecord(_reason("wrong_type", path), f"field {path!r} is {type(value).__name__}, expected a string")
    if not allow_empty and not value.strip():
        raise InvalidRecord(_reason("empty", path), f"field {path!r} is empty")
    return value


def _objects(obj: dict, key: str) -> list[dict]:
    """A non-empty list of JSON objects (turns, instances)."""
    value = obj.get(key)
    if value is None:
        raise InvalidRecord(f"missing:{key}", f"missing field {key!r} (expected a list of objects)")
    if not isinstance(value, list):
        raise InvalidRecord(f"wrong_type:{key}", f"field {key!r} is {type(value).__name__}, expected a list of objects")
    if not value:
        raise InvalidRecord(f"empty:{key}", f"field {key!r} is an empty list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRecord(f"wrong_type:{key}", f"field '{key}[{i}]' is {type(item).__name__}, expected an object")
    return value


def _single(instruction: str, input_: str, output: str) -> dict:
    return {
        "instruction": instruction,
        "input": input_,
        "output": output,
        "conversation": [],
        "chosen": "",
        "rejected": "",
    }


def _columns(obj: dict, instruction: str, output: str, input_: str | None = None) -> list[dict]:
    """One single-turn record from three named fields (the input field optional, and may be empty)."""
    given = _text(obj, input_, required=False, allow_empty=True) if input_ else ""
    return [_single(_text(obj, instruction), given, _text(obj, output))]


# --------------------------------------------------------------------------------------------- turns

Turn = tuple[str, str, str]  # (role, content, label naming where it came from, for messages)


def _check_turns(turns: list[Turn], field: str, *, empty_replies: bool = False) -> list[Turn]:
    """An optional first system turn, then user and assistant alternating, ending with an assistant reply; turns
    hold text (assistant turns may be empty with ``empty_replies``)."""
    body = turns[1:] if turns and turns[0][0] == "system" else turns
    for i, (role, _content, label) in enumerate(body):
        expected = ("user", "assistant")[i % 2]
        if role != expected:
            raise InvalidRecord(
                f"not_alternating:{field}",
                f"{label} has role {role!r}, expected {expected!r} "
                "(user and assistant turns alternate, after an optional first system turn)",
            )
    for role, content, label in turns:
        if not content.strip() and not (empty_replies and role == "assistant"):
            raise InvalidRecord(f"empty:{field}", f"{label} is empty (expected the {role} turn's text)")
    if not body or body[-1][0] != "assistant":
        raise InvalidRecord(
            f"not_alternating:{field}",
            f"field {field!r} ends with a {turns[-1][0]} turn, expected it to end with an assistant reply",
        )
    return turns


def _dialogue(turns: list[Turn]) -> dict:
    """The unified multi-turn record from checked turns: instruction = first user turn, output = the reply to it."""
    first = 1 if turns[0][0] == "system" else 0
    (_, instruction, _), (_, output, label) = turns[first : first + 2]
    if not output.strip():
        raise InvalidRecord("empty:output", f"{label}, the first assistant reply, is empty")
    rec = _single(instruction, "", output)
    rec["conversation"] = [{"role": role, "content": content} for role, content, _ in turns]
    return rec


@dataclass(frozen=True)
class Speakers:
    """Speaker tags that split a transcript string into turns."""

    pattern: re.Pattern  # one capturing group: the tag name
    roles: dict[str, str]  # tag name → role
    described: str  # for messages


def _split_turns(text: str, speakers: Speakers, field: str) -> list[Turn]:
    found = list(speakers.pattern.finditer(text))
    before = text[: found[0].start()].strip() if found else ""
    if not found or before:
        what = f"starts with untagged text {before[:40]!r}" if before else "holds no speaker tag"
        raise InvalidRecord(
            f"unsplittable:{field}",
            f"field {field!r} cannot be split into turns: it {what}; expected turns tagged {speakers.described}",
        )
    ends = [m.start() for m in found[1:]] + [len(text)]
    return [
        (speakers.roles[m.group(1)], text[m.end() : end].strip(), f"{field} turn {i} ({m.group(1)}:)")
        for i, (m, end) in enumerate(zip(found, ends, strict=False), 1)
    ]


# --------------------------------------------------------------------------------------------- adapters

# OIG: "<human>:" / "<bot>:" tags, or the bot's name at the start of a line (unified_joke_explanations: "Rosey:").
OIG_BOT_NAMES = ("Rosey",)
OIG_SPEAKERS = Speakers(
    re.compile(rf"(<human>|<bot>|^(?:{'|'.join(OIG_BOT_NAMES)})):", re.M),
    {"<human>": "user", "<bot>": "assistant", **dict.fromkeys(OIG_BOT_NAMES, "assistant")},
    "<human>: and <bot>: (or a bot name at a line start: " + ", ".join(f"{n}:" for n in OIG_BOT_NAMES) + ")",
)
HH_SPEAKERS = Speakers(
    re.compile(r"(?:^|\n\n)(Human|Assistant):"),
    {"Human": "user", "Assistant": "assistant"},
    "'\\n\\nHuman:' and '\\n\\nAssistant:'",
)
# ShareGPT "from" values → roles; FastChat maps chatgpt/bing/bard replies to the assistant too.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


def _alpaca(obj: dict) -> list[dict]:
    return _columns(obj, "instruction", "output", "input")


def _dolly(obj: dict) -> list[dict]:
    return _columns(obj, "instruction", "response", "context")


def _gpt4all(obj: dict) -> list[dict]:
    return _columns(obj, "prompt", "response")


def _seed_tasks(obj: dict) -> list[dict]:
    """Self-Instruct seed task: one record per instance, all sharing the task's instruction."""
    instruction = _text(obj, "instruction")
    return [
        _single(
            instruction,
            _text(inst, "input", required=False, allow_empty=True, path=f"instances[{i}].input"),
            _text(inst, "output", path=f"instances[{i}].output"),
        )
        for i, inst in enumerate(_objects(obj, "instances"))
    ]


def _firefly(obj: dict) -> list[dict]:
    """Firefly's multi-turn ``conversation[{human, assistant}]``, or the 1.1M release's flat ``kind, input, target``."""
    if "conversation" not in obj:
        return _columns(obj, "input", "target")
    turns = [
        (role, _text(pair, key, path=f"conversation[{i}].{key}"), f"conversation[{i}].{key}")
        for i, pair in enumerate(_objects(obj, "conversation"))
        for role, key in (("user", "human"), ("assistant", "assistant"))
    ]
    return [_dialogue(_check_turns(turns, "conversation"))]


def _sharegpt_role(turn: dict, i: int) -> str:
    speaker = _text(turn, "from", path=f"conversations[{i}].from")
    if speaker not in SHAREGPT_ROLES:
        raise InvalidRecord(
            "unknown_role:conversations",
            f"field 'conversations[{i}].from' is {speaker!r}, expected one of {', '.join(SHAREGPT_ROLES)}",
        )
    return SHAREGPT_ROLES[speaker]


def _sharegpt(obj: dict) -> list[dict]:
    turns = [
        (_sharegpt_role(t, i), _text(t, "value", path=f"conversations[{i}].value"), f"conversations[{i}]")
        for i, t in enumerate(_objects(obj, "conversations"))
    ]
    return [_dialogue(_check_turns(turns, "conversations"))]


def _oig(obj: dict) -> list[dict]:
    return [_dialogue(_check_turns(_split_turns(_text(obj, "text"), OIG_SPEAKERS, "text"), "text"))]


def _hh_turns(obj: dict, key: str) -> list[Turn]:
    """One hh-rlhf transcript's turns.

    An Assistant tag right after an Assistant turn starts no new turn: the sampled reply itself went on with a blank
    line and ``Assistant:`` (22 transcripts of helpful-base test do, some inside the shared prompt), so that text is
    joined to the reply. Tags need the blank line before them; ``Human:`` inside a line stays text.
    """
    turns: list[Turn] = []
    for role, content, label in _split_turns(_text(obj, key), HH_SPEAKERS, key):
        if turns and role == turns[-1][0] == "assistant":
            turns[-1] = (role, f"{turns[-1][1]}\n\n{content}".strip(), turns[-1][2])
        else:
            turns.append((role, content, label))
    return turns


def _hh_rlhf(obj: dict) -> list[dict]:
    """A preference pair: the chosen transcript as the conversation, the two final replies as chosen/rejected.

    Both transcripts must share every turn but the last. Sampled replies may be empty (a few rejected replies, and
    earlier replies inside the shared prompt, are): only the chosen final reply and the first reply must have text.
    """
    chosen = _check_turns(_hh_turns(obj, "chosen"), "chosen", empty_replies=True)
    rejected = _check_turns(_hh_turns(obj, "rejected"), "rejected", empty_replies=True)
    if not chosen[-1][1]:
        raise InvalidRecord("empty:chosen", f"{chosen[-1][2]}, the chosen final reply, is empty")
    prompt, other = [t[:2] for t in chosen[:-1]], [t[:2] for t in rejected[:-1]]
    if prompt != other:
        differ = next(i for i, (a, b) in enumerate(zip_longest(prompt, other)) if a != b)
        raise InvalidRecord(
            "prompt_mismatch:rejected",
            f"field 'rejected' does not share the prompt of 'chosen' (they differ at turn "
            f"{differ + 1}); expected the two transcripts to differ only in the final Assistant reply",
        )
    rec = _dialogue(chosen)
    rec["chosen"], rec["rejected"] = chosen[-1][1], rejected[-1][1]
    return [rec]


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
            _alpaca,
        ),
        Format(
            "seed_tasks",
            (("instruction", "instances"),),
            "Self-Instruct seed tasks: id, name, instruction, instances[{input, output}] — one record per instance",
            _seed_tasks,
        ),
        Format(
            "firefly",
            (("conversation",), ("kind", "input", "target")),
            "Firefly: conversation[{human, assistant}] (multi-turn), or the 1.1M release's kind, input, target",
            _firefly,
        ),
        Format(
            "sharegpt",
            (("conversations",),),
            "ShareGPT/Vicuna: conversations[{from: human|gpt|user|assistant|system|…, value}] (multi-turn)",
            _sharegpt,
        ),
        Format("oig", (("text",),), "OIG: text with <human>: / <bot>: turns (or a named bot), metadata", _oig),
        Format(
            "hh_rlhf",
            (("chosen", "rejected"),),
            "Anthropic HH-RLHF: chosen, rejected transcripts (\\n\\nHuman: / \\n\\nAssistant:) — preference pairs",
            _hh_rlhf,
        ),
        Format(
            "dolly", (("instruction", "response"),), "Dolly: instruction, context (→ input), response, category", _dolly
        ),
        Format("gpt4all", (("prompt", "response"),), "GPT4All: prompt, response", _gpt4all),
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
) -> tuple[datasets.Dataset, LoadReport]:
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
    if chosen is None and report.read == 0:
        raise DataError(f"{path}: the file holds no records")
    return datasets.Dataset.from_dict(cols, features=RECORD_FEATURES), report


def load_source(src: SourceParams, on_invalid: str = "error") -> tuple[datasets.Dataset, LoadReport]:
    return load_file(
        src.path,
        source=src.name,
        fmt=src.format,
        language=src.language,
        on_invalid=on_invalid,
        max_records=src.max_records,
    )


def load_sources(params) -> tuple[datasets.Dataset, list[LoadReport]]:
    """All sources of a study, concatenated in params order, with one report per file."""
    parts, reports = [], []
    for src in params.data.sources:
        ds, rep = load_source(src, params.data.on_invalid)
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
