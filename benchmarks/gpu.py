"""P5: full fine-tuning throughput and MFU of a ~1B LLaMA-architecture model on GPU, through the kit's own trainer.

What runs: a LLaMA config of about 1B parameters (hidden 2048, 16 layers, 16 heads, intermediate 5504, vocab 32000),
randomly initialised from config and written as a local model directory (nothing downloaded); a params file for it
(the shipped instruction samples, ``train.packing``, ``train.max_steps``, FSDP2, ``mixed_precision: bf16`` on GPU);
then the kit's ``train.launch`` — the very worker a study runs (its dataset building, collator, packing, FSDP2
wrapping, bf16, optimizer, metrics and checkpoints) on every GPU here (``--nproc``). The numbers are read back from
the run directory: ``metrics.jsonl`` (real tokens and seconds per optimizer step; the first ``--warmup`` steps are
not timed), the summary (parameters, FSDP), the packed dataset (example lengths). Prints one JSON object on stdout.

MFU = achieved model FLOPs / the GPU's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312; or
``--peak-tflops``). Model FLOPs per real token = 6 · N (N = parameters that do matmuls: all but the input embedding)
+ 12 · layers · hidden · s, with s = Σ n² / Σ n over the packed examples' lengths n (attention within each example
only, forward + backward, counted without the causal half as PaLM and torchtitan do). Padding and the attention a
dense mask computes across examples are not counted: they are waste, not work. The step time is the trainer's own
(data loading, logging and checkpointing included): this is what a study gets. The kit's logged ``mfu`` (6 · N
only) is reported as ``mfu_logged``.

``--dry-run`` runs the same flow on CPU (2 processes on gloo, FSDP2, float32) with a tiny config and a few steps, and
prints the same keys with ``"dry_run": true`` (MFU only with ``--peak-tflops``): a test exercises it.

    python benchmarks/gpu.py                    # every GPU here
    python benchmarks/gpu.py --nproc 1          # one GPU
    python benchmarks/gpu.py --dry-run          # CPU, under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import platform
import resource
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python benchmarks/gpu.py): the checkout's `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_MFU = 0.40
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


def log(msg: str) -> None:
    print(f"[gpu.py] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny config, float32, 2 processes, a few steps")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 30; dry run 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; dry run 1)")
    p.add_argument("--seq-len", type=int, default=None, help="packed row length (default 2048; dry run 256)")
    p.add_argument("--batch-size", type=int, default=None, help="packed rows per GPU per step (default 8; dry 2)")
    p.add_argument("--nproc", type=int, default=None, help="training processes (default: every GPU; dry run 2)")
    p.add_argument(
        "--attn",
        default="auto",
        choices=("auto", "sdpa", "flash_attention_2", "eager"),
        help="auto: flash_attention_2 when flash_attn is installed (GPU), else the kit's default",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per device (default: by name)")
    p.add_argument("--activation-checkpointing", action="store_true", help="train.fsdp.activation_checkpointing")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=None, help="model, params and run dir here (default: temp)")
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


def flops_per_token(matmul_params: int, layers: int, hidden: int, seq_lens: list[int]) -> float:
    n = sum(seq_lens)
    s_eff = sum(x * x for x in seq_lens) / n if n else 0.0
    return 6 * matmul_params + 12 * layers * hidden * s_eff


def packed_seq_lens(rd, model: str) -> tuple[list[int], dict]:
    """The packed examples' lengths of the dataset the trainer built, and its data stats."""
    import datasets

    ds = datasets.load_from_disk(str(rd.dataset(model)))
    lens = [n for row in ds.select_columns(["seq_lens"]).to_dict()["seq_lens"] for n in row]
    stats = json.loads(rd.data_stats(model).read_text()) if rd.data_stats(model).is_file() else {}
    return lens, stats


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="llm4academic-p5-"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON object only
            result = measure(args, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text, flush=True)
    return result


