"""The evaluation step: Z-Bench prompts → answers of every studied model (base, SFT-tuned and DPO-tuned; cached,
generate.py) → reference scores (scoring/) → the seed's side-by-side CSVs and a long table of scores.

Writes into the run directory's evaluate folder (``RunDir.evaluate_dir``): per split the seed's layout (``Prompt,
任务类型, 参考回答`` and one column per model — the studied models next to the 14 reference models), the ``scores``
table (every item × model × scorer × score), a summary per model, split and scorer with bootstrap CIs, the same per
tag, the ``answers`` (and ``judge``/``pairwise``) tables and ``evaluate.json`` (what ran: models, generation config,
cache reports). Answers are cached in ``RunDir.generations``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from . import scoring
from .base import atomic_write, write_json
from .config import ConfigError, ModelParams, StudyParams
from .generate import GenParams, generate_answers
from .models import resolve_model_path
from .rundir import TUNED_SUFFIX, RunDir
from .zbench import REFERENCE_MODELS, answers_long, load_zbench

SEED_COLUMNS = ("Prompt", "任务类型", "参考回答")


def evaluated_models(params: StudyParams, run_dir: str | Path) -> list[ModelParams]:
    """The base models (``evaluate.base``), the ones the train step tuned (``<name>-tuned``, ``evaluate.tuned``) and
    the ones the align step tuned (``<start>-dpo``, ``evaluate.aligned``), each with its base model's params (template,
    card, dtype) and its final checkpoint as the path."""
    ev, rd = params.evaluate, RunDir(run_dir)
    models = list(params.models) if ev.base else []
    if ev.tuned:
        for entry in rd.read_checkpoint_index():
            if entry.get("final") and Path(entry["final"]).is_dir():
                base = params.model(entry["model"])
                models.append(base.model_copy(update={"name": f"{base.name}{TUNED_SUFFIX}", "path": entry["final"]}))
    if ev.aligned:
        for entry in rd.read_align_index():
            if entry.get("final") and Path(entry["final"]).is_dir():
                base = params.model(entry["base"])
                models.append(base.model_copy(update={"name": entry["model"], "path": entry["final"]}))
    return models


def dpo_starts(params: StudyParams, run_dir: str | Path | None, answered) -> dict[str, str]:
    """Each evaluated DPO model → the model its align run started from (``<base>-tuned`` or ``<base>``), for those
    whose start model also answered (``answered``: model names): the pairs the judge compares in both orders."""
    if run_dir is None or not params.evaluate.aligned:
        return {}
    answered = set(answered)
    return {
        e["model"]: e["start"]
        for e in RunDir(run_dir).read_align_index()
        if e.get("model") in answered and e.get("start") in answered
    }


def zbench_items(params: StudyParams):
    """The Z-Bench items the study evaluates: ``evaluate.items``, or the first ``evaluate.limit`` prompts of each
    split, or all of them."""
    zb = load_zbench(params.evaluate.splits)
    if params.evaluate.items:
        unknown = [i for i in params.evaluate.items if i not in set(zb["item_id"])]
        if unknown:
            raise ConfigError(
                f"evaluate.items: unknown Z-Bench item(s) {', '.join(unknown)}; ids run "
                f"basic-000…basic-062, advanced-000…advanced-208, domain-000…domain-038"
            )
        order = {item: i for i, item in enumerate(params.evaluate.items)}
        zb = zb[zb["item_id"].isin(order)].sort_values("item_id", key=lambda c: c.map(order)).reset_index(drop=True)
    elif params.evaluate.limit:
        zb = zb.groupby("split", sort=False).head(params.evaluate.limit).reset_index(drop=True)
    return zb


def run(params: StudyParams, run_dir: str | Path, progress: bool = True) -> dict:
    """Generate (cached), score and write the evaluation artifacts; returns what the notebook shows."""
    ev = params.evaluate
    rd = RunDir(run_dir)
    zb = zbench_items(params)
    gen = GenParams(
        max_new_tokens=ev.max_new_tokens,
        do_sample=ev.do_sample,
        temperature=ev.temperature,
        top_p=ev.top_p,
        seed=params.seed,
        batch_size=ev.batch_size,
    )
    frames, reports = [], []
    for mp in evaluated_models(params, run_dir):
        df, rep = generate_answers(
            mp, zb[["item_id", "prompt"]], rd.generations, gen, backend=ev.backend, progress=progress
        )
        frames.append(df.merge(zb[["item_id", "split"]], on="item_id"))
        reports.append(rep.to_dict())
    ours = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["item_id", "split", "model", "answer", "template", "finish_reason", "truncated"])
    )
    theirs = answers_long(zb).assign(finish_reason="", truncated=False)  # shipped answers: not generated here
    cols = ["item_id", "split", "model", "answer", "finish_reason", "truncated"]  # truncated: cut at max_new_tokens
    answers = pd.concat([ours[cols], theirs[cols]], ignore_index=True).astype({"truncated": bool})
    scores = scoring.score_answers(answers, zb, ev.scorers, progress=progress)
    judging = (ev.judge.model or ev.judge.endpoint) and len(ours)
    judged, judge_info = run_judge(params, ours, zb, progress, run_dir) if judging else ({}, None)
    if judged:
        scores = pd.concat([scores, *(f[list(scoring.SCORE_COLUMNS)] for f in judged.values())], ignore_index=True)
    summary = scoring.aggregate(scores, ("model", "split", "scorer"), seed=params.seed, zbench=zb)
    by_tag = scoring.aggregate(scores, ("model", "tag", "scorer"), seed=params.seed, zbench=zb)
    study_models = list(dict.fromkeys(ours["model"])) if len(ours) else []
    files = write_seed_csvs(zb, ours, rd, study_models)
    tables = {"scores": scores, "answers": ours.drop(columns=["versions"], errors="ignore"), **judged}
    for name, frame in tables.items():
        rd.write_evaluate_table(name, frame)
    atomic_write(rd.evaluate_summary, summary.to_csv(index=False))
    atomic_write(rd.evaluate_by_tag, by_tag.to_csv(index=False))
    info = {
        "models": study_models,
        "reference_models": sorted(set(theirs["model"])),
        "items": len(zb),
        "splits": list(ev.splits),
        "limit": ev.limit,
        "item_ids": list(zb["item_id"]),
        "generation": gen.decoding(),
        "backend": ev.backend,
        "templates": ours.groupby("model", sort=False)["template"].first().to_dict(),  # per studied model
        "scorers": list(ev.scorers),
        "scorer_version": scoring.SCORER_VERSION,
        "cache": reports,
        "files": [str(f) for f in files],
        "judge": judge_info,
    }
    if "pairwise" in judged:
        info["pairwise"] = scoring.pairwise_summary(judged["pairwise"]).to_dict(orient="records")
    write_json(rd.evaluate_info, info)
    return {
        "zbench": zb,
        "answers": ours,
        "scores": scores,
        "summary": summary,
        "by_tag": by_tag,
        "info": info,
        **judged,
    }


def run_judge(params: StudyParams, answers, zb, progress: bool, run_dir: str | Path | None = None) -> tuple[dict, dict]:
    """``evaluate.judge``: grade the studied models' answers 1-10 and, with a ``baseline``, judge each against the
    baseline's answer in both orders (order-inconsistent verdicts count as ties and are reported); each DPO model is
    also judged against the model its align run started from (``dpo_starts``, scorer ``pairwise_start``) — with a local
    model (``judge.model``) or through an OpenAI-compatible server (``judge.endpoint``: replies cached in
    ``RunDir.judge_cache``; a reply that failed or did not parse leaves its row out and is listed). Returns the tables
    and evaluate.json's judge section: the params (the key's variable name, never a key), request counts, failures,
    and the judge's position, length and self-preference biases."""
    jp = params.evaluate.judge
    starts = dpo_starts(params, run_dir, answers["model"])
    if jp.endpoint:
        judge = scoring.EndpointJudge(
            jp.endpoint,
            jp.endpoint_model,
            api_key_env=jp.api_key_env,
            concurrency=jp.concurrency,
            timeout_s=jp.timeout_s,
            max_retries=jp.max_retries,
            logprobs=jp.logprobs,
            cache=RunDir(run_dir).judge_cache if run_dir is not None else None,
        )
        grade, pairwise, own = scoring.endpoint_judge_scores, scoring.endpoint_pairwise_scores, jp.endpoint_model
    else:
        named = next((m for m in params.models if m.name == jp.model), None)
        own = resolve_model_path(named.path if named else jp.model)
        judge = scoring.Judge(own, trust_remote_code=bool(named and named.trust_remote_code))
        grade, pairwise = scoring.judge_scores, scoring.pairwise_scores
    out = {"judge": grade(answers, judge, zb, progress=progress)}
    if jp.baseline or starts:
        out["pairwise"] = pairwise(answers, judge, jp.baseline, zb, starts=starts, progress=progress)

    def same(a: str, b: str) -> bool:
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())

    studied = evaluated_models(params, run_dir) if run_dir is not None else list(params.models)
    self_models = [m.name for m in studied if any(same(own, a) for a in (m.name, m.path, resolve_model_path(m.path)))]
    failures = [f for frame in out.values() for f in frame.attrs.get("failures", [])]
    reasons = pd.Series([f["reason"] for f in failures], dtype=object).value_counts().to_dict()
    if failures:
        warnings.warn(
            f"the judge left {len(failures)} request(s) unscored ({', '.join(f'{k}: {v}' for k, v in reasons.items())})"
            "; each is listed in the evaluate info's judge.failures",
            stacklevel=2,
        )
    info = {
        **jp.model_dump(),
        "name": judge.name,
        "scored": {name: len(frame) for name, frame in out.items()},
        "requests": {name: frame.attrs["requests"] for name, frame in out.items() if "requests" in frame.attrs},
        "starts": starts,  # DPO model → its start model: judged against each other in both orders
        "unscored": reasons,
        "failures": failures,
        **scoring.judge_report(answers, out["judge"], out.get("pairwise"), self_models=self_models),
    }
    return out, info


def write_seed_csvs(zb, answers, run_dir: str | Path | RunDir, study_models: list[str]) -> list[Path]:
    """Per split, the seed's side-by-side layout: ``Prompt, 任务类型, 参考回答``, the studied models, then the 14
    reference models (``chinese_eval_<split>`` in the seed; here ``RunDir.zbench_csv(split)``)."""
    rd = RunDir(run_dir)
    wide = (
        answers.pivot_table(index="item_id", columns="model", values="answer", aggfunc="first")
        if len(answers)
        else pd.DataFrame()
    )
    files = []
    for split, part in zb.groupby("split", sort=False):
        table = pd.DataFrame(
            {
                "Prompt": part["prompt"].values,
                "任务类型": [" ".join(f"`{t}`" for t in tags) for tags in part["tags"]],
                "参考回答": part["reference"].values,
            }
        )
        for m in study_models:
            table[m] = [wide.at[i, m] if i in wide.index and m in wide.columns else "" for i in part["item_id"]]
        for m in REFERENCE_MODELS:
            table[m] = part[m].values
        path = rd.zbench_csv(split)
        atomic_write(path, table.to_csv(index=False))
        files.append(path)
    return files
