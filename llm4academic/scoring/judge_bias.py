"""Either judge's biases, as evaluate.json's judge section holds them (``judge_report``): length bias per model,
position bias per model (order-inconsistent pairwise verdicts) and self-preference. Works on the score tables of
``judge_scores`` / ``pairwise_scores`` or their endpoint twins; imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from .stats import spearman
from .text import cell_text


def _spearman(x: pd.Series, y: pd.Series) -> float | None:
    """``stats.spearman``, with ``None`` (JSON null) where it is undefined."""
    rho = spearman(x, y)
    return None if math.isnan(rho) else rho


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def judge_report(
    answers: pd.DataFrame,
    judged: pd.DataFrame | None = None,
    pairwise: pd.DataFrame | None = None,
    *,
    self_models: Iterable[str] = (),
) -> dict:
    """Either judge's biases, as evaluate.json's judge section holds them: ``length_bias`` per model (items, median
    answer length in characters, mean grade, Spearman ρ of grade vs length; positive: longer answers graded higher),
    ``position_bias`` per model (order-inconsistent pairwise verdicts, counted as ties) and ``self_preference``
    (``self_models``: the studied models that are the judge's own model — flagged — with their mean grade and the
    other models')."""
    lengths = answers.assign(chars=answers["answer"].map(lambda a: len(cell_text(a))))[["item_id", "model", "chars"]]
    length_bias = []
    if judged is not None and len(judged):
        joined = judged.merge(lengths, on=["item_id", "model"], how="inner")
        for model, g in joined.groupby("model", sort=False):
            length_bias.append(
                {
                    "model": model,
                    "items": len(g),
                    "median_chars": float(g["chars"].median()),
                    "mean_grade": float(g["judge_expected"].mean()),
                    "spearman": _spearman(g["chars"], g["judge_expected"]),
                }
            )
    position_bias = None
    if pairwise is not None:
        position_bias = [
            {
                "model": model,
                "n": len(g),
                "inconsistent": int((~g["consistent"].astype(bool)).sum()),
                "position_bias": float((~g["consistent"].astype(bool)).mean()),
            }
            for model, g in pairwise.groupby("model", sort=False)
        ]
    self_models = sorted(set(self_models))
    grades = judged if judged is not None else pd.DataFrame(columns=["model", "judge_expected"])
    mine = grades["model"].isin(self_models)
    return {
        "length_bias": length_bias,
        "position_bias": position_bias,
        "self_preference": {
            "flagged": bool(self_models),
            "models": self_models,
            "mean_grade_self": _mean(grades.loc[mine, "judge_expected"]) if self_models else None,
            "mean_grade_others": _mean(grades.loc[~mine, "judge_expected"]) if self_models else None,
        },
    }


def bias_table(judge_info: dict | None) -> pd.DataFrame | None:
    """``judge_report``'s numbers (as ``evaluate.json`` holds them) as one table per studied model: length bias
    (Spearman ρ of grade vs answer length), position bias (share of order-inconsistent verdicts) and whether the
    model is the judge's own (self-preference); None when no judge ran."""
    if not judge_info:
        return None
    length = pd.DataFrame(judge_info.get("length_bias") or [], columns=["model", "items", "mean_grade", "spearman"])
    position = pd.DataFrame(judge_info.get("position_bias") or [], columns=["model", "position_bias"])
    table = length.merge(position[["model", "position_bias"]], on="model", how="outer")
    own = set((judge_info.get("self_preference") or {}).get("models") or [])
    return table.assign(judge_is_this_model=table["model"].isin(own)).rename(columns={"spearman": "length_rho"})
