"""P3: real tokens/s (and peak RSS) of AdamW steps on the tiny LLaMA (CPU, fp32, SDPA), packed rows with the
block-diagonal mask against the same examples in stanford's random padded batches at the same token budget; the
summed loss of the same examples must agree packed vs padded."""

from __future__ import annotations

import time

import datasets
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from llm4academic.models import load_model
from llm4academic.packing import PackedCollator, PaddedCollator, pack, random_batches

from .common import SEED, Case, Context, Goal, Sizes, fmt_n, fmt_x, matched_batch_size, median, rnd, verdict, yes
from .machine import peak_rss_mb, reset_peak_rss, rss_mb

CASE = Case(
    "P3",
    "training_throughput",
    "real tokens/s of optimizer steps, tiny LLaMA on CPU, packed vs padded",
    (Goal("speedup_vs_padded", ">=", 1.8, "×", "stanford's padded batches"),),
)


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
    """The same ``n`` examples as packed rows (block-diagonal mask, restarting positions) and as stanford's padded
    batches: summed loss and target count must agree."""
    order = random_batches(len(m["features"]), n, SEED)[0]
    feats = [m["features"][i] for i in order]
    packed, _ = pack(datasets.Dataset.from_list(feats), m["max_length"])
    rows = packed.to_list()
    pc, dc = PackedCollator(m["tokenizer"].pad_token_id, attn_implementation="sdpa"), PaddedCollator(m["tokenizer"])
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


def attention_share(mp, batches, collate, lr) -> dict:
    """Three optimizer steps under torch.profiler: the share of CPU time in scaled-dot-product attention (forward and
    backward) and in matrix multiplies, and the attention score positions (rows × length²) the batches asked for."""
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
    return {
        "attention": round(attn / total, 3),
        "matmul": round(mm / total, 3),
        "steps": len(shapes),
        "batch_shapes": shapes,
        "attention_positions": sum(r * n * n for r, n in shapes),
    }


def _train(mp, batches, collate, lr) -> dict:
    """One variant's optimizer steps from a fresh model: step 0 warms up, the rest are timed."""
    rss_reset = reset_peak_rss()
    rss_before = rss_mb()
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
    return {
        "seconds": spent,
        "real_tokens": real,
        "processed_tokens": slots,
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
    plan = {
        "packed": (
            [[m["packed_rows"][i] for i in x] for x in random_batches(len(m["packed_rows"]), m["batch_size"], SEED)][
                :steps
            ],
            PackedCollator(tok.pad_token_id, attn_implementation="sdpa"),
        ),
        "padded": (
            [[m["features"][i] for i in x] for x in random_batches(len(lengths), b, SEED)][:steps],
            PaddedCollator(tok),
        ),
    }
    lr = m["params"].train.learning_rate
    runs: dict[str, list[dict]] = {"packed": [], "padded": []}
    for r in range(sz.p3_repeats):
        for kind in ("packed", "padded"):
            ctx.progress(f"  P3 repeat {r + 1}/{sz.p3_repeats}: {kind}, {sz.p3_steps} steps …")
            runs[kind].append(_train(mp, *plan[kind], lr))
    speedups = [p["tokens_per_s"] / d["tokens_per_s"] for p, d in zip(runs["packed"], runs["padded"], strict=True)]
    attention = {kind: attention_share(mp, *plan[kind], lr) for kind in plan} if sz.profile else None
    torch.manual_seed(SEED)
    agreement = loss_agreement(load_model(mp, dtype="float32", attn_implementation="sdpa"), m, b, sz.p3_loss_examples)
    packed, padded = _summary(runs["packed"]), _summary(runs["padded"])
    return {
        "ratio": median(speedups),
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
            "packed": {"rows_per_step": m["batch_size"], "row_length": m["max_length"], **packed},
            "padded": {
                "examples_per_step": b,
                "batch_size_rule": "mean processed tokens per step closest to "
                f"the packed step's {m['batch_size']}×{m['max_length']}",
                **padded,
            },
            "speedup_per_repeat": [rnd(x, 3) for x in speedups],
            # if time were proportional to processed tokens, packing could gain at most this much:
            "processed_token_bound": rnd(packed["real_fraction"] / padded["real_fraction"], 3),
            "loss_check": agreement,
            "attention_share_of_step": attention,
        },
    }


def row(c: dict) -> list[str] | None:
    if c["status"] != "ok":
        return None
    raw = c["raw"]
    pk, pd = raw["packed"], raw["padded"]
    return [
        c["id"],
        f"training, tiny LLaMA on CPU: real tokens/s over {raw['timed_steps']} AdamW steps "
        f"(peak RSS, growth during the run)",
        f"{fmt_n(pk['tokens_per_s'])} packed, {pk['rows_per_step']} rows of {pk['row_length']} "
        f"({fmt_n(pk['peak_rss_mb'])} MB, +{fmt_n(pk['peak_rss_growth_mb'])})",
        f"{fmt_n(pd['tokens_per_s'])} padded, batch {pd['examples_per_step']} "
        f"({fmt_n(pd['peak_rss_mb'])} MB, +{fmt_n(pd['peak_rss_growth_mb'])})",
        f"{fmt_x(c['ratio'])} (token bound {fmt_x(raw['processed_token_bound'])})",
        CASE.goal_cell,
        f"loss agrees: {yes(c['checks']['loss_agrees'])} (rel. diff {raw['loss_check']['relative_difference']:.1e})",
        verdict(c),
    ]
