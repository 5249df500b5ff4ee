"""Benchmarks: the kit against stanford_alpaca's way, side by side in one process (``llm4academic bench``).

Absolute times on a shared machine are noise; ratios measured in the same process, on the same data and tokenizer,
interleaved repeat by repeat, are not. Every case runs the kit and its baseline ``repeats`` times and reports the
median of the per-repeat ratios together with the raw numbers. stanford_alpaca's method is the anchor: per-example
tokenisation run twice (full text, then the prompt alone), random batches padded to their longest member, generation
one prompt at a time.

====  ===========================================================================================  =================
case  what                                                                                         goal
====  ===========================================================================================  =================
P1    template + tokenise + mask ≥20,000 alpaca-format records: ``sft.tokenize_records`` vs          ≥ 6× baseline,
      stanford's per-example ``preprocess`` and vs one bare batched tokenizer call; labels equal    ≥ 70% of bare
P2    real / processed tokens of the default mix: ``sft.pack`` rows vs stanford's random padded     ≥ 97% packed
      batches at the same token budget per step (+ dropped / truncated tokens)
P3    real tokens/s (and peak RSS) of optimizer steps on the tiny LLaMA (CPU), packed vs padded;    ≥ 1.8×
      summed loss over the same examples must agree
P4    Z-Bench prompts, tiny LLaMA, greedy: batched (``TransformersRunner``, length-sorted) vs one   ≥ 8×
      prompt at a time; outputs must be identical
P5    ``benchmarks/gpu.py``: tokens/s/GPU and MFU of full fine-tuning a ~1B LLaMA (FSDP2, bf16,     ≥ 40% MFU
      packing); without CUDA only its ``--dry-run`` runs (CPU) and the goal is not judged
P6    wall time of the default study (params/smoke.yaml), per notebook; ``--quick`` reads the       ≤ 5 min
      newest reports/smoke/manifest.json instead of running it
====  ===========================================================================================  =================

``run(quick, cases, progress)`` returns one JSON-ready dict (provenance + one entry per case); ``format_table``
renders it as a Markdown table. ``python -m llm4academic.bench [--quick] [--json] [--case P1,P3]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import RESOURCES_DIR, KitError, project_root

SCHEMA = "llm4academic.bench/1"
SHIPPED_ALPACA_FORMAT = ("instruct/alpaca/alpaca_data.first1825.json",
                         "instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json",
                         "instruct/belle/dev1K.json")
MODEL = "tiny:llama"
SEED = 42


@dataclass(frozen=True)
class Goal:
    metric: str  # key in the case's "metrics"
    op: str  # ">=" or "<="
    target: float
    text: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.target if self.op == ">=" else value <= self.target

    def to_dict(self) -> dict:
        return {"metric": self.metric, "op": self.op, "target": self.target, "text": self.text}


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    title: str
    goals: tuple[Goal, ...]


CASES: dict[str, Case] = {c.id: c for c in (
    Case("P1", "preprocessing", "template + tokenise + mask, kit vs stanford's per-example preprocess",
         (Goal("speedup_vs_baseline", ">=", 6.0, "≥ 6× stanford's per-example preprocess"),
          Goal("share_of_bare", ">=", 0.70, "≥ 70% of a bare batched tokenizer call"))),
    Case("P2", "token_efficiency", "real / processed tokens, packing vs stanford's random padded batches",
         (Goal("packed_efficiency", ">=", 0.97, "≥ 97% real tokens when packed"),)),
    Case("P3", "training_throughput", "real tokens/s of optimizer steps, tiny LLaMA on CPU, packed vs padded",
         (Goal("speedup_vs_padded", ">=", 1.8, "≥ 1.8× stanford's padded batches"),)),
    Case("P4", "generation", "Z-Bench generation, batched vs one prompt at a time (tiny LLaMA, greedy)",
         (Goal("speedup_vs_one_at_a_time", ">=", 8.0, "≥ 8× one prompt at a time"),)),
    Case("P5", "gpu_mfu", "full fine-tuning of a ~1B LLaMA with FSDP2, bf16, packing: tokens/s/GPU and MFU",
         (Goal("mfu", ">=", 0.40, "≥ 40% MFU on one H100"),)),
    Case("P6", "study_wall_time", "wall time of the default study (params/smoke.yaml) after set-up",
         (Goal("wall_s", "<=", 300.0, "≤ 5 minutes"),)),
)}


@dataclass(frozen=True)
class Sizes:
    p1_records: int
    p1_repeats: int
    profile: bool  # P1 cProfile, P3/P4 torch.profiler runs (full mode): where the time goes
    p2_seeds: int
    p3_repeats: int
    p3_steps: int
    p3_loss_examples: int
    p4_prompts: int
    p4_repeats: int
    p5_args: tuple[str, ...]  # gpu.py arguments when CUDA is available
    p6_run: bool


FULL = Sizes(p1_records=20_000, p1_repeats=3, profile=True, p2_seeds=5, p3_repeats=3, p3_steps=10,
             p3_loss_examples=32, p4_prompts=96, p4_repeats=3, p5_args=(), p6_run=True)
QUICK = Sizes(p1_records=1_500, p1_repeats=3, profile=False, p2_seeds=3, p3_repeats=3, p3_steps=2,
              p3_loss_examples=12, p4_prompts=16, p4_repeats=3, p5_args=("--steps", "10", "--warmup", "3"),
              p6_run=False)


class Skip(Exception):
    """A case that cannot run here: the reason goes into the result, ``passed`` stays null."""


def parse_cases(cases: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Case ids in run order; ``None`` = all. Unknown names are a ``KitError`` listing the cases."""
    if cases is None:
        return list(CASES)
    names = [c.strip() for c in cases.split(",")] if isinstance(cases, str) else [str(c).strip() for c in cases]
    names = [n.upper() for n in names if n]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        listed = ", ".join(f"{c.id} ({c.name})" for c in CASES.values())
        what = f"unknown bench case {', '.join(map(repr, unknown))}" if unknown else "no bench case given"
        raise KitError(f"{what}; the cases are: {listed}")
    return [c for c in CASES if c in names]


