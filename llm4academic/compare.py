"""The comparison step: which studied model answers Z-Bench best, and where — next to the 14 reference models.

Reads finished evaluation artifacts (``artifacts/evaluate/``) of one study or of several studies run separately
(``llm4academic compare reports/A reports/B``) and builds the tables that ``04_compare_models.ipynb`` plots:

- **primary score** per answer: each item is scored by its most specific reference scorer (option letter, then
  number, then normalised containment, then Chinese ROUGE-L against the reference) — one score in [0, 1] per item,
  so that models can be ranked on one scale; only items with a reference count (``against == "reference"``);
- the **leaderboard** per split and overall with seeded percentile-bootstrap CIs (``scoring.aggregate``);
- a **per-tag** matrix, **base → tuned deltas** with paired bootstrap CIs, **length bias**, **judge agreement**
  (order consistency of pairwise verdicts), **training curves**, the **data mix**;
- **findings**: best studied model per split and per tag, its margin over the runner-up and whether a paired
  bootstrap CI of that margin excludes zero.

Studies are only compared when they evaluated the same Z-Bench items with the same scorers (``CompareError``
otherwise). Everything the notebook shows is written under ``artifacts/compare/`` (``headline.json`` feeds the
study's index page).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .base import KitError, atomic_write

from .config import StudyParams, resolved_dict
from .scoring import OVERALL, aggregate, bootstrap_ci, pairwise_summary
from .zbench import REFERENCE_MODELS, SPLITS, load_zbench, model_label

PRIMARY_ORDER: tuple[str, ...] = ("option", "number", "contains", "rouge_l")
PRIMARY_METHOD = ("each item scored by its most specific reference scorer (option > number > contains > rouge_l), "
                  "items with a reference only; mean over items, percentile bootstrap CI over items")
MIN_TAG_ITEMS = 3  # findings per tag need at least this many items


class CompareError(KitError):
    """Studies that cannot be compared, or a study without the artifacts the comparison needs."""


# --------------------------------------------------------------------------------------------- loading studies


@dataclass
class Study:
    """One finished study's evaluation (and, when present, training and data) artifacts."""

    name: str
    run_dir: Path
    seed: int
    params: dict[str, Any]
    manifest: dict[str, Any] | None
    evaluate: dict[str, Any]
    scores: pd.DataFrame
    answers: pd.DataFrame
    pairwise: pd.DataFrame | None = None
    judge: pd.DataFrame | None = None
    renamed: dict[str, str] = field(default_factory=dict)  # study model name → name in the comparison

    @property
    def study_models(self) -> list[str]:
        return list(self.evaluate.get("models", []))

    @property
    def items(self) -> list[str]:
        return sorted(set(self.scores["item_id"]))

    def read_json(self, *parts: str) -> Any:
        return _read_json(self.run_dir.joinpath(*parts))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None


def load_study(run_dir: str | Path, params: StudyParams | None = None) -> Study:
    """A study's evaluation artifacts. ``params`` (when the notebook runs inside the study) or the study's
    ``manifest.json`` say its name and seed."""
    run_dir = Path(run_dir).resolve()
    ev_dir = run_dir / "artifacts" / "evaluate"
    info = _read_json(ev_dir / "evaluate.json")
    scores = _parquet(ev_dir / "scores.parquet")
    if info is None or scores is None:
        raise CompareError(f"{run_dir}: no Z-Bench evaluation found (expected {ev_dir / 'evaluate.json'} and "
                           f"scores.parquet): run the study's evaluate step first")
    manifest = _read_json(run_dir / "manifest.json")
    if params is not None:
        name, seed, pdict = params.name, params.seed, resolved_dict(params)
    elif manifest:
        name, seed, pdict = manifest["study"], int(manifest.get("seed", 0)), manifest.get("params", {})
    else:
        raise CompareError(f"{run_dir}: no manifest.json — is this a study's report folder (reports/<study>)?")
    answers = _parquet(ev_dir / "answers.parquet")
    if answers is None:
        answers = pd.DataFrame(columns=["item_id", "split", "model", "answer"])
    return Study(name=name, run_dir=run_dir, seed=seed, params=pdict, manifest=manifest, evaluate=info,
                 scores=scores, answers=answers, pairwise=_parquet(ev_dir / "pairwise.parquet"),
                 judge=_parquet(ev_dir / "judge.parquet"))


def _slice_signature(study: Study) -> dict[str, Any]:
    ev = study.evaluate
    judge = ev.get("judge") or None
    return {"items": sorted(ev.get("item_ids") or study.items), "scorers": sorted(ev.get("scorers", [])),
            "judge": {k: judge.get(k) for k in ("model", "baseline")} if judge else None}


