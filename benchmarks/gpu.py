"""P5: full fine-tuning throughput and MFU of a ~1B LLaMA-architecture model on GPU, the kit's way.

What runs: a LLaMA config of about 1B parameters (hidden 2048, 16 layers, 16 heads, intermediate 5504, vocab 32000),
randomly initialised from config (nothing downloaded); FSDP2 (``torch.distributed.fsdp.fully_shard`` on every
decoder layer and the root, full shard; one GPU works, so does ``torchrun --nproc-per-node N``); bf16 compute with fp32
master weights and fp32 gradient reduction; AdamW; the kit's SFT data path on the shipped instruction samples
(``sft.tokenize_records`` with the alpaca template, then ``packing.pack`` into rows of ``--seq-len``) and its
``PackedCollator`` — flash-attention's variable-length path when ``flash_attn`` is installed, else SDPA with the
block-diagonal mask. A few warm-up steps, then ``--steps`` timed ones. Prints one JSON object on stdout.

MFU = achieved model FLOPs / the GPU's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312; or
``--peak-tflops``). Model FLOPs per real token = 6 · N (N = parameters that do matmuls: all but the input embedding)
+ 12 · layers · hidden · s, with s = Σ n² / Σ n over the packed examples' lengths n (attention within each example
only, forward + backward, counted without the causal half as PaLM and torchtitan do). Padding and the attention a
dense mask computes across examples are not counted: they are waste, not work.

``--dry-run`` runs the same code on CPU (gloo, FSDP2 on a CPU mesh) with a scaled-down config, float32 and a couple of
steps, and prints the same keys with ``"dry_run": true`` (MFU only with ``--peak-tflops``): a test exercises it, so
the script is known to work before a GPU is at hand.

    python benchmarks/gpu.py                    # one GPU
    torchrun --nproc-per-node 8 benchmarks/gpu.py
    python benchmarks/gpu.py --dry-run          # CPU, seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import socket
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python benchmarks/gpu.py, torchrun): the checkout's `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_MFU = 0.40
FULL = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "intermediate_size": 5504,
    "vocab_size": 32000,
}
DRY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 172}
# dense bf16 peak per GPU, most specific name first (H100 PCIe and NVL are slower than SXM)
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
)
SAMPLES = (
    "instruct/alpaca/alpaca_data.first1825.json",
    "instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json",
    "instruct/belle/dev1K.json",
)


def log(msg: str) -> None:
    print(f"[gpu.py] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, scaled-down config, float32, a couple of steps")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 30; dry run 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; dry run 1)")
    p.add_argument("--seq-len", type=int, default=None, help="packed row length (default 2048; dry run 256)")
    p.add_argument("--batch-size", type=int, default=None, help="packed rows per GPU per step (default 8; dry 2)")
    p.add_argument(
        "--attn",
        default="auto",
        choices=("auto", "sdpa", "flash_attention_2", "eager"),
        help="auto: flash_attention_2 when flash_attn is installed (GPU), else sdpa",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per device (default: by name)")
    p.add_argument("--compile", action="store_true", help="torch.compile every decoder layer")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON object to this file")
    a = p.parse_args(argv)
    dry = a.dry_run
    a.steps = a.steps if a.steps is not None else (2 if dry else 30)
    a.warmup = a.warmup if a.warmup is not None else (1 if dry else 5)
    a.seq_len = a.seq_len if a.seq_len is not None else (256 if dry else 2048)
    a.batch_size = a.batch_size if a.batch_size is not None else (2 if dry else 8)
    for name in ("steps", "seq_len", "batch_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if a.warmup < 0:
        p.error("--warmup must be ≥ 0")
    return a


def peak_tflops(device_name: str | None, given: float | None) -> float | None:
    if given is not None:
        return given
    if device_name is None:
        return None
    return next((v for k, v in PEAK_TFLOPS if k in device_name), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(cuda: bool):
    """A process group: torchrun's when launched by it, else a world of one on this machine."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def rss_hwm_bytes() -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def packed_rows(seq_len: int, needed: int, seed: int) -> tuple[list[dict], dict]:
    """The kit's SFT data: shipped samples → alpaca template, masked labels, EOS id → packed rows of seq_len."""
    import datasets

    from llm4academic import models, packing, sft
    from llm4academic.base import RESOURCES_DIR
    from llm4academic.config import ModelParams
    from llm4academic.data.formats import load_file

    datasets.disable_progress_bars()
    tok = models.load_tokenizer(ModelParams(name="tiny-llama", path="tiny:llama"))  # offline, built on first use
    parts = [load_file(RESOURCES_DIR / rel, source=rel.split("/")[1], on_invalid="skip")[0] for rel in SAMPLES]
    records = datasets.concatenate_datasets(parts).shuffle(seed=seed)
    enough = needed * seq_len // 100 + 64  # records average ~240 tokens: enough for `needed` rows, with room
    records = records.select(range(min(len(records), enough)))
    tokenized, _ = sft.tokenize_records(records, tok, "alpaca", seq_len)
    packed, report = packing.pack(tokenized, seq_len)
    rows = packed.to_list()
    if not rows:
        raise SystemExit("no packed rows: the samples did not tokenise")
    reps = math.ceil(needed / len(rows))
    return (rows * reps)[: max(needed, len(rows))], {
        "efficiency": report.efficiency,
        "rows": report.rows,
        "examples": report.examples,
        "tokenizer_vocab": len(tok),
        "pad_token_id": tok.pad_token_id,
    }