# --------------------------------------------------------------------------------------------- small helpers


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _rss_mb() -> float | None:
    return _proc_status_kb("VmRSS")


def _hwm_mb() -> float | None:
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; a lifetime peak
    return kb


def _proc_status_kb(field: str) -> float | None:
    try:
        m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def _reset_peak_rss() -> bool:
    """Linux: restart the process's peak-RSS counter (``/proc/self/clear_refs`` ← 5), so each variant gets its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (also used by benchmarks/gpu.py)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def provenance(quick: bool) -> dict:
    """What a reader needs to rerun and compare: code, versions, machine, date."""
    from importlib import metadata

    import torch

    from .base import git_info

    versions = {"python": platform.python_version()}
    for pkg in ("llm4academic", "torch", "transformers", "tokenizers", "datasets", "accelerate"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = _proc_meminfo_gb()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "git": git_info(),
        "versions": versions,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_model(),
                    "cpu_count": os.cpu_count(), "cpus_usable": usable, "memory_gb": mem,
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "load_average_start": _load()},
        "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM")},
    }


def _proc_meminfo_gb() -> float | None:
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return round(int(m.group(1)) / 2**20, 1) if m else None


# --------------------------------------------------------------------------------------------- shared set-up


class _Context:
    """What several cases share, built once per run: the tiny LLaMA's tokenizer, the default study's mix."""

    def __init__(self, progress: Callable[[str], Any]):
        self.progress = progress
        self._tok = None
        self._mix = None

    @property
    def tokenizer(self):
        if self._tok is None:
            from .config import ModelParams
            from .models import load_tokenizer

            self._tok = load_tokenizer(ModelParams(name="tiny-llama", path=MODEL))
        return self._tok

    def model_params(self):
        from .config import ModelParams

        return ModelParams(name="tiny-llama", path=MODEL)

    def smoke_params(self):
        from .config import load_params

        root = project_root()
        path = root / "params" / "smoke.yaml" if root else None
        if path is None or not path.is_file():
            raise Skip("params/smoke.yaml not found: run the bench from the kit's checkout")
        return path, load_params(path)

    def mix(self) -> dict:
        """The default study's mix, tokenised for tiny-llama as training does it, and packed."""
        if self._mix is None:
            from . import data, models, sft

            path, params = self.smoke_params()
            self.progress("  default mix: load, clean, decontaminate, mix (params/smoke.yaml) …")
            t0 = time.perf_counter()
            length_tok = models.load_tokenizer(params.length_tokenizer)
            prepared = data.prepare(params, tokenizer=length_tok)
            mp = params.model("tiny-llama") if any(m.name == "tiny-llama" for m in params.models) \
                else self.model_params()
            tok = models.load_tokenizer(mp)
            template = mp.template or models.model_card(mp).template
            tp = params.train
            tokenized, report = sft.tokenize_records(prepared.mix, tok, template, tp.max_length)
            _, untruncated = sft.tokenize_records(prepared.mix, tok, template, 10**9)
            packed, pack_report = sft.pack(tokenized, tp.max_length)
            cols = tokenized.select_columns(["input_ids", "labels"]).to_dict()
            self._mix = {
                "params_path": str(path), "params": params, "model": mp, "tokenizer": tok, "template": template,
                "records": len(prepared.mix), "tokenize": report, "untruncated_tokens": untruncated.tokens,
                "features": [{"input_ids": a, "labels": b} for a, b in zip(cols["input_ids"], cols["labels"])],
                "packed_rows": packed.to_list(), "pack": pack_report, "max_length": tp.max_length,
                "batch_size": tp.per_device_batch_size, "seconds": time.perf_counter() - t0}
        return self._mix


def matched_batch_size(lengths: list[int], budget: int, seed: int) -> tuple[int, dict[int, float]]:
    """stanford's random padded batches: the batch size whose mean processed tokens per step (batch size × longest
    member) is closest to ``budget`` (the packed step's rows × max_length)."""
    from .sft import random_batches

    processed = {}
    for b in range(1, len(lengths) + 1):
        batches = random_batches(len(lengths), b, seed)
        processed[b] = statistics.mean(len(x) * max(lengths[i] for i in x) for x in batches)
        if processed[b] > budget * 1.5:
            break
    best = min(processed, key=lambda b: (abs(processed[b] - budget), b))
    return best, processed


# --------------------------------------------------------------------------------------------- P1


def _alpaca_records(n: int) -> tuple[list[dict], dict]:
    """The shipped alpaca-format samples (English Alpaca, Chinese Alpaca, BELLE), repeated to ``n`` records."""
    from .data.formats import load_file

    records, per_file = [], {}
    for rel in SHIPPED_ALPACA_FORMAT:
        ds, _ = load_file(RESOURCES_DIR / rel, source=rel.split("/")[1], on_invalid="skip")
        per_file[rel] = len(ds)
        records += ds.to_list()
    reps = math.ceil(n / len(records))
    return (records * reps)[:n], {"files": per_file, "distinct_records": len(records), "repeated": reps}