def check_comparable(studies: Sequence[Study]) -> None:
    """Refuse studies that evaluated different Z-Bench items, with different scorers or a different judge."""
    if not studies:
        raise CompareError("no studies to compare")
    names = [s.name for s in studies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CompareError(f"the same study name appears twice: {', '.join(dupes)} "
                           f"({', '.join(str(s.run_dir) for s in studies if s.name in dupes)})")
    first, ref = studies[0], _slice_signature(studies[0])
    for other in studies[1:]:
        sig = _slice_signature(other)
        if sig["items"] != ref["items"]:
            only_a = sorted(set(ref["items"]) - set(sig["items"]))
            only_b = sorted(set(sig["items"]) - set(ref["items"]))
            raise CompareError(
                f"studies {first.name!r} and {other.name!r} evaluated different Z-Bench slices "
                f"({len(ref['items'])} vs {len(sig['items'])} items; only in {first.name}: "
                f"{_few(only_a)}; only in {other.name}: {_few(only_b)}). Rerun them with the same evaluate.splits, "
                f"evaluate.limit and evaluate.items")
        if sig["scorers"] != ref["scorers"]:
            raise CompareError(f"studies {first.name!r} and {other.name!r} used different scorers "
                               f"({', '.join(ref['scorers'])} vs {', '.join(sig['scorers'])}): set the same "
                               f"evaluate.scorers")
        if sig["judge"] != ref["judge"]:
            raise CompareError(f"studies {first.name!r} and {other.name!r} used different judges ({ref['judge']} vs "
                               f"{sig['judge']}): set the same evaluate.judge, or none")


def options(params: StudyParams | None) -> dict[str, Any]:
    """``compare()``'s keyword arguments from the study's ``compare`` params (defaults for a multi-study run)."""
    if params is None:
        return {}
    return {"n_boot": params.compare.n_boot, "min_tag_items": params.compare.min_tag_items}


def _few(values: Sequence[str], k: int = 4) -> str:
    return "none" if not values else ", ".join(values[:k]) + (f" … (+{len(values) - k})" if len(values) > k else "")


def load_studies(run_dirs: Iterable[str | Path], params: StudyParams | None = None) -> list[Study]:
    """Several studies, checked comparable; study models whose names repeat across studies become
    ``<study>/<model>``. ``params`` applies to a single study run from inside its own notebook."""
    dirs = [Path(d) for d in run_dirs]
    studies = [load_study(d, params if len(dirs) == 1 else None) for d in dirs]
    check_comparable(studies)
    base = (lambda m: m.removesuffix("-tuned"))  # noqa: E731 — a tuned model is renamed with its base
    owners: dict[str, set[str]] = {}
    for s in studies:
        for m in s.study_models:
            owners.setdefault(base(m), set()).add(s.name)
    for s in studies:
        s.renamed = {m: (f"{s.name}/{m}" if len(owners[base(m)]) > 1 or base(m) in REFERENCE_MODELS else m)
                     for m in s.study_models}
    return studies


# --------------------------------------------------------------------------------------------- combined tables


def _rename(frame: pd.DataFrame | None, study: Study, *, only_study_models: bool = True) -> pd.DataFrame | None:
    if frame is None:
        return None
    out = frame.copy()
    if only_study_models:
        out = out[out["model"].isin(study.renamed)]
    out["model"] = out["model"].map(lambda m: study.renamed.get(m, m))
    return out.assign(study=study.name)


def combined_scores(studies: Sequence[Study]) -> pd.DataFrame:
    """Every study model's reference scores, plus the reference models' (taken once: they answered the same
    items in every study)."""
    parts = [_rename(s.scores, s) for s in studies]
    ref = studies[0].scores[studies[0].scores["model"].isin(REFERENCE_MODELS)].assign(study="Z-Bench")
    return pd.concat([*parts, ref], ignore_index=True)


def combined(studies: Sequence[Study], attr: str) -> pd.DataFrame | None:
    frames = [_rename(getattr(s, attr), s) for s in studies if getattr(s, attr) is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def study_models(studies: Sequence[Study]) -> list[str]:
    return [s.renamed[m] for s in studies for m in s.study_models]


def primary_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """One score per (model, item): the most specific reference scorer that judged it (``PRIMARY_ORDER``)."""
    ref = scores[(scores["against"] == "reference") & scores["scorer"].isin(PRIMARY_ORDER)].copy()
    ref["_rank"] = ref["scorer"].map(PRIMARY_ORDER.index)
    ref = ref.sort_values(["model", "item_id", "_rank"], kind="stable").drop_duplicates(["model", "item_id"])
    keep = [c for c in ("item_id", "split", "model", "scorer", "score", "study") if c in ref.columns]
    return ref[keep].reset_index(drop=True)


def model_kinds(models: Iterable[str], studied: Sequence[str]) -> dict[str, str]:
    """``study`` (a base model of a study), ``tuned`` (a model the train step tuned) or ``reference``."""
    out = {}
    for m in models:
        out[m] = ("reference" if m in REFERENCE_MODELS and m not in studied else
                  "tuned" if m.endswith("-tuned") else "study")
    return out


def leaderboard(primary: pd.DataFrame, studied: Sequence[str], *, seed: int = 0, n_boot: int = 1000,
                ci: float = 0.95) -> pd.DataFrame:
    """Per model and split (and ``overall``): ``n, score, ci_low, ci_high`` plus ``kind`` and ``rank`` (1 = best,
    within the split, over all models). Rows: split order, then best first."""
    table = aggregate(primary, ("model", "split"), seed=seed, n_boot=n_boot, ci=ci)
    kinds = model_kinds(table["model"].unique(), studied)
    table["kind"] = table["model"].map(kinds)
    table["label"] = table["model"].map(model_label)
    table["rank"] = table.groupby("split")["score"].rank(ascending=False, method="min").astype(int)
    split_order = {s: i for i, s in enumerate([*SPLITS, OVERALL])}
    table = table.sort_values(["split", "score", "model"], key=lambda c: c.map(split_order) if c.name == "split"
                              else -c if c.name == "score" else c, kind="stable").reset_index(drop=True)
    table.attrs["leaderboard"] = {"metric": PRIMARY_METHOD, "seed": seed, "n_boot": n_boot, "ci": ci}
    return table


def wide_leaderboard(board: pd.DataFrame) -> pd.DataFrame:
    """Models × splits, ``0.412 [0.30, 0.53]`` cells, ordered by the overall score."""
    cells = board.assign(cell=[f"{s:.3f} [{lo:.2f}, {hi:.2f}]" if not math.isnan(s) else "—"
                               for s, lo, hi in zip(board["score"], board["ci_low"], board["ci_high"])])
    wide = cells.pivot_table(index="model", columns="split", values="cell", aggfunc="first")
    order = board[board["split"] == OVERALL].sort_values("score", ascending=False)["model"]
    splits = [s for s in [*SPLITS, OVERALL] if s in wide.columns]
    wide = wide.loc[list(order), splits]
    wide.insert(0, "kind", wide.index.map(dict(zip(board["model"], board["kind"]))))
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


def _group_rng(seed: int, *key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(tuple(map(str, key))).encode())])


