"""The comparison step: which studied model answers Z-Bench best, and where — next to the 14 reference models.

Reads finished evaluation artifacts of one study or of several studies run separately
(``llm4academic compare reports/A reports/B``) and builds the tables that ``05_compare_models.ipynb`` plots:

- **primary score** per answer: each item is scored by its most specific reference scorer (option letter, then
  number, then normalised containment, then Chinese ROUGE-L against the reference) — one score in [0, 1] per item,
  so that models can be ranked on one scale; only items with a reference count (``against == "reference"``);
- the **leaderboard** per split and overall with seeded percentile-bootstrap CIs (``scoring.aggregate``);
- a **per-tag** matrix, **base → SFT → DPO per foundation model** (each stage's score with its CI, and the paired
  bootstrap CI of each lineage step: base→sft, sft→sft+dpo, base→sft+dpo, base→dpo), **length bias**,
  **truncation** (the share of each studied model's answers cut at ``max_new_tokens``), **judge agreement** (order
  consistency of pairwise verdicts), **DPO vs its start model** (the judge's win rate in both orders, with CIs),
  **training and align curves**, the **data mix**;
- **findings**: best studied model per split and per tag, its margin over the runner-up and whether a paired
  bootstrap CI of that margin excludes zero.

Studies are only compared when they evaluated the same Z-Bench items with the same scorers (and scorer version),
and generated their answers with the same ``max_new_tokens``, decoding, backend and per-model template
(``CompareError`` otherwise, naming what differs). Everything the notebook shows is written into the run
directory's compare folder (its headline feeds the study's index page). One job per module:

* ``studies`` — ``Study``, ``load_study``, ``load_studies``, ``check_comparable``, ``CompareError`` and the combined
  tables of several studies;
* ``tables``  — primary scores, leaderboard, per tag, deltas, findings, length bias, truncation, judge agreement,
  curves, mix, provenance;
* here        — ``Comparison``, ``compare()``, ``summary_markdown``, ``headline``, ``write_artifacts``,
  ``sample_answers``.

The figures live in ``llm4academic.figures`` (re-exported here). Never imports torch, train.py or pipeline.py.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..answer_key import load_answer_key
from ..base import atomic_write
from ..config import StudyParams
from ..figures import (  # noqa: F401
    CJK_FONTS,
    label_palette,
    palette,
    plot_curves,
    plot_deltas,
    plot_judge,
    plot_leaderboard,
    plot_length_bias,
    plot_splits,
    plot_stages,
    plot_tag_heatmap,
    style,
)
from ..rundir import RunDir
from ..scoring import OVERALL
from ..zbench import REFERENCE_MODELS, SPLITS, load_zbench, model_label, model_name  # noqa: F401
from .context import (  # noqa: F401
    align_held_out,
    data_flow,
    data_mix,
    judge_agreement,
    provenance,
    start_pairwise,
    training_curves,
)
from .studies import (  # noqa: F401
    CompareError,
    Study,
    check_comparable,
    combined,
    combined_scores,
    few,
    load_studies,
    load_study,
    study_models,
)
from .tables import (  # noqa: F401
    LINEAGE_STEPS,
    MIN_TAG_ITEMS,
    PRIMARY_METHOD,
    PRIMARY_ORDER,
    STAGE_KINDS,
    all_answers,
    answer_lengths,
    by_tag,
    findings,
    findings_text,
    judge_means,
    leaderboard,
    length_bias,
    lineage_steps,
    model_kinds,
    overall_order,
    paired_diff,
    primary_scores,
    primary_tag_matrix,
    side_by_side,
    spearman,
    stage_scores,
    stage_table,
    tag_matrix,
    truncated_flags,
    truncation,
    tuning_deltas,
    tuning_pairs,
    wide_leaderboard,
    without_flagged,
)


@dataclass
class Comparison:
    """Everything ``05_compare_models`` shows (see ``compare()``)."""

    studies: list[Study]
    zbench: pd.DataFrame
    scores: pd.DataFrame
    primary: pd.DataFrame
    studied: list[str]
    board: pd.DataFrame
    board_unflagged: pd.DataFrame  # the leaderboard without the items the answer key flags
    flagged: list[str]
    judge: pd.Series | None  # the judge's mean grade per model: its own column, never in the primary score
    tags: pd.DataFrame
    deltas: pd.DataFrame  # after − before per lineage step (base→sft, sft→sft+dpo, base→sft+dpo, base→dpo) and split
    stages: pd.DataFrame  # the studied models' overall scores by foundation model and stage (base, sft, dpo, sft+dpo)
    findings: pd.DataFrame
    answers: pd.DataFrame
    lengths: pd.DataFrame
    bias: pd.DataFrame
    truncation: pd.DataFrame  # per studied model and split: answers cut at max_new_tokens
    agreement: pd.DataFrame | None
    dpo_vs_start: pd.DataFrame | None  # each DPO model judged against its start model, both orders, with CIs
    held_out: pd.DataFrame | None  # the align step's held-out preference accuracy, as it wrote it
    curves: pd.DataFrame
    mix: pd.DataFrame
    flow: pd.DataFrame
    provenance: pd.DataFrame
    colours: dict[str, tuple]
    seed: int
    n_boot: int


def options(params: StudyParams | None) -> dict[str, Any]:
    """``compare()``'s keyword arguments from the study's ``compare`` params (defaults for a multi-study run)."""
    if params is None:
        return {}
    return {"n_boot": params.compare.n_boot, "min_tag_items": params.compare.min_tag_items}


def compare(
    run_dirs: Sequence[str | Path],
    params: StudyParams | None = None,
    *,
    n_boot: int = 1000,
    min_tag_items: int = MIN_TAG_ITEMS,
) -> Comparison:
    """Everything ``05_compare_models`` shows, from the studies' artifacts. Bootstrap seeds come from the first
    study's seed, so the same studies give the same numbers."""
    studies = load_studies(run_dirs, params)
    seed = studies[0].seed
    zb = load_zbench()
    zb = zb[zb["item_id"].isin(set(studies[0].items))].reset_index(drop=True)
    scores = combined_scores(studies)
    primary = primary_scores(scores)
    studied = study_models(studies)
    board = leaderboard(primary, studied, seed=seed, n_boot=n_boot)
    flagged = [i for i in load_answer_key(zbench=load_zbench()).flagged if i in set(zb["item_id"])]
    board_unflagged = leaderboard(without_flagged(primary, flagged), studied, seed=seed, n_boot=n_boot)
    tags = by_tag(primary, zb, seed=seed, n_boot=n_boot)
    answers = all_answers(studies, zb)
    lengths = answer_lengths(answers)
    generated = combined(studies, "answers")  # the studied models' answers, with their truncated flags
    generated = None if generated is None else generated[generated["item_id"].isin(set(zb["item_id"]))]
    overall = board[board["split"] == OVERALL].sort_values("score", ascending=False)["model"].tolist()
    pairwise = combined(studies, "pairwise")
    return Comparison(
        studies=studies,
        zbench=zb,
        scores=scores,
        primary=primary,
        studied=studied,
        board=board,
        board_unflagged=board_unflagged,
        flagged=flagged,
        judge=judge_means(scores),
        tags=tags,
        deltas=tuning_deltas(primary, studied, seed=seed, n_boot=n_boot),
        stages=stage_scores(board, studied),
        findings=findings(primary, zb, studied, seed=seed, n_boot=n_boot, min_tag_items=min_tag_items),
        answers=answers,
        lengths=lengths,
        bias=length_bias(primary, lengths),
        truncation=truncation(generated),
        agreement=judge_agreement(pairwise),
        dpo_vs_start=start_pairwise(pairwise, studied, seed=seed, n_boot=n_boot),
        held_out=align_held_out(studies),
        curves=training_curves(studies),
        mix=data_mix(studies),
        flow=data_flow(studies),
        provenance=provenance(studies),
        colours=palette(model_kinds(overall, studied), studied),
        seed=seed,
        n_boot=n_boot,
    )