def _where_kit_time_goes(fn) -> dict:
    """One run of ``fn`` under cProfile: the share of its time in the parts that matter for P1 (cProfile slows the
    Python side more than the tokenizer's Rust code, so the tokenizer's share is a lower bound)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # {(file, line, name): (calls, primitive calls, own, cumulative, callers)}

    def cum(match) -> float:
        return sum(v[3] for k, v in stats.items() if match(*k))

    parts = {
        "tokenizer encode_batch (Rust)": cum(lambda f, _, n: "encode_batch" in n and "tokenizers" in n),
        "transformers Encoding → Python lists (_convert_encoding)": cum(
            lambda f, _, n: n == "_convert_encoding"),
        "template rendering (templates.render)": cum(lambda f, _, n: n == "render" and f.endswith("templates.py")),
        "datasets Arrow writing (ArrowWriter.write_batch)": cum(
            lambda f, _, n: n == "write_batch" and f.endswith("arrow_writer.py")),
        "kit token counts after map (sft._report)": cum(lambda f, _, n: n == "_report" and f.endswith("sft.py")),
    }
    shares = {k: round(v / total, 3) for k, v in parts.items()}
    shares["everything else (kit Python: segments, labels, keep; datasets.map)"] = round(1 - sum(shares.values()), 3)
    return {"seconds_under_cprofile": round(total, 2), "share": shares}


def case_p1(ctx: _Context, sz: Sizes) -> dict:
    import datasets

    from . import sft
    from .data.formats import RECORD_FEATURES

    tok = ctx.tokenizer
    max_length = 512
    records, origin = _alpaca_records(sz.p1_records)
    ds = datasets.Dataset.from_list(records, features=RECORD_FEATURES)  # the kit's input: records in a Dataset
    sources, targets = sft.stanford_sources_targets(records, tok)
    texts = [s + t for s, t in zip(sources, targets)]  # the bare call's input: rendered full texts
    tok(texts[:2000], max_length=max_length, truncation=True)  # warm the tokenizer once (same cache for all)

    def baseline():
        s, t = sft.stanford_sources_targets(records, tok)
        return sft.stanford_alpaca_preprocess(s, t, tok, max_length)

    def kit():
        return sft.tokenize_records(ds, tok, "alpaca", max_length)

    def bare():
        return tok(texts, max_length=max_length, truncation=True)["input_ids"]

    times: dict[str, list[float]] = {"baseline": [], "kit": [], "bare": []}
    outs: dict[str, Any] = {}
    for r in range(sz.p1_repeats):
        for name, fn in (("baseline", baseline), ("kit", kit), ("bare", bare)):
            ctx.progress(f"  P1 repeat {r + 1}/{sz.p1_repeats}: {name} …")
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if r == 0:
                outs[name] = out
            del out
    profile = None
    if sz.profile:
        ctx.progress("  P1: the kit's path once more, under cProfile …")
        profile = _where_kit_time_goes(kit)
    ref = outs["baseline"]
    kit_ds, report = outs["kit"]
    kit_cols = kit_ds.select_columns(["input_ids", "labels"]).to_dict()
    # the kit drops records left without a trainable token (stanford keeps them): compare the records it keeps
    keep = [any(x != sft.IGNORE_INDEX for x in lab[1:]) for lab in ref["labels"]]
    ref_ids = [x for x, k in zip(ref["input_ids"], keep) if k]
    ref_labels = [x for x, k in zip(ref["labels"], keep) if k]
    labels_identical = kit_cols["labels"] == ref_labels
    ids_identical = kit_cols["input_ids"] == ref_ids
    differing = sum(a != b for a, b in zip(kit_cols["labels"], ref_labels)) + abs(len(kit_cols["labels"])
                                                                                   - len(ref_labels))
    n, tokens = len(records), report.tokens
    speedups = [b / k for b, k in zip(times["baseline"], times["kit"])]
    shares = [b / k for b, k in zip(times["bare"], times["kit"])]
    ceilings = [a / b for a, b in zip(times["baseline"], times["bare"])]
    med = {k: _median(v) for k, v in times.items()}
    return {
        "ratio": _median(speedups),
        "metrics": {"speedup_vs_baseline": _median(speedups), "share_of_bare": _median(shares)},
        "checks": {"labels_identical": labels_identical, "input_ids_identical": ids_identical},
        "repeats": sz.p1_repeats,
        "raw": {
            "records": n, "data": origin, "tokenizer": "tiny:llama (byte-level BPE, vocab 1000)",
            "template": "alpaca", "max_length": max_length, "tokens": tokens,
            "truncated_records": report.truncated, "dropped_by_kit": report.dropped,
            "records_with_differing_labels": differing,
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "median_seconds": {k: _r(v, 3) for k, v in med.items()},
            "records_per_s": {k: _r(n / v, 1) for k, v in med.items()},
            "tokens_per_s": {k: _r(tokens / v, 0) for k, v in med.items()},
            "speedup_per_repeat": [_r(x, 3) for x in speedups],
            "share_of_bare_per_repeat": [_r(x, 3) for x in shares],
            # the most any path that tokenises every full text once can gain over the baseline:
            "bare_speedup_vs_baseline": _r(_median(ceilings), 3),
            "kit_profile": profile,
            "what": {"baseline": "stanford_alpaca preprocess: one tokenizer call per example for source+target, "
                                 "then one per source, return_tensors='pt', padding='longest'; mask len(source)",
                     "kit": "sft.tokenize_records: datasets.map, batched; segments tokenised apart in one call per "
                            "batch; EOS id appended; labels -100 on the prompt",
                     "bare": "one batched tokenizer call on the rendered full texts (no masks, no labels)"},
        },
    }


# --------------------------------------------------------------------------------------------- P2


def case_p2(ctx: _Context, sz: Sizes) -> dict:
    from .sft import length_grouped_batches, random_batches, token_efficiency

    m = ctx.mix()
    lengths = [len(f["input_ids"]) for f in m["features"]]
    rows = [len(r["input_ids"]) for r in m["packed_rows"]]
    budget = m["batch_size"] * m["max_length"]
    b, processed = matched_batch_size(lengths, budget, SEED)
    seeds = [SEED + i for i in range(sz.p2_seeds)]

    def padded(batch_size, seed):
        return token_efficiency([[lengths[i] for i in x] for x in random_batches(len(lengths), batch_size, seed)])

    at_budget = [padded(b, s) for s in seeds]
    at_study = [padded(m["batch_size"], s) for s in seeds]
    grouped = [token_efficiency([[lengths[i] for i in x] for x in length_grouped_batches(lengths, b, s)])
               for s in seeds]
    collated = [token_efficiency([[rows[i] for i in x] for x in random_batches(len(rows), m["batch_size"], s)])
                for s in seeds]
    pack = m["pack"]
    eff_packed = pack.efficiency
    eff_padded = _median(at_budget)
    truncated = m["untruncated_tokens"] - m["tokenize"].tokens
    return {
        "ratio": eff_packed / eff_padded if eff_padded else None,
        "value": eff_packed,
        "metrics": {"packed_efficiency": eff_packed, "padded_efficiency": eff_padded},
        "checks": {"same_tokens": pack.tokens + pack.dropped_tokens == sum(lengths)},
        "repeats": len(seeds),
        "raw": {
            "params": "params/smoke.yaml", "model": "tiny-llama", "template": m["template"],
            "records": m["records"], "examples": len(lengths), "tokens": sum(lengths),
            "max_length": m["max_length"], "mean_example_tokens": _r(statistics.mean(lengths), 1),
            "token_budget_per_step": budget,
            "packed": {"rows": pack.rows, "rows_per_step": m["batch_size"], "processed_tokens": pack.processed_tokens,
                       "efficiency": _r(eff_packed), "efficiency_as_collated": _r(_median(collated)),
                       "dropped_examples": pack.dropped_examples, "dropped_tokens": pack.dropped_tokens},
            "padded": {"batch_size_at_budget": b, "mean_processed_tokens_per_step": _r(processed[b], 1),
                       "efficiency": _r(eff_padded), "efficiency_per_seed": [_r(x) for x in at_budget],
                       "dropped_tokens": 0,
                       f"efficiency_batch_size_{m['batch_size']}": _r(_median(at_study)),
                       "efficiency_length_grouped": _r(_median(grouped))},
            "truncated_records": m["tokenize"].truncated, "truncated_tokens": truncated,
            "dropped_records_no_trainable_token": m["tokenize"].dropped,
            "seeds": seeds,
        },
    }


# --------------------------------------------------------------------------------------------- P3


def _summed_loss(model, batch: dict) -> tuple[float, int]:
    """Sum of per-token cross-entropy over the batch's labels (next-token, -100 ignored) and their count."""
    import torch.nn.functional as F

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits.float()
    target = labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return float(loss), int((target != -100).sum())


