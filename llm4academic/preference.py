"""Preference pairs for the align step: load them from the align sources (the data layer's adapters: hh-rlhf's
shared prefix is the prompt, each transcript's last assistant turn a reply), count and skip the pairs that teach
nothing, split off held-out pairs, tokenise them per model exactly as SFT trains (``sft.encode_pairs``), and score
models on them: the summed log-probability of each reply, preference accuracy, DPO's implicit reward, and the
per-token KL of a policy to its reference.

No TRL here: the same log-probabilities serve the held-out table and the hand check of TRL's DPO loss.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter

import datasets
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import sft
from .base import KitError, write_json
from .data.formats import load_file
from .rundir import RunDir
from .scoring.stats import bootstrap_ci, group_rng
from .threads import cpu_threads

PAIR_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "chosen": datasets.Value("string"),
        "rejected": datasets.Value("string"),
    }
)
SPLITS = ("train", "held_out")


# --------------------------------------------------------------------------------------------- pairs


def load_pairs(params) -> tuple[datasets.DatasetDict, dict]:
    """Every align source's pairs, the ones without a learning signal skipped and counted, split into ``train``
    and ``held_out`` (seeded; held-out pairs are never trained on). Returns the splits and the report."""
    ap = params.align
    rows: list[dict] = []
    report: dict = {"sources": [], "skipped": {}}
    for i, src in enumerate(ap.sources):
        ds, load = load_file(
            src.path, source=src.name, fmt=src.format, on_invalid=params.data.on_invalid, max_records=src.max_records
        )
        if load.kept and not any(ds["chosen"]):
            raise KitError(
                f"{src.path}: align.sources[{i}] ({src.name}) holds no preference pairs: its records (format "
                f"{load.format!r}, detected from the first record) have no chosen/rejected replies. The align step "
                "needs pairs such as hh-rlhf's (`chosen`, `rejected` transcripts that differ in the last reply)"
            )
        skipped: Counter = Counter()
        for rec in ds:
            chosen, rejected = rec["chosen"], rec["rejected"]
            if not chosen.strip() or not rejected.strip():
                skipped["empty_chosen" if not chosen.strip() else "empty_rejected"] += 1
            elif chosen.strip() == rejected.strip():
                skipped["identical"] += 1
            else:
                prompt = [dict(t) for t in rec["conversation"][:-1]]
                rows.append(
                    {"id": rec["id"], "source": src.name, "prompt": prompt, "chosen": chosen, "rejected": rejected}
                )
        report["sources"].append(
            {
                "source": src.name,
                "path": src.path,
                "format": load.format,
                "read": load.read,
                "invalid": dict(load.skipped),
                "invalid_examples": load.examples,
                "skipped": dict(skipped),
                "pairs": load.kept - sum(skipped.values()),
            }
        )
        for k, v in skipped.items():
            report["skipped"][k] = report["skipped"].get(k, 0) + v
    if len(rows) < 2:
        raise KitError(
            f"align.sources: {len(rows)} usable preference pair(s) — at least 2 are needed (one to train on, one "
            f"held out); skipped: {report['skipped'] or 'none'}"
        )
    order = np.random.default_rng(params.seed).permutation(len(rows))
    n_held = min(ap.max_held_out, max(1, math.ceil(ap.held_out * len(rows))), len(rows) - 1)
    held, train = order[:n_held], order[n_held:]
    if ap.max_pairs is not None:
        train = train[: ap.max_pairs]
    split = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([rows[i] for i in sorted(train)], features=PAIR_FEATURES),
            "held_out": datasets.Dataset.from_list([rows[i] for i in sorted(held)], features=PAIR_FEATURES),
        }
    )
    report.update(pairs=len(rows), train=len(split["train"]), held_out=len(split["held_out"]))
    return split, report


def save_pairs(split: datasets.DatasetDict, report: dict, rd: RunDir) -> None:
    """Written under a temporary name, then renamed: never half the pairs."""
    final = rd.align_pairs
    tmp = final.with_name(f".{final.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    split.save_to_disk(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(rd.align_pairs_report, report)


def read_pairs(rd: RunDir) -> datasets.DatasetDict:
    if not rd.align_pairs.is_dir():
        raise KitError(f"{rd.align_pairs}: no preference pairs — the align launcher writes them first")
    return datasets.load_from_disk(str(rd.align_pairs))


def tokenize_pairs(pairs: datasets.Dataset, tokenizer, template: str, ap) -> tuple[datasets.Dataset, dict]:
    """``id, prompt_ids, chosen_ids, rejected_ids`` for one model; pairs whose prompt is longer than
    ``align.max_prompt_length`` tokens are skipped and counted, replies that run past ``align.max_length`` counted
    as cut (the trainer keeps their start)."""
    encoded = sft.encode_pairs(pairs["prompt"], pairs["chosen"], pairs["rejected"], tokenizer, template)
    cols: dict[str, list] = {"id": [], "prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    too_long = cut = 0
    for pid, (p, c, r) in zip(pairs["id"], encoded, strict=True):
        if len(p) > ap.max_prompt_length:
            too_long += 1
            continue
        cut += len(p) + max(len(c), len(r)) > ap.max_length
        for k, v in zip(cols, (pid, p, c, r), strict=True):
            cols[k].append(v)
    stats = {
        "pairs": len(pairs),
        "kept": len(cols["id"]),
        "skipped": {"prompt_too_long": too_long},
        "replies_cut": cut,
        "max_prompt_length": ap.max_prompt_length,
        "max_length": ap.max_length,
        "prompt_tokens": sum(map(len, cols["prompt_ids"])),
        "reply_tokens": sum(len(c) + len(r) for c, r in zip(cols["chosen_ids"], cols["rejected_ids"], strict=True)),
    }
    return datasets.Dataset.from_dict(cols), stats


# --------------------------------------------------------------------------------------------- scoring pairs


def _batch(rows: list[dict], key: str, max_length: int, pad: int, device):
    """Right-padded ``prompt + reply`` rows cut at ``max_length`` (as TRL's collator cuts them) and the reply mask."""
    seqs = [(r["prompt_ids"] + r[key])[:max_length] for r in rows]
    masks = [([0] * len(r["prompt_ids"]) + [1] * len(r[key]))[:max_length] for r in rows]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)
    return ids, attn, mask