def summary_markdown(c: Comparison, cjk_fonts: Sequence[str] = ("?",)) -> str:
    """What is compared, with the seed, and a warning when a study ran from a dirty git tree."""
    prov = c.provenance
    dirty = prov.loc[prov["dirty"].fillna(False).astype(bool), "study"].tolist()
    text = (
        f"**Compared:** {', '.join(f'`{s}`' for s in prov['study'])} · {c.primary['item_id'].nunique()} Z-Bench "
        f"items with a reference ({', '.join(s for s in SPLITS if s in set(c.primary['split']))}) · studied "
        f"models: {', '.join(f'`{m}`' for m in c.studied)} · bootstrap seed **{c.seed}**, {c.n_boot} resamples"
    )
    if dirty:
        text += (
            f"\n\n**Warning: uncommitted changes** in the kit's checkout when {', '.join(dirty)} ran — the git "
            "sha alone does not reproduce these numbers."
        )
    if not cjk_fonts:
        text += (
            "\n\n*No CJK font is installed: the Chinese task tags draw as boxes in the figures "
            "(`scripts/install-system-deps` installs Debian's fonts-wqy-microhei).*"
        )
    return text


def _round(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else round(float(v), 4)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def headline(c: Comparison, figure: str | None = None) -> dict[str, Any]:
    """What the index page shows: the leaderboard (models × splits with CIs, and per studied model the share of
    its answers ``truncated`` at ``max_new_tokens``; ``None`` for reference models and where unknown), findings,
    provenance; ``figure`` is the leaderboard figure's path relative to the run directory."""
    splits = [s for s in [*SPLITS, OVERALL] if s in set(c.board["split"])]
    cut = c.truncation[c.truncation["split"] == OVERALL].set_index("model")["rate"]
    rows = []
    for m in c.board[c.board["split"] == OVERALL].sort_values(["score", "model"], ascending=[False, True])["model"]:
        part = c.board[c.board["model"] == m].set_index("split")
        rows.append(
            {
                "model": m,
                "label": model_label(m),
                "kind": part["kind"].iloc[0],
                "scores": {
                    s: {k: _round(part.at[s, k]) for k in ("score", "ci_low", "ci_high", "n", "rank")}
                    if s in part.index
                    else None
                    for s in splits
                },
                "truncated": _round(cut.get(m)),
                "judge": _round(c.judge.get(m)) if c.judge is not None else None,
            }
        )
    return {
        "metric": PRIMARY_METHOD,
        "splits": splits,
        "n_items": int(c.primary["item_id"].nunique()),
        "judged": c.judge is not None,
        "flagged": len(c.flagged),
        "seed": c.seed,
        "n_boot": c.n_boot,
        "studies": c.provenance.to_dict(orient="records"),
        "rows": rows,
        "findings": findings_text(c.findings),
        "figure": figure,
    }


def write_artifacts(c: Comparison, run_dir: str | Path | RunDir, figure=None) -> list[Path]:
    """Into the run directory's compare folder, atomically: the tables (leaderboard, by_tag, deltas, findings,
    length_bias, primary_scores, truncation, the base → SFT → DPO stages and, when a judge ran, judge_agreement and
    DPO vs its start model) as CSV, the leaderboard figure
    when one is given, and the headline."""
    rd = RunDir(run_dir)
    rd.compare_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "leaderboard": c.board,
        "leaderboard_unflagged": c.board_unflagged,
        "by_tag": c.tags,
        "deltas": c.deltas,
        "findings": c.findings,
        "length_bias": c.bias,
        "primary_scores": c.primary,
        "truncation": c.truncation,
    }
    if c.agreement is not None:
        tables["judge_agreement"] = c.agreement
    if len(c.stages):
        tables["stages"] = c.stages
    if c.dpo_vs_start is not None:
        tables["dpo_vs_start"] = c.dpo_vs_start
    written = []
    for name, frame in tables.items():
        atomic_write(rd.compare_table(name), frame.to_csv(index=False))
        written.append(rd.compare_table(name))
    if figure is not None:
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=110, bbox_inches="tight")
        atomic_write(rd.leaderboard_png, png.getvalue())
        written.append(rd.leaderboard_png)
    atomic_write(
        rd.headline,
        json.dumps(headline(c, rd.relative(rd.leaderboard_png)), indent=2, ensure_ascii=False, default=_round),
    )
    written.append(rd.headline)
    return written