def _loss_agreement(model, m: dict, b: int, n: int) -> dict:
    """The same ``n`` examples as packed rows (block-diagonal mask, restarting positions) and as stanford's padded
    batches: summed loss and target count must agree."""
    import datasets
    import torch

    from .sft import PackedCollator, PaddedCollator, pack, random_batches

    order = random_batches(len(m["features"]), n, SEED)[0]
    feats = [m["features"][i] for i in order]
    packed, _ = pack(datasets.Dataset.from_list(feats), m["max_length"])
    rows = packed.to_list()
    pc, dc = PackedCollator(m["tokenizer"].pad_token_id, attn_implementation="sdpa"), PaddedCollator(m["tokenizer"])
    model.eval()
    with torch.no_grad():
        p = [_summed_loss(model, pc(rows[i:i + 4])) for i in range(0, len(rows), 4)]
        d = [_summed_loss(model, dc(feats[i:i + b])) for i in range(0, len(feats), b)]
    lp, np_ = sum(x for x, _ in p), sum(c for _, c in p)
    ld, nd = sum(x for x, _ in d), sum(c for _, c in d)
    rel = abs(lp - ld) / max(abs(ld), 1e-12)
    return {"examples": n, "packed_rows": len(rows), "summed_loss_packed": lp, "summed_loss_padded": ld,
            "target_tokens_packed": np_, "target_tokens_padded": nd, "relative_difference": rel,
            "tolerance": 1e-4, "agrees": np_ == nd and rel <= 1e-4}


