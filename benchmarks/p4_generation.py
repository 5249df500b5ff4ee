"""P4: Z-Bench generation (prompts spread over the 311, tiny LLaMA, greedy, 32 new tokens): ``TransformersRunner``
batches, length-sorted, left-padded, against one prompt at a time; the outputs must be identical."""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from llm4academic.generate import GenParams, fit_prompt, length_batches, prompt_ids, zbench_record
from llm4academic.models import model_card
from llm4academic.runners import TransformersRunner
from llm4academic.sft import framing
from llm4academic.zbench import load_zbench

from .common import Case, Context, Goal, Sizes, fmt_n, fmt_x, median, rnd, verdict, yes

CASE = Case(
    "P4",
    "generation",
    "Z-Bench generation, batched vs one prompt at a time (tiny LLaMA, greedy)",
    (Goal("speedup_vs_one_at_a_time", ">=", 8.0, "×", "one prompt at a time"),),
)


def generation_profile(runner, batch: list[list[int]]) -> dict:
    """One batched generate call and the same prompts one at a time, under torch.profiler: where CPU time goes
    (KV-cache concatenation, mask building, attention, matmuls) and how many ops each launches."""
    out = {}
    for name, calls in (("batched", [batch]), ("one_at_a_time", [[x] for x in batch])):
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for c in calls:
                runner.run(c, [0] * len(c))
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1

        def share(*keys, events=events, total=total):
            return round(sum(e.self_cpu_time_total for e in events if e.key in keys) / total, 3)

        out[name] = {
            "prompts": len(batch),
            "cpu_ms": round(total / 1000, 1),
            "op_calls": sum(e.count for e in events),
            "share": {
                "kv_cache_cat": share("aten::cat"),
                "mask_where": share("aten::where"),
                "attention": round(
                    sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key) / total, 3
                ),
                "matmul": share("aten::mm", "aten::addmm", "aten::bmm"),
            },
        }
    return out


def run(ctx: Context, sz: Sizes) -> dict:
    mp, tok = ctx.model_params(), ctx.tokenizer
    gen = GenParams(max_new_tokens=32)  # the kit's default batch size (16); the default study's 32 new tokens
    runner = TransformersRunner(mp, tok, False, gen, device="cpu")
    template = model_card(mp).template
    zb = load_zbench()
    n = min(sz.p4_prompts, len(zb))
    picks = sorted({round(i * (len(zb) - 1) / max(n - 1, 1)) for i in range(n)})  # spread over all three splits
    limit = runner.context - gen.max_new_tokens if runner.context else None
    head = len(framing(tok).prefix)
    encoded = [
        fit_prompt(prompt_ids(zbench_record(zb["prompt"].iloc[i]), tok, template, False), limit, head) for i in picks
    ]
    ids = [e for e, _ in encoded]
    batches = length_batches([len(x) for x in ids], gen.batch_size)
    runner.run([ids[0]], [0])  # warm-up

    per_batch: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}

    def batched():
        out = [None] * len(ids)
        per_batch["batched"].clear()
        for bt in batches:
            t0 = time.perf_counter()
            for j, o in zip(bt, runner.run([ids[j] for j in bt], [0] * len(bt)), strict=True):
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
    profiled = generation_profile(runner, [ids[j] for j in batches[0]]) if sz.profile else None
    reference = results["one_at_a_time"][0]
    identical = all(o == reference for runs in results.values() for o in runs)
    new_tokens = sum(len(x) for x, _ in reference)
    speedups = [s / b for s, b in zip(times["one_at_a_time"], times["batched"], strict=True)]
    med = {k: median(v) for k, v in times.items()}
    return {
        "ratio": median(speedups),
        "metrics": {"speedup_vs_one_at_a_time": median(speedups)},
        "checks": {"outputs_identical": identical},
        "repeats": sz.p4_repeats,
        "raw": {
            "model": "tiny:llama",
            "device": "cpu",
            "decoding": "greedy",
            "max_new_tokens": gen.max_new_tokens,
            "batch_size": gen.batch_size,
            "batches": len(batches),
            "prompts": len(ids),
            "prompt_rows": "evenly spaced over Z-Bench's 311 prompts",
            "prompt_tokens": sum(map(len, ids)),
            "prompts_truncated": sum(t for _, t in encoded),
            "new_tokens": new_tokens,
            "finished_at_eos": sum(f == "eos" for _, f in reference),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "prompts_per_s": {k: rnd(len(ids) / v, 2) for k, v in med.items()},
            "new_tokens_per_s": {k: rnd(new_tokens / v, 1) for k, v in med.items()},
            "speedup_per_repeat": [rnd(x, 3) for x in speedups],
            # last repeat, batch by batch (longest prompts first): where batching gains less
            "per_batch": [
                {
                    "prompt_tokens_max": max(len(ids[j]) for j in bt),
                    "prompt_tokens_min": min(len(ids[j]) for j in bt),
                    "prompts": len(bt),
                    "batched_s": rnd(b, 3),
                    "one_at_a_time_s": rnd(s, 3),
                    "speedup": rnd(s / b, 2),
                }
                for bt, b, s in zip(batches, per_batch["batched"], per_batch["one_at_a_time"], strict=True)
            ],
            "profile_first_batch": profiled,
        },
    }


def row(c: dict) -> list[str] | None:
    if c["status"] != "ok":
        return None
    raw = c["raw"]
    pps, pb = raw["prompts_per_s"], raw["per_batch"]
    by_batch = (
        f" (by batch: {fmt_x(pb[0]['speedup'], 1)} for the longest prompts, "
        f"{fmt_x(pb[-1]['speedup'], 1)} for the shortest)"
        if len(pb) > 1
        else ""
    )
    return [
        c["id"],
        f"generation, {raw['prompts']} Z-Bench prompts, tiny LLaMA, greedy, "
        f"{raw['max_new_tokens']} new tokens: prompts/s",
        f"{fmt_n(pps['batched'], 1)} batched ({raw['batch_size']})",
        f"{fmt_n(pps['one_at_a_time'], 1)} one at a time",
        fmt_x(c["ratio"]) + by_batch,
        CASE.goal_cell,
        f"outputs identical: {yes(c['checks']['outputs_identical'])}",
        verdict(c),
    ]
