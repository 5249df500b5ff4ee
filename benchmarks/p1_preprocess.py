"""P1: template + tokenise + label-mask alpaca-format records: ``sft.tokenize_records`` on one process and on two,
against stanford_alpaca's per-example ``preprocess`` (timed in a spawned process of its own, so that its garbage does
not slow the kit's paths) and against the limit: the tokenizer's raw Rust batch call on the rendered full texts
(``encode_batch_fast`` or ``encode_batch``, ids read out, one process, one thread). The kit's labels must equal
stanford's, and two processes must give what one gives."""

from __future__ import annotations

import cProfile
import gc
import math
import multiprocessing
import pstats
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import datasets
import numpy as np

from llm4academic import sft
from llm4academic.base import RESOURCES_DIR
from llm4academic.data.formats import RECORD_FEATURES, load_file

from .common import Case, Context, Goal, Sizes, fmt_n, fmt_x, limit, median, rnd, verdict, yes
from .stanford import stanford_alpaca_preprocess, stanford_sources_targets

CASE = Case(
    "P1",
    "preprocessing",
    "template + tokenise + mask, kit vs the tokenizer's raw batch call and stanford's per-example preprocess",
    (
        Goal("share_of_limit", ">=", 0.90, "%", "of the tokenizer's raw encode_batch speed, one process"),
        Goal("parallel_vs_limit", ">=", 1.6, "×", "the raw encode_batch speed with 2 processes"),
        Goal("parallel_vs_baseline", ">=", 5.0, "×", "stanford's per-example preprocess with 2 processes"),
    ),
)
PROCESSES = 2
SHIPPED_ALPACA_FORMAT = (
    "instruct/alpaca/alpaca_data.first1825.json",
    "instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json",
    "instruct/belle/dev1K.json",
)
MAX_LENGTH = 512


def alpaca_records(n: int) -> tuple[list[dict], dict]:
    """The shipped alpaca-format samples (English Alpaca, Chinese Alpaca, BELLE), repeated to ``n`` records."""
    records, per_file = [], {}
    for rel in SHIPPED_ALPACA_FORMAT:
        ds, _ = load_file(RESOURCES_DIR / rel, source=rel.split("/")[1], on_invalid="skip")
        per_file[rel] = len(ds)
        records += ds.to_list()
    reps = math.ceil(n / len(records))
    return (records * reps)[:n], {"files": per_file, "distinct_records": len(records), "repeated": reps}


def where_kit_time_goes(fn) -> dict:
    """One run of ``fn`` under cProfile: the share of its time in the parts that matter for P1 (cProfile slows the
    Python side more than the tokenizer's Rust code, so the tokenizer's share is a lower bound)."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # {(file, line, name): (calls, primitive calls, own, cumulative, callers)}

    def cum(match, own: bool = False) -> float:
        return sum(v[2 if own else 3] for k, v in stats.items() if match(*k))

    parts = {
        "tokenizer encode_batch_fast (Rust)": cum(lambda f, _, n: "encode_batch" in n and "tokenizers" in n),
        "token ids → Python lists (Encoding.ids)": cum(
            lambda f, _, n: n == "<listcomp>" and f.endswith("sft.py"), True
        ),
        "template rendering (templates.render)": cum(lambda f, _, n: n == "render" and f.endswith("templates.py")),
        "labels and Arrow columns (sft._tokenize_causal, NumPy)": cum(
            lambda f, _, n: n == "_tokenize_causal" and f.endswith("sft.py"), True
        )
        + cum(lambda f, _, n: "numpy" in n or "ufunc" in n),
        "datasets Arrow writing (ArrowWriter.write_table)": cum(
            lambda f, _, n: n == "write_table" and f.endswith("arrow_writer.py")
        ),
        "kit token counts after map (sft._report)": cum(lambda f, _, n: n == "_report" and f.endswith("sft.py")),
    }
    shares = {k: round(v / total, 3) for k, v in parts.items()}
    shares["everything else (segments, heads check, datasets.map)"] = round(1 - sum(shares.values()), 3)
    return {"seconds_under_cprofile": round(total, 2), "share": shares}


def raw_batch_call(encode, texts: list[str]) -> list[list[int]]:
    """The limit: one raw Rust batch call on the full texts, ids read out, with Python's cyclic GC paused as the
    kit pauses it (the fastest way this tokenizer gives token ids)."""
    gc.disable()
    try:
        return [e.ids for e in encode(texts, add_special_tokens=True)]
    finally:
        gc.enable()


def compact(out):
    """An output kept for the checks, as one ``int32`` bytes object per record: the benchmark then holds tens of
    thousands of objects, not millions of Python ints and tensors, so the forks of the two-process path copy a parent
    the size of a training process, not one swollen by the benchmark's own bookkeeping."""
    if isinstance(out, dict):  # stanford's: lists of tensors
        return {k: [np.asarray(x, dtype=np.int32).tobytes() for x in out[k]] for k in ("input_ids", "labels")}
    if isinstance(out, list):  # the raw call's id lists
        return [np.asarray(x, dtype=np.int32).tobytes() for x in out]
    return out  # the kit's (Arrow-backed Dataset, report)