def _attention_share(mp, batches, collate, lr) -> dict:
    """Three optimizer steps under torch.profiler: the share of CPU time in scaled-dot-product attention (forward and
    backward) and in matrix multiplies, and the attention score positions (rows × length²) the batches asked for."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from .models import load_model

    model = load_model(mp, dtype="float32", attn_implementation="sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    shapes = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for feats in batches[:3]:
            batch = collate(feats)
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            shapes.append(list(batch["input_ids"].shape))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    attn = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return {"attention": round(attn / total, 3), "matmul": round(mm / total, 3), "steps": len(shapes),
            "batch_shapes": shapes, "attention_positions": sum(r * n * n for r, n in shapes)}


def case_p3(ctx: _Context, sz: Sizes) -> dict:
    import torch

    from .models import load_model
    from .sft import PackedCollator, PaddedCollator, random_batches

    m = ctx.mix()
    tok, mp = m["tokenizer"], m["model"]
    lengths = [len(f["input_ids"]) for f in m["features"]]
    b, _ = matched_batch_size(lengths, m["batch_size"] * m["max_length"], SEED)
    steps = 1 + sz.p3_steps  # one warm-up step, untimed
    plan = {
        "packed": ([[m["packed_rows"][i] for i in x] for x in random_batches(len(m["packed_rows"]),
                                                                               m["batch_size"], SEED)][:steps],
                   PackedCollator(tok.pad_token_id, attn_implementation="sdpa")),
        "padded": ([[m["features"][i] for i in x] for x in random_batches(len(lengths), b, SEED)][:steps],
                   PaddedCollator(tok)),
    }
    lr = m["params"].train.learning_rate

    def train(kind: str) -> dict:
        batches, collate = plan[kind]
        rss_reset = _reset_peak_rss()
        rss_before = _rss_mb()
        torch.manual_seed(SEED)
        model = load_model(mp, dtype="float32", attn_implementation="sdpa")
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        spent, real, slots, losses = 0.0, 0, 0, []
        for i, feats in enumerate(batches):
            t0 = time.perf_counter()
            batch = collate(feats)
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt_ = time.perf_counter() - t0
            losses.append(loss.item())
            if i:  # step 0 warms up
                spent += dt_
                real += sum(len(f["input_ids"]) for f in feats)
                slots += batch["input_ids"].numel()
        out = {"seconds": spent, "real_tokens": real, "processed_tokens": slots, "tokens_per_s": real / spent,
               "peak_rss_mb": _hwm_mb(), "rss_before_mb": rss_before, "peak_rss_is_per_variant": rss_reset,
               "losses": [round(x, 4) for x in losses]}
        del model, opt
        return out

    runs: dict[str, list[dict]] = {"packed": [], "padded": []}
    for r in range(sz.p3_repeats):
        for kind in ("packed", "padded"):
            ctx.progress(f"  P3 repeat {r + 1}/{sz.p3_repeats}: {kind}, {sz.p3_steps} steps …")
            runs[kind].append(train(kind))
    speedups = [p["tokens_per_s"] / d["tokens_per_s"] for p, d in zip(runs["packed"], runs["padded"])]
    attention = {kind: _attention_share(mp, *plan[kind], lr) for kind in plan} if sz.profile else None
    torch.manual_seed(SEED)
    agreement = _loss_agreement(load_model(mp, dtype="float32", attn_implementation="sdpa"), m, b,
                                sz.p3_loss_examples)

    def summary(kind: str) -> dict:
        rs = runs[kind]
        real, slots = rs[0]["real_tokens"], rs[0]["processed_tokens"]
        return {"tokens_per_s": _r(_median(x["tokens_per_s"] for x in rs), 1),
                "tokens_per_s_per_repeat": [_r(x["tokens_per_s"], 1) for x in rs],
                "seconds_per_repeat": [_r(x["seconds"], 3) for x in rs],
                "real_tokens_per_repeat": real, "processed_tokens_per_repeat": slots,
                "real_fraction": _r(real / slots), "peak_rss_mb": _r(max(x["peak_rss_mb"] or 0 for x in rs), 1),
                "peak_rss_growth_mb": _r(max((x["peak_rss_mb"] or 0) - (x["rss_before_mb"] or 0) for x in rs), 1),
                "rss_before_mb": _r(rs[0]["rss_before_mb"], 1),
                "peak_rss_is_per_variant": rs[0]["peak_rss_is_per_variant"],
                "losses_first_repeat": rs[0]["losses"]}

    packed, padded = summary("packed"), summary("padded")
    return {
        "ratio": _median(speedups),
        "metrics": {"speedup_vs_padded": _median(speedups)},
        "checks": {"loss_agrees": agreement["agrees"]},
        "repeats": sz.p3_repeats,
        "raw": {
            "model": "tiny:llama (hidden 64, 2 layers, 4 heads; float32, sdpa)", "device": "cpu",
            "torch_threads": torch.get_num_threads(), "optimizer": f"AdamW lr {lr}",
            "timed_steps": sz.p3_steps, "warmup_steps": 1,
            "packed": {"rows_per_step": m["batch_size"], "row_length": m["max_length"], **packed},
            "padded": {"examples_per_step": b, "batch_size_rule": "mean processed tokens per step closest to "
                       f"the packed step's {m['batch_size']}×{m['max_length']}", **padded},
            "speedup_per_repeat": [_r(x, 3) for x in speedups],
            # if time were proportional to processed tokens, packing could gain at most this much:
            "processed_token_bound": _r(packed["real_fraction"] / padded["real_fraction"], 3),
            "loss_check": agreement,
            "attention_share_of_step": attention,
        },
    }


# --------------------------------------------------------------------------------------------- P4


def _generation_profile(runner, batch: list[list[int]]) -> dict:
    """One batched generate call and the same prompts one at a time, under torch.profiler: where CPU time goes
    (KV-cache concatenation, mask building, attention, matmuls) and how many ops each launches."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name, calls in (("batched", [batch]), ("one_at_a_time", [[x] for x in batch])):
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for c in calls:
                runner.run(c, [0] * len(c))
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1

        def share(*keys):
            return round(sum(e.self_cpu_time_total for e in events if e.key in keys) / total, 3)

        out[name] = {"prompts": len(batch), "cpu_ms": round(total / 1000, 1),
                     "op_calls": sum(e.count for e in events),
                     "share": {"kv_cache_cat": share("aten::cat"), "mask_where": share("aten::where"),
                               "attention": round(sum(e.self_cpu_time_total for e in events
                                                      if "scaled_dot_product" in e.key) / total, 3),
                               "matmul": share("aten::mm", "aten::addmm", "aten::bmm")}}
    return out


def case_p4(ctx: _Context, sz: Sizes) -> dict:
    import torch

    from .generate import GenParams, TransformersRunner, fit_prompt, length_batches, prompt_ids, zbench_record
    from .models import model_card
    from .sft import framing
    from .zbench import load_zbench

    mp, tok = ctx.model_params(), ctx.tokenizer
    gen = GenParams(max_new_tokens=32)  # the kit's default batch size (16); the default study's 32 new tokens
    runner = TransformersRunner(mp, tok, False, gen, device="cpu")
    template = model_card(mp).template
    zb = load_zbench()
    n = min(sz.p4_prompts, len(zb))
    picks = sorted({round(i * (len(zb) - 1) / max(n - 1, 1)) for i in range(n)})  # spread over all three splits
    limit = runner.context - gen.max_new_tokens if runner.context else None
    head = len(framing(tok).prefix)
    encoded = [fit_prompt(prompt_ids(zbench_record(zb["prompt"].iloc[i]), tok, template, False), limit, head)
               for i in picks]
    ids = [e for e, _ in encoded]
    batches = length_batches([len(x) for x in ids], gen.batch_size)
    runner.run([ids[0]], [0])  # warm-up

    per_batch: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}

    def batched():
        out = [None] * len(ids)
        per_batch["batched"].clear()
        for bt in batches:
            t0 = time.perf_counter()
            for j, o in zip(bt, runner.run([ids[j] for j in bt], [0] * len(bt))):
                out[j] = o
            per_batch["batched"].append(time.perf_counter() - t0)
        return out

    def one_at_a_time():  # the same prompts in the same groups, so each group's time can be compared
        out = [None] * len(ids)
        per_batch["one_at_a_time"].clear()
        for bt in batches:
            t0 = time.perf_counter()
            for j in bt:
                out[j] = runner.run([ids[j]], [0])[0]
            per_batch["one_at_a_time"].append(time.perf_counter() - t0)
        return out

    times: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
    results: dict[str, list] = {"batched": [], "one_at_a_time": []}
    for r in range(sz.p4_repeats):
        for name, fn in (("batched", batched), ("one_at_a_time", one_at_a_time)):
            ctx.progress(f"  P4 repeat {r + 1}/{sz.p4_repeats}: {name}, {len(ids)} prompts …")
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = fn()
            times[name].append(time.perf_counter() - t0)
            results[name].append(out)
    profiled = _generation_profile(runner, [ids[j] for j in batches[0]]) if sz.profile else None
    reference = results["one_at_a_time"][0]
    identical = all(o == reference for runs in results.values() for o in runs)
    new_tokens = sum(len(x) for x, _ in reference)
    speedups = [s / b for s, b in zip(times["one_at_a_time"], times["batched"])]
    med = {k: _median(v) for k, v in times.items()}
    return {
        "ratio": _median(speedups),
        "metrics": {"speedup_vs_one_at_a_time": _median(speedups)},
        "checks": {"outputs_identical": identical},
        "repeats": sz.p4_repeats,
        "raw": {
            "model": "tiny:llama", "device": "cpu", "decoding": "greedy", "max_new_tokens": gen.max_new_tokens,
            "batch_size": gen.batch_size, "batches": len(batches), "prompts": len(ids),
            "prompt_rows": "evenly spaced over Z-Bench's 311 prompts", "prompt_tokens": sum(map(len, ids)),
            "prompts_truncated": sum(t for _, t in encoded), "new_tokens": new_tokens,
            "finished_at_eos": sum(f == "eos" for _, f in reference),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "prompts_per_s": {k: _r(len(ids) / v, 2) for k, v in med.items()},
            "new_tokens_per_s": {k: _r(new_tokens / v, 1) for k, v in med.items()},
            "speedup_per_repeat": [_r(x, 3) for x in speedups],
            # last repeat, batch by batch (longest prompts first): where batching gains less
            "per_batch": [{"prompt_tokens_max": max(len(ids[j]) for j in bt),
                           "prompt_tokens_min": min(len(ids[j]) for j in bt), "prompts": len(bt),
                           "batched_s": _r(b, 3), "one_at_a_time_s": _r(s, 3), "speedup": _r(s / b, 2)}
                          for bt, b, s in zip(batches, per_batch["batched"], per_batch["one_at_a_time"])],
            "profile_first_batch": profiled,
        },
    }


