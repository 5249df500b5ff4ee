"""``llm4academic doctor``: the GPU acceptance check, through the kit's own trainer.

On 1..N GPUs (``--gpu``) it builds a ~1B LLaMA-architecture model from config (nothing downloaded), writes a params
file for it (the shipped instruction samples, packing, FSDP2, bf16) and trains it with ``train.launch``: once
straight through, once stopped part-way (``stop_after``) and resumed. It then checks that FSDP engaged, the loss
fell, the resumed run ends where the straight one does, the final checkpoint reloads completely and both final
checkpoints give the same loss, and that the model answers a Z-Bench batch with the ``transformers`` backend (and
``vllm`` when it is installed). ``--dry-run`` does all of it on CPU with a tiny model and 2 processes on gloo.
The verdict is one JSON object. ``benchmarks/gpu.py`` (P5) reuses the model, params and launch helpers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from .base import KitError
from .config.align import HH_RLHF_SAMPLE

# ~1.1B parameters: the LLaMA-1B shape (hidden 2048, 16 layers); the dry run's is the kit's tiny size
FULL = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16, "intermediate_size": 5504}
FULL_VOCAB = 32000
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 172}
SAMPLES = (
    ("alpaca", "pkg:instruct/alpaca/alpaca_data.first1825.json"),
    ("chinese_alpaca", "pkg:instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json"),
    ("belle", "pkg:instruct/belle/dev1K.json"),
)
MODEL = "llama-1b"


def log(msg: str) -> None:
    print(f"[doctor] {msg}", file=sys.stderr, flush=True)


def build_llama(out_dir: str | Path, shape: dict, *, vocab_size: int | None = None, seed: int = 0) -> Path:
    """A LLaMA-architecture model of ``shape`` initialised from config, saved (safetensors) with the kit's tiny
    BPE tokenizer in ``out_dir``; the output layer is at least the tokenizer's size."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from .models import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer("llama")
    cfg = LlamaConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        num_key_value_heads=shape["num_attention_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_params(
    path: Path,
    model_dir: Path,
    *,
    gpu: bool,
    processes: int,
    steps: int,
    seq_len: int,
    batch_size: int,
    lr: float,
    save_steps: int,
    records: int | None = None,
    attn: str | None = None,
    seed: int = 0,
) -> Path:
    """The study the check trains: ``model_dir`` on the shipped samples, packing, FSDP2, bf16 on GPU."""
    sources = [{"name": n, "path": p, **({"max_records": records} if records else {})} for n, p in SAMPLES]
    study = {
        "name": "doctor",
        "description": "llm4academic doctor / benchmarks/gpu.py: the kit's trainer on a LLaMA built from config",
        "seed": seed,
        "data": {
            "on_invalid": "skip",
            "sources": sources,
            "clean": {"near_dedup": {"enabled": False}},
            "contamination": {"enabled": False},
        },
        "models": [{"name": MODEL, "path": str(model_dir), **({"attn_implementation": attn} if attn else {})}],
        "steps": ["train", "align"],
        "align": {  # DPO from the SFT checkpoint on shipped hh-rlhf pairs: TRL's trainer, FSDP2 on GPUs
            "sources": [{"name": "hh_rlhf", "path": HH_RLHF_SAMPLE, "max_records": 400 if gpu else 120}],
            "start": "sft",
            "max_length": seq_len,
            "max_prompt_length": seq_len * 3 // 4,
            "per_device_batch_size": batch_size,
            "gradient_accumulation_steps": 1,
            "learning_rate": lr / 10,
            "lr_scheduler": "constant",
            "warmup_ratio": 0,
            "max_steps": max(3, steps // 2),
            "mixed_precision": "bf16" if gpu else "no",
            "fsdp": {"enabled": True},
            "num_processes": processes,
            "cpu": not gpu,
            "main_process_port": free_port(),
            "save_steps": max(3, steps // 2),
            "examples": 0,
        },
        "train": {
            "models": [MODEL],
            "max_length": seq_len,
            "packing": True,
            "per_device_batch_size": batch_size,
            "gradient_accumulation_steps": 1,
            "learning_rate": lr,
            "warmup_ratio": 0,
            "lr_scheduler": "constant",
            "num_epochs": 1000,  # max_steps decides
            "max_steps": steps,
            "mixed_precision": "bf16" if gpu else "no",
            "fsdp": {"enabled": True, "version": 2},
            "num_processes": processes,
            "cpu": not gpu,
            "main_process_port": free_port(),
            "save_steps": save_steps,
            "save_total_limit": 1,
            "logging_steps": 1,
        },
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _child(call: str, args: dict, what: str, timeout: float) -> dict:
    """``call`` (an expression over ``a``, the JSON ``args``) in a fresh Python process (a parent that ran torch
    compute is no safe fork point for notebook_launcher); its output goes to stderr. Returns what the call returned."""
    code = (
        "import json, sys; from llm4academic import align, train; a = json.loads(sys.argv[1]); "
        f"r = {call}; print('RESULT=' + json.dumps(r, default=str), flush=True)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        cwd=os.getcwd(),
    )
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT="):
            result = json.loads(line[7:])
        else:
            print(line, file=sys.stderr, flush=True)
    if proc.returncode != 0 or result is None:
        raise KitError(
            f"{what} {MODEL} ({args['run_dir']}) failed with exit code {proc.returncode}; its output is above"
        )
    return result


def launch_child(params: Path, run_dir: Path, stop_after: int | None = None, timeout: float = 3600) -> dict:
    """``train.launch`` in a fresh Python process. Returns the run's summary."""
    args = {"params": str(params), "run_dir": str(run_dir), "model": MODEL, "stop_after": stop_after}
    call = "train.launch(a['params'], a['run_dir'], a['model'], stop_after=a['stop_after'])"
    return _child(call, args, "training", timeout)


def align_child(params: Path, run_dir: Path, timeout: float = 3600) -> dict:
    """``align.launch`` (DPO from the run's SFT checkpoint) in a fresh Python process; returns its summary."""
    args = {"params": str(params), "run_dir": str(run_dir), "model": MODEL}
    return _child("align.launch(a['params'], a['run_dir'], a['model'])", args, "DPO of", timeout)


def align_check(summary: dict, gpu: bool) -> dict:
    """The align step's part of the verdict: it ran every step under FSDP2 (GPU) or DDP (CPU, where TRL's trainer
    cannot shard), logged finite DPO losses, and saved a safetensors checkpoint."""
    ran = summary.get("distributed") or {}
    wanted = ("FSDP", 2) if gpu else ("MULTI_CPU", None)
    losses = [summary.get("first_loss"), summary.get("last_loss")]
    final = Path(summary.get("final") or "")
    return {
        "ok": bool(
            (ran.get("distributed_type"), ran.get("fsdp_version")) == wanted
            and summary.get("steps") == summary.get("total_steps")
            and all(x is not None and math.isfinite(x) for x in losses)
            and (final / "model.safetensors").is_file()
        ),
        "distributed": ran,
        "steps": summary.get("steps"),
        "losses": losses,
        "seconds": summary.get("train_runtime_s"),
    }


class GpuMemoryPoller:
    """Peak device memory in use while training runs in child processes (nvidia-smi, polled): a fallback when
    the trainer's metrics record none. Includes the CUDA context and the allocator's cache."""

    def __init__(self, every_s: float = 0.5):
        self.every, self.peak_mib, self._stop = every_s, None, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                used = max(float(x) for x in out.split())
                self.peak_mib = max(self.peak_mib or 0.0, used)
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(self.every)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    @property
    def peak_gb(self) -> float | None:
        return self.peak_mib * 2**20 / 1e9 if self.peak_mib else None


def recorded_peak_memory_gb(summary: dict, metrics) -> float | None:
    """Peak GPU memory if the trainer recorded it (summary or metrics), in GB."""
    for key, scale in (("peak_memory_gb", 1.0), ("peak_memory_gib", 2**30 / 1e9), ("peak_memory_bytes", 1e-9)):
        if summary.get(key):
            return float(summary[key]) * scale
        if key in metrics and metrics[key].notna().any():
            return float(metrics[key].max()) * scale
    return None


def _fixed_batch(tokenizer, device):
    texts = ["Give three tips for staying healthy.", "请用一句话介绍北京。", "What is the capital of France?"]
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch, labels


def reload_check(final_a: Path, final_b: Path, device: str, tol: float) -> dict:
    """Each final checkpoint reloads through the kit with every tensor from its file, and the straight and the
    resumed run's checkpoints give the same loss on a fixed batch."""
    import torch
    from safetensors.torch import load_file

    from .config import ModelParams
    from .models import load_model, load_tokenizer

    losses, complete = [], True
    for final in (final_a, final_b):
        mp = ModelParams(name="reloaded", path=str(final))
        model = load_model(mp, dtype="float32").to(device).eval()
        saved = {}
        for f in sorted(final.glob("*.safetensors")):
            saved.update(load_file(str(f)))
        state = model.state_dict()
        complete &= set(saved) == set(state) and all(torch.equal(state[k].cpu(), v) for k, v in saved.items())
        batch, labels = _fixed_batch(load_tokenizer(mp), device)
        with torch.no_grad():
            losses.append(float(model(**batch, labels=labels).loss))
        del model
    equal = math.isfinite(losses[0]) and math.isclose(losses[0], losses[1], rel_tol=tol)
    return {"complete": bool(complete), "loss_straight": losses[0], "loss_resumed": losses[1], "equal": equal}


def generation_check(final: Path, out_dir: Path, backend: str, device: str | None, n: int = 8) -> dict:
    from .config import ModelParams
    from .generate import generate_answers
    from .runners import GenParams
    from .zbench import load_zbench

    items = load_zbench()[["item_id", "prompt"]].head(n)
    gen = GenParams(max_new_tokens=16, batch_size=n)
    mp = ModelParams(name=f"doctor-{backend}", path=str(final))
    started = time.perf_counter()
    df, _ = generate_answers(mp, items, out_dir, gen, backend=backend, progress=False, device=device)
    ok = len(df) == n and df["answer"].map(lambda a: isinstance(a, str)).all()
    return {"ok": bool(ok), "answers": len(df), "seconds": round(time.perf_counter() - started, 2)}


def run_doctor(gpu: bool = False, dry_run: bool = False, work_dir: str | Path | None = None, keep: bool = False):
    """The acceptance check; returns the verdict (a dict). See the module docstring."""
    import torch

    if gpu == dry_run:
        raise KitError("doctor: choose --gpu (on the GPUs here) or --dry-run (CPU, tiny model, 2 processes)")
    gpus = torch.cuda.device_count() if gpu else 0
    if gpu and not gpus:
        raise KitError("doctor --gpu: no CUDA device is visible here; --dry-run runs the same check on CPU")
    work = Path(work_dir or tempfile.mkdtemp(prefix="llm4academic-doctor-"))
    work.mkdir(parents=True, exist_ok=True)
    steps, stop = (20, 10) if gpu else (8, 4)
    size = (
        {"seq_len": 2048, "batch_size": 4, "lr": 1e-4, "records": None}
        if gpu
        else {"seq_len": 128, "batch_size": 2, "lr": 1e-2, "records": 60}
    )
    started = time.perf_counter()
    try:
        log(f"building the {'~1B' if gpu else 'tiny'} LLaMA from config in {work / 'model'}")
        model_dir = build_llama(work / "model", FULL if gpu else TINY, vocab_size=FULL_VOCAB if gpu else None)
        attn = "flash_attention_2" if gpu and importlib.util.find_spec("flash_attn") else None
        params = write_params(
            work / "doctor.yaml",
            model_dir,
            gpu=gpu,
            processes=gpus or 2,
            steps=steps,
            save_steps=stop,
            attn=attn,
            **size,
        )
        straight, resumed = work / "straight", work / "resumed"
        log(f"training {steps} steps straight through (FSDP2, packing, {gpus or 2} processes)")
        with GpuMemoryPoller() as mem:
            a = launch_child(params, straight)
        log(f"training again, stopped after step {stop}, then resumed")
        launch_child(params, resumed, stop_after=stop)
        stopped_at = [p.name for p in _checkpoints(resumed)]
        b = launch_child(params, resumed)
        log("DPO (align step) from the straight run's SFT checkpoint")
        from .rundir import RunDir

        RunDir(straight).write_checkpoint_index([{"model": MODEL, "final": a["final"], "steps": a.get("steps")}])
        dpo = align_check(align_child(params, straight), gpu)
        verdict = _verdict(a, b, stopped_at, straight, resumed, work, gpu, gpus, stop, steps, mem.peak_gb, started)
        verdict["ok"] = verdict["ok"] and dpo["ok"]
        verdict["dpo_ok"] = dpo["ok"]
        verdict["details"]["align"] = dpo
        return verdict
    finally:
        if not keep and work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _checkpoints(run_dir: Path) -> list[Path]:
    from .rundir import RunDir

    return RunDir(run_dir).checkpoints(MODEL)


def _verdict(a, b, stopped_at, straight, resumed, work, gpu, gpus, stop, steps, polled_gb, started) -> dict:
    from .rundir import RunDir

    ma, mb = RunDir(straight).read_metrics(MODEL), RunDir(resumed).read_metrics(MODEL)
    tol = 2e-2 if gpu else 1e-4  # bf16 on GPU: reduction order differs between runs
    fsdp = a.get("fsdp", {})
    engaged = fsdp.get("distributed_type") == "FSDP" and fsdp.get("parameter_types") == ["DTensor"]
    engaged = engaged and fsdp.get("num_processes") == (gpus or 2) and (fsdp.get("sharded") or gpus == 1)
    losses = list(ma["loss"]) if "loss" in ma else []
    k = max(1, min(3, len(losses) // 3))
    falls = len(losses) == steps and sum(losses[-k:]) / k < sum(losses[:k]) / k - 1e-3
    steps_b = list(mb["step"]) if "step" in mb else []
    resume = {
        "stopped_at": stopped_at,
        "steps_logged": steps_b == list(range(1, steps + 1)),
        "final_loss_straight": losses[-1] if losses else None,
        "final_loss_resumed": float(mb["loss"].iloc[-1]) if len(mb) else None,
    }
    resume["exact"] = bool(
        len(stopped_at) == 1
        and stopped_at[0].endswith(f"-{stop}")
        and resume["steps_logged"]
        and b.get("steps") == steps
        and resume["final_loss_straight"] is not None
        and math.isclose(resume["final_loss_straight"], resume["final_loss_resumed"], rel_tol=tol)
    )
    device = "cuda" if gpu else "cpu"
    log("reloading both final checkpoints")
    reload = reload_check(Path(a["final"]), Path(b["final"]), device, tol)
    log("generating a Z-Bench batch (transformers backend)")
    hf = generation_check(Path(a["final"]), work / "answers-hf", "transformers", device)
    vllm = None
    if importlib.util.find_spec("vllm"):
        log("generating a Z-Bench batch (vllm backend)")
        try:
            vllm = generation_check(Path(a["final"]), work / "answers-vllm", "vllm", None)["ok"]
        except Exception as e:  # noqa: BLE001 — the verdict reports it
            log(f"vllm failed: {type(e).__name__}: {e}")
            vllm = False
    mfu = [x for x in ma.get("mfu", []) if x is not None and x == x][1:]  # past the first step's warm-up
    peak = recorded_peak_memory_gb(a, ma) or polled_gb
    verdict = {
        "fsdp_engaged": bool(engaged),
        "loss_falls": bool(falls),
        "resume_exact": resume["exact"],
        "reload_equal": bool(reload["complete"] and reload["equal"]),
        "generation_ok": hf["ok"],
        "vllm": vllm,
        "mfu": sum(mfu) / len(mfu) if mfu else None,
        "peak_memory_gb": peak,
        "gpus": gpus,
    }
    verdict["ok"] = all(verdict[k] for k in ("fsdp_engaged", "loss_falls", "resume_exact", "reload_equal")) and (
        verdict["generation_ok"] and vllm in (None, True)
    )
    verdict["details"] = {
        "dry_run": not gpu,
        "processes": gpus or 2,
        "steps": steps,
        "fsdp": fsdp,
        "losses": losses,
        "resume": resume,
        "reload": reload,
        "generation": hf,
        "tolerance": tol,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return verdict


def main(gpu: bool, dry_run: bool, out: Path | None = None, work_dir: Path | None = None) -> dict:
    """The command: the work's output on stderr, the verdict as JSON on stdout (and in ``out``)."""
    with contextlib.redirect_stdout(sys.stderr):
        verdict = run_doctor(gpu=gpu, dry_run=dry_run, work_dir=work_dir)
    text = json.dumps(verdict, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
    return verdict
