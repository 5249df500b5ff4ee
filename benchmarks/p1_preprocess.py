"""P1: template + tokenise + label-mask alpaca-format records: ``sft.tokenize_records`` against stanford_alpaca's
per-example ``preprocess`` and against one bare batched tokenizer call on the rendered texts (the practical limit).
The kit's labels must equal stanford's."""

from __future__ import annotations

import cProfile
import math
import pstats
import time
from typing import Any

import datasets

from llm4academic import sft
from llm4academic.base import RESOURCES_DIR
from llm4academic.data.formats import RECORD_FEATURES, load_file

from .common import Case, Context, Goal, Sizes, fmt_n, fmt_pct, fmt_x, median, rnd, verdict, yes
from .stanford import stanford_alpaca_preprocess, stanford_sources_targets

CASE = Case(
    "P1",
    "preprocessing",
    "template + tokenise + mask, kit vs stanford's per-example preprocess",
    (
        Goal("speedup_vs_baseline", ">=", 6.0, "×", "stanford's per-example preprocess"),
        Goal("share_of_bare", ">=", 0.70, "%", "of a bare batched tokenizer call"),
    ),
)
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

    def cum(match) -> float:
        return sum(v[3] for k, v in stats.items() if match(*k))

    parts = {
        "tokenizer encode_batch (Rust)": cum(lambda f, _, n: "encode_batch" in n and "tokenizers" in n),
        "transformers Encoding → Python lists (_convert_encoding)": cum(lambda f, _, n: n == "_convert_encoding"),
        "template rendering (templates.render)": cum(lambda f, _, n: n == "render" and f.endswith("templates.py")),
        "datasets Arrow writing (ArrowWriter.write_batch)": cum(
            lambda f, _, n: n == "write_batch" and f.endswith("arrow_writer.py")
        ),
        "kit token counts after map (sft._report)": cum(lambda f, _, n: n == "_report" and f.endswith("sft.py")),
    }
    shares = {k: round(v / total, 3) for k, v in parts.items()}
    shares["everything else (kit Python: segments, labels, keep; datasets.map)"] = round(1 - sum(shares.values()), 3)
    return {"seconds_under_cprofile": round(total, 2), "share": shares}


def run(ctx: Context, sz: Sizes) -> dict:
    tok = ctx.tokenizer
    records, origin = alpaca_records(sz.p1_records)
    ds = datasets.Dataset.from_list(records, features=RECORD_FEATURES)  # the kit's input: records in a Dataset
    sources, targets = stanford_sources_targets(records, tok)
    texts = [s + t for s, t in zip(sources, targets, strict=True)]  # the bare call's input: rendered full texts
    tok(texts[:2000], max_length=MAX_LENGTH, truncation=True)  # warm the tokenizer once (same cache for all)

    def baseline():
        s, t = stanford_sources_targets(records, tok)
        return stanford_alpaca_preprocess(s, t, tok, MAX_LENGTH)

    def kit():
        return sft.tokenize_records(ds, tok, "alpaca", MAX_LENGTH)

    def bare():
        return tok(texts, max_length=MAX_LENGTH, truncation=True)["input_ids"]

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
        profile = where_kit_time_goes(kit)
    ref = outs["baseline"]
    kit_ds, report = outs["kit"]
    kit_cols = kit_ds.select_columns(["input_ids", "labels"]).to_dict()
    # the kit drops records left without a trainable token (stanford keeps them): compare the records it keeps
    keep = [any(x != sft.IGNORE_INDEX for x in lab[1:]) for lab in ref["labels"]]
    ref_ids = [x for x, k in zip(ref["input_ids"], keep, strict=True) if k]
    ref_labels = [x for x, k in zip(ref["labels"], keep, strict=True) if k]
    labels_identical = kit_cols["labels"] == ref_labels
    ids_identical = kit_cols["input_ids"] == ref_ids
    differing = sum(a != b for a, b in zip(kit_cols["labels"], ref_labels, strict=False)) + abs(
        len(kit_cols["labels"]) - len(ref_labels)
    )
    n, tokens = len(records), report.tokens
    speedups = [b / k for b, k in zip(times["baseline"], times["kit"], strict=True)]
    shares = [b / k for b, k in zip(times["bare"], times["kit"], strict=True)]
    ceilings = [a / b for a, b in zip(times["baseline"], times["bare"], strict=True)]
    med = {k: median(v) for k, v in times.items()}
    return {
        "ratio": median(speedups),
        "metrics": {"speedup_vs_baseline": median(speedups), "share_of_bare": median(shares)},
        "checks": {"labels_identical": labels_identical, "input_ids_identical": ids_identical},
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
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "median_seconds": {k: rnd(v, 3) for k, v in med.items()},
            "records_per_s": {k: rnd(n / v, 1) for k, v in med.items()},
            "tokens_per_s": {k: rnd(tokens / v, 0) for k, v in med.items()},
            "speedup_per_repeat": [rnd(x, 3) for x in speedups],
            "share_of_bare_per_repeat": [rnd(x, 3) for x in shares],
            # the most any path that tokenises every full text once can gain over the baseline:
            "bare_speedup_vs_baseline": rnd(median(ceilings), 3),
            "kit_profile": profile,
            "what": {
                "baseline": "stanford_alpaca preprocess: one tokenizer call per example for source+target, "
                "then one per source, return_tensors='pt', padding='longest'; mask len(source)",
                "kit": "sft.tokenize_records: datasets.map, batched; segments tokenised apart in one call per "
                "batch; EOS id appended; labels -100 on the prompt",
                "bare": "one batched tokenizer call on the rendered full texts (no masks, no labels)",
            },
        },
    }


def row(c: dict) -> list[str] | None:
    """case · what · kit · baseline · result · goal · check · met (a finished run; else the harness's row)"""
    if c["status"] != "ok":
        return None
    raw, m = c["raw"], c["metrics"]
    rps = raw["records_per_s"]
    return [
        c["id"],
        f"preprocess {raw['records']:,} alpaca-format records (template + tokenise + mask), records/s",
        fmt_n(rps["kit"]),
        f"{fmt_n(rps['baseline'])} stanford · {fmt_n(rps['bare'])} bare call",
        f"{fmt_x(m['speedup_vs_baseline'])} stanford · {fmt_pct(m['share_of_bare'], 0)} of bare "
        f"(bare: {fmt_x(raw['bare_speedup_vs_baseline'])} stanford)",
        CASE.goal_cell,
        f"labels identical: {yes(c['checks']['labels_identical'])}",
        verdict(c),
    ]
