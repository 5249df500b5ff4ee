"""What else the compared studies say: the judge's agreement with its baseline, training curves side by side, the
data mix and its flow through cleaning, and each study's provenance (git, seed, generation settings)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from ..base import git_info
from ..scoring import pairwise_summary
from .studies import Study


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
    through the study's ``RunDir`` (compare never imports train.py); the model is named as in the comparison (its
    ``-tuned`` name)."""
    frames = []
    for s in studies:
        for entry in s.rd.read_checkpoint_index():
            rows = s.rd.read_metrics(entry["model"])
            if not len(rows):
                continue
            name = s.renamed.get(f"{entry['model']}-tuned", f"{entry['model']}-tuned")
            metrics = [m for m in ("loss", "lr") if m in rows]
            frames.append(
                rows.melt(id_vars="step", value_vars=metrics, var_name="metric").assign(model=name, study=s.name)
            )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["model", "step", "metric", "value", "study"])
    )


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