_BASELINE: dict = {}  # in the baseline's own process: its records and tokenizer (``_baseline_init``)


def _baseline_init(records: list[dict], tokenizer) -> None:
    _BASELINE.update(records=records, tokenizer=tokenizer)
    _baseline_job(warm=True)


def _baseline_job(keep: bool = False, warm: bool = False) -> tuple[float, Any]:
    """stanford's preprocess of every record (of 200 when ``warm``), timed in the baseline's own process: its
    seconds, and its outputs (compact) when ``keep``."""
    records, tok = _BASELINE["records"][: 200 if warm else None], _BASELINE["tokenizer"]
    t0 = time.perf_counter()
    sources, targets = stanford_sources_targets(records, tok)
    out = stanford_alpaca_preprocess(sources, targets, tok, MAX_LENGTH)
    seconds = time.perf_counter() - t0
    return seconds, compact(out) if keep else None


def baseline_process(records: list[dict], tokenizer) -> ProcessPoolExecutor:
    """One spawned process that runs stanford's preprocess on request (``_baseline_job``), so that the kit's paths
    are not timed in a process whose heap stanford's per-example tensors and lists have grown and fragmented (after
    one baseline run, this process's RSS doubles, and both kit paths slow down, the forked two-process one most)."""
    return ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_baseline_init, initargs=(records, tokenizer)
    )


