"""P4: Z-Bench generation (all 311 prompts in the full run — what ``evaluate`` answers —, an even spread of them in
``--quick``; tiny LLaMA, greedy, 32 new tokens): the kit's batches
(``generate.length_batches``: near-equal lengths, variable sizes within the cache of ``batch_size`` rows of the
longest prompt) through ``TransformersRunner`` (its own loop: length-bucketed prefill, preallocated cache), against
one prompt at a time through plain ``model.generate`` (stanford_alpaca's way); the outputs must be identical. Also
timed in the same repeats: the kit's path before (``generate`` on fixed batches of 16, left-padded), the batched
run's prompt pass alone (the limit: the batched run if decoding cost nothing beyond reading the prompts) and the
batched run on one thread. Every path runs on the kit's CPU inference threads (``threads.cpu_threads``: every usable
core), the baseline too, except that last one: what the cores give batching, measured in the same run."""

from __future__ import annotations

import gc
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from llm4academic.generate import GenParams, fit_prompt, length_batches, prompt_ids, zbench_record
from llm4academic.models import model_card
from llm4academic.runners import TransformersRunner, _finish
from llm4academic.sft import framing
from llm4academic.threads import ENV, cpu_threads
from llm4academic.zbench import load_zbench

from .common import Case, Context, Goal, Sizes, fmt_n, fmt_x, limit, median, rnd, verdict, yes

CASE = Case(
    "P4",
    "generation",
    "Z-Bench generation, batched vs one prompt at a time (tiny LLaMA, greedy)",
    (Goal("speedup_vs_one_at_a_time", ">=", 8.0, "×", "one prompt at a time"),),
)


def one_at_a_time(runner, ids: list[int]) -> tuple[list[int], str]:
    """The baseline: plain ``model.generate`` on one unpadded prompt (the runner's generation settings)."""
    out = runner.model.generate(input_ids=torch.tensor([ids], device=runner.device), generation_config=runner.config)
    return _finish(out[0, len(ids) :].tolist(), runner.eos)