def paired_diff(primary: pd.DataFrame, a: str, b: str, items: Iterable[str] | None = None, *, seed: int = 0,
                n_boot: int = 1000, ci: float = 0.95, key: tuple = ()) -> dict[str, float]:
    """``a − b`` on the items both answered (optionally only ``items``): mean difference, a paired percentile
    bootstrap CI (items resampled together), ``n`` and whether the CI excludes zero."""
    wide = primary[primary["model"].isin([a, b])].pivot_table(index="item_id", columns="model", values="score")
    if items is not None:
        wide = wide[wide.index.isin(set(items))]
    if a not in wide or b not in wide:
        return {"n": 0, "delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "separated": False}
    d = (wide[a] - wide[b]).dropna().to_numpy()
    mean, low, high = bootstrap_ci(d, n_boot=n_boot, ci=ci, rng=_group_rng(seed, a, b, *key))
    return {"n": int(len(d)), "delta": mean, "ci_low": low, "ci_high": high,
            "separated": bool(len(d) and (low > 0 or high < 0))}


def tuning_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(base, tuned) pairs among the models: ``x`` and ``x-tuned``."""
    present = set(models)
    return [(m[: -len("-tuned")], m) for m in models if m.endswith("-tuned") and m[: -len("-tuned")] in present]


def tuning_deltas(primary: pd.DataFrame, models: Sequence[str], *, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """Tuned minus base, per split and overall, with paired bootstrap CIs: ``base, tuned, split, n, base_score,
    tuned_score, delta, ci_low, ci_high, separated``."""
    rows = []
    for base, tuned in tuning_pairs(models):
        for split in [*[s for s in SPLITS if s in set(primary["split"])], OVERALL]:
            part = primary if split == OVERALL else primary[primary["split"] == split]
            d = paired_diff(part, tuned, base, seed=seed, n_boot=n_boot, key=(split,))
            means = part[part["model"].isin([base, tuned])].groupby("model")["score"].mean()
            rows.append({"base": base, "tuned": tuned, "split": split, "base_score": means.get(base, math.nan),
                         "tuned_score": means.get(tuned, math.nan), **d})
    cols = ["base", "tuned", "split", "n", "base_score", "tuned_score", "delta", "ci_low", "ci_high", "separated"]
    return pd.DataFrame(rows, columns=cols)


def _best_two(part: pd.DataFrame, models: Sequence[str]) -> list[tuple[str, float]]:
    means = part[part["model"].isin(models)].groupby("model")["score"].mean().dropna()
    return sorted(means.items(), key=lambda kv: (-kv[1], kv[0]))[:2]


def findings(primary: pd.DataFrame, zbench: pd.DataFrame, models: Sequence[str], *, seed: int = 0,
             n_boot: int = 1000, min_tag_items: int = MIN_TAG_ITEMS) -> pd.DataFrame:
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
        row = {"facet": facet, "value": value, "items": len(items), "best": best, "best_score": best_score,
               "runner_up": None, "runner_up_score": math.nan, "margin": math.nan, "ci_low": math.nan,
               "ci_high": math.nan, "separated": False}
        if len(top) > 1:
            runner, runner_score = top[1]
            d = paired_diff(part, best, runner, seed=seed, n_boot=n_boot, key=(facet, value))
            row.update(runner_up=runner, runner_up_score=runner_score, margin=d["delta"], ci_low=d["ci_low"],
                       ci_high=d["ci_high"], separated=d["separated"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["facet", "value", "items", "best", "best_score", "runner_up",
                                       "runner_up_score", "margin", "ci_low", "ci_high", "separated"])


def findings_text(table: pd.DataFrame) -> list[str]:
    """One sentence per finding (overall and splits), for the notebook and the index page."""
    out = []
    for r in table[table["facet"] != "tag"].itertuples(index=False):
        where = "overall" if r.facet == "overall" else f"on {r.value}"
        if r.runner_up is None:
            out.append(f"{where}: {r.best} scores {r.best_score:.3f} (no other studied model to compare)")
            continue
        verdict = ("the paired 95 % CI of the margin excludes zero" if r.separated else
                   "the paired 95 % CI of the margin includes zero: not separated")
        out.append(f"{where}: {r.best} {r.best_score:.3f} vs {r.runner_up} {r.runner_up_score:.3f}, margin "
                   f"{r.margin:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] over {r.items} items — {verdict}")
    return out


# --------------------------------------------------------------------------------------------- length bias


def all_answers(studies: Sequence[Study], zbench: pd.DataFrame) -> pd.DataFrame:
    """``item_id, model, answer`` on the compared items: the studied models' generations and the reference models'
    shipped answers."""
    from .zbench import answers_long

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
        rows.append({"model": model, "items": len(g), "median_chars": float(g["chars"].median()),
                     "mean_score": float(g["score"].mean()), "spearman": _spearman(g["chars"], g["score"])})
    rows.append({"model": "(all answers)", "items": len(joined), "median_chars": float(joined["chars"].median())
                 if len(joined) else math.nan, "mean_score": float(joined["score"].mean()) if len(joined) else math.nan,
                 "spearman": _spearman(joined["chars"], joined["score"])})
    return pd.DataFrame(rows)


def _spearman(x: pd.Series, y: pd.Series) -> float:
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan
    return float(x.rank().corr(y.rank()))


# --------------------------------------------------------------------------------------------- judge, training, data


def judge_agreement(pairwise: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per model judged against the baseline in both orders: wins/ties/losses, and ``order_consistency`` — the
    share of items whose verdict did not flip when the two answers swapped places (1 − position bias)."""
    if pairwise is None or not len(pairwise):
        return None
    out = pairwise_summary(pairwise)
    out["order_consistency"] = 1 - out["position_bias"]
    out["baseline"] = pairwise.groupby("model", sort=False)["against"].first().reindex(out["model"]).values
    return out


def training_curves(studies: Sequence[Study]) -> pd.DataFrame:
    """Long table ``model, step, metric, value, study`` of every trained model's logged loss and learning rate, read
    from ``artifacts/train/<model>/metrics.jsonl`` (compare.py never imports train.py); the model is named as in the
    comparison (its ``-tuned`` name)."""
    frames = []
    for s in studies:
        for entry in (s.read_json("artifacts", "train", "checkpoints.json") or {}).get("models", []):
            log = s.run_dir / "artifacts" / "train" / entry["model"] / "metrics.jsonl"
            if not log.is_file():
                continue
            rows = pd.read_json(log, lines=True)
            name = s.renamed.get(f"{entry['model']}-tuned", f"{entry['model']}-tuned")
            metrics = [m for m in ("loss", "lr") if m in rows]
            frames.append(rows.melt(id_vars="step", value_vars=metrics, var_name="metric").assign(model=name,
                                                                                                  study=s.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "step", "metric",
                                                                                     "value", "study"])


def data_mix(studies: Sequence[Study]) -> pd.DataFrame:
    """Per study and source: records available after cleaning and taken into the training mix, from the data
    step's summary."""
    rows = []
    for s in studies:
        summary = s.read_json("artifacts", "data", "data_summary.json")
        if not summary:
            continue
        total = summary.get("records_in_mix") or 0
        for d in summary.get("mix", []):
            rows.append({"study": s.name, "source": d["source"], "mode": d.get("mode"), "weight": d.get("weight"),
                         "available": d.get("available"), "taken": d.get("taken"),
                         "share": d.get("taken", 0) / total if total else math.nan})
    return pd.DataFrame(rows, columns=["study", "source", "mode", "weight", "available", "taken", "share"])


def data_flow(studies: Sequence[Study]) -> pd.DataFrame:
    """Per study: records loaded → after cleaning (removed per step) → in the mix, and the mix's sha256."""
    rows = []
    for s in studies:
        d = s.read_json("artifacts", "data", "data_summary.json")
        if d:
            rows.append({"study": s.name, "loaded": d.get("records_loaded"),
                         "after_cleaning": d.get("records_after_cleaning"),
                         **{f"removed.{k}": v for k, v in (d.get("removed") or {}).items()},
                         "in_mix": d.get("records_in_mix"), "mix_sha256": (d.get("mix_sha256") or "")[:12]})
    return pd.DataFrame(rows)


def provenance(studies: Sequence[Study]) -> pd.DataFrame:
    """Per study: seed, git sha and dirty flag, the Z-Bench slice and scorers, generation settings."""
    from .base import git_info

    rows = []
    for s in studies:
        git = (s.manifest or {}).get("git") or git_info()
        ev = s.evaluate
        rows.append({"study": s.name, "seed": s.seed, "git_sha": (git.get("sha") or "")[:12],
                     "dirty": git.get("dirty"), "items": len(s.items), "splits": ", ".join(ev.get("splits", [])),
                     "limit": ev.get("limit"), "scorers": ", ".join(ev.get("scorers", [])),
                     "generation": json.dumps(ev.get("generation", {}), sort_keys=True),
                     "judge": (ev.get("judge") or {}).get("model"), "run_dir": str(s.run_dir)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- colours and figures


def palette(models: Sequence[str], studied: Sequence[str]) -> dict[str, tuple]:
    """One colour per model, the same in every figure: studied base models take the colour-blind palette in order,
    each tuned model a darker shade of its base's colour, reference models greys."""
    import seaborn as sns

    kinds = model_kinds(models, studied)
    bases = [m for m in dict.fromkeys([*studied, *models]) if kinds.get(m) == "study"]
    extra = [m for m in models if kinds.get(m) == "tuned" and m[: -len("-tuned")] not in bases]
    colours = sns.color_palette("colorblind", max(len(bases) + len(extra), 1))
    out: dict[str, tuple] = {}
    for m, c in zip([*bases, *extra], colours):
        out[m] = tuple(c)
    for m in models:
        if kinds[m] == "tuned" and m not in out:
            base = out.get(m[: -len("-tuned")])
            out[m] = tuple(0.6 * np.asarray(base)) if base is not None else (0.2, 0.2, 0.2)
    greys = np.linspace(0.5, 0.8, len(REFERENCE_MODELS))
    for m in models:
        if kinds[m] == "reference":
            g = float(greys[REFERENCE_MODELS.index(m)]) if m in REFERENCE_MODELS else 0.65
            out[m] = (g, g, g)
    return out


def label_palette(colours: dict[str, tuple]) -> dict[str, tuple]:
    return {model_label(m): c for m, c in colours.items()}


CJK_FONTS: tuple[str, ...] = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
                               "WenQuanYi Zen Hei")


def style() -> list[str]:
    """Seaborn theme for the comparison figures, with a CJK fallback font (Z-Bench's tags are Chinese). A CJK font
    installed after matplotlib built its font cache (``scripts/install-system-deps`` adds Debian's
    fonts-wqy-microhei) is added from disk. Returns the CJK fonts in use; without one, tags draw as boxes and the
    missing-glyph warnings are silenced (the notebook says so instead)."""
    import warnings

    import seaborn as sns
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    if not any(n in names for n in CJK_FONTS):
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in ("wqy", "notosanscjk", "sourcehansans")):
                font_manager.fontManager.addfont(path)
        names = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [n for n in CJK_FONTS if n in names]
    sns.set_theme(style="whitegrid", context="notebook",
                  rc={"font.family": ["DejaVu Sans", *cjk, "sans-serif"],  # matplotlib falls back glyph by glyph
                      "axes.unicode_minus": False})
    if not cjk:
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
    return cjk


def plot_leaderboard(board: pd.DataFrame, colours: dict[str, tuple], split: str = OVERALL, ax=None):
    """Horizontal bars of one split's scores with CI whiskers, best on top, in each model's colour."""
    import matplotlib.pyplot as plt

    part = board[board["split"] == split].sort_values("score", ascending=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.32 * len(part) + 1.4))
    y = np.arange(len(part))
    ax.barh(y, part["score"], color=[colours.get(m, (.6, .6, .6)) for m in part["model"]],
            edgecolor=["black" if k != "reference" else "none" for k in part["kind"]])
    ax.errorbar(part["score"], y, xerr=[part["score"] - part["ci_low"], part["ci_high"] - part["score"]],
                fmt="none", ecolor="#333333", elinewidth=1, capsize=2)
    ax.set_yticks(y, [f"{model_label(m)}{'  ★' if k != 'reference' else ''}" for m, k in zip(part["model"],
                                                                                           part["kind"])])
    ax.set_xlim(0, 1)
    ax.set_xlabel("primary score (95 % bootstrap CI)")
    ax.set_title(f"Z-Bench {split}: studied models (★) next to the reference models")
    return ax


