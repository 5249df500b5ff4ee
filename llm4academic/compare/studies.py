"""Loading finished studies for a comparison: one study's evaluation (and training and data) artifacts, read
through its ``RunDir``; several studies, checked comparable (same Z-Bench items, scorers, scorer version and judge;
answers generated with the same ``max_new_tokens``, decoding, backend and, for models of the same name, template);
and their tables combined into one, with study models renamed ``<study>/<model>`` where names repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..base import KitError
from ..config import StudyParams, resolved_dict
from ..rundir import RunDir, lineage
from ..scoring import SCORER_VERSION
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
        "judge": {k: judge.get(k) for k in ("model", "endpoint_model", "baseline")} if judge else None,
    }


DECODING_KEYS: tuple[str, ...] = ("do_sample", "temperature", "top_p")  # of evaluate.json's "generation"


def _generation_signature(study: Study) -> dict[str, Any]:
    """How a study's answers were generated and scored, from its ``evaluate.json``; ``None`` where an older study
    did not record it (unknown: never a difference)."""
    ev = study.evaluate
    gen = ev.get("generation") or {}
    return {
        "max_new_tokens": gen.get("max_new_tokens"),
        "decoding": {k: gen.get(k) for k in DECODING_KEYS},
        "backend": ev.get("backend"),
        "templates": dict(ev.get("templates") or {}),
        "scorer_version": ev.get("scorer_version"),
    }


def _differ(a: Any, b: Any) -> bool:
    """A definite difference: both known and not equal."""
    return a is not None and b is not None and a != b


def few(values: Sequence[str], k: int = 4) -> str:
    """The first ``k`` values, and how many more (for error messages)."""
    return "none" if not values else ", ".join(values[:k]) + (f" … (+{len(values) - k})" if len(values) > k else "")


def check_comparable(studies: Sequence[Study]) -> None:
    """Refuse studies that evaluated different Z-Bench items, with different scorers, scorer versions or judges,
    or whose answers were generated with a different ``max_new_tokens``, decoding (``do_sample``, ``temperature``,
    ``top_p``), backend, or template for a model of the same name. A setting an older study did not record counts
    as unknown: only a definite difference is refused."""
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
        _check_generation(first, other)


def _check_generation(first: Study, other: Study) -> None:
    """Refuse two studies whose answers were generated or scored differently (see ``check_comparable``)."""
    a, b = _generation_signature(first), _generation_signature(other)
    pair = f"studies {first.name!r} and {other.name!r}"
    if _differ(a["scorer_version"], b["scorer_version"]):
        stale = [s.name for s, v in ((first, a), (other, b)) if v["scorer_version"] != SCORER_VERSION]
        raise CompareError(
            f"{pair} were scored by different scorer versions ({a['scorer_version']} vs {b['scorer_version']}): "
            f"rerun the evaluate step of {' and '.join(stale)} with this kit (scorer version {SCORER_VERSION}; the "
            "answers come from the generation cache, only the scores are recomputed)"
        )
    if _differ(a["max_new_tokens"], b["max_new_tokens"]):
        raise CompareError(
            f"{pair} generated with different max_new_tokens ({a['max_new_tokens']} vs {b['max_new_tokens']}): "
            "answers cut at different lengths do not compare; set the same evaluate.max_new_tokens and rerun the "
            "evaluate step"
        )
    decoding = [k for k in DECODING_KEYS if _differ(a["decoding"][k], b["decoding"][k])]
    if decoding:
        raise CompareError(
            f"{pair} decoded differently ("
            + "; ".join(f"{k} {a['decoding'][k]} vs {b['decoding'][k]}" for k in decoding)
            + f"): set the same {', '.join(f'evaluate.{k}' for k in decoding)} and rerun the evaluate step"
        )
    if _differ(a["backend"], b["backend"]):
        raise CompareError(
            f"{pair} generated with different backends ({a['backend']} vs {b['backend']}): their answers differ "
            "even when greedy; set the same evaluate.backend and rerun the evaluate step"
        )
    templates = sorted(
        m for m in set(a["templates"]) & set(b["templates"]) if _differ(a["templates"][m], b["templates"][m])
    )
    if templates:
        raise CompareError(
            f"{pair} prompted the same model(s) with different templates ("
            + "; ".join(f"{m}: {a['templates'][m]} vs {b['templates'][m]}" for m in templates)
            + "): set the same template for them (models[].template, or leave it to the model card in both) and "
            "rerun the evaluate step — or name the models apart to compare the templates themselves"
        )


def _base_name(model: str) -> str:
    """A tuned model (``-tuned``, ``-dpo``, ``-tuned-dpo``) is renamed together with its base (``rundir.lineage``)."""
    return lineage(model)[0]


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
    if "against" in out.columns:  # a pairwise baseline that is a study model (a DPO model's start model)
        out["against"] = out["against"].map(lambda m: study.renamed.get(m, m))
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
