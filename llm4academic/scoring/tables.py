"""The tables scoring reads and writes: the long answers table ``item_id, split, model, answer`` (``ANSWER_COLUMNS``)
in, the long scores table ``item_id, split, model, scorer, score, against`` (``SCORE_COLUMNS``) out; checking an
answers table against Z-Bench (``answer_items``); and the error scoring raises."""

from __future__ import annotations

import pandas as pd

from ..base import KitError
from ..zbench import load_zbench

FALLBACK_MODEL = "GPT4"  # open items (no reference) are compared with this model's answer by rouge_l
ANSWER_COLUMNS: tuple[str, ...] = ("item_id", "split", "model", "answer")
SCORE_COLUMNS: tuple[str, ...] = ("item_id", "split", "model", "scorer", "score", "against")


class ScoringError(KitError):
    """Scoring was asked for something the tables do not hold."""


def answer_items(answers: pd.DataFrame, zbench: pd.DataFrame | None) -> pd.DataFrame:
    """Check the answers table and return the Z-Bench rows of its items, indexed by item_id."""
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise ScoringError(
            f"the answers table lacks column(s) {', '.join(missing)}; expected the long table "
            f"{', '.join(ANSWER_COLUMNS)} (zbench.answers_long or generate.py's output)"
        )
    zbench = load_zbench() if zbench is None else zbench
    items = zbench.drop_duplicates("item_id").set_index("item_id")
    unknown = sorted(set(answers["item_id"]) - set(items.index))
    if unknown:
        raise ScoringError(
            f"{len(unknown)} answer item_id(s) are not in the Z-Bench table: "
            f"{', '.join(map(str, unknown[:5]))}{' …' if len(unknown) > 5 else ''}"
        )
    return items