def plot_splits(board: pd.DataFrame, colours: dict[str, tuple], models: Sequence[str] | None = None):
    """Per split, the score of each model (points with CI bars), models in overall order."""
    import matplotlib.pyplot as plt

    order = board[board["split"] == OVERALL].sort_values("score", ascending=False)["model"].tolist()
    if models is not None:
        order = [m for m in order if m in set(models)]
    splits = [s for s in [*SPLITS, OVERALL] if s in set(board["split"])]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.2 * len(splits) + 1.5, 0.3 * len(order) + 1.6),
                             sharey=True)
    axes = np.atleast_1d(axes)
    for ax, split in zip(axes, splits):
        part = board[board["split"] == split].set_index("model").reindex(order)
        y = np.arange(len(order))[::-1]
        for yi, (m, r) in zip(y, part.iterrows()):
            if not math.isnan(r["score"]):
                ax.errorbar(r["score"], yi, xerr=[[r["score"] - r["ci_low"]], [r["ci_high"] - r["score"]]],
                            fmt="o", color=colours.get(m, (.5, .5, .5)), ms=5, capsize=2)
        ax.set_title(split)
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(y, [model_label(m) for m in order])
    fig.supxlabel("primary score (95 % bootstrap CI)")
    fig.tight_layout()
    return fig