def generation_profile(runner, batch: list[list[int]]) -> dict:
    """One batch through the runner and the same prompts one at a time through ``generate``, under torch.profiler:
    where CPU time goes (KV-cache concatenation, mask building, attention, matmuls) and how many ops each launches."""
    out = {}
    for name, fn in (
        ("batched", lambda: runner.run(batch, [0] * len(batch))),
        ("one_at_a_time", lambda: [one_at_a_time(runner, x) for x in batch]),
    ):
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
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
    prompt_pass = TransformersRunner(mp, tok, False, GenParams(max_new_tokens=1), device="cpu")
    template = model_card(mp).template
    zb = load_zbench()
    n = min(sz.p4_prompts, len(zb))
    picks = sorted({round(i * (len(zb) - 1) / max(n - 1, 1)) for i in range(n)})  # spread over all three splits
    limit_ids = runner.context - gen.max_new_tokens if runner.context else None
    head = len(framing(tok).prefix)
    encoded = [
        fit_prompt(prompt_ids(zbench_record(zb["prompt"].iloc[i]), tok, template, False), limit_ids, head)
        for i in picks
    ]
    ids = [e for e, _ in encoded]
    lengths = [len(x) for x in ids]
    batches = length_batches(lengths, gen.batch_size, gen.max_new_tokens)  # what generate_answers uses
    fixed = [sorted(range(len(ids)), key=lambda i: (-lengths[i], i))[k : k + 16] for k in range(0, len(ids), 16)]

    def single(batch: list[list[int]], seeds: list[int]) -> list[tuple[list[int], str]]:
        return [one_at_a_time(runner, x) for x in batch]

    def single_one_thread(batch: list[list[int]], seeds: list[int]) -> list[tuple[list[int], str]]:
        """The baseline on one torch thread: the ratio is taken against the faster of it and the baseline on the
        kit's threads, repeat by repeat, so that the threads never handicap the baseline."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return single(batch, seeds)
        finally:
            torch.set_num_threads(before)

    def batched_one_thread(batch: list[list[int]], seeds: list[int]) -> list[tuple[list[int], str]]:
        """The kit's batched path with its CPU threads set to one (what the thread count gains, in the same run)."""
        saved = os.environ.get(ENV)
        os.environ[ENV] = "1"
        try:
            return runner.run(batch, seeds)
        finally:
            if saved is None:
                del os.environ[ENV]
            else:
                os.environ[ENV] = saved

    # Paths and their slots: slot i holds the length batch i (the previous path: an equal share of its fixed groups).
    # A repeat runs slot 0 of every path, then slot 1, …: paired measurements half a second apart, so a slow spell of
    # this shared machine lands on every path alike rather than on whichever ran in it.
    cut = [round(i * len(fixed) / len(batches)) for i in range(len(batches) + 1)]
    plan = {
        "batched": (runner.run, [[bt] for bt in batches]),
        "one_at_a_time": (single, [[bt] for bt in batches]),
        "before": (runner.run_generate, [fixed[a:b] for a, b in zip(cut, cut[1:], strict=False)]),  # generate, 16s
        "prompt_pass": (prompt_pass.run, [[bt] for bt in batches]),  # the limit: the prompts alone
        "batched_one_thread": (batched_one_thread, [[bt] for bt in batches]),
        "one_at_a_time_one_thread": (single_one_thread, [[bt] for bt in batches]),
    }

    def run_slot(name: str, i: int, out: list) -> None:
        fn, slots = plan[name]
        for group in slots[i]:
            for j, o in zip(group, fn([ids[j] for j in group], [0] * len(group)), strict=True):
                out[j] = o

    def timed(name: str, i: int, reps: int, out: list) -> tuple[float, float, bool]:
        """Slot ``i`` of path ``name`` run ``reps`` times back to back: mean wall and CPU seconds per pass, and
        whether every pass gave the same outputs."""
        rows = [j for group in plan[name][1][i] for j in group]
        passes = []
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(reps):
            run_slot(name, i, out)
            passes.append([out[j] for j in rows])
        wall, cpu_s = (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps
        return wall, cpu_s, all(p == passes[0] for p in passes)

    # every path on the threads the kit's CPU inference uses (threads.cpu_threads: every usable core), the baseline
    # too: the scope is opened here, around all of them
    with cpu_threads("cpu") as threads:
        warm = dict.fromkeys(plan, 0.0)
        ctx.progress(f"  P4 warm-up: every path once, {len(ids)} prompts …")
        with torch.inference_mode():  # one untimed pass of every path first: allocator, caches, first-call costs
            for i in range(len(batches)):
                for name in plan:
                    warm[name] += timed(name, i, 1, [None] * len(ids))[0]
        # equal windows: each path's slot runs as many passes as fill the one-at-a-time slot (its time: the mean)
        passes = {name: max(1, round(warm["one_at_a_time"] / t)) for name, t in warm.items()}
        times: dict[str, list[float]] = {k: [] for k in plan}
        cpu: dict[str, list[float]] = {k: [] for k in plan}
        results: dict[str, list] = {k: [] for k in plan}
        per_batch: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}  # the last repeat's, by length batch
        passes_agree = True
        for r in range(sz.p4_repeats):
            ctx.progress(f"  P4 repeat {r + 1}/{sz.p4_repeats}: {len(batches)} slots × {len(plan)} paths …")
            wall, proc = dict.fromkeys(plan, 0.0), dict.fromkeys(plan, 0.0)
            outs = {name: [None] * len(ids) for name in plan}
            for key in per_batch:
                per_batch[key].clear()
            gc.collect()
            gc.disable()  # as timeit does: no collector pauses inside the timed passes
            try:
                with torch.inference_mode():
                    for i in range(len(batches)):
                        for name in plan:
                            w, c, same = timed(name, i, passes[name], outs[name])
                            wall[name], proc[name], passes_agree = wall[name] + w, proc[name] + c, passes_agree and same
                            if name in per_batch:
                                per_batch[name].append(w)
            finally:
                gc.enable()
            for name in plan:
                times[name].append(wall[name])
                cpu[name].append(proc[name])
                results[name].append(outs[name])
        profiled = generation_profile(runner, [ids[j] for j in batches[0]]) if sz.profile else None
    reference = results["one_at_a_time"][0]
    identical = passes_agree and all(o == reference for k in plan if k != "prompt_pass" for o in results[k])
    new_tokens = sum(len(x) for x, _ in reference)

    def ratios(over: str, under: str, clock=times) -> list[float]:
        return [a / b for a, b in zip(clock[over], clock[under], strict=True)]

    # the baseline of each repeat: one at a time on whichever thread count was faster in that repeat
    times["baseline"] = [
        min(a, b) for a, b in zip(times["one_at_a_time"], times["one_at_a_time_one_thread"], strict=True)
    ]
    speedups = ratios("baseline", "batched")
    bound = median(ratios("baseline", "prompt_pass"))
    med = {k: median(v) for k, v in times.items()}
    return {
        "ratio": median(speedups),
        "limit": limit(
            bound,
            "prompt-pass bound",
            "one at a time / the batched run's prompt pass alone (max_new_tokens=1): the speedup if decoding cost "
            "nothing beyond reading the prompts",
        ),
        "metrics": {"speedup_vs_one_at_a_time": median(speedups)},
        "checks": {"outputs_identical": identical},
        "repeats": sz.p4_repeats,
        "raw": {
            "model": "tiny:llama",
            "device": "cpu",
            "torch_threads": threads,  # every timed path's (the baseline's too)
            "decoding": "greedy",
            "max_new_tokens": gen.max_new_tokens,
            "batch_size": gen.batch_size,
            "batching": "generate.length_batches: near-equal lengths, at most batch_size rows of the longest prompt's "
            "cache, prefill bucketed by runners.prefill_groups",
            "warm_up": "one untimed pass of every timed path first; the garbage collector off while timing",
            "interleaving": "by length batch: batch i of every path, then batch i + 1 (the previous path: an equal "
            "share of its fixed batches)",
            "passes_per_repeat": passes,  # each path's time per batch: the mean over these back-to-back passes
            "direct_decoding": runner.direct,
            "batches": len(batches),
            "batch_rows": [len(b) for b in batches],
            "prompts": len(ids),
            "prompt_rows": "evenly spaced over Z-Bench's 311 prompts",
            "prompt_tokens": sum(lengths),
            "prompts_truncated": sum(t for _, t in encoded),
            "new_tokens": new_tokens,
            "finished_at_eos": sum(f == "eos" for _, f in reference),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "cpu_seconds": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
            "prompts_per_s": {k: rnd(len(ids) / v, 2) for k, v in med.items()},
            "ms_per_new_token": {k: rnd(1000 * v / new_tokens, 3) for k, v in med.items() if k != "prompt_pass"},
            "speedup_per_repeat": [rnd(x, 3) for x in speedups],
            "speedup_range": [rnd(min(speedups), 3), rnd(max(speedups), 3)],
            "speedup_cpu_per_repeat": [rnd(x, 3) for x in ratios("one_at_a_time", "batched", cpu)],  # same threads
            "speedup_before_per_repeat": [rnd(x, 3) for x in ratios("baseline", "before")],
            "prompt_pass_share_of_batched": rnd(median(ratios("prompt_pass", "batched")), 3),
            # the same batches on one thread / on the kit's threads: what the idle cores give the batched path
            "thread_gain_per_repeat": [rnd(x, 3) for x in ratios("batched_one_thread", "batched")],
            "speedup_one_thread_per_repeat": [rnd(x, 3) for x in ratios("baseline", "batched_one_thread")],
            # one at a time on one thread / on the kit's threads (≈ 1: the threads neither help nor slow the baseline)
            "baseline_thread_effect_per_repeat": [
                rnd(x, 3) for x in ratios("one_at_a_time_one_thread", "one_at_a_time")
            ],
            # last repeat, batch by batch (longest prompts first): where batching gains less
            "per_batch": [
                {
                    "prompt_tokens_max": max(lengths[j] for j in bt),
                    "prompt_tokens_min": min(lengths[j] for j in bt),
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
    pps, pb, rows = raw["prompts_per_s"], raw["per_batch"], raw["batch_rows"]
    lo, hi = raw["speedup_range"]
    by_batch = (
        f"; by batch: {fmt_x(pb[0]['speedup'], 1)} for the longest prompts, {fmt_x(pb[-1]['speedup'], 1)} for the "
        "shortest"
        if len(pb) > 1
        else ""
    )
    before = median(raw["speedup_before_per_repeat"])
    one = raw.get("speedup_one_thread_per_repeat")  # absent from runs before the kit used every core
    one_cell = f"; batched on one thread: {fmt_x(median(one))}" if one else ""
    return [
        c["id"],
        f"generation, {raw['prompts']} Z-Bench prompts, tiny LLaMA, greedy, "
        f"{raw['max_new_tokens']} new tokens, {raw['torch_threads']} torch threads: prompts/s",
        f"{fmt_n(pps['batched'], 1)} batched ({len(rows)} batches of {min(rows)}–{max(rows)}, "
        f"batch_size {raw['batch_size']})",
        f"{fmt_n(pps.get('baseline', pps['one_at_a_time']), 1)} one at a time"
        + (" (the faster of one thread and the kit's, per repeat)" if "baseline" in pps else ""),
        f"{fmt_x(c['ratio'])} (repeats {fmt_x(lo)}–{fmt_x(hi)}{by_batch}{one_cell}; kit before: {fmt_x(before)})",
        CASE.goal_cell,
        f"outputs identical: {yes(c['checks']['outputs_identical'])}",
        verdict(c),
    ]