@torch.inference_mode()
def reply_logps(model, rows: list[dict], max_length: int, pad: int, batch_size: int = 8, ref=None) -> pd.DataFrame:
    """Per pair: summed log-probability of the chosen and the rejected reply under ``model`` (``logp_chosen``,
    ``logp_rejected``, reply token counts); with ``ref`` also the reference's (``ref_logp_*``) and the mean
    per-token KL(model ‖ ref) over the chosen reply's positions (full vocabulary, teacher-forced)."""
    device = next(model.parameters()).device
    out: dict[str, list] = {"id": [r["id"] for r in rows]}
    with cpu_threads(device):  # on CPU, every usable core
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            for key in ("chosen", "rejected"):
                ids, attn, mask = _batch(part, f"{key}_ids", max_length, pad, device)
                logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
                target, m = ids[:, 1:], mask[:, 1:].float()
                logp = torch.log_softmax(logits, -1)
                tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                out.setdefault(f"logp_{key}", []).extend((tok * m).sum(1).tolist())
                out.setdefault(f"tokens_{key}", []).extend(m.sum(1).long().tolist())
                if ref is not None:
                    ref_logp = torch.log_softmax(ref(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
                    ref_tok = ref_logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                    out.setdefault(f"ref_logp_{key}", []).extend((ref_tok * m).sum(1).tolist())
                    if key == "chosen":
                        kl = (logp.exp() * (logp - ref_logp)).sum(-1)
                        out.setdefault("kl_chosen", []).extend(((kl * m).sum(1) / m.sum(1).clamp(min=1)).tolist())
    return pd.DataFrame(out)


def dpo_loss(logps: pd.DataFrame, beta: float) -> float:
    """DPO's sigmoid loss by its formula: −log σ(β · ((log π_c − log π_ref,c) − (log π_r − log π_ref,r))), mean
    over the pairs (``reply_logps`` with a reference)."""
    z = beta * (
        (logps["logp_chosen"] - logps["ref_logp_chosen"]) - (logps["logp_rejected"] - logps["ref_logp_rejected"])
    )
    return float(F.softplus(-torch.tensor(z.to_numpy(), dtype=torch.float64)).mean())


def held_out_rows(name: str, stage: str, logps: pd.DataFrame, beta: float, seed: int, n_boot: int = 1000) -> list[dict]:
    """The held-out table's rows for one model: preference accuracy (log π(chosen) > log π(rejected)) with a
    bootstrap interval, the mean log-probability margin, and — for a DPO model scored with its reference — the
    implicit reward accuracy and margin, and the per-token KL to the reference."""
    margin = logps["logp_chosen"] - logps["logp_rejected"]
    acc, lo, hi = bootstrap_ci((margin > 0).astype(float), n_boot=n_boot, rng=group_rng(seed, name, "accuracy"))
    row = {
        "model": name,
        "stage": stage,
        "pairs": len(logps),
        "preference_accuracy": acc,
        "ci_low": lo,
        "ci_high": hi,
        "logp_margin": float(margin.mean()),
        # the same per reply token: summed log-probabilities favour the shorter reply, and chosen replies run longer
        "per_token_accuracy": float(
            (
                logps["logp_chosen"] / logps["tokens_chosen"].clip(lower=1)
                > logps["logp_rejected"] / logps["tokens_rejected"].clip(lower=1)
            ).mean()
        ),
    }
    if "ref_logp_chosen" in logps:
        reward = beta * (
            (logps["logp_chosen"] - logps["ref_logp_chosen"]) - (logps["logp_rejected"] - logps["ref_logp_rejected"])
        )
        racc, rlo, rhi = bootstrap_ci((reward > 0).astype(float), n_boot=n_boot, rng=group_rng(seed, name, "reward"))
        row.update(
            reward_accuracy=racc,
            reward_ci_low=rlo,
            reward_ci_high=rhi,
            reward_margin=float(reward.mean()),
            kl_to_start=float(logps["kl_chosen"].mean()),
        )
    return [row]


def paired_gain(start: pd.DataFrame, dpo: pd.DataFrame, seed: int, key: str, n_boot: int = 1000) -> dict:
    """DPO minus start in held-out preference accuracy, pair by pair, with a paired bootstrap interval."""
    both = start.merge(dpo, on="id", suffixes=("_s", "_d"))
    diff = ((both["logp_chosen_d"] > both["logp_rejected_d"]).astype(float)) - (
        (both["logp_chosen_s"] > both["logp_rejected_s"]).astype(float)
    )
    mean, lo, hi = bootstrap_ci(diff, n_boot=n_boot, rng=group_rng(seed, key, "gain"))
    return {"gain": mean, "gain_ci_low": lo, "gain_ci_high": hi, "separated": bool(lo > 0 or hi < 0)}