def plot_tag_heatmap(matrix: pd.DataFrame, max_tags: int = 40):
    """Models × tags heatmap of mean primary scores (the ``max_tags`` tags with the most scored cells)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    cols = matrix.notna().sum().sort_values(ascending=False).index[:max_tags]
    mat = matrix[cols]
    mat.index = mat.index.map(model_label)
    fig, ax = plt.subplots(figsize=(min(24, 0.42 * mat.shape[1] + 4), 0.38 * mat.shape[0] + 2.2))
    sns.heatmap(mat, cmap="viridis", vmin=0, vmax=1, ax=ax, cbar_kws={"label": "mean primary score"},
                linewidths=.3, linecolor="white")
    ax.set_xlabel("Z-Bench task tag")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def plot_deltas(deltas: pd.DataFrame, colours: dict[str, tuple]):
    """Tuned − base per split with paired CIs; a dashed line at zero."""
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(deltas["tuned"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(deltas) + 1.4))
    labels = []
    for i, r in enumerate(deltas.itertuples(index=False)):
        ax.errorbar(r.delta, i, xerr=[[r.delta - r.ci_low], [r.ci_high - r.delta]], fmt="o", capsize=3,
                    color=colours.get(r.tuned, "C0"))
        labels.append(f"{model_label(r.tuned)} · {r.split}")
    ax.axvline(0, ls="--", color="#555555", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("tuned − base, primary score (paired 95 % bootstrap CI)")
    ax.set_title(f"What tuning changed ({len(pairs)} model{'s' if len(pairs) != 1 else ''})")
    fig.tight_layout()
    return fig


def plot_length_bias(primary: pd.DataFrame, lengths: pd.DataFrame, colours: dict[str, tuple]):
    """Left: answer length per model (box plot, log scale). Right: score against length, every answer."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    joined = primary.merge(lengths, on=["model", "item_id"], how="inner")
    joined["label"] = joined["model"].map(model_label)
    lab_colours = label_palette(colours)
    order = joined.groupby("label")["chars"].median().sort_values().index.tolist()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 0.3 * len(order) + 2.2), gridspec_kw={"width_ratios": [1, 1.2]})
    sns.boxplot(data=joined, y="label", x=joined["chars"].clip(lower=1), hue="label", order=order,
                palette=lab_colours, ax=a, legend=False, fliersize=2)
    a.set_xscale("log")
    a.set_xlabel("answer length (characters, log)")
    a.set_ylabel("")
    sns.stripplot(data=joined, x=joined["chars"].clip(lower=1), y="score", hue="label", palette=lab_colours, ax=b,
                  native_scale=True, jitter=False, alpha=.6, size=4, legend=False)
    b.set_xscale("log")
    b.set_xlabel("answer length (characters, log)")
    b.set_ylabel("primary score")
    fig.tight_layout()
    return fig


