"""What the align step measured, for its notebook and the report: on held-out preference pairs (never trained
on) the preference accuracy of each start model (SFT or base) and its DPO model, with intervals and the paired
gain; DPO's implicit reward accuracy and the KL to the start model; a few held-out prompts answered by both
(escaped HTML); the per-step curves and the recipe.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import torch

from . import align, models, preference
from .base import write_json
from .config import load_params
from .rundir import DPO_SUFFIX, RunDir, lineage
from .runners import GenParams, TransformersRunner

CURVES = ("loss", "rewards/accuracies", "rewards/margins", "kl/implicit", "logps/chosen", "logps/rejected", "lr")


def held_out(params_path, run_dir, overrides=()) -> pd.DataFrame:
    """Score every align-index entry's start and DPO model on the held-out pairs; writes ``RunDir.align_held_out``
    and the side-by-side answers (``RunDir.align_examples``). Returns the table."""
    params, rd = load_params(params_path, overrides), RunDir(run_dir)
    ap, pairs = params.align, preference.read_pairs(rd)["held_out"]
    rows, examples = [], []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = GenParams(max_new_tokens=ap.example_max_new_tokens, seed=params.seed, batch_size=ap.eval_batch_size)
    for entry in rd.read_align_index():
        base = params.model(entry["base"])
        start, smp = align.start_of(params, base, rd)  # the very model the DPO run started from
        dmp = base.model_copy(update={"name": entry["model"], "path": entry["final"]})
        tokenizer = models.load_tokenizer(dmp)
        template = base.template or models.model_card(base).template
        tok, _ = preference.tokenize_pairs(pairs, tokenizer, template, ap)
        data = tok.to_list()
        pad = tokenizer.eos_token_id  # padding is masked; EOS exists in every start model's vocabulary
        s_run = TransformersRunner(smp, tokenizer, False, gen, device)
        d_run = TransformersRunner(dmp, tokenizer, False, gen, device)
        s_lp = preference.reply_logps(s_run.model, data, ap.max_length, pad, ap.eval_batch_size)
        d_lp = preference.reply_logps(d_run.model, data, ap.max_length, pad, ap.eval_batch_size, ref=s_run.model)
        rows += preference.held_out_rows(start, lineage(start)[1], s_lp, ap.beta, params.seed)
        d_row = preference.held_out_rows(entry["model"], lineage(entry["model"])[1], d_lp, ap.beta, params.seed)[0]
        d_row.update(start=start, **preference.paired_gain(s_lp, d_lp, params.seed, entry["model"]))
        rows.append(d_row)
        shown = data[: ap.examples]
        if shown:
            prompts, seeds = [r["prompt_ids"] for r in shown], [params.seed] * len(shown)
            for r, (s_ids, _), (d_ids, _) in zip(
                shown, s_run.run(prompts, seeds), d_run.run(prompts, seeds), strict=True
            ):
                examples.append({"model": entry["model"], "start": start, "id": r["id"],
                                 "prompt": tokenizer.decode(r["prompt_ids"], skip_special_tokens=True),
                                 "chosen": tokenizer.decode(r["chosen_ids"], skip_special_tokens=True),
                                 start: tokenizer.decode(s_ids, skip_special_tokens=True),
                                 entry["model"]: tokenizer.decode(d_ids, skip_special_tokens=True)})  # fmt: skip
        del s_run, d_run
    table = pd.DataFrame(rows)
    rd.align_held_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = rd.align_held_out.with_name(f".{rd.align_held_out.name}.partial")
    table.to_csv(tmp, index=False)
    tmp.replace(rd.align_held_out)
    write_json(rd.align_examples, examples)
    return table


def examples_html(run_dir) -> str:
    """The held-out prompts with the chosen reply and both models' answers, every text escaped."""
    items = RunDir(run_dir).align_examples
    rows = json.loads(Path(items).read_text(encoding="utf-8")) if Path(items).is_file() else []
    if not rows:
        return "<p>No held-out examples (align.examples: 0, or no align run).</p>"
    out = ["<table><thead><tr><th>prompt</th><th>chosen (hh-rlhf)</th><th>start model</th><th>DPO model</th>"
           "</tr></thead><tbody>"]  # fmt: skip
    for r in rows:
        cells = [r["prompt"], r["chosen"], f"{r['start']}: {r[r['start']]}", f"{r['model']}: {r[r['model']]}"]
        out.append("<tr>" + "".join(f"<td><pre>{html.escape(c)}</pre></td>" for c in cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def curves(run_dir) -> pd.DataFrame:
    """Long table (model, step, metric, value) of every align run's logged curves."""
    rd = RunDir(run_dir)
    frames = []
    for entry in rd.read_align_index():
        m = rd.read_align_metrics(entry["model"])
        keep = [c for c in CURVES if c in m and m[c].notna().any()]
        if keep:
            frames.append(m.melt(id_vars="step", value_vars=keep, var_name="metric").assign(model=entry["model"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def runs_table(results: dict) -> pd.DataFrame:
    """Per DPO run: start, steps, first and last loss, what ran (distributed type, processes), wall time, pairs."""
    rows = []
    for base, r in results.items():
        d, data = r.get("distributed", {}), r.get("data", {})
        rows.append({"base": base, "start": r.get("start"), "model": r.get("model", f"{base}{DPO_SUFFIX}"),
                     "steps": r.get("steps"), "first_loss": r.get("first_loss"), "last_loss": r.get("last_loss"),
                     "distributed_type": d.get("distributed_type"), "processes": d.get("num_processes"),
                     "fsdp_version": d.get("fsdp_version"), "train_runtime_s": r.get("train_runtime_s"),
                     "pairs": data.get("kept"), "prompt_too_long": data.get("skipped", {}).get("prompt_too_long"),
                     "replies_cut": data.get("replies_cut"), "reused": r.get("reused", False)})  # fmt: skip
    return pd.DataFrame(rows)


def pairs_table(run_dir) -> pd.DataFrame:
    """Per preference source: records read, invalid (by reason), skipped (by reason), pairs kept."""
    report = json.loads(RunDir(run_dir).align_pairs_report.read_text(encoding="utf-8"))
    return pd.DataFrame(
        [{"source": s["source"], "format": s["format"], "read": s["read"], "invalid": sum(s["invalid"].values()),
          **{f"skipped: {k}": v for k, v in s["skipped"].items()}, "pairs": s["pairs"]} for s in report["sources"]]
    ).assign(train=report["train"], held_out=report["held_out"])  # fmt: skip


def recipe(params_path, overrides=()) -> pd.Series:
    """The align settings as run (for the notebook and the index page)."""
    ap = load_params(params_path, overrides).align
    return pd.Series(ap.model_dump(mode="json", exclude={"sources"}), name="align")
