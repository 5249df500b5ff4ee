"""The run directory's front pages: a study's ``index.html`` (what was studied, the headline, the training and
DPO runs, each notebook's status, the manifest) and a comparison's. Jinja2 with autoescape: model output and
Z-Bench text stay text."""

from __future__ import annotations

import json
import os
from typing import Any

import jinja2

from .base import KitError
from .rundir import RunDir


def quiet_read(reader, *args) -> Any:
    """What an artifact reader returns, or None for a missing or broken file (the index page still renders)."""
    try:
        return reader(*args)
    except (OSError, KitError):
        return None


def train_summaries(rd: RunDir) -> list[dict] | None:
    """Per trained model: steps, first/last loss, what FSDP engaged, the final checkpoint."""
    index = quiet_read(rd.read_checkpoint_index)
    if not index:
        return None
    out = []
    for entry in index:
        summary = quiet_read(rd.read_train_summary, entry["model"]) or {}
        stats = quiet_read(rd.read_data_stats, entry["model"]) or {}
        out.append(
            {
                **entry,
                "first_loss": summary.get("first_loss"),
                "total_steps": summary.get("total_steps"),
                "fsdp": summary.get("fsdp"),
                "packing_efficiency": (stats.get("pack") or {}).get("efficiency"),
                "padded_efficiency": stats.get("padded_efficiency"),
            }
        )
    return out


def align_summaries(rd: RunDir) -> list[dict] | None:
    """Per DPO model: its start, steps, first/last loss, what ran, and held-out preference accuracy (start → DPO)."""
    index = quiet_read(rd.read_align_index)
    if not index:
        return None
    held = quiet_read(rd.read_align_held_out)
    by_model = {r["model"]: r for r in held.to_dict("records")} if held is not None else {}
    out = []
    for entry in index:
        summary = quiet_read(rd.read_align_summary, entry["model"]) or {}
        dpo, start = by_model.get(entry["model"], {}), by_model.get(entry.get("start"), {})
        out.append({**entry, "first_loss": summary.get("first_loss"), "total_steps": summary.get("total_steps"),
                    "distributed": summary.get("distributed"), "start_accuracy": start.get("preference_accuracy"),
                    "dpo_accuracy": dpo.get("preference_accuracy"), "gain": dpo.get("gain"),
                    "gain_ci": [dpo.get("gain_ci_low"), dpo.get("gain_ci_high")] if dpo else None,
                    "reward_accuracy": dpo.get("reward_accuracy"), "held_out_pairs": dpo.get("pairs")})  # fmt: skip
    return out


def templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("llm4academic", "resources/templates"), autoescape=True)


def render_index(manifest: dict[str, Any], run_dir: str | os.PathLike | RunDir) -> str:
    """The study's front page: what was studied, the headline leaderboard, each notebook's status, and the
    manifest in readable form. Everything is escaped (autoescape): model output and Z-Bench text stay text."""
    rd = RunDir(run_dir)
    return (
        templates()
        .get_template("index.html.j2")
        .render(
            m=manifest,
            explore=quiet_read(rd.read_explore_summary),
            headline=quiet_read(rd.read_headline),
            manifest_json=json.dumps(manifest, indent=2, ensure_ascii=False),
            manifest_href=rd.relative(rd.manifest),
        )
    )


def render_compare_index(manifest: dict[str, Any], rd: RunDir) -> str:
    """The front page of a comparison over several studies."""
    return (
        templates()
        .get_template("compare_index.html.j2")
        .render(
            m=manifest,
            headline=quiet_read(rd.read_headline),
            manifest_json=json.dumps(manifest, indent=2, ensure_ascii=False),
            manifest_href=rd.relative(rd.manifest),
        )
    )