def sample_answers(
    c: Comparison,
    items: Sequence[str] | None = None,
    k: int = 4,
    reference_models: Sequence[str] | None = None,
    max_chars: int = 600,
) -> pd.DataFrame:
    """Answers side by side for a few items: ``items``, or the ``k`` items on which the studied models' primary
    scores differ most. Rows per item: Z-Bench's reference answer, each studied model, then ``reference_models``
    (default: the three best on the overall leaderboard), with the primary score; answers clipped to
    ``max_chars``. A plain DataFrame: pandas renders every cell as escaped text, so HTML in answers stays text."""
    if items is None:
        studied = c.primary[c.primary["model"].isin(c.studied)]
        spread = studied.groupby("item_id")["score"].agg(lambda s: s.max() - s.min())
        items = spread.sort_values(ascending=False, kind="stable").index[:k].tolist()
    items = list(items)
    unknown = [i for i in items if i not in set(c.zbench["item_id"])]
    if unknown:
        raise CompareError(
            f"compare.examples: item(s) {', '.join(unknown)} not in the compared Z-Bench slice "
            f"({few(sorted(c.zbench['item_id']))})"
        )
    if reference_models is None:
        overall = c.board[(c.board["split"] == OVERALL) & (c.board["kind"] == "reference")]
        reference_models = overall.sort_values("score", ascending=False)["model"].head(3).tolist()
    refs = [model_name(m) for m in reference_models]
    answer = c.answers.set_index(["item_id", "model"])["answer"]
    score = c.primary.drop_duplicates(["item_id", "model"]).set_index(["item_id", "model"])["score"]
    zb = c.zbench.set_index("item_id")
    rows = []
    for item in items:
        rows.append(
            {
                "item": item,
                "prompt": _clip(str(zb.at[item, "prompt"]), max_chars),
                "model": "(Z-Bench reference)",
                "answer": _clip(str(zb.at[item, "reference"]), max_chars),
                "score": math.nan,
            }
        )
        for m in [*c.studied, *refs]:
            text = answer.get((item, m))
            rows.append(
                {
                    "item": item,
                    "prompt": "",
                    "model": m,
                    "answer": _clip("" if text is None else str(text), max_chars),
                    "score": score.get((item, m), math.nan),
                }
            )
    return pd.DataFrame(rows).set_index(["item", "model"])


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars] + " …"