# --------------------------------------------------------------------------------------------- P5


def gpu_script() -> Path | None:
    root = project_root()
    path = root / "benchmarks" / "gpu.py" if root else None
    return path if path and path.is_file() else None


def run_gpu_script(args: list[str], timeout: float = 900) -> dict:
    """Run ``benchmarks/gpu.py`` in its own process (its own process group) and parse the JSON it prints."""
    script = gpu_script()
    if script is None:
        raise Skip("benchmarks/gpu.py not found: run the bench from the kit's checkout")
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=script.parent.parent)
    out = proc.stdout
    start = out.find("{")
    if proc.returncode != 0 or start < 0:
        tail = (proc.stderr or out)[-2000:]
        raise RuntimeError(f"benchmarks/gpu.py {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return json.loads(out[start:])


def case_p5(ctx: _Context, sz: Sizes) -> dict:
    import torch

    if torch.cuda.is_available():
        ctx.progress("  P5: benchmarks/gpu.py on the GPU …")
        res = run_gpu_script(list(sz.p5_args))
        return {"value": res.get("mfu"), "metrics": {"mfu": res.get("mfu")},
                "checks": {"losses_finite": res.get("losses_finite")}, "repeats": 1,
                "raw": {"tokens_per_s_per_gpu": res.get("tokens_per_s_per_gpu"),
                        "steps": res.get("steps"), "gpu.py": res}}
    ctx.progress("  P5: no CUDA device — benchmarks/gpu.py --dry-run (CPU, scaled down) …")
    res = run_gpu_script(["--dry-run"])
    ok = bool(res.get("dry_run")) and res.get("losses_finite") and (res.get("tokens_per_s_per_gpu") or 0) > 0
    raise Skip("no CUDA device here: the GPU goal is not judged. benchmarks/gpu.py --dry-run ran on CPU "
               f"({'ok' if ok else 'FAILED'}) so the script is known to work", {"dry_run": res, "dry_run_ok": ok})


# --------------------------------------------------------------------------------------------- P6


def _study_numbers(manifest: dict) -> dict:
    notebooks = [{"notebook": nb.get("notebook"), "status": nb.get("status"), "duration_s": nb.get("duration_s")}
                 for nb in manifest.get("notebooks", [])]
    return {"status": manifest.get("status"), "notebooks": notebooks,
            "sum_of_notebooks_s": _r(sum(nb["duration_s"] or 0 for nb in notebooks), 1),
            "started": manifest.get("started"), "ended": manifest.get("ended"),
            "git": manifest.get("git"), "only": manifest.get("only")}


def _span_s(manifest: dict) -> float | None:
    try:
        a, b = (dt.datetime.fromisoformat(manifest[k]) for k in ("started", "ended"))
    except (KeyError, TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def case_p6(ctx: _Context, sz: Sizes) -> dict:
    path, params = ctx.smoke_params()
    if sz.p6_run:
        from .pipeline import run_study

        port = _free_port()
        tmp = Path(tempfile.mkdtemp(prefix="llm4a-bench-study-"))
        ctx.progress(f"  P6: the default study into {tmp} (takes a few minutes) …")
        try:
            t0 = time.perf_counter()
            manifest = run_study(path, [f"train.main_process_port={port}"], reports_dir=tmp, quiet=True)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        nums = _study_numbers(manifest)
        return {"value": wall, "metrics": {"wall_s": wall}, "checks": {"study_ok": manifest.get("status") == "ok"},
                "repeats": 1, "raw": {"source": "run", "wall_s": _r(wall, 1), "params": "params/smoke.yaml",
                                      "overrides": [f"train.main_process_port={port}"], **nums}}
    root = project_root()
    manifest_path = (root or Path.cwd()) / "reports" / params.name / "manifest.json"
    if not manifest_path.is_file():
        raise Skip(f"--quick does not run the study (a few minutes) and there is no {manifest_path} to read: "
                   "run `make study` or the bench without --quick")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    nums = _study_numbers(manifest)
    base = {"source": "manifest", "manifest": str(manifest_path), "timestamp": manifest.get("ended"), **nums}
    if manifest.get("status") != "ok" or not nums["notebooks"] or \
            any(nb["status"] != "ok" or nb["duration_s"] is None for nb in nums["notebooks"]):
        raise Skip(f"{manifest_path}: not every notebook of the study ran ok (status {manifest.get('status')}), so "
                   "it gives no study time", base)
    reused = [nb.get("notebook") for nb in manifest.get("notebooks", []) if nb.get("from_previous_run")]
    span = _span_s(manifest)
    if manifest.get("only") or span is None:  # a partial rerun: its notebooks' times, some from earlier runs
        wall, kind = nums["sum_of_notebooks_s"], "sum of the notebooks' durations"
    else:
        wall, kind = span, "manifest start → end"
    return {"value": wall, "metrics": {"wall_s": wall}, "checks": {"study_ok": True}, "repeats": 1,
            "raw": {**base, "wall_s": _r(wall, 1), "wall_from": kind, "notebooks_from_previous_runs": reused,
                    "note": "read from the newest default-study report, not measured in this run"}}


RUNNERS: dict[str, Callable[[_Context, Sizes], dict]] = {
    "P1": case_p1, "P2": case_p2, "P3": case_p3, "P4": case_p4, "P5": case_p5, "P6": case_p6}


# --------------------------------------------------------------------------------------------- run


def _finish(case: Case, body: dict, status: str, reason: str | None, seconds: float) -> dict:
    metrics = body.get("metrics", {})
    checks = body.get("checks", {})
    goals = [{**g.to_dict(), "measured": _r(metrics.get(g.metric), 4), "met": g.met(metrics.get(g.metric))}
             for g in case.goals]
    if status != "ok":
        passed = False if status == "error" else None
    else:
        verdicts = [g["met"] for g in goals]
        passed = None if None in verdicts else all(verdicts) and all(v is True for v in checks.values())
    return {"id": case.id, "name": case.name, "title": case.title, "status": status, "reason": reason,
            "goal": " and ".join(g.text for g in case.goals), "goals": goals,
            "ratio": _r(body.get("ratio")), "value": _r(body.get("value")),
            "metrics": {k: _r(v) for k, v in metrics.items()}, "checks": checks, "passed": passed,
            "repeats": body.get("repeats", 0), "raw": body.get("raw", {}), "seconds": round(seconds, 2)}


def run(quick: bool = False, cases: list[str] | str | None = None, progress: Callable[[str], Any] = print) -> dict:
    """Run the benchmark cases (all by default) and return one JSON-ready dict: provenance, then ``cases`` (by id)
    with each case's goal(s), ratio / value, checks, ``passed`` (null when not judged), raw numbers and repeats."""
    import datasets
    from transformers.utils import logging as hf_logging

    from .base import setup_environment

    ids = parse_cases(cases)
    setup_environment()
    sz = QUICK if quick else FULL
    t_start = time.perf_counter()
    result: dict[str, Any] = {"schema": SCHEMA, **provenance(quick), "cases": {}}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    ctx = _Context(progress)
    try:
        for cid in ids:
            case = CASES[cid]
            progress(f"{cid} {case.name}: {case.title}")
            t0 = time.perf_counter()
            try:
                body, status, reason = RUNNERS[cid](ctx, sz), "ok", None
            except Skip as s:
                body = {"raw": s.args[1] if len(s.args) > 1 else {}}
                body["checks"] = {"dry_run_ok": body["raw"]["dry_run_ok"]} if "dry_run_ok" in body["raw"] else {}
                status, reason = "skipped", s.args[0]
            except Exception as e:
                body, status = {"raw": {"traceback": traceback.format_exc(limit=8)}}, "error"
                reason = f"{type(e).__name__}: {e}"
            entry = _finish(case, body, status, reason, time.perf_counter() - t0)
            result["cases"][cid] = entry
            progress(f"  → {_verdict(entry)} ({entry['seconds']:.0f} s)")
    finally:
        if bars:
            datasets.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()
    entries = result["cases"].values()
    result["summary"] = {"met": [c["id"] for c in entries if c["passed"] is True],
                         "missed": [c["id"] for c in entries if c["passed"] is False and c["status"] == "ok"],
                         "not_judged": [c["id"] for c in entries if c["passed"] is None],
                         "errors": [c["id"] for c in entries if c["status"] == "error"]}
    result["machine"]["load_average_end"] = _load()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    return result


# --------------------------------------------------------------------------------------------- table


def _x(v: float | None, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}×"


def _pct(v: float | None, nd: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{nd}f}%"


def _n(v: float | None, nd: int = 0) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def _verdict(c: dict) -> str:
    if c["status"] == "error":
        return f"error: {c['reason']}"
    if c["passed"] is None:
        return "not judged" + (f" ({c['status']})" if c["status"] != "ok" else "")
    return "met" if c["passed"] else "missed"


def _yes(v) -> str:
    return {True: "yes", False: "NO", None: "–"}.get(v, str(v))


def _row(c: dict) -> list[str]:
    """case · what · kit · baseline · result · goal · check · met"""
    raw, m = c["raw"], c["metrics"]
    cid = c["id"]
    if c["status"] == "error":
        return [cid, c["title"], "error", "", c["reason"][:80], c["goal"], "", "error"]
    if cid == "P1" and c["status"] == "ok":
        rps = raw["records_per_s"]
        return [cid, f"preprocess {raw['records']:,} alpaca-format records (template + tokenise + mask), "
                     "records/s", _n(rps["kit"]),
                f"{_n(rps['baseline'])} stanford · {_n(rps['bare'])} bare call",
                f"{_x(m['speedup_vs_baseline'])} stanford · {_pct(m['share_of_bare'], 0)} of bare "
                f"(bare: {_x(raw['bare_speedup_vs_baseline'])} stanford)",
                "≥ 6× · ≥ 70%", f"labels identical: {_yes(c['checks']['labels_identical'])}", _verdict(c)]
    if cid == "P2" and c["status"] == "ok":
        pk, pd = raw["packed"], raw["padded"]
        return [cid, f"token efficiency of the default mix ({raw['examples']:,} examples), real / processed tokens, "
                     f"{raw['token_budget_per_step']:,} tokens per step", f"{_pct(pk['efficiency'])} packed",
                f"{_pct(pd['efficiency'])} random padded batches of {pd['batch_size_at_budget']}",
                f"{_x(c['ratio'])}; dropped tokens {pk['dropped_tokens']} packed, {pd['dropped_tokens']} padded "
                f"({raw['truncated_tokens']:,} cut at {raw['max_length']} in both)",
                "≥ 97%", "", _verdict(c)]
    if cid == "P3" and c["status"] == "ok":
        pk, pd = raw["packed"], raw["padded"]
        return [cid, f"training, tiny LLaMA on CPU: real tokens/s over {raw['timed_steps']} AdamW steps "
                     f"(peak RSS, growth during the run)",
                f"{_n(pk['tokens_per_s'])} packed, {pk['rows_per_step']} rows of {pk['row_length']} "
                f"({_n(pk['peak_rss_mb'])} MB, +{_n(pk['peak_rss_growth_mb'])})",
                f"{_n(pd['tokens_per_s'])} padded, batch {pd['examples_per_step']} "
                f"({_n(pd['peak_rss_mb'])} MB, +{_n(pd['peak_rss_growth_mb'])})",
                f"{_x(c['ratio'])} (token bound {_x(raw['processed_token_bound'])})", "≥ 1.8×",
                f"loss agrees: {_yes(c['checks']['loss_agrees'])} "
                f"(rel. diff {raw['loss_check']['relative_difference']:.1e})", _verdict(c)]
    if cid == "P4" and c["status"] == "ok":
        pps, pb = raw["prompts_per_s"], raw["per_batch"]
        return [cid, f"generation, {raw['prompts']} Z-Bench prompts, tiny LLaMA, greedy, "
                     f"{raw['max_new_tokens']} new tokens: prompts/s", f"{_n(pps['batched'], 1)} batched "
                f"({raw['batch_size']})", f"{_n(pps['one_at_a_time'], 1)} one at a time",
                _x(c["ratio"]) + (f" (by batch: {_x(pb[0]['speedup'], 1)} for the longest prompts, "
                                  f"{_x(pb[-1]['speedup'], 1)} for the shortest)" if len(pb) > 1 else ""), "≥ 8×",
                f"outputs identical: {_yes(c['checks']['outputs_identical'])}", _verdict(c)]
    if cid == "P5":
        if c["status"] == "ok":
            g = raw["gpu.py"]
            return [cid, f"full fine-tuning ~1B LLaMA, FSDP2, bf16, packing on {g['device_name']}: tokens/s/GPU, "
                         "MFU", f"{_n(g['tokens_per_s_per_gpu'])} tok/s/GPU, {_pct(g['mfu'])} MFU "
                    f"({_n(g['peak_memory_gib'], 1)} GiB)", "", _pct(c["value"]), "≥ 40%", "", _verdict(c)]
        dry = raw.get("dry_run", {})
        return [cid, "full fine-tuning ~1B LLaMA, FSDP2, bf16, packing: tokens/s/GPU, MFU",
                "not run: no CUDA device", "", "", "≥ 40% MFU",
                f"gpu.py --dry-run (CPU): {'ok' if raw.get('dry_run_ok') else 'FAILED'}" if dry else "",
                _verdict(c)]
    if cid == "P6" and c["status"] == "ok":
        nbs = ", ".join(f"{nb['notebook'].split('_')[0]} {nb['duration_s']:.0f} s" for nb in raw["notebooks"]
                        if nb.get("duration_s") is not None)
        src = "measured now" if raw["source"] == "run" else \
            f"not measured now: {raw['wall_from']} in the manifest of {raw.get('timestamp')}"
        return [cid, f"default study wall time (params/smoke.yaml), {src}", f"{_n(c['value'])} s ({nbs})", "",
                f"{_n(c['value'])} s", "≤ 300 s", f"study ok: {_yes(c['checks'].get('study_ok'))}", _verdict(c)]
    return [cid, c["title"], c["status"], "", (c["reason"] or "")[:120], c["goal"], "", _verdict(c)]


def format_table(result: dict) -> str:
    """The run as Markdown: a provenance line, one row per case, and what the ratios mean."""
    mach, ver, git = result["machine"], result["versions"], result.get("git") or {}
    sha = (git.get("sha") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    gpu = mach.get("gpu") or "no GPU"
    head = (f"llm4academic bench ({'quick' if result['quick'] else 'full'} run) · {result['date']} · git {sha} · "
            f"{mach.get('cpus_usable')} of {mach.get('cpu_count')} CPUs ({mach.get('cpu') or mach.get('machine')}), "
            f"{gpu}, torch threads {mach.get('torch_threads')} · load average {mach.get('load_average_start')} → "
            f"{mach.get('load_average_end')} · torch {ver.get('torch')}, transformers {ver.get('transformers')}, "
            f"tokenizers {ver.get('tokenizers')}, datasets {ver.get('datasets')} · {result.get('seconds')} s")
    cols = ["case", "what is measured", "kit", "baseline", "result", "goal", "check", "goal met"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in result["cases"].values():
        lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in _row(c)) + " |")
    reps = sorted({c["repeats"] for c in result["cases"].values() if c["repeats"]})
    lines += ["", f"Ratios are medians of per-repeat ratios (kit and baseline interleaved in one process; repeats: "
                  f"{', '.join(map(str, reps)) or '–'}); raw numbers in --json."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llm4academic.bench",
                                description="Measured speed against stanford_alpaca's way, side by side.")
    p.add_argument("--quick", action="store_true", help="small sizes, no study run (under a minute or two)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--case", default=None, help="comma-separated cases to run, e.g. P1,P3 (default: all)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object to this file")
    args = p.parse_args(argv)
    try:
        cases = parse_cases(args.case)
        result = run(quick=args.quick, cases=cases, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else format_table(result))
    return 1 if result["summary"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
