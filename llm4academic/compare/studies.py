"""Loading finished studies for a comparison: one study's evaluation (and training and data) artifacts, read
through its ``RunDir``; several studies, checked comparable (same Z-Bench items, scorers and judge); and their
tables combined into one, with study models renamed ``<study>/<model>`` where names repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..base import KitError
from ..config import StudyParams, resolved_dict
from ..rundir import RunDir
from ..zbench import REFERENCE_MODELS


class CompareError(KitError):
    """Studies that cannot be compared, or a study without the artifacts the comparison needs."""


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
    def rd(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def study_models(self) -> list[str]:
        return list(self.evaluate.get("models", []))

    @property
    def items(self) -> list[str]:
        return sorted(set(self.scores["item_id"]))


def load_study(run_dir: str | Path, params: StudyParams | None = None) -> Study:
    """A study's evaluation artifacts. ``params`` (when the notebook runs inside the study) or the study's
    manifest say its name and seed. Broken JSON is a ``KitError`` naming ``file:line``."""
    rd = RunDir(run_dir)
    info = rd.read_evaluate_info()
    scores = rd.read_evaluate_table("scores")
    if info is None or scores is None:
        raise CompareError(
            f"{rd.root}: no Z-Bench evaluation found (expected {rd.evaluate_info} and "
            f"{rd.evaluate_table('scores').name}): run the study's evaluate step first"
        )
    manifest = rd.read_manifest()
    if params is not None:
        name, seed, pdict = params.name, params.seed, resolved_dict(params)
    elif manifest:
        name, seed, pdict = manifest["study"], int(manifest.get("seed", 0)), manifest.get("params", {})
    else:
        raise CompareError(f"{rd.root}: no {rd.manifest.name} — is this a study's report folder (reports/<study>)?")
    answers = rd.read_evaluate_table("answers")
    if answers is None:
        answers = pd.DataFrame(columns=["item_id", "split", "model", "answer"])
    return Study(
        name=name,
        run_dir=rd.root,
        seed=seed,
        params=pdict,
        manifest=manifest,
        evaluate=info,
        scores=scores,
        answers=answers,
        pairwise=rd.read_evaluate_table("pairwise"),
        judge=rd.read_evaluate_table("judge"),
    )


def _slice_signature(study: Study) -> dict[str, Any]:
    ev = study.evaluate
    judge = ev.get("judge") or None
    return {
        "items": sorted(ev.get("item_ids") or study.items),
        "scorers": sorted(ev.get("scorers", [])),
        "judge": {k: judge.get(k) for k in ("model", "baseline")} if judge else None,
    }


def few(values: Sequence[str], k: int = 4) -> str:
    """The first ``k`` values, and how many more (for error messages)."""
    return "none" if not values else ", ".join(values[:k]) + (f" … (+{len(values) - k})" if len(values) > k else "")


def check_comparable(studies: Sequence[Study]) -> None:
    """Refuse studies that evaluated different Z-Bench items, with different scorers or a different judge."""
    if not studies:
        raise CompareError("no studies to compare")
    names = [s.name for s in studies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CompareError(
            f"the same study name appears twice: {', '.join(dupes)} "
            f"({', '.join(str(s.run_dir) for s in studies if s.name in dupes)})"
        )
    first, ref = studies[0], _slice_signature(studies[0])
    for other in studies[1:]:
        sig = _slice_signature(other)
        if sig["items"] != ref["items"]:
            only_a = sorted(set(ref["items"]) - set(sig["items"]))
            only_b = sorted(set(sig["items"]) - set(ref["items"]))
            raise CompareError(
                f"studies {first.name!r} and {other.name!r} evaluated different Z-Bench slices "
                f"({len(ref['items'])} vs {len(sig['items'])} items; only in {first.name}: "
                f"{few(only_a)}; only in {other.name}: {few(only_b)}). Rerun them with the same evaluate.splits, "
                f"evaluate.limit and evaluate.items"
            )
        if sig["scorers"] != ref["scorers"]:
            raise CompareError(
                f"studies {first.name!r} and {other.name!r} used different scorers "
                f"({', '.join(ref['scorers'])} vs {', '.join(sig['scorers'])}): set the same "
                f"evaluate.scorers"
            )
        if sig["judge"] != ref["judge"]:
            raise CompareError(
                f"studies {first.name!r} and {other.name!r} used different judges ({ref['judge']} vs "
                f"{sig['judge']}): set the same evaluate.judge, or none"
            )


def _base_name(model: str) -> str:
    """A tuned model is renamed together with its base."""
    return model.removesuffix("-tuned")


def load_studies(run_dirs: Iterable[str | Path], params: StudyParams | None = None) -> list[Study]:
    """Several studies, checked comparable; study models whose names repeat across studies become
    ``<study>/<model>``. ``params`` applies to a single study run from inside its own notebook."""
    dirs = [Path(d) for d in run_dirs]
    studies = [load_study(d, params if len(dirs) == 1 else None) for d in dirs]
    check_comparable(studies)
    owners: dict[str, set[str]] = {}
    for s in studies:
        for m in s.study_models:
            owners.setdefault(_base_name(m), set()).add(s.name)
    for s in studies:
        s.renamed = {
            m: (f"{s.name}/{m}" if len(owners[_base_name(m)]) > 1 or _base_name(m) in REFERENCE_MODELS else m)
            for m in s.study_models
        }
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
    """One of the studies' evaluation tables (``answers``, ``pairwise``, ``judge``), study models renamed."""
    frames = [_rename(getattr(s, attr), s) for s in studies if getattr(s, attr) is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def study_models(studies: Sequence[Study]) -> list[str]:
    """The studied models, as named in the comparison, in study order."""
    return [s.renamed[m] for s in studies for m in s.study_models]
