"""The 14 reference models' leaderboard: their shipped Z-Bench answers scored with the reference scorers (not the
judge). ``headline`` is one row per model — the primary (keyed) score per split and overall with a seeded bootstrap
CI and the rank; ``leaderboard`` the long table per scorer, with coverage (``--by-scorer``)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import pandas as pd

from ..zbench import PROVENANCE, _split_names, answers_long, load_zbench
from .reference import DEFAULT_SCORERS, KEYED, resolve_scorers, score_answers, scorers_for
from .stats import OVERALL, aggregate


@lru_cache(maxsize=8)
def _reference_scores(
    splits: tuple[str, ...], scorers: tuple[str, ...]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The reference-model scores (cached per process), the (split, scorer) pairs that apply, items per split."""
    zbench = load_zbench(list(splits))
    scores = score_answers(answers_long(zbench), zbench, scorers, fallback_model=None)
    applicable = pd.DataFrame(
        [
            (row.split, name)
            for row in zbench.itertuples(index=False)
            for name in scorers_for(row.reference, scorers, item_id=row.item_id)
        ],
        columns=["split", "scorer"],
    )
    return scores, applicable.assign(items=1), zbench.groupby("split").size().to_dict()


def leaderboard(
    splits: str | Iterable[str] | None = None,
    *,
    scorers: Iterable[str] = DEFAULT_SCORERS,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The 14 reference models' shipped Z-Bench answers scored with the reference scorers (not the judge), per
    split and overall: ``model, split, scorer, n, coverage, score, ci_low, ci_high`` — ``n`` answers judged,
    ``coverage`` the share of the split's items that scorer can judge, ``score`` the mean with a seeded bootstrap CI.
    Only items with a reference count (rouge_l's GPT-4 fallback would favour GPT-4). Rows: split, scorer, then best
    score first. ``attrs["leaderboard"]`` carries the provenance."""
    names = tuple(_split_names(splits))
    chosen = tuple(s.name for s in resolve_scorers(scorers))
    scores, applicable, sizes = _reference_scores(names, chosen)
    table = aggregate(scores, ("model", "split", "scorer"), n_boot=n_boot, ci=ci, seed=seed)
    covered = applicable.groupby(["split", "scorer"])["items"].sum()
    covered = pd.concat([covered, applicable.groupby("scorer")["items"].sum().rename(lambda s: (OVERALL, s))])
    totals = {**sizes, OVERALL: sum(sizes.values())}
    table.insert(
        4,
        "coverage",
        [covered.get((sp, sc), 0) / totals[sp] for sp, sc in zip(table["split"], table["scorer"], strict=False)],
    )
    order = {s: i for i, s in enumerate([*names, OVERALL])}
    scorer_order = {s: i for i, s in enumerate(chosen)}
    table = table.sort_values(
        ["split", "scorer", "score", "model"],
        key=lambda c: (
            c.map(order)
            if c.name == "split"
            else c.map(scorer_order)
            if c.name == "scorer"
            else -c
            if c.name == "score"
            else c
        ),
        kind="stable",
    ).reset_index(drop=True)
    table.attrs["leaderboard"] = {
        "zbench": dict(PROVENANCE),
        "splits": list(names),
        "scorers": list(chosen),
        "answers": "the 14 reference models' answers shipped with Z-Bench",
        "against": "reference",
        "n_boot": n_boot,
        "ci": ci,
        "seed": seed,
    }
    return table


LEADERBOARD_KEYS: tuple[str, ...] = ("model", "split", "scorer", "n", "score", "ci_low", "ci_high", "coverage")


def leaderboard_json(splits: str | Iterable[str] | None = None, **kwargs) -> list[dict]:
    """``leaderboard`` as JSON-ready records ``{model, split, scorer, n, score, ci_low, ci_high, coverage}``
    (floats to 4 decimals), for ``llm4academic zbench leaderboard --json``."""
    table = leaderboard(splits, **kwargs)
    return [
        {
            k: (
                round(float(r[k]), 4)
                if k in ("score", "ci_low", "ci_high", "coverage")
                else int(r[k])
                if k == "n"
                else str(r[k])
            )
            for k in LEADERBOARD_KEYS
        }
        for r in table.to_dict("records")
    ]


def headline(splits: str | Iterable[str] | None = None, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
    """One row per reference model, best overall first: ``model``, then per split and ``overall`` the primary
    (keyed) score, its CI and the model's rank in that split (1 = best); ``n`` the keyed items per split."""
    names = tuple(_split_names(splits))
    scores, _, _ = _reference_scores(names, (KEYED,))
    table = aggregate(scores, ("model", "split"), n_boot=n_boot, ci=ci, seed=seed)
    table["rank"] = table.groupby("split")["score"].rank(ascending=False, method="min").astype(int)
    wide = table.pivot_table(index="model", columns="split", values=["score", "ci_low", "ci_high", "rank", "n"])
    columns = [*names, OVERALL]
    out = pd.DataFrame({"model": wide.index})
    for split in columns:
        for key in ("score", "ci_low", "ci_high", "rank", "n"):
            out[f"{split}.{key}"] = wide[(key, split)].to_numpy()
    out = out.sort_values(f"{OVERALL}.score", ascending=False, kind="stable").reset_index(drop=True)
    out.attrs["headline"] = {"scorer": KEYED, "splits": columns, "n_boot": n_boot, "ci": ci, "seed": seed,
                             "zbench": dict(PROVENANCE)}  # fmt: skip
    return out
