"""What else the compared studies say: the judge's agreement with its baselines, each DPO model against the model
it started from (both orders, with intervals), training and align curves side by side, the data mix and its flow
through cleaning, and each study's provenance (git, seed, generation settings)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from ..base import git_info
from ..figures import DPO_CURVES
from ..rundir import DPO_SUFFIX, TUNED_SUFFIX, lineage
from ..scoring import bootstrap_ci, group_rng, pairwise_summary
from .studies import Study


def judge_agreement(pairwise: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per model and baseline judged in both orders (the configured baseline, and a DPO model's start model):
    wins/ties/losses, and ``order_consistency`` — the share of items whose verdict did not flip when the two answers
    swapped places (1 − position bias)."""
    if pairwise is None or not len(pairwise):
        return None
    out = pairwise_summary(pairwise)
    out["order_consistency"] = 1 - out["position_bias"]
    return out


def start_pairwise(
    pairwise: pd.DataFrame | None, studied: Sequence[str], *, seed: int = 0, n_boot: int = 1000
) -> pd.DataFrame | None:
    """Each DPO model judged against the model its align run started from (``x-tuned-dpo`` vs ``x-tuned``: step
    sft→sft+dpo; ``x-dpo`` vs ``x``: base→dpo), both orders: ``n, wins, ties, losses, inconsistent,
    order_consistency``; ``win_rate`` (wins + ties/2 over all items: an order-inconsistent verdict is a tie) with a
    percentile bootstrap CI over items, and ``consistent_win_rate`` (wins / (wins + losses): the order-consistent
    verdicts only) with its own CI. None when no DPO model was judged against its start."""
    if pairwise is None or not len(pairwise):
        return None
    rows = []
    for model in studied:
        stage = lineage(model)[1]
        start = model.removesuffix(DPO_SUFFIX)
        part = pairwise[(pairwise["model"] == model) & (pairwise["against"] == start)].drop_duplicates("item_id")
        if stage not in ("dpo", "sft+dpo") or not len(part):
            continue
        verdict, consistent = part["verdict"], part["consistent"].astype(bool)
        decisive = part.loc[consistent, "score"].to_numpy()
        rng = group_rng(seed, model, start, "pairwise")
        win, low, high = bootstrap_ci(part["score"].to_numpy(dtype=float), n_boot=n_boot, rng=rng)
        c_win, c_low, c_high = bootstrap_ci(decisive.astype(float), n_boot=n_boot, rng=group_rng(seed, model, start))
        rows.append(
            {
                "model": model,
                "baseline": start,
                "step": "sft→sft+dpo" if stage == "sft+dpo" else "base→dpo",
                "n": len(part),
                "wins": int((verdict == "win").sum()),
                "ties": int((verdict == "tie").sum()),
                "losses": int((verdict == "loss").sum()),
                "inconsistent": int((~consistent).sum()),
                "order_consistency": float(consistent.mean()),
                "win_rate": win,
                "ci_low": low,
                "ci_high": high,
                "consistent_n": len(decisive),
                "consistent_win_rate": c_win,
                "consistent_ci_low": c_low,
                "consistent_ci_high": c_high,
            }
        )
    return pd.DataFrame(rows) if rows else None


def align_held_out(studies: Sequence[Study]) -> pd.DataFrame | None:
    """The align step's held-out preference table of each study (``RunDir.read_align_held_out``: reward accuracy of
    the start and DPO models on pairs the DPO run never trained on), models named as in the comparison, with a
    ``study`` column; None when no study ran the align step."""
    frames = []
    for s in studies:
        table = s.rd.read_align_held_out()
        if table is not None:
            if "model" in table.columns:
                table = table.assign(model=table["model"].map(s.renamed).fillna(table["model"]))
            frames.append(table.assign(study=s.name))
    return pd.concat(frames, ignore_index=True) if frames else None


def training_curves(studies: Sequence[Study]) -> pd.DataFrame:
    """Long table ``model, step, metric, value, study, run`` of every trained model's logged loss and learning rate
    (``run`` = ``train``) and every DPO model's DPO loss, reward accuracy, reward margin and implicit KL (``run`` =
    ``align``; ``figures.DPO_CURVES`` names them), read through the study's ``RunDir`` (compare never imports
    train.py or align.py); models are named as in the comparison (``-tuned``, ``-dpo`` names)."""
    frames = []
    for s in studies:
        runs = [
            (s.rd.read_metrics(e["model"]), f"{e['model']}{TUNED_SUFFIX}", {"loss": "loss", "lr": "lr"}, "train")
            for e in s.rd.read_checkpoint_index()
        ]
        runs += [
            (s.rd.read_align_metrics(e["model"]), e["model"], DPO_CURVES, "align") for e in s.rd.read_align_index()
        ]
        for rows, model, metrics, run in runs:
            present = [m for m in metrics if m in rows]
            if not len(rows) or "step" not in rows or not present:
                continue
            long = rows.melt(id_vars="step", value_vars=present, var_name="metric").dropna(subset=["value"])
            frames.append(
                long.assign(
                    metric=long["metric"].map(metrics), model=s.renamed.get(model, model), study=s.name, run=run
                )
            )
    cols = ["model", "step", "metric", "value", "study", "run"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def data_mix(studies: Sequence[Study]) -> pd.DataFrame:
    """Per study and source: records available after cleaning and taken into the training mix, from the data
    step's summary."""
    rows = []
    for s in studies:
        summary = s.rd.read_data_summary()
        if not summary:
            continue
        total = summary.get("records_in_mix") or 0
        for d in summary.get("mix", []):
            rows.append(
                {
                    "study": s.name,
                    "source": d["source"],
                    "mode": d.get("mode"),
                    "weight": d.get("weight"),
                    "available": d.get("available"),
                    "taken": d.get("taken"),
                    "share": d.get("taken", 0) / total if total else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=["study", "source", "mode", "weight", "available", "taken", "share"])


def data_flow(studies: Sequence[Study]) -> pd.DataFrame:
    """Per study: records loaded → after cleaning (removed per step) → in the mix, and the mix's sha256."""
    rows = []
    for s in studies:
        d = s.rd.read_data_summary()
        if d:
            rows.append(
                {
                    "study": s.name,
                    "loaded": d.get("records_loaded"),
                    "after_cleaning": d.get("records_after_cleaning"),
                    **{f"removed.{k}": v for k, v in (d.get("removed") or {}).items()},
                    "in_mix": d.get("records_in_mix"),
                    "mix_sha256": (d.get("mix_sha256") or "")[:12],
                }
            )
    return pd.DataFrame(rows)


def provenance(studies: Sequence[Study]) -> pd.DataFrame:
    """Per study: seed, git sha and dirty flag, the Z-Bench slice and scorers, generation settings (backend
    included) and the scorer version (``None`` where an older study did not record them)."""
    rows = []
    for s in studies:
        git = (s.manifest or {}).get("git") or git_info()
        ev = s.evaluate
        rows.append(
            {
                "study": s.name,
                "seed": s.seed,
                "git_sha": (git.get("sha") or "")[:12],
                "dirty": git.get("dirty"),
                "items": len(s.items),
                "splits": ", ".join(ev.get("splits", [])),
                "limit": ev.get("limit"),
                "scorers": ", ".join(ev.get("scorers", [])),
                "generation": json.dumps(ev.get("generation", {}), sort_keys=True),
                "backend": ev.get("backend"),
                "scorer_version": ev.get("scorer_version"),
                "judge": (ev.get("judge") or {}).get("model"),
                "run_dir": str(s.run_dir),
            }
        )
    return pd.DataFrame(rows)
