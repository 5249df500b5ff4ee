"""The comparison's tables, from scores on one scale: primary scores, the leaderboard with bootstrap CIs, per-tag
scores, the deltas of each lineage step (base → SFT → DPO) and the stages per foundation model, findings (best
model per facet and whether its margin is separated), length bias, truncated answers (the studies' judge agreement,
the DPO models against their start models, training and align curves, data mix and provenance: ``context.py``).

Bootstrap resampling is seeded per group (``group_rng``): a group's interval does not depend on which other
groups are in the table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from ..rundir import STAGES, lineage
from ..scoring import OVERALL, aggregate, bootstrap_ci, group_rng
from ..scoring.stats import spearman
from ..zbench import REFERENCE_MODELS, SPLITS, answers_long, model_label
from .studies import Study, combined

PRIMARY_ORDER: tuple[str, ...] = ("option", "number", "contains", "rouge_l")
PRIMARY_METHOD = (
    "each item scored by Z-Bench's answer key (the keyed scorer: objectively gradable items with a reference; open "
    "items are a judge's) — for studies scored before the key, by the most specific reference scorer (option > "
    "number > contains > rouge_l); mean over items, percentile bootstrap CI over items"
)
MIN_TAG_ITEMS = 3  # findings per tag need at least this many items


# --------------------------------------------------------------------------------------------- scores and ranks


def primary_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """One score per (model, item): the keyed scorer's where it ran (alone — the classic scorers are what an echo
    or a negated reference fooled), else the most specific reference scorer that judged it (``PRIMARY_ORDER``)."""
    keyed = scores["scorer"] == "keyed"
    order = ("keyed",) if keyed.any() else PRIMARY_ORDER
    ref = scores[(scores["against"] == "reference") & scores["scorer"].isin(order)].copy()
    ref["_rank"] = ref["scorer"].map(order.index)
    ref = ref.sort_values(["model", "item_id", "_rank"], kind="stable").drop_duplicates(["model", "item_id"])
    keep = [c for c in ("item_id", "split", "model", "scorer", "score", "study") if c in ref.columns]
    return ref[keep].reset_index(drop=True)


# A studied model's kind by its stage; CSS-safe names (the index page uses them as row classes).
STAGE_KINDS: dict[str, str] = {"base": "study", "sft": "tuned", "dpo": "dpo", "sft+dpo": "tuned-dpo"}


def model_kinds(models: Iterable[str], studied: Sequence[str]) -> dict[str, str]:
    """``reference``, or by the model's stage (``rundir.lineage``): ``study`` (a base model of a study), ``tuned``
    (the train step's SFT model), ``dpo`` (the align step's DPO model of a base model) or ``tuned-dpo`` (DPO after
    SFT)."""
    return {
        m: "reference" if m in REFERENCE_MODELS and m not in studied else STAGE_KINDS[lineage(m)[1]] for m in models
    }


def leaderboard(
    primary: pd.DataFrame, studied: Sequence[str], *, seed: int = 0, n_boot: int = 1000, ci: float = 0.95
) -> pd.DataFrame:
    """Per model and split (and ``overall``): ``n, score, ci_low, ci_high`` plus ``kind`` and ``rank`` (1 = best,
    within the split, over all models). Rows: split order, then best first."""
    table = aggregate(primary, ("model", "split"), seed=seed, n_boot=n_boot, ci=ci)
    kinds = model_kinds(table["model"].unique(), studied)
    table["kind"] = table["model"].map(kinds)
    table["label"] = table["model"].map(model_label)
    table["rank"] = table.groupby("split")["score"].rank(ascending=False, method="min").astype(int)
    split_order = {s: i for i, s in enumerate([*SPLITS, OVERALL])}
    table = table.sort_values(
        ["split", "score", "model"],
        key=lambda c: c.map(split_order) if c.name == "split" else -c if c.name == "score" else c,
        kind="stable",
    ).reset_index(drop=True)
    table.attrs["leaderboard"] = {"metric": PRIMARY_METHOD, "seed": seed, "n_boot": n_boot, "ci": ci}
    return table


def overall_order(board: pd.DataFrame) -> list[str]:
    """The models of a leaderboard, best overall first (the leaderboard's own order)."""
    return board.loc[board["split"] == OVERALL, "model"].tolist()


def judge_means(scores: pd.DataFrame) -> pd.Series | None:
    """Per model, the judge's mean grade on [0, 1] ((grade − 1) / 9) over the items it graded; None without a judge.
    Its own column: it never enters the primary score."""
    judged = scores[scores["scorer"] == "judge"]
    return judged.groupby("model")["score"].mean() if len(judged) else None


def without_flagged(primary: pd.DataFrame, flagged: Iterable[str]) -> pd.DataFrame:
    """The primary scores without the items whose reference the answer key flags as wrong or debatable."""
    return primary[~primary["item_id"].isin(set(flagged))].reset_index(drop=True)


def wide_leaderboard(board: pd.DataFrame, judge: pd.Series | None = None) -> pd.DataFrame:
    """Models × splits, ``0.412 [0.30, 0.53]`` cells, ordered by the overall score; with ``judge`` (``judge_means``)
    a last column with the judge's mean grade, apart from the primary score."""
    cells = board.assign(cell=[_cell(*v) for v in zip(board["score"], board["ci_low"], board["ci_high"], strict=True)])
    wide = cells.pivot_table(index="model", columns="split", values="cell", aggfunc="first")
    order = board[board["split"] == OVERALL].sort_values("score", ascending=False)["model"]
    splits = [s for s in [*SPLITS, OVERALL] if s in wide.columns]
    wide = wide.loc[list(order), splits]
    wide.insert(0, "kind", wide.index.map(dict(zip(board["model"], board["kind"], strict=True))))
    if judge is not None:
        wide["judge (0-1)"] = [f"{judge[m]:.3f}" if m in judge.index else "—" for m in wide.index]
    wide.columns.name = None
    return wide


def by_tag(primary: pd.DataFrame, zbench: pd.DataFrame, *, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """Per model and Z-Bench tag: ``n, score, ci_low, ci_high`` (an item counts under each of its tags)."""
    out = aggregate(primary, ("model", "tag"), seed=seed, n_boot=n_boot, zbench=zbench, overall=False)
    return out[out["tag"] != OVERALL].reset_index(drop=True)


def tag_matrix(tags: pd.DataFrame, models: Sequence[str] | None = None, min_items: int = 1) -> pd.DataFrame:
    """Models × tags mean scores (tags with at least ``min_items`` items), rows in ``models`` order."""
    keep = tags[tags["n"] >= min_items]
    mat = keep.pivot_table(index="model", columns="tag", values="score", aggfunc="first")
    if models is not None:
        mat = mat.reindex([m for m in models if m in mat.index])
    return mat


def primary_tag_matrix(
    scores: pd.DataFrame, zbench: pd.DataFrame, models: Sequence[str] | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """Models × tags mean primary scores straight from an evaluation's scores (``primary_scores`` → ``by_tag`` →
    ``tag_matrix``): what the evaluate and compare notebooks both draw as a heatmap."""
    return tag_matrix(by_tag(primary_scores(scores), zbench, seed=seed), models)


def side_by_side(answers: pd.DataFrame, zbench: pd.DataFrame, k: int = 6) -> pd.DataFrame:
    """The first ``k`` prompts of an evaluation: split, prompt, Z-Bench's reference, then one column per model."""
    wide = answers.pivot_table(index="item_id", columns="model", values="answer", aggfunc="first")
    return zbench.set_index("item_id")[["split", "prompt", "reference"]].join(wide).head(k)


# --------------------------------------------------------------------------------------------- paired differences


def paired_diff(
    primary: pd.DataFrame,
    a: str,
    b: str,
    items: Iterable[str] | None = None,
    *,
    seed: int = 0,
    n_boot: int = 1000,
    ci: float = 0.95,
    key: tuple = (),
) -> dict[str, float]:
    """``a − b`` on the items both answered (optionally only ``items``): mean difference, a paired percentile
    bootstrap CI (items resampled together), ``n`` and whether the CI excludes zero."""
    wide = primary[primary["model"].isin([a, b])].pivot_table(index="item_id", columns="model", values="score")
    if items is not None:
        wide = wide[wide.index.isin(set(items))]
    if a not in wide or b not in wide:
        return {"n": 0, "delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "separated": False}
    d = (wide[a] - wide[b]).dropna().to_numpy()
    mean, low, high = bootstrap_ci(d, n_boot=n_boot, ci=ci, rng=group_rng(seed, a, b, *key))
    return {
        "n": int(len(d)),
        "delta": mean,
        "ci_low": low,
        "ci_high": high,
        "separated": bool(len(d) and (low > 0 or high < 0)),
    }


# The lineage steps a deltas table shows, in order: (step, stage before, stage after).
LINEAGE_STEPS: tuple[tuple[str, str, str], ...] = (
    ("base→sft", "base", "sft"),
    ("sft→sft+dpo", "sft", "sft+dpo"),
    ("base→sft+dpo", "base", "sft+dpo"),
    ("base→dpo", "base", "dpo"),
)


def lineage_steps(models: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(step, before, after)`` among the models, per foundation model in order of appearance: ``x`` → ``x-tuned``
    (base→sft), ``x-tuned`` → ``x-tuned-dpo`` (sft→sft+dpo), ``x`` → ``x-tuned-dpo`` (base→sft+dpo), ``x`` →
    ``x-dpo`` (base→dpo) — where both models are present."""
    stages: dict[str, dict[str, str]] = {}
    for m in models:
        base, stage = lineage(m)
        stages.setdefault(base, {})[stage] = m
    return [
        (step, by_stage[a], by_stage[b])
        for by_stage in stages.values()
        for step, a, b in LINEAGE_STEPS
        if a in by_stage and b in by_stage
    ]


def tuning_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(before, after) pairs of the lineage steps among the models (``lineage_steps``): ``x`` and ``x-tuned``, …"""
    return [(a, b) for _, a, b in lineage_steps(models)]


def tuning_deltas(primary: pd.DataFrame, models: Sequence[str], *, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """After minus before for each lineage step (``lineage_steps``: base→sft, sft→sft+dpo, base→sft+dpo, base→dpo),
    per split and overall, with paired bootstrap CIs: ``foundation, step, base, tuned, split, n, base_score,
    tuned_score, delta, ci_low, ci_high, separated`` (``base``: the model before the step, ``tuned``: after it)."""
    rows = []
    for step, base, tuned in lineage_steps(models):
        for split in [*[s for s in SPLITS if s in set(primary["split"])], OVERALL]:
            part = primary if split == OVERALL else primary[primary["split"] == split]
            d = paired_diff(part, tuned, base, seed=seed, n_boot=n_boot, key=(split,))
            means = part[part["model"].isin([base, tuned])].groupby("model")["score"].mean()
            rows.append(
                {
                    "foundation": lineage(base)[0],
                    "step": step,
                    "base": base,
                    "tuned": tuned,
                    "split": split,
                    "base_score": means.get(base, math.nan),
                    "tuned_score": means.get(tuned, math.nan),
                    **d,
                }
            )
    cols = ["foundation", "step", "base", "tuned", "split", "n", "base_score", "tuned_score", "delta", "ci_low"]
    return pd.DataFrame(rows, columns=[*cols, "ci_high", "separated"])


def stage_scores(board: pd.DataFrame, studied: Sequence[str], split: str = OVERALL) -> pd.DataFrame:
    """The studied models' scores on one split of the leaderboard, by lineage: ``foundation, stage, model, n, score,
    ci_low, ci_high`` — one row per model, foundation models in study order, stages base, sft, dpo, sft+dpo."""
    part = board[(board["split"] == split) & board["model"].isin(studied)].set_index("model")
    rows = [(*lineage(m), m) for m in studied if m in part.index]
    out = pd.DataFrame(rows, columns=["foundation", "stage", "model"])
    out = out.join(part[["n", "score", "ci_low", "ci_high"]], on="model")
    order = {b: i for i, b in enumerate(dict.fromkeys(out["foundation"]))}
    rank = out["stage"].map(STAGES.index) + out["foundation"].map(order) * len(STAGES)
    return out.assign(_r=rank).sort_values("_r", kind="stable").drop(columns="_r").reset_index(drop=True)


def _cell(score: float, low: float, high: float, signed: bool = False) -> str:
    """``0.412 [0.30, 0.53]`` (signed: ``+0.120 [+0.02, +0.22]``); ``—`` for no score."""
    sign = "+" if signed else ""
    return "—" if math.isnan(score) else f"{score:{sign}.3f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def stage_table(stages: pd.DataFrame, deltas: pd.DataFrame) -> pd.DataFrame:
    """Base → SFT → DPO per foundation model: one row per foundation model, a ``0.412 [0.30, 0.53]`` cell per stage
    (``stage_scores``) and per lineage step the overall paired difference ``+0.120 [+0.02, +0.22]`` (``*`` when its
    CI excludes zero; ``tuning_deltas``)."""
    if not len(stages):
        return pd.DataFrame()
    table = stages.assign(
        cell=[_cell(*v) for v in zip(stages["score"], stages["ci_low"], stages["ci_high"], strict=True)]
    ).pivot_table(index="foundation", columns="stage", values="cell", aggfunc="first")
    table = table[[s for s in STAGES if s in table.columns]]
    overall = deltas[deltas["split"] == OVERALL]
    if len(overall):
        steps = overall.assign(
            cell=[
                _cell(d, lo, hi, signed=True) + (" *" if sep else "")
                for d, lo, hi, sep in zip(
                    overall["delta"], overall["ci_low"], overall["ci_high"], overall["separated"], strict=True
                )
            ]
        ).pivot_table(index="foundation", columns="step", values="cell", aggfunc="first")
        table = table.join(steps[[s for s, _, _ in LINEAGE_STEPS if s in steps.columns]])
    table = table.reindex(list(dict.fromkeys(stages["foundation"]))).fillna("—")
    table.columns.name = None
    return table


def _best_two(part: pd.DataFrame, models: Sequence[str]) -> list[tuple[str, float]]:
    means = part[part["model"].isin(models)].groupby("model")["score"].mean().dropna()
    return sorted(means.items(), key=lambda kv: (-kv[1], kv[0]))[:2]


def findings(
    primary: pd.DataFrame,
    zbench: pd.DataFrame,
    models: Sequence[str],
    *,
    seed: int = 0,
    n_boot: int = 1000,
    min_tag_items: int = MIN_TAG_ITEMS,
) -> pd.DataFrame:
    """Best of ``models`` per split, overall and per tag (tags with ≥ ``min_tag_items`` items): the runner-up,
    the margin, its paired bootstrap CI and whether that CI excludes zero (``separated``). Overall first, then
    splits, then tags by item count."""
    tags = zbench.drop_duplicates("item_id").set_index("item_id")["tags"]
    facets: list[tuple[str, str, list[str]]] = [("overall", OVERALL, list(primary["item_id"].unique()))]
    for split in [s for s in SPLITS if s in set(primary["split"])]:
        facets.append(("split", split, list(primary.loc[primary["split"] == split, "item_id"].unique())))
    scored = set(primary.loc[primary["model"].isin(models), "item_id"])
    tag_items: dict[str, list[str]] = {}
    for item in sorted(scored):
        for t in tags.get(item, []) or []:
            tag_items.setdefault(t, []).append(item)
    for t, items in sorted(tag_items.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(items) >= min_tag_items:
            facets.append(("tag", t, items))
    rows = []
    for facet, value, items in facets:
        part = primary[primary["item_id"].isin(items)]
        top = _best_two(part, models)
        if not top:
            continue
        best, best_score = top[0]
        row = {
            "facet": facet,
            "value": value,
            "items": len(items),
            "best": best,
            "best_score": best_score,
            "runner_up": None,
            "runner_up_score": math.nan,
            "margin": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "separated": False,
        }
        if len(top) > 1:
            runner, runner_score = top[1]
            d = paired_diff(part, best, runner, seed=seed, n_boot=n_boot, key=(facet, value))
            row.update(
                runner_up=runner,
                runner_up_score=runner_score,
                margin=d["delta"],
                ci_low=d["ci_low"],
                ci_high=d["ci_high"],
                separated=d["separated"],
            )
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "facet",
            "value",
            "items",
            "best",
            "best_score",
            "runner_up",
            "runner_up_score",
            "margin",
            "ci_low",
            "ci_high",
            "separated",
        ],
    )


def findings_text(table: pd.DataFrame) -> list[str]:
    """One sentence per finding (overall and splits), for the notebook and the index page."""
    out = []
    for r in table[table["facet"] != "tag"].itertuples(index=False):
        where = "overall" if r.facet == "overall" else f"on {r.value}"
        if r.runner_up is None:
            out.append(f"{where}: {r.best} scores {r.best_score:.3f} (no other studied model to compare)")
            continue
        verdict = (
            "the paired 95 % CI of the margin excludes zero"
            if r.separated
            else "the paired 95 % CI of the margin includes zero: not separated"
        )
        out.append(
            f"{where}: {r.best} {r.best_score:.3f} vs {r.runner_up} {r.runner_up_score:.3f}, margin "
            f"{r.margin:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] over {r.items} items — {verdict}"
        )
    return out


# --------------------------------------------------------------------------------------------- length bias


def all_answers(studies: Sequence[Study], zbench: pd.DataFrame) -> pd.DataFrame:
    """``item_id, model, answer`` on the compared items: the studied models' generations and the reference models'
    shipped answers."""
    items = set(studies[0].items)
    ours = combined(studies, "answers")
    theirs = answers_long(zbench[zbench["item_id"].isin(items)])
    both = pd.concat([x[["item_id", "model", "answer"]] for x in (ours, theirs) if x is not None], ignore_index=True)
    return both[both["item_id"].isin(items)].drop_duplicates(["item_id", "model"]).reset_index(drop=True)


def answer_lengths(answers: pd.DataFrame) -> pd.DataFrame:
    """Answer length in characters per (model, item)."""
    return answers.assign(chars=answers["answer"].fillna("").astype(str).str.len()).drop(columns="answer")


def length_bias(primary: pd.DataFrame, lengths: pd.DataFrame) -> pd.DataFrame:
    """Per model: median answer length, mean score, and the Spearman correlation between answer length and score
    over its items; a last row ``(all answers)`` pools every answer. Positive ρ: longer answers score higher."""
    joined = primary.merge(lengths, on=["model", "item_id"], how="inner")
    rows = []
    for model, g in joined.groupby("model", sort=False):
        rows.append(
            {
                "model": model,
                "items": len(g),
                "median_chars": float(g["chars"].median()),
                "mean_score": float(g["score"].mean()),
                "spearman": spearman(g["chars"], g["score"]),
            }
        )
    rows.append(
        {
            "model": "(all answers)",
            "items": len(joined),
            "median_chars": float(joined["chars"].median()) if len(joined) else math.nan,
            "mean_score": float(joined["score"].mean()) if len(joined) else math.nan,
            "spearman": spearman(joined["chars"], joined["score"]),
        }
    )
    return pd.DataFrame(rows)


def truncated_flags(answers: pd.DataFrame) -> pd.Series:
    """Per answer, whether it was cut at ``max_new_tokens`` (nullable boolean): its ``truncated`` column, else
    ``finish_reason == "length"``; ``<NA>`` where the table says neither (an older study's answers)."""
    if "truncated" in answers.columns:
        return answers["truncated"].astype("boolean")
    if "finish_reason" in answers.columns:
        reason = answers["finish_reason"].astype("string").replace("", pd.NA)
        return reason.eq("length").astype("boolean")
    return pd.Series(pd.NA, index=answers.index, dtype="boolean")


def truncation(answers: pd.DataFrame | None) -> pd.DataFrame:
    """Per model and split, then ``overall``: ``n`` answers, how many were ``truncated`` (generation stopped at
    ``max_new_tokens`` before EOS: ``finish_reason == "length"``) and the ``rate``. Answers whose flag is unknown
    (``truncated_flags``) are left out; a model without any known flag has no row. Models in the order of
    ``answers``."""
    cols = ["model", "split", "n", "truncated", "rate"]
    if answers is None or not len(answers):
        return pd.DataFrame(columns=cols)
    flags = truncated_flags(answers)
    split = answers["split"] if "split" in answers.columns else pd.Series(OVERALL, index=answers.index)
    known = pd.DataFrame({"model": answers["model"], "split": split, "cut": flags})[flags.notna()]
    known["cut"] = known["cut"].astype(bool)
    rows = []
    for model in dict.fromkeys(known["model"]):
        part = known[known["model"] == model]
        present = set(part["split"]) - {OVERALL}
        for split in [*[s for s in SPLITS if s in present], *sorted(present - set(SPLITS)), OVERALL]:
            cut = part["cut"] if split == OVERALL else part.loc[part["split"] == split, "cut"]
            rows.append({"model": model, "split": split, "n": len(cut), "truncated": int(cut.sum())})
    out = pd.DataFrame(rows, columns=cols[:-1])
    out["rate"] = out["truncated"] / out["n"]
    return out