def run(ctx: Context, sz: Sizes) -> dict:
    tok = ctx.tokenizer
    records, origin = alpaca_records(sz.p1_records)
    ds = datasets.Dataset.from_list(records, features=RECORD_FEATURES)  # the kit's input: records in a Dataset
    sources, targets = stanford_sources_targets(records, tok)
    texts = [s + t for s, t in zip(sources, targets, strict=True)]  # the limit's input: rendered full texts
    rust = tok.backend_tokenizer
    procs = sft.worker_count(len(ds), PROCESSES)
    # warm the tokenizer once (the kit's and the limit's; stanford's warms its own)
    rust.encode_batch_fast(texts[:2000])

    ctx.progress("  P1: starting stanford's preprocess in a process of its own …")
    stanford = baseline_process(records, tok)
    fns = {
        "baseline": None,  # timed in its own process
        "kit": lambda: sft.tokenize_records(ds, tok, "alpaca", MAX_LENGTH, num_proc=1),
        "kit_parallel": lambda: sft.tokenize_records(ds, tok, "alpaca", MAX_LENGTH, num_proc=PROCESSES),
        "encode_batch_fast": lambda: raw_batch_call(rust.encode_batch_fast, texts),  # the limit: the faster of
        "encode_batch": lambda: raw_batch_call(rust.encode_batch, texts),  # the two raw calls, repeat by repeat
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    with stanford:
        for r in range(sz.p1_repeats):
            for name, fn in fns.items():
                ctx.progress(f"  P1 repeat {r + 1}/{sz.p1_repeats}: {name} …")
                if fn is None:
                    seconds, out = stanford.submit(_baseline_job, keep=r == 0).result()
                    times[name].append(seconds)
                else:
                    t0 = time.perf_counter()
                    out = fn()
                    times[name].append(time.perf_counter() - t0)
                if r == 0 and name != "encode_batch":
                    outs[name] = out if fn is None else compact(out)  # the baseline's comes compact
                del out
    raw_calls = {k: times.pop(k) for k in ("encode_batch_fast", "encode_batch")}
    times["bare"] = [min(a, b) for a, b in zip(*raw_calls.values(), strict=True)]
    profile = None
    if sz.profile:
        ctx.progress("  P1: the kit's path once more (one process), under cProfile …")
        profile = where_kit_time_goes(fns["kit"])
    ref = {k: [np.frombuffer(b, np.int32).tolist() for b in v] for k, v in outs["baseline"].items()}
    kit_ds, report = outs["kit"]
    kit_cols = kit_ds.select_columns(["input_ids", "labels"]).to_dict()
    parallel_cols = outs["kit_parallel"][0].select_columns(["input_ids", "labels"]).to_dict()
    # the kit drops records left without a trainable token (stanford keeps them): compare the records it keeps
    keep = [any(x != sft.IGNORE_INDEX for x in lab[1:]) for lab in ref["labels"]]
    ref_ids = [x for x, k in zip(ref["input_ids"], keep, strict=True) if k]
    ref_labels = [x for x, k in zip(ref["labels"], keep, strict=True) if k]
    differing = sum(a != b for a, b in zip(kit_cols["labels"], ref_labels, strict=False)) + abs(
        len(kit_cols["labels"]) - len(ref_labels)
    )
    bare_ids = [np.frombuffer(b, np.int32)[:MAX_LENGTH].tolist() for b in outs["encode_batch_fast"]]
    n, tokens = len(records), report.tokens
    per = {  # per-repeat ratios (kit and its anchors interleaved)
        "speedup_vs_baseline": [b / k for b, k in zip(times["baseline"], times["kit"], strict=True)],
        "bare_speedup_vs_baseline": [b / k for b, k in zip(times["baseline"], times["bare"], strict=True)],
        "share_of_bare": [b / k for b, k in zip(times["bare"], times["kit"], strict=True)],
        "parallel_vs_limit": [b / k for b, k in zip(times["bare"], times["kit_parallel"], strict=True)],
        "parallel_vs_baseline": [b / k for b, k in zip(times["baseline"], times["kit_parallel"], strict=True)],
        "parallel_vs_one_process": [a / b for a, b in zip(times["kit"], times["kit_parallel"], strict=True)],
    }
    med = {k: median(v) for k, v in times.items()}
    return {
        "ratio": median(per["speedup_vs_baseline"]),
        "limit": limit(
            median(per["bare_speedup_vs_baseline"]),
            "raw encode_batch",
            "the tokenizer's raw Rust batch call on the rendered full texts (the faster of encode_batch_fast and "
            "encode_batch in each repeat), ids read out, one process, one thread: its speed-up over stanford's",
            shares=per["share_of_bare"],  # kit vs the raw call of the same repeat
        ),
        "metrics": {
            "speedup_vs_baseline": median(per["speedup_vs_baseline"]),
            "parallel_vs_limit": median(per["parallel_vs_limit"]),
            "parallel_vs_baseline": median(per["parallel_vs_baseline"]),
        },
        "checks": {
            "labels_identical": kit_cols["labels"] == ref_labels,
            "input_ids_identical": kit_cols["input_ids"] == ref_ids,
            "parallel_identical": parallel_cols == kit_cols,
            "limit_tokens_as_stanford": bare_ids == ref["input_ids"],  # the limit tokenises the same texts
        },
        "repeats": sz.p1_repeats,
        "raw": {
            "records": n,
            "data": origin,
            "tokenizer": "tiny:llama (byte-level BPE, vocab 1000)",
            "template": "alpaca",
            "max_length": MAX_LENGTH,
            "tokens": tokens,
            "truncated_records": report.truncated,
            "dropped_by_kit": report.dropped,
            "records_with_differing_labels": differing,
            "processes": {"kit": 1, "kit_parallel": procs},
            "fixed_prompt_tokens": [len(h.ids) - len(h.context) for h in sft.heads(tok, "alpaca")],
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items() if k in ("baseline", "kit", "bare")},
            "median_seconds": {k: rnd(v, 3) for k, v in med.items() if k in ("baseline", "kit", "bare")},
            "parallel": {
                "seconds": [round(x, 3) for x in times["kit_parallel"]],
                "median_seconds": rnd(med["kit_parallel"], 3),
                "records_per_s": rnd(n / med["kit_parallel"], 1),
            },
            "raw_calls": {  # the limit ("bare") is the faster of the two in each repeat
                k: {"seconds": [round(x, 3) for x in v], "records_per_s": rnd(n / median(v), 1)}
                for k, v in raw_calls.items()
            },
            "records_per_s": {k: rnd(n / med[k], 1) for k in ("baseline", "kit", "bare")},
            "tokens_per_s": {k: rnd(tokens / med[k], 0) for k in ("baseline", "kit", "bare")},
            **{f"{k}_per_repeat": [rnd(x, 3) for x in v] for k, v in per.items()},
            "share_of_bare": rnd(median(per["share_of_bare"]), 3),
            "bare_speedup_vs_baseline": rnd(median(per["bare_speedup_vs_baseline"]), 3),
            "kit_profile": profile,
            "what": {
                "baseline": "stanford_alpaca preprocess: one tokenizer call per example for source+target, "
                "then one per source, return_tensors='pt', padding='longest'; mask len(source); timed in a spawned "
                "process of its own (baseline_process)",
                "kit": "sft.tokenize_records(num_proc=1): datasets.map on Arrow batches; the template's fixed prompt "
                "start tokenised once (sft.heads), the rest of each segment in one encode_batch_fast call per batch; "
                "EOS id appended; labels -100 on the prompt, built in NumPy; Arrow columns out",
                "kit_parallel": f"the same with num_proc={PROCESSES} (forked datasets.map workers)",
                "bare": "the limit: the faster of rust.encode_batch_fast and rust.encode_batch (offsets too) on the "
                "rendered full texts (stanford's source + target, add_special_tokens), ids read out, cyclic GC paused; "
                "no masks, no labels, no Arrow",
            },
        },
    }


def row(c: dict) -> list[str] | None:
    """case · what · kit · baseline · result · goal · check · met (a finished run; else the harness's row)"""
    if c["status"] != "ok":
        return None
    raw, m = c["raw"], c["metrics"]
    rps, procs = raw["records_per_s"], raw["processes"]["kit_parallel"]
    two = f"{procs} processes" if procs > 1 else f"num_proc={PROCESSES} (1 process: too few records)"
    return [
        c["id"],
        f"preprocess {raw['records']:,} alpaca-format records (template + tokenise + mask), records/s",
        f"{fmt_n(rps['kit'])} one process · {fmt_n(raw['parallel']['records_per_s'])} {two}",
        f"{fmt_n(rps['baseline'])} stanford · {fmt_n(rps['bare'])} raw encode_batch",
        f"{fmt_x(m['speedup_vs_baseline'])} stanford; {two}: {fmt_x(m['parallel_vs_baseline'])} stanford, "
        f"{fmt_x(m['parallel_vs_limit'])} the raw call",
        CASE.goal_cell,
        f"labels identical: {yes(c['checks']['labels_identical'])}; "
        f"{two} = one: {yes(c['checks']['parallel_identical'])}",
        verdict(c),
    ]
