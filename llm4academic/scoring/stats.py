"""Aggregation: means with seeded percentile-bootstrap CIs, per group and overall.

``bootstrap_ci`` resamples one set of values; ``group_rng`` is the seeded generator of one group (the study seed
plus the group's key), so a group's CI does not depend on which other groups are in the table; ``aggregate`` gives
``[*by], n, score, ci_low, ci_high`` per model and split (or tag) and scorer, with ``"overall"`` rows.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..zbench import SPLITS, load_zbench
from .tables import ScoringError

AGG_COLUMNS: tuple[str, ...] = ("n", "score", "ci_low", "ci_high")
OVERALL = "overall"


def group_rng(seed: int, *key) -> np.random.Generator:
    """The seeded generator of one group: from ``seed`` and the CRC-32 of the group key's ``repr`` (each part as
    ``str``), so the same group gets the same resampling whatever else is in the table. Used by ``aggregate`` here and
    by compare's paired differences."""
    return np.random.default_rng([seed, zlib.crc32(repr(tuple(map(str, key))).encode())])


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval ``(mean, low, high)`` of the values (resampled with
    replacement ``n_boot`` times, numpy); a seed or generator makes it reproducible."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return math.nan, math.nan, math.nan
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(x.mean()), float(low), float(high)


def _with_tags(scores: pd.DataFrame, zbench: pd.DataFrame | None) -> pd.DataFrame:
    if "tags" not in scores.columns:
        zbench = load_zbench() if zbench is None else zbench
        scores = scores.merge(zbench[["item_id", "tags"]].drop_duplicates("item_id"), on="item_id", how="left")
    tagged = scores.assign(
        tag=scores["tags"].map(lambda t: list(t) if isinstance(t, list | tuple) and len(t) else ["(none)"])
    )
    return tagged.explode("tag").drop(columns="tags")


def aggregate(
    scores: pd.DataFrame,
    by: Sequence[str] = ("model", "split", "scorer"),
    *,
    overall: bool = True,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    zbench: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean score per group with a seeded percentile-bootstrap CI over items: ``[*by], n, score, ci_low, ci_high``.

    ``by`` names columns of ``scores`` (``score_answers``' output), plus ``tag``: tags are lists, so each item
    counts once under each of its tags (taken from ``zbench``, default Z-Bench, when ``scores`` has no ``tags``
    column). With ``overall`` the ``split`` (or ``tag``) column also holds ``"overall"``: all items once, micro-averaged
    over the splits. Each group's resampling is seeded from ``seed`` and the group's key, so a group's CI does not
    depend on which other groups are in the table."""
    by = list(by)
    unknown = [c for c in by if c not in scores.columns and c != "tag"]
    if unknown:
        raise ScoringError(
            f"cannot aggregate by {', '.join(unknown)}; the scores have columns {', '.join(scores.columns)} (and tag)"
        )
    facet = "tag" if "tag" in by else "split" if "split" in by else None
    data = _with_tags(scores, zbench) if facet == "tag" else scores
    parts = [(data, by)]
    if overall and facet:
        parts.append((scores.assign(**{facet: OVERALL}), by))
    rows = []
    for frame, keys in parts:
        for key, group in frame.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            rng = group_rng(seed, *key)
            mean, low, high = bootstrap_ci(group["score"].to_numpy(), n_boot=n_boot, ci=ci, rng=rng)
            rows.append((*key, int(group["score"].notna().sum()), mean, low, high))
    out = pd.DataFrame(rows, columns=[*by, *AGG_COLUMNS])
    if facet:
        order = [*SPLITS, OVERALL] if facet == "split" else sorted(set(out[facet]) - {OVERALL}) + [OVERALL]
        order += sorted(set(out[facet]) - set(order))
        out[facet] = pd.Categorical(out[facet], categories=order, ordered=True)
        out = out.sort_values(by, kind="stable").reset_index(drop=True)
        out[facet] = out[facet].astype(str)
    out.attrs["aggregate"] = {
        "by": by,
        "n_boot": n_boot,
        "ci": ci,
        "seed": seed,
        "method": "mean over items; percentile bootstrap over items, seeded per group",
        **scores.attrs.get("scoring", {}),
    }
    return out


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Rank correlation; NaN (undefined, not 0) with fewer than three points or a constant series."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan
    return float(x.rank().corr(y.rank()))