def measure(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from benchmarks.machine import cpu_model
    from llm4academic import doctor
    from llm4academic.rundir import RunDir

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("gpu.py: no CUDA device here; run with --dry-run for the CPU check")
    started = time.perf_counter()
    world = args.nproc or (torch.cuda.device_count() if cuda else 2)
    attn = args.attn
    if attn == "auto":
        import importlib.util

        attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else None
    work.mkdir(parents=True, exist_ok=True)
    shape = dict(doctor.TINY if args.dry_run else doctor.FULL)
    log(f"building a LLaMA {shape} from config in {work / 'model'}")
    model_dir = doctor.build_llama(work / "model", shape, vocab_size=None if args.dry_run else doctor.FULL_VOCAB)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    total = args.warmup + args.steps
    params = doctor.write_params(
        work / "p5.yaml",
        model_dir,
        gpu=cuda,
        processes=world,
        steps=total,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        save_steps=10**6,  # only the final checkpoint
        attn=attn,
        seed=args.seed,
        records=200 if args.dry_run else None,
    )
    if args.activation_checkpointing:
        import yaml

        study = yaml.safe_load(params.read_text())
        study["train"]["fsdp"]["activation_checkpointing"] = True
        params.write_text(yaml.safe_dump(study, sort_keys=False, allow_unicode=True))
    run_dir = work / "run"
    log(f"train.launch: {total} steps ({args.warmup} warm-up), {world} process(es), {'bf16' if cuda else 'fp32'}")
    with doctor.GpuMemoryPoller() as mem:
        summary = doctor.launch_child(params, run_dir)

    rd = RunDir(run_dir)
    m = rd.read_metrics(doctor.MODEL)
    timed = m[m["step"] > args.warmup]
    seconds, tokens = float(timed["seconds"].sum()), float(timed["tokens"].sum())
    tps = tokens / seconds / world if seconds else None  # logged tokens are summed over the ranks
    seq_lens, stats = packed_seq_lens(rd, doctor.MODEL)
    n_params = summary["fsdp"].get("global_parameters") or summary["fsdp"]["parameters"]
    matmul_params = n_params - vocab * shape["hidden_size"]
    fpt = flops_per_token(matmul_params, shape["num_hidden_layers"], shape["hidden_size"], seq_lens)
    device_name = torch.cuda.get_device_name(0) if cuda else (cpu_model() or platform.machine())
    peak = peak_tflops(device_name if cuda else None, args.peak_tflops)
    achieved = tps * fpt if tps else None
    mfu = achieved / (peak * 1e12) if achieved and peak else None
    logged = [x for x in timed["mfu"] if x is not None and x == x] if "mfu" in timed else []
    peak_gb = doctor.recorded_peak_memory_gb(summary, m)
    if peak_gb is not None:
        mem_source = "recorded by the trainer"
    elif cuda and mem.peak_gb:
        peak_gb, mem_source = mem.peak_gb, "nvidia-smi memory.used, polled (context and allocator cache included)"
    elif not cuda:
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        mem_source = "largest training process's peak RSS (getrusage RUSAGE_CHILDREN)"
    else:
        mem_source = "not recorded"
    losses = list(m["loss"])
    pack = stats.get("pack", {})
    result = {
        "benchmark": "P5 GPU full fine-tuning throughput (the kit's trainer)",
        "trainer": "llm4academic.train.launch → train.worker",
        "dry_run": bool(args.dry_run),
        "device": "cuda" if cuda else "cpu",
        "device_name": device_name,
        "world_size": world,
        "fsdp": summary["fsdp"],
        "dtype": "bf16 mixed precision (train.mixed_precision)" if cuda else "float32",
        "attn_implementation": attn or "the kit's default",
        "packing": bool(stats.get("packing", True)),
        "activation_checkpointing": args.activation_checkpointing,
        "model": {"architecture": "LlamaForCausalLM (random init from config)", **shape, "vocab_size": vocab}
        | {"parameters": n_params, "matmul_parameters": matmul_params},
        "seq_len": args.seq_len,
        "batch_size_per_gpu": args.batch_size,
        "warmup_steps": args.warmup,
        "steps": len(timed),
        "packing_efficiency": pack.get("efficiency"),
        "real_tokens_per_step_per_gpu": tokens / len(timed) / world if len(timed) else None,
        "step_time_s": {
            "median": float(timed["seconds"].median()) if len(timed) else None,
            "all": [round(float(t), 4) for t in timed["seconds"]],
        },
        "tokens_per_s_per_gpu": tps,
        "flops_per_token": fpt,
        "achieved_tflops_per_gpu": achieved / 1e12 if achieved else None,
        "peak_tflops": peak,
        "mfu": mfu,
        "mfu_6n": 6 * matmul_params * tps / (peak * 1e12) if tps and peak else None,
        "mfu_logged": sum(logged) / len(logged) if logged else None,
        "goal": {"metric": "mfu", "op": ">=", "target": GOAL_MFU, "text": f"≥ {GOAL_MFU:.0%} MFU on one H100"},
        "passed": (mfu >= GOAL_MFU) if (mfu is not None and not args.dry_run) else None,
        "peak_memory_gb": peak_gb,
        "peak_memory_gib": peak_gb * 1e9 / 2**30 if peak_gb else None,
        "peak_memory_source": mem_source,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "work_dir": str(args.work_dir) if args.work_dir else None,
        "versions": {p: _version(p) for p in ("torch", "transformers", "accelerate", "flash_attn")},
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
    }
    return result


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