def build_model(shape: dict, seq_len: int, attn: str, seed: int, device):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        num_key_value_heads=shape["num_attention_heads"],
        max_position_embeddings=max(4096, seq_len),
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **shape,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    return model


def shard(model, device_type: str, world: int, bf16: bool, ac: bool, compile_layers: bool):
    """FSDP2: every decoder layer its own unit, then the root; bf16 params in compute, fp32 reduce."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (world,))
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    layers = model.model.layers
    for i, layer in enumerate(layers):
        if ac:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

            layer = checkpoint_wrapper(layer)
        if compile_layers:
            layer = torch.compile(layer)
        layers[i] = layer
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    return model


def flops_per_token(matmul_params: int, layers: int, hidden: int, seq_lens: list[int]) -> float:
    n = sum(seq_lens)
    s_eff = sum(x * x for x in seq_lens) / n if n else 0.0
    return 6 * matmul_params + 12 * layers * hidden * s_eff


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("gpu.py: no CUDA device here; run with --dry-run for the CPU check")
    from benchmarks.machine import cpu_model
    from llm4academic import packing

    started = time.perf_counter()
    rank, world, local_rank = init_distributed(cuda)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    device_name = torch.cuda.get_device_name(device) if cuda else (cpu_model() or platform.machine())
    bf16 = cuda
    attn = args.attn
    if attn == "auto":
        import importlib.util

        attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    per_rank = args.batch_size * (args.warmup + args.steps)
    rows, data_info = packed_rows(args.seq_len, per_rank * world, args.seed)
    mine = rows[rank::world]
    shape = dict(DRY if args.dry_run else FULL)
    if args.dry_run:  # the tiny tokenizer's vocabulary: the same data, a smaller output layer
        shape["vocab_size"] = data_info["tokenizer_vocab"]
    if rank == 0:
        log(
            f"{len(rows)} packed rows of {args.seq_len} (packing efficiency {data_info['efficiency']:.3f}); "
            f"model {shape}; {attn}; {'bf16' if bf16 else 'fp32'}; world {world}; device {device_name}"
        )

    model = build_model(shape, args.seq_len, attn, args.seed, device)
    n_params = sum(p.numel() for p in model.parameters())
    matmul_params = n_params - model.get_input_embeddings().weight.numel()
    model = shard(model, device.type, world, bf16, args.activation_checkpointing, args.compile)
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    dtensors = all(hasattr(p, "to_local") for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=cuda)
    collator = packing.PackedCollator(
        data_info["pad_token_id"], attn_implementation=attn, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    model.train()

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses, times, tokens, flops = [], [], [], []
    for step in range(args.warmup + args.steps):
        feats = mine[step * args.batch_size : (step + 1) * args.batch_size]
        batch = collator(feats)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        seq_lens = [n for f in feats for n in f["seq_lens"]]
        sync()
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        spent = time.perf_counter() - t0
        value = float(loss.detach().float())
        losses.append(value)
        if step >= args.warmup:
            times.append(spent)
            tokens.append(sum(seq_lens))
            flops.append(
                sum(seq_lens)
                * flops_per_token(matmul_params, shape["num_hidden_layers"], shape["hidden_size"], seq_lens)
            )
        if rank == 0:
            log(
                f"step {step + 1}/{args.warmup + args.steps}{' (warm-up)' if step < args.warmup else ''}: "
                f"loss {value:.4f}, {spent:.3f} s, {sum(seq_lens)} real tokens"
            )

    total_time = sum(times)
    tps = sum(tokens) / total_time if total_time else None
    achieved = sum(flops) / total_time if total_time else None
    peak = peak_tflops(device_name if cuda else None, args.peak_tflops)
    mfu = achieved / (peak * 1e12) if achieved and peak else None
    mfu_6n = 6 * matmul_params * tps / (peak * 1e12) if tps and peak else None
    if cuda:
        peak_mem = torch.cuda.max_memory_allocated(device)
        peak_reserved = torch.cuda.max_memory_reserved(device)
        mem_source = "torch.cuda.max_memory_allocated"
    else:
        peak_mem, peak_reserved, mem_source = rss_hwm_bytes(), None, "process peak RSS (VmHWM)"
    result = {
        "benchmark": "P5 GPU full fine-tuning throughput",
        "dry_run": bool(args.dry_run),
        "device": device.type,
        "device_name": device_name,
        "world_size": world,
        "fsdp": {
            "api": "torch.distributed.fsdp.fully_shard (FSDP2)",
            "units": shape["num_hidden_layers"] + 1,
            "dtensor_parameters": dtensors,
            "parameters": n_params,
            "local_parameters_rank0": local,
            "reshard_after_forward": True,
        },
        "dtype": "bfloat16 compute, float32 master weights and reduction" if bf16 else "float32",
        "attn_implementation": attn,
        "packing": True,
        "compile": args.compile,
        "activation_checkpointing": args.activation_checkpointing,
        "model": {
            "architecture": "LlamaForCausalLM (random init from config)",
            **shape,
            "parameters": n_params,
            "matmul_parameters": matmul_params,
        },
        "seq_len": args.seq_len,
        "batch_size_per_gpu": args.batch_size,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "packing_efficiency": data_info["efficiency"],
        "real_tokens_per_step_per_gpu": statistics.mean(tokens) if tokens else None,
        "step_time_s": {"median": statistics.median(times) if times else None, "all": [round(t, 4) for t in times]},
        "tokens_per_s_per_gpu": tps,
        "flops_per_token": sum(flops) / sum(tokens) if tokens else None,
        "achieved_tflops_per_gpu": achieved / 1e12 if achieved else None,
        "peak_tflops": peak,
        "mfu": mfu,
        "mfu_6n": mfu_6n,
        "goal": {"metric": "mfu", "op": ">=", "target": GOAL_MFU, "text": f"≥ {GOAL_MFU:.0%} MFU on one H100"},
        "passed": (mfu >= GOAL_MFU) if (mfu is not None and not args.dry_run) else None,
        "peak_memory_bytes": peak_mem,
        "peak_memory_gib": peak_mem / 2**30 if peak_mem else None,
        "peak_memory_reserved_gib": peak_reserved / 2**30 if peak_reserved else None,
        "peak_memory_source": mem_source,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses_finite": all(math.isfinite(x) for x in losses),
        "versions": {p: _version(p) for p in ("torch", "transformers", "flash_attn")},
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
    }
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        text = json.dumps(result, indent=2)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(text + "\n")
        print(text, flush=True)
    dist.destroy_process_group()
    return result


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
