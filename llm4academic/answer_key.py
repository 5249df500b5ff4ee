"""Z-Bench's answer key: one curated entry for each of the 242 items that have a reference answer.

Written by reading every item (``resources/zbench/answer_key/*.yaml``, one file per part), an entry says what kind
of answer the item asks for and what a careful grader accepts:

- ``type``: ``option`` (a letter A–H, or a digit for numbered options; unlettered options are ``short_text``
  with the option's text as the answer), ``number`` (``value`` with optional ``unit``, ``rel_tol`` — 0 = exact, default
  1 % — and ``alternatives``),
  ``yes_no`` (``polarity``), ``entity``, ``short_text``, ``ordered_list`` (``answer`` is a list), ``free_text`` (an
  open answer only a judge can grade) or ``rubric`` (the reference is a grading note; ``rubric`` is its
  instruction for a judge);
- ``answer``: the canonical answer; ``accept``: further correct forms (aliases, the other language or script,
  equivalent notations, an option's own text); ``reject``: answers that must count as wrong where that is not
  obvious (the other class of a two-way choice);
- ``flag``: why the reference looks wrong or debatable (it is kept; results can be reported without flagged items);
  ``note``: a line for the reader.

``load_answer_key()`` checks every file against Z-Bench: unknown keys, types or item ids, an item listed twice, a
referenced item without an entry, and entries that contradict their type are errors naming ``file:line``.
``python -m llm4academic.answer_key [FILE ...]`` checks files and prints what they hold.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .base import RESOURCES_DIR, KitError, unique_key_loader
from .zbench import load_zbench

AnswerType = Literal["option", "number", "yes_no", "entity", "short_text", "ordered_list", "free_text", "rubric"]
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)
KEY_DIR = RESOURCES_DIR / "zbench" / "answer_key"
OPTIONS = "ABCDEFGH123456789"  # lettered options (A)…(H), numbered options 1…9


class AnswerKeyError(KitError):
    """An answer-key file that does not fit Z-Bench or the entry format: the message names file:line."""


class KeyEntry(BaseModel):
    """One item's entry (the module docstring says what each field means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: AnswerType
    answer: str | list[str] | None = None
    accept: list[str] = Field(default_factory=list)
    reject: list[str] = Field(default_factory=list)
    value: float | None = None
    unit: str | None = None
    rel_tol: float | None = Field(default=None, ge=0, lt=1)  # 0 = exact
    alternatives: list[float] = Field(default_factory=list)
    polarity: Literal["yes", "no"] | None = None
    rubric: str | None = None
    flag: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _fits_its_type(self) -> KeyEntry:
        t = self.type
        problems = []
        if isinstance(self.answer, list) != (t == "ordered_list") and self.answer is not None:
            problems.append("answer is a list only for ordered_list")
        if t in ("option", "number", "yes_no", "entity", "short_text", "ordered_list") and not self.answer:
            problems.append(f"a {t} entry needs an answer")
        if t == "option" and not (isinstance(self.answer, str) and len(self.answer) == 1 and self.answer in OPTIONS):
            problems.append(
                f"an option entry's answer is one upper-case letter A–H or, for numbered options, one "
                f"digit 1–9, got {self.answer!r}"
            )
        if t == "number" and self.value is None:
            problems.append("a number entry needs its numeric value")
        if t != "number" and (self.value is not None or self.unit or self.rel_tol or self.alternatives):
            problems.append("value, unit, rel_tol and alternatives belong to number entries")
        if t == "yes_no" and (self.answer not in ("yes", "no") or self.polarity != self.answer):
            problems.append("a yes_no entry's answer and polarity are both 'yes' or both 'no'")
        if t != "yes_no" and self.polarity is not None:
            problems.append("polarity belongs to yes_no entries")
        if t == "ordered_list" and isinstance(self.answer, list) and len(self.answer) < 2:
            problems.append("an ordered_list answer lists two or more items")
        if t == "rubric" and not (self.rubric or "").strip():
            problems.append("a rubric entry needs its rubric (the grading note as an instruction for a judge)")
        empty = [s for s in (*self.accept, *self.reject) if not str(s).strip()]
        if empty:
            problems.append("accept/reject hold no empty strings")
        both = sorted(set(self.accept) & set(self.reject))
        if both:
            problems.append(f"accepted and rejected at once: {', '.join(both)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class AnswerKey:
    """The whole key: ``entries`` by item id and where each was written (``file:line``)."""

    entries: dict[str, KeyEntry]
    where: dict[str, str]

    def __getitem__(self, item_id: str) -> KeyEntry:
        return self.entries[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def flagged(self) -> list[str]:
        """Items whose reference looks wrong or debatable."""
        return [i for i, e in self.entries.items() if e.flag]

    def frame(self) -> pd.DataFrame:
        """One row per item: ``item_id, split, type, answer, accepted, rejected, flag``."""
        rows = [
            {
                "item_id": i,
                "split": i.split("-")[0],
                "type": e.type,
                "answer": " → ".join(e.answer) if isinstance(e.answer, list) else (e.answer or ""),
                "accepted": len(e.accept),
                "rejected": len(e.reject),
                "flag": e.flag or "",
            }
            for i, e in self.entries.items()
        ]
        return pd.DataFrame(rows, columns=["item_id", "split", "type", "answer", "accepted", "rejected", "flag"])


# --------------------------------------------------------------------------------------------- reading


_UniqueKeyLoader = unique_key_loader(AnswerKeyError)  # a repeated key is an error naming both lines


_UNION_TAGS = {"str", "list[str]", "float", "int", "none"}  # pydantic names a union member in an error's location


def _referenced(zbench: pd.DataFrame) -> set[str]:
    return set(zbench.loc[zbench["reference"].astype(str).str.strip() != "", "item_id"])


def _lines(text: str, path: Path) -> dict[str, int]:
    """The line of each item id under ``items:``."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    items = next((v for k, v in root.value if getattr(k, "value", None) == "items"), None) if root else None
    if not isinstance(items, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in items.value}


def load_key_file(path: str | Path, zbench: pd.DataFrame | None = None) -> tuple[dict[str, KeyEntry], dict[str, str]]:
    """One file's entries and where each stands, checked against Z-Bench's referenced items."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AnswerKeyError(f"{path}: cannot read the answer key file ({e.strerror})") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise AnswerKeyError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict) or set(raw) != {"items"} or not isinstance(raw["items"], dict):
        raise AnswerKeyError(f"{path}:1: expected one top-level key `items:` mapping item ids to entries")
    lines = _lines(text, path)
    referenced = _referenced(load_zbench() if zbench is None else zbench)
    entries, where, problems = {}, {}, []
    for item_id, body in raw["items"].items():
        at = f"{path}:{lines.get(str(item_id), '?')}"
        if item_id not in referenced:
            problems.append(f"{at}: {item_id!r} is not a Z-Bench item with a reference answer")
            continue
        booleans = [k for k, v in (body or {}).items() if isinstance(v, bool)] if isinstance(body, dict) else []
        if booleans:  # YAML reads unquoted yes/no/true/false as booleans
            problems.append(f"{at}: {item_id}: {', '.join(booleans)}: quote the value ('yes', 'no', 'true'…)")
            continue
        try:
            entries[item_id] = KeyEntry.model_validate(body if body is not None else {})
        except ValidationError as e:
            for err in e.errors(include_url=False):
                field = ".".join(str(p) for p in err["loc"] if p not in _UNION_TAGS) or "(entry)"
                problems.append(f"{at}: {item_id}: {field}: {err['msg'].removeprefix('Value error, ')}")
            continue
        where[item_id] = at
    if problems:
        raise AnswerKeyError("\n".join(problems))
    return entries, where


def load_answer_key(
    files: Iterable[str | Path] | None = None, zbench: pd.DataFrame | None = None, *, complete: bool = True
) -> AnswerKey:
    """The answer key from ``files`` (default: every ``*.yaml`` under ``resources/zbench/answer_key/``). With
    ``complete``, every referenced Z-Bench item must have exactly one entry."""
    zbench = load_zbench() if zbench is None else zbench
    paths = sorted(Path(p) for p in files) if files is not None else sorted(KEY_DIR.glob("*.yaml"))
    if not paths:
        raise AnswerKeyError(f"{KEY_DIR}: no answer key files (*.yaml)")
    entries: dict[str, KeyEntry] = {}
    where: dict[str, str] = {}
    for path in paths:
        found, places = load_key_file(path, zbench)
        twice = sorted(set(found) & set(entries))
        if twice:
            raise AnswerKeyError("\n".join(f"{places[i]}: {i} already has an entry at {where[i]}" for i in twice))
        entries.update(found)
        where.update(places)
    order = {item: i for i, item in enumerate(zbench["item_id"])}
    missing = sorted(_referenced(zbench) - set(entries), key=order.__getitem__)
    if complete and missing:
        raise AnswerKeyError(
            f"{', '.join(map(str, paths))}: {len(missing)} referenced Z-Bench item(s) have no entry: "
            + ", ".join(missing[:12])
            + (" …" if len(missing) > 12 else "")
        )
    ids = sorted(entries, key=order.__getitem__)
    return AnswerKey({i: entries[i] for i in ids}, {i: where[i] for i in ids})


def summary(key: AnswerKey) -> pd.DataFrame:
    """Entries per split and answer type (columns: the types present, then ``flagged`` and ``items``)."""
    table = key.frame()
    counts = pd.crosstab(table["split"], table["type"]).reindex(
        columns=[t for t in ANSWER_TYPES if t in set(table["type"])]
    )
    counts["flagged"] = table.groupby("split")["flag"].apply(lambda f: int((f != "").sum()))
    counts["items"] = table.groupby("split").size()
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llm4academic.answer_key [FILE ...]``: check the files (default: the shipped key, which must then be
    complete) and print entries per split and type; exit 2 with the problems otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        key = load_answer_key(args or None, complete=not args)
    except AnswerKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(summary(key).to_string())
    print(f"{len(key)} entries, {len(key.flagged)} flagged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
