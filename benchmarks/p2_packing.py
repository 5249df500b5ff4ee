"""P2: real / processed tokens of the default mix (params/smoke.yaml, the tiny LLaMA's tokens): ``sft.pack`` rows
against stanford's random batches padded to their longest member, at the same token budget per step; dropped and
truncated tokens counted."""

from __future__ import annotations

import statistics

from llm4academic.packing import length_grouped_batches, random_batches, token_efficiency

from .common import SEED, Case, Context, Goal, Sizes, fmt_pct, fmt_x, limit, matched_batch_size, median, rnd, verdict

CASE = Case(
    "P2",
    "token_efficiency",
    "real / processed tokens, packing vs stanford's random padded batches",
    (Goal("packed_efficiency", ">=", 0.97, "%", "real tokens when packed"),),
)


def run(ctx: Context, sz: Sizes) -> dict:
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
    grouped = [
        token_efficiency([[lengths[i] for i in x] for x in length_grouped_batches(lengths, b, s)]) for s in seeds
    ]
    collated = [
        token_efficiency([[rows[i] for i in x] for x in random_batches(len(rows), m["batch_size"], s)]) for s in seeds
    ]
    pack = m["pack"]
    eff_packed = pack.efficiency
    eff_padded = median(at_budget)
    truncated = m["untruncated_tokens"] - m["tokenize"].tokens
    fewest_rows = -(-pack.tokens // m["max_length"])  # no packing can use fewer rows than this
    perfect = pack.tokens / (fewest_rows * m["max_length"]) if pack.tokens else None
    return {
        "ratio": eff_packed / eff_padded if eff_padded else None,
        "value": eff_packed,
        "limit": limit(
            perfect, "every row full", "packed tokens / (⌈tokens / max_length⌉ rows × max_length)", of="value", unit="%"
        ),
        "metrics": {"packed_efficiency": eff_packed, "padded_efficiency": eff_padded},
        "checks": {"same_tokens": pack.tokens + pack.dropped_tokens == sum(lengths)},
        "repeats": len(seeds),
        "raw": {
            "params": "params/smoke.yaml",
            "model": "tiny-llama",
            "template": m["template"],
            "records": m["records"],
            "examples": len(lengths),
            "tokens": sum(lengths),
            "max_length": m["max_length"],
            "mean_example_tokens": rnd(statistics.mean(lengths), 1),
            "token_budget_per_step": budget,
            "packed": {
                "rows": pack.rows,
                "rows_per_step": m["batch_size"],
                "processed_tokens": pack.processed_tokens,
                "efficiency": rnd(eff_packed),
                "efficiency_as_collated": rnd(median(collated)),
                "fewest_rows_possible": fewest_rows,
                "efficiency_every_row_full": rnd(perfect),
                "dropped_examples": pack.dropped_examples,
                "dropped_tokens": pack.dropped_tokens,
            },
            "padded": {
                "batch_size_at_budget": b,
                "mean_processed_tokens_per_step": rnd(processed[b], 1),
                "efficiency": rnd(eff_padded),
                "efficiency_per_seed": [rnd(x) for x in at_budget],
                "dropped_tokens": 0,
                f"efficiency_batch_size_{m['batch_size']}": rnd(median(at_study)),
                "efficiency_length_grouped": rnd(median(grouped)),
            },
            "truncated_records": m["tokenize"].truncated,
            "truncated_tokens": truncated,
            "dropped_records_no_trainable_token": m["tokenize"].dropped,
            "seeds": seeds,
        },
    }


def row(c: dict) -> list[str] | None:
    if c["status"] != "ok":
        return None
    raw = c["raw"]
    pk, pd = raw["packed"], raw["padded"]
    return [
        c["id"],
        f"token efficiency of the default mix ({raw['examples']:,} examples), real / processed tokens, "
        f"{raw['token_budget_per_step']:,} tokens per step",
        f"{fmt_pct(pk['efficiency'])} packed",
        f"{fmt_pct(pd['efficiency'])} random padded batches of {pd['batch_size_at_budget']}",
        f"{fmt_x(c['ratio'])}; dropped tokens {pk['dropped_tokens']} packed, {pd['dropped_tokens']} padded "
        f"({raw['truncated_tokens']:,} cut at {raw['max_length']} in both)",
        CASE.goal_cell,
        "",
        verdict(c),
    ]
