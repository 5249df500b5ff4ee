"""P3: real tokens/s (and peak RSS) of AdamW steps on the tiny LLaMA (CPU, fp32, SDPA), packed rows as the kit's
trainer runs them (``packing.packed_collator``: per-example attention, ``PACKED_SDPA``) against the same examples in
stanford's random padded batches at the same token budget; the summed loss of the same examples must agree packed vs
padded. The limit is the token-efficiency bound (real-token fraction of the packed rows over that of the padded
batches); packed rows under a dense block-diagonal mask (the kit's path before) are timed alongside, for reference."""

from __future__ import annotations

import time

import datasets
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from llm4academic.models import load_model
from llm4academic.packing import PACKED_SDPA, PackedCollator, PaddedCollator, pack, packed_collator, random_batches

from .common import (
    SEED,
    Case,
    Context,
    Goal,
    Sizes,
    fmt_n,
    fmt_x,
    limit,
    matched_batch_size,
    median,
    rnd,
    verdict,
    yes,
)
from .machine import peak_rss_mb, reset_peak_rss, rss_mb

CASE = Case(
    "P3",
    "training_throughput",
    "real tokens/s of optimizer steps, tiny LLaMA on CPU, packed vs padded",
    (
        # #15: the token-efficiency bound (real / processed tokens, packed vs padded) is what packing can gain when a
        # step costs its processed tokens; the older fixed 1.8× depended on this mix's spread of lengths
        Goal("share_of_limit", ">=", 0.95, "%", "of the token-efficiency bound"),
    ),
)


def kit_collator(model, pad_token_id: int):
    """What the trainer builds for packed rows on CPU (it switches an SDPA model to per-example attention)."""
    return packed_collator(model, pad_token_id, dtype=torch.float32, on_cpu=True)


def dense_mask_collator(model, pad_token_id: int):
    """The kit's path before: packed rows of ``max_length`` under a dense 4D block-diagonal mask."""
    return PackedCollator(pad_token_id, attn_implementation="sdpa")