def plot_judge(agreement: pd.DataFrame, colours: dict[str, tuple]):
    """Per model: wins/ties/losses against the baseline (both orders) and the judge's order consistency."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.5 * len(agreement) + 1.6))
    y = np.arange(len(agreement))
    left = np.zeros(len(agreement))
    for col, colour in (("wins", "#1a7f37"), ("ties", "#bbbbbb"), ("losses", "#cf222e")):
        share = agreement[col] / agreement["n"]
        a.barh(y, share, left=left, color=colour, label=col)
        left += share.to_numpy()
    labels = [model_label(m) for m in agreement["model"]]
    a.set_yticks(y, labels)
    a.set_xlim(0, 1)
    a.legend(loc="lower right", fontsize=8)
    a.set_title(f"verdicts against {agreement['baseline'].iloc[0]}")
    b.barh(y, agreement["order_consistency"], color=[colours.get(m, "C0") for m in agreement["model"]])
    b.set_yticks(y, labels)
    b.set_xlim(0, 1)
    b.set_title("order consistency (same verdict both orders)")
    fig.tight_layout()
    return fig


def plot_curves(curves: pd.DataFrame, colours: dict[str, tuple]):
    """Loss (and learning rate) against step, one line per trained model."""
    import seaborn as sns

    data = curves.assign(label=curves["model"].map(model_label))
    g = sns.relplot(data=data, x="step", y="value", hue="label", col="metric", kind="line", height=3.4, aspect=1.4,
                    facet_kws={"sharey": False}, palette=label_palette(colours))
    g.set_titles("{col_name}")
    g.set_axis_labels("optimizer step", "")
    return g.figure


# --------------------------------------------------------------------------------------------- the whole comparison


@dataclass
class Comparison:
    studies: list[Study]
    zbench: pd.DataFrame
    scores: pd.DataFrame
    primary: pd.DataFrame
    studied: list[str]
    board: pd.DataFrame
    tags: pd.DataFrame
    deltas: pd.DataFrame
    findings: pd.DataFrame
    answers: pd.DataFrame
    lengths: pd.DataFrame
    bias: pd.DataFrame
    agreement: pd.DataFrame | None
    curves: pd.DataFrame
    mix: pd.DataFrame
    flow: pd.DataFrame
    provenance: pd.DataFrame
    colours: dict[str, tuple]
    seed: int
    n_boot: int


def compare(run_dirs: Sequence[str | Path], params: StudyParams | None = None, *, n_boot: int = 1000,
            min_tag_items: int = MIN_TAG_ITEMS) -> Comparison:
    """Everything ``04_compare_models`` shows, from the studies' artifacts. Bootstrap seeds come from the first
    study's seed, so the same studies give the same numbers."""
    studies = load_studies(run_dirs, params)
    seed = studies[0].seed
    zb = load_zbench()
    zb = zb[zb["item_id"].isin(set(studies[0].items))].reset_index(drop=True)
    scores = combined_scores(studies)
    primary = primary_scores(scores)
    studied = study_models(studies)
    board = leaderboard(primary, studied, seed=seed, n_boot=n_boot)
    tags = by_tag(primary, zb, seed=seed, n_boot=n_boot)
    answers = all_answers(studies, zb)
    lengths = answer_lengths(answers)
    overall = board[board["split"] == OVERALL].sort_values("score", ascending=False)["model"].tolist()
    return Comparison(
        studies=studies, zbench=zb, scores=scores, primary=primary, studied=studied, board=board, tags=tags,
        deltas=tuning_deltas(primary, studied, seed=seed, n_boot=n_boot),
        findings=findings(primary, zb, studied, seed=seed, n_boot=n_boot, min_tag_items=min_tag_items),
        answers=answers, lengths=lengths, bias=length_bias(primary, lengths),
        agreement=judge_agreement(combined(studies, "pairwise")),
        curves=training_curves(studies), mix=data_mix(studies), flow=data_flow(studies),
        provenance=provenance(studies), colours=palette(overall, studied), seed=seed, n_boot=n_boot)


