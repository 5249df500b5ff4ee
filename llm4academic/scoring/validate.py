"""How far the keyed scorer can be trusted, measured: agreement with labelled answers and adversarial baselines.

**The development set** (``resources/zbench/devset/*.jsonl``): 357 answers of Z-Bench's reference models — every
model except GPT4, GPT3.5 and moss, which stay out so that an independent check remains possible — to the 242
referenced items, drawn with a fixed seed (one model per item, two for half of the objectively gradable items),
each labelled ``correct`` / ``incorrect`` / ``partial`` / ``unclear`` by reading the item, its reference and the
whole answer, with a one-line reason. ``agreement()`` compares the keyed scorer with the ``correct``/``incorrect``
labels of the items it grades (overall, per answer type, a confusion matrix, every disagreement).

**Adversarial baselines** (``adversarial()``): answers a careful grader gives nothing for, built for every keyed item
— the prompt echoed, its first half followed by rambling, every option listed before the echo, ``不是`` + the
reference, "the answer is not <reference> but <a rejected answer>", an empty answer, the question's own numbers
restated — and two it should credit: the right answer in English for a Chinese reference, and the bare reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..answer_key import KEY_DIR, AnswerKeyError, KeyEntry
from ..zbench import REFERENCE_MODELS, load_zbench
from .keyed import KeyedScorer
from .numbers import extract_numbers
from .options import parse_numbered_options, parse_options

DEVSET_DIR = KEY_DIR.parent / "devset"
HOLDOUT_DIR = KEY_DIR.parent / "holdout"
LABELS = ("correct", "incorrect", "partial", "unclear")
HELD_OUT = ("GPT4", "GPT3.5", "moss")  # never in the development set: an independent check stays possible
RAMBLING = "这是一个很好的问题，让我们仔细思考一下。首先需要理解题目的意思，然后逐步分析每一个条件。"
BASELINES = ("echo", "continuation", "all_options", "negated", "not_a_but_b", "empty", "restated_numbers",
             "in_english", "reference")  # fmt: skip
RIGHT = ("reference", "in_english")  # the baselines that should score 1; the rest 0


def load_devset(files: Iterable[str | Path] | None = None, *, held_out: bool = False) -> pd.DataFrame:
    """The labelled answers: ``item_id, model, label, reason, file``; a line that does not fit is an
    ``AnswerKeyError`` naming file:line. ``held_out``: the independent check set instead (answers of GPT4, GPT3.5
    and moss only, labelled without seeing the answer key, never used to tune the scorer)."""
    folder = HOLDOUT_DIR if held_out else DEVSET_DIR
    models = set(HELD_OUT) if held_out else set(REFERENCE_MODELS) - set(HELD_OUT)
    paths = sorted(Path(p) for p in files) if files is not None else sorted(folder.glob("*.jsonl"))
    if not paths:
        raise AnswerKeyError(f"{folder}: no labelled answers (*.jsonl)")
    items = set(load_zbench()["item_id"])
    rows, seen = [], {}
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnswerKeyError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or set(rec) != {"item_id", "model", "label", "reason"}:
                raise AnswerKeyError(f"{where}: expected exactly the keys item_id, model, label, reason")
            problem = (
                f"unknown Z-Bench item {rec['item_id']!r}"
                if rec["item_id"] not in items
                else f"{rec['model']!r} is not one of the labelled reference models"
                if rec["model"] not in models
                else f"label {rec['label']!r} is not one of {', '.join(LABELS)}"
                if rec["label"] not in LABELS
                else f"{rec['item_id']} / {rec['model']} is already labelled at {seen[(rec['item_id'], rec['model'])]}"
                if (rec["item_id"], rec["model"]) in seen
                else None
            )
            if problem:
                raise AnswerKeyError(f"{where}: {problem}")
            seen[(rec["item_id"], rec["model"])] = where
            rows.append({**rec, "file": where})
    return pd.DataFrame(rows, columns=["item_id", "model", "label", "reason", "file"])


@dataclass(frozen=True)
class Agreement:
    """The keyed scorer against the labels: ``n`` graded answers, ``agreement`` (share where score 1 ⇔ correct),
    ``by_type`` (per answer type), ``confusion`` (label × score), ``disagreements`` (one row each, with the rule)."""

    n: int
    agreement: float
    by_type: pd.DataFrame
    confusion: pd.DataFrame
    disagreements: pd.DataFrame
    skipped: dict[str, int]

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "agreement": round(self.agreement, 4),
            "by_type": self.by_type.to_dict(orient="records"),
            "confusion": {k: {str(c): int(v) for c, v in row.items()} for k, row in self.confusion.iterrows()},
            "disagreements": self.disagreements.to_dict(orient="records"),
            "skipped": self.skipped,
        }


def agreement(scorer: KeyedScorer | None = None, devset: pd.DataFrame | None = None) -> Agreement:
    """Score every labelled ``correct``/``incorrect`` answer of an item the keyed scorer grades and compare."""
    scorer = scorer or KeyedScorer()
    devset = load_devset() if devset is None else devset
    zb = load_zbench().set_index("item_id")
    rows = []
    skipped = {"partial_or_unclear": 0, "not_keyed": 0}
    for rec in devset.itertuples(index=False):
        if rec.label not in ("correct", "incorrect"):
            skipped["partial_or_unclear"] += 1
            continue
        if not scorer.applies(rec.item_id):
            skipped["not_keyed"] += 1
            continue
        graded = scorer.grade(rec.item_id, str(zb.at[rec.item_id, rec.model]), str(zb.at[rec.item_id, "prompt"]))
        rows.append(
            {
                "item_id": rec.item_id,
                "model": rec.model,
                "type": scorer.key[rec.item_id].type,
                "label": rec.label,
                "score": graded.score,
                "rule": graded.rule,
                "agrees": (graded.score == 1.0) == (rec.label == "correct"),
                "reason": rec.reason,
            }
        )
    table = pd.DataFrame(rows)
    by_type = (
        table.groupby("type")["agrees"].agg(n="size", agreement="mean").reset_index().sort_values("type")
        if len(table)
        else pd.DataFrame(columns=["type", "n", "agreement"])
    )
    confusion = pd.crosstab(table["label"], table["score"].map({1.0: "scored 1", 0.0: "scored 0"}))
    return Agreement(
        n=len(table),
        agreement=float(table["agrees"].mean()) if len(table) else float("nan"),
        by_type=by_type.reset_index(drop=True),
        confusion=confusion,
        disagreements=table[~table["agrees"]].drop(columns=["agrees"]).reset_index(drop=True),
        skipped=skipped,
    )


def baseline_answers(prompt: str, reference: str, entry: KeyEntry) -> dict[str, str]:
    """The adversarial answers for one item (``BASELINES``): ``restated_numbers`` only for number items whose
    question has numbers, ``in_english`` only for a Chinese entity or short-text answer the key accepts in English."""
    options = {**parse_options(prompt), **parse_numbered_options(prompt)}
    listed = "\n".join(f"({k}) {v}" for k, v in options.items())
    rejected = entry.reject[0] if entry.reject else None
    extra = {}
    numbers = [n.text for n in extract_numbers(prompt)]
    if entry.type == "number" and len(numbers) >= 2:
        extra["restated_numbers"] = "、".join(numbers)
    english = [f for f in entry.accept if re.fullmatch(r"[A-Za-z][A-Za-z .,'-]+", f)]
    if entry.type in ("entity", "short_text") and english and re.search(r"[\u3400-\u9fff]", str(entry.answer)):
        extra["in_english"] = english[0]
    return {
        **extra,
        "echo": prompt,
        "continuation": prompt[: len(prompt) // 2] + RAMBLING,
        "all_options": f"{listed}\n{prompt}" if listed else prompt,
        "negated": f"不是{reference}",
        "not_a_but_b": f"答案不是{reference}，而是{rejected or '别的'}",
        "empty": "   ",
        "reference": reference,
    }


def adversarial(scorer: KeyedScorer | None = None) -> pd.DataFrame:
    """Per baseline: the keyed items, the mean score and the items that scored (the reference: that did not)."""
    scorer = scorer or KeyedScorer()
    zb = load_zbench()
    scores: dict[str, list[float]] = {b: [] for b in BASELINES}
    exceptions: dict[str, list[str]] = {b: [] for b in BASELINES}
    for r in zb[zb["reference"].astype(str).str.strip() != ""].itertuples(index=False):
        if not scorer.applies(r.item_id):
            continue
        answers = baseline_answers(str(r.prompt), str(r.reference), scorer.key[r.item_id])
        for name, answer in answers.items():
            score = scorer.grade(r.item_id, answer, str(r.prompt)).score
            scores[name].append(score)
            if (score == 1.0) != (name in RIGHT):
                exceptions[name].append(r.item_id)
    return pd.DataFrame(
        [
            {"baseline": b, "items": len(scores[b]), "score": sum(scores[b]) / max(1, len(scores[b])),
             "exceptions": ", ".join(exceptions[b])}
            for b in BASELINES
        ]
    )  # fmt: skip


@lru_cache(maxsize=1)
def trust_table() -> pd.DataFrame:
    """What the notebooks show next to the leaderboard: agreement with the development and held-out sets and the
    adversarial baselines, one row each (``check, answers, value``)."""
    scorer = KeyedScorer()
    dev, held = agreement(scorer), agreement(scorer, load_devset(held_out=True))
    rows = [
        {"check": "agreement with careful labels: development set (rules refined on it)", "answers": dev.n,
         "value": round(dev.agreement, 3)},
        {"check": "agreement with careful labels: held out (GPT4, GPT3.5, moss)", "answers": held.n,
         "value": round(held.agreement, 3)},
    ]  # fmt: skip
    names = {"echo": "the prompt echoed", "continuation": "its first half, then rambling",
             "all_options": "every option listed, then the echo", "negated": "不是 + the reference",
             "not_a_but_b": "答案不是 <reference>，而是 <wrong>", "empty": "an empty answer",
             "restated_numbers": "the question's own numbers restated",
             "in_english": "the right answer in English (should be ~1)",
             "reference": "the bare reference (should be ~1)"}  # fmt: skip
    for r in adversarial(scorer).itertuples(index=False):
        rows.append({"check": f"score of: {names[r.baseline]}", "answers": r.items, "value": round(r.score, 3)})
    return pd.DataFrame(rows)