def summed_loss(model, batch: dict) -> tuple[float, int]:
    """Sum of per-token cross-entropy over the batch's labels (next-token, -100 ignored) and their count."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits.float()
    target = labels[:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return float(loss), int((target != -100).sum())


def loss_agreement(model, m: dict, b: int, n: int) -> dict:
    """The same ``n`` examples as packed rows (the trainer's collator, restarting positions) and as stanford's padded
    batches: summed loss and target count must agree."""
    order = random_batches(len(m["features"]), n, SEED)[0]
    feats = [m["features"][i] for i in order]
    packed, _ = pack(datasets.Dataset.from_list(feats), m["max_length"])
    rows = packed.to_list()
    pc, dc = kit_collator(model, m["tokenizer"].pad_token_id), PaddedCollator(m["tokenizer"])
    model.eval()
    with torch.no_grad():
        p = [summed_loss(model, pc(rows[i : i + 4])) for i in range(0, len(rows), 4)]
        d = [summed_loss(model, dc(feats[i : i + b])) for i in range(0, len(feats), b)]
    lp, np_ = sum(x for x, _ in p), sum(c for _, c in p)
    ld, nd = sum(x for x, _ in d), sum(c for _, c in d)
    rel = abs(lp - ld) / max(abs(ld), 1e-12)
    return {
        "examples": n,
        "packed_rows": len(rows),
        "summed_loss_packed": lp,
        "summed_loss_padded": ld,
        "target_tokens_packed": np_,
        "target_tokens_padded": nd,
        "relative_difference": rel,
        "tolerance": 1e-4,
        "agrees": np_ == nd and rel <= 1e-4,
    }


def attention_share(mp, batches, make_collator, pad_token_id, lr) -> dict:
    """Three optimizer steps under torch.profiler: the share of CPU time in scaled-dot-product attention (forward and
    backward) and in matrix multiplies, and the attention score positions (rows × length²) the batches asked for."""
    model = load_model(mp, dtype="float32", attn_implementation="sdpa")
    collate = make_collator(model, pad_token_id)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    shapes = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for feats in batches[:3]:
            batch = collate(feats)
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            spans = batch["cu_seq_lens_q"].diff().tolist() if "cu_seq_lens_q" in batch else None
            shapes.append((list(batch["input_ids"].shape), spans))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    attn = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return {
        "attention": round(attn / total, 3),
        "matmul": round(mm / total, 3),
        "steps": len(shapes),
        "batch_shapes": [s for s, _ in shapes],
        # score positions SDPA is asked for: rows × length² (a mask), Σ n² / 2 per example (causal, per example)
        "attention_positions": sum(
            sum(n * (n + 1) // 2 for n in spans) if spans else r * n * n for (r, n), spans in shapes
        ),
    }


def _train(mp, batches, make_collator, pad_token_id, lr, row_length) -> dict:
    """One variant's optimizer steps from a fresh model: step 0 warms up, the rest are timed."""
    rss_reset = reset_peak_rss()
    rss_before = rss_mb()
    torch.manual_seed(SEED)
    model = load_model(mp, dtype="float32", attn_implementation="sdpa")
    collate = make_collator(model, pad_token_id)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    spent, real, slots, row_slots, losses = 0.0, 0, 0, 0, []
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
            slots += batch["input_ids"].numel()  # what the model processed (flattened rows: real tokens only)
            row_slots += len(feats) * row_length if row_length else batch["input_ids"].numel()
    return {
        "seconds": spent,
        "real_tokens": real,
        "processed_tokens": slots,
        "row_slots": row_slots,  # packed: rows × max_length (the token-efficiency bound's denominator)
        "tokens_per_s": real / spent,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "peak_rss_is_per_variant": rss_reset,
        "losses": [round(x, 4) for x in losses],
    }


def _summary(rs: list[dict]) -> dict:
    real, slots = rs[0]["real_tokens"], rs[0]["processed_tokens"]
    return {
        "tokens_per_s": rnd(median(x["tokens_per_s"] for x in rs), 1),
        "tokens_per_s_per_repeat": [rnd(x["tokens_per_s"], 1) for x in rs],
        "seconds_per_repeat": [rnd(x["seconds"], 3) for x in rs],
        "real_tokens_per_repeat": real,
        "processed_tokens_per_repeat": slots,
        "real_fraction": rnd(real / slots),
        "real_fraction_of_row_slots": rnd(real / rs[0]["row_slots"]),
        "peak_rss_mb": rnd(max(x["peak_rss_mb"] or 0 for x in rs), 1),
        "peak_rss_growth_mb": rnd(max((x["peak_rss_mb"] or 0) - (x["rss_before_mb"] or 0) for x in rs), 1),
        "rss_before_mb": rnd(rs[0]["rss_before_mb"], 1),
        "peak_rss_is_per_variant": rs[0]["peak_rss_is_per_variant"],
        "losses_first_repeat": rs[0]["losses"],
    }


def run(ctx: Context, sz: Sizes) -> dict:
    m = ctx.mix()
    tok, mp = m["tokenizer"], m["model"]
    lengths = [len(f["input_ids"]) for f in m["features"]]
    b, _ = matched_batch_size(lengths, m["batch_size"] * m["max_length"], SEED)
    steps = 1 + sz.p3_steps  # one warm-up step, untimed
    rows = [[m["packed_rows"][i] for i in x] for x in random_batches(len(m["packed_rows"]), m["batch_size"], SEED)]
    padded_batches = [[m["features"][i] for i in x] for x in random_batches(len(lengths), b, SEED)]
    plan = {  # variant: batches, collator factory (model, pad id), row length (packed rows)
        "packed": (rows[:steps], kit_collator, m["max_length"]),
        "padded": (padded_batches[:steps], lambda _model, _pad: PaddedCollator(tok), None),
        "packed_dense_mask": (rows[:steps], dense_mask_collator, m["max_length"]),
    }
    lr = m["params"].train.learning_rate
    runs: dict[str, list[dict]] = {kind: [] for kind in plan}
    for r in range(sz.p3_repeats):
        for kind, (batches, make, row_length) in plan.items():
            ctx.progress(f"  P3 repeat {r + 1}/{sz.p3_repeats}: {kind}, {sz.p3_steps} steps …")
            runs[kind].append(_train(mp, batches, make, tok.pad_token_id, lr, row_length))
    speedups = [p["tokens_per_s"] / d["tokens_per_s"] for p, d in zip(runs["packed"], runs["padded"], strict=True)]
    dense = [
        p["tokens_per_s"] / d["tokens_per_s"] for p, d in zip(runs["packed_dense_mask"], runs["padded"], strict=True)
    ]
    attention = (
        {kind: attention_share(mp, batches, make, tok.pad_token_id, lr) for kind, (batches, make, _) in plan.items()}
        if sz.profile
        else None
    )
    torch.manual_seed(SEED)
    agreement = loss_agreement(load_model(mp, dtype="float32", attn_implementation="sdpa"), m, b, sz.p3_loss_examples)
    packed, padded = _summary(runs["packed"]), _summary(runs["padded"])
    # if a step cost only its row slots (packed rows × max_length, padded batches × longest), packing gains this much:
    bound = packed["real_fraction_of_row_slots"] / padded["real_fraction"]
    return {
        "ratio": median(speedups),
        "limit": limit(
            bound, "token-efficiency bound", "real-token fraction of the packed rows / of the padded batches"
        ),
        "metrics": {"speedup_vs_padded": median(speedups)},
        "checks": {"loss_agrees": agreement["agrees"]},
        "repeats": sz.p3_repeats,
        "raw": {
            "model": "tiny:llama (hidden 64, 2 layers, 4 heads; float32, sdpa)",
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "optimizer": f"AdamW lr {lr}",
            "timed_steps": sz.p3_steps,
            "warmup_steps": 1,
            "packed": {
                "rows_per_step": m["batch_size"],
                "row_length": m["max_length"],
                "collator": "packing.packed_collator (as the trainer on CPU): flattened rows, attention per example "
                f"({PACKED_SDPA})",
                **packed,
            },
            "padded": {
                "examples_per_step": b,
                "batch_size_rule": "mean processed tokens per step closest to "
                f"the packed step's {m['batch_size']}×{m['max_length']}",
                **padded,
            },
            "packed_dense_mask": {
                "collator": "PackedCollator(sdpa): rows of max_length, dense 4D block-diagonal mask (the kit before)",
                **_summary(runs["packed_dense_mask"]),
                "speedup_vs_padded": rnd(median(dense), 3),
                "speedup_per_repeat": [rnd(x, 3) for x in dense],
            },
            "speedup_per_repeat": [rnd(x, 3) for x in speedups],
            "processed_token_bound": rnd(bound, 3),
            # flattened rows process real tokens only: the bound if a step cost only its real tokens
            "real_token_bound": rnd(1 / padded["real_fraction"], 3),
            "loss_check": agreement,
            "attention_share_of_step": attention,
        },
    }


def row(c: dict) -> list[str] | None:
    if c["status"] != "ok":
        return None
    raw = c["raw"]
    pk, pd, dm = raw["packed"], raw["padded"], raw["packed_dense_mask"]
    return [
        c["id"],
        f"training, tiny LLaMA on CPU: real tokens/s over {raw['timed_steps']} AdamW steps "
        f"(peak RSS, growth during the run)",
        f"{fmt_n(pk['tokens_per_s'])} packed, {pk['rows_per_step']} rows of {pk['row_length']}, attention per "
        f"example ({fmt_n(pk['peak_rss_mb'])} MB, +{fmt_n(pk['peak_rss_growth_mb'])})",
        f"{fmt_n(pd['tokens_per_s'])} padded, batch {pd['examples_per_step']} "
        f"({fmt_n(pd['peak_rss_mb'])} MB, +{fmt_n(pd['peak_rss_growth_mb'])})",
        f"{fmt_x(c['ratio'])} (dense block-diagonal mask: {fmt_x(dm['speedup_vs_padded'])})",
        CASE.goal_cell,
        f"loss agrees: {yes(c['checks']['loss_agrees'])} (rel. diff {raw['loss_check']['relative_difference']:.1e})",
        verdict(c),
    ]