def summary_markdown(c: Comparison, cjk_fonts: Sequence[str] = ("?",)) -> str:
    """What is compared, with the seed, and a warning when a study ran from a dirty git tree."""
    prov = c.provenance
    dirty = prov.loc[prov["dirty"].fillna(False).astype(bool), "study"].tolist()
    text = (f"**Compared:** {', '.join(f'`{s}`' for s in prov['study'])} · {c.primary['item_id'].nunique()} Z-Bench "
            f"items with a reference ({', '.join(s for s in SPLITS if s in set(c.primary['split']))}) · studied "
            f"models: {', '.join(f'`{m}`' for m in c.studied)} · bootstrap seed **{c.seed}**, {c.n_boot} resamples")
    if dirty:
        text += (f"\n\n**Warning: uncommitted changes** in the kit's checkout when {', '.join(dirty)} ran — the git "
                 "sha alone does not reproduce these numbers.")
    if not cjk_fonts:
        text += ("\n\n*No CJK font is installed: the Chinese task tags draw as boxes in the figures "
                 "(`scripts/install-system-deps` installs Debian's fonts-wqy-microhei).*")
    return text


def _round(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else round(float(v), 4)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def headline(c: Comparison) -> dict[str, Any]:
    """What the index page shows: the leaderboard (models × splits with CIs), findings, provenance."""
    splits = [s for s in [*SPLITS, OVERALL] if s in set(c.board["split"])]
    rows = []
    for m in c.board[c.board["split"] == OVERALL].sort_values(["score", "model"], ascending=[False, True])["model"]:
        part = c.board[c.board["model"] == m].set_index("split")
        rows.append({"model": m, "label": model_label(m), "kind": part["kind"].iloc[0],
                     "scores": {s: {k: _round(part.at[s, k]) for k in ("score", "ci_low", "ci_high", "n", "rank")}
                                if s in part.index else None for s in splits}})
    return {"metric": PRIMARY_METHOD, "splits": splits, "n_items": int(c.primary["item_id"].nunique()),
            "seed": c.seed, "n_boot": c.n_boot, "studies": c.provenance.to_dict(orient="records"),
            "rows": rows, "findings": findings_text(c.findings),
            "figure": "artifacts/compare/leaderboard.png"}


def write_artifacts(c: Comparison, out_dir: str | Path, figure=None) -> list[Path]:
    """``leaderboard.csv``, ``by_tag.csv``, ``deltas.csv``, ``findings.csv``, ``length_bias.csv``,
    ``judge_agreement.csv``, ``headline.json`` (and ``leaderboard.png`` when a figure is given), atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"leaderboard": c.board, "by_tag": c.tags, "deltas": c.deltas, "findings": c.findings,
              "length_bias": c.bias, "primary_scores": c.primary}
    if c.agreement is not None:
        tables["judge_agreement"] = c.agreement
    written = []
    for name, frame in tables.items():
        atomic_write(out / f"{name}.csv", frame.to_csv(index=False))
        written.append(out / f"{name}.csv")
    if figure is not None:
        tmp = out / ".leaderboard.partial.png"
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        tmp.replace(out / "leaderboard.png")
        written.append(out / "leaderboard.png")
    atomic_write(out / "headline.json", json.dumps(headline(c), indent=2, ensure_ascii=False, default=_round))
    written.append(out / "headline.json")
    return written


def sample_answers(c: Comparison, items: Sequence[str] | None = None, k: int = 4,
                   reference_models: Sequence[str] | None = None, max_chars: int = 600) -> pd.DataFrame:
    """Answers side by side for a few items: ``items``, or the ``k`` items on which the studied models' primary
    scores differ most. Rows per item: Z-Bench's reference answer, each studied model, then ``reference_models``
    (default: the three best on the overall leaderboard), with the primary score; answers clipped to
    ``max_chars``. A plain DataFrame: pandas renders every cell as escaped text, so HTML in answers stays text."""
    from .zbench import model_name

    if items is None:
        studied = c.primary[c.primary["model"].isin(c.studied)]
        spread = studied.groupby("item_id")["score"].agg(lambda s: s.max() - s.min())
        items = spread.sort_values(ascending=False, kind="stable").index[:k].tolist()
    items = list(items)
    unknown = [i for i in items if i not in set(c.zbench["item_id"])]
    if unknown:
        raise CompareError(f"compare.examples: item(s) {', '.join(unknown)} not in the compared Z-Bench slice "
                           f"({_few(sorted(c.zbench['item_id']))})")
    if reference_models is None:
        overall = c.board[(c.board["split"] == OVERALL) & (c.board["kind"] == "reference")]
        reference_models = overall.sort_values("score", ascending=False)["model"].head(3).tolist()
    refs = [model_name(m) for m in reference_models]
    answer = c.answers.set_index(["item_id", "model"])["answer"]
    score = c.primary.drop_duplicates(["item_id", "model"]).set_index(["item_id", "model"])["score"]
    zb = c.zbench.set_index("item_id")
    clip = (lambda t: t if len(t) <= max_chars else t[:max_chars] + " …")  # noqa: E731
    rows = []
    for item in items:
        rows.append({"item": item, "prompt": clip(str(zb.at[item, "prompt"])), "model": "(Z-Bench reference)",
                     "answer": clip(str(zb.at[item, "reference"])), "score": math.nan})
        for m in [*c.studied, *refs]:
            text = answer.get((item, m))
            rows.append({"item": item, "prompt": "", "model": m, "answer": clip("" if text is None else str(text)),
                         "score": score.get((item, m), math.nan)})
    return pd.DataFrame(rows).set_index(["item", "model"])
