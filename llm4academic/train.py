"""The training worker: the stanford_alpaca recipe under accelerate + FSDP, one worker for every launcher.

``launch(params_path, run_dir, model)`` wraps ``notebook_launcher(worker, …)`` (the notebook path);
``llm4academic train PARAMS`` runs the same ``worker`` under ``accelerate launch`` / torchrun / multi-node.

Per model, in the run directory's model folder (``RunDir.model_dir``): the tokenised and packed ``dataset`` (built
once in the launching process), its ``data_stats``, ``metrics`` + TensorBoard, sharded resumable checkpoints, the
consolidated ``final`` checkpoint (safetensors) and a ``summary``. The accelerator, the FSDP proof and the checkpoint
mechanics live in ``fsdp.py``; metrics, the progress line and the run fingerprint (checked before any worker starts:
resume only the same run, reuse a finished one) in ``train_log.py``. One process runs in a child process too.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pandas as pd
import torch
from accelerate import PartialState, notebook_launcher
from accelerate.utils import set_seed
from peft import LoraConfig, TaskType, get_peft_model
from torch.utils.data import DataLoader
from transformers import get_scheduler
from transformers.utils import logging as hf_logging

from . import data, models, packing, sft
from .base import KitError, atomic_write, exit_with_parent, setup_environment
from .config import ModelParams, StudyParams, load_params
from .data.formats import RECORD_FEATURES
from .fsdp import (
    fsdp_report,
    global_parameters,
    load_checkpoint,
    make_accelerator,
    save_checkpoint,
    save_final,
    trains_on_cpu,
)
from .rundir import RunDir
from .train_log import MetricsLog, prepare_run

# --------------------------------------------------------------------------------------------- data (launcher side)


def ensure_mix(params: StudyParams, run_dir: str | Path) -> Path:
    """The study's training mix, as the explore step wrote it (or built now with the same params)."""
    rd = RunDir(run_dir)
    if not rd.mix.is_file():
        tok = models.load_tokenizer(params.length_tokenizer)
        data.save(data.prepare(params, tokenizer=tok), rd, params.seed)
    return rd.mix


def build_dataset(params: StudyParams, mp: ModelParams, run_dir: str | Path) -> dict:
    """Tokenise (template + label masks) and, for causal models with ``train.packing``, pack the mix for ``mp``;
    saved as the run directory's ``dataset`` of the model. Returns the token statistics (also written to its
    ``data_stats``)."""
    tp = params.train
    rd = RunDir(run_dir)
    records = datasets.Dataset.from_json(str(ensure_mix(params, run_dir)), features=RECORD_FEATURES)
    tokenizer = models.load_tokenizer(mp)
    models.add_special_tokens(tokenizer)  # stanford's missing pad/eos/bos/unk, as the worker's tokenizer gets them
    card = models.model_card(mp)
    template = mp.template or card.template
    tokenized, tok_report = sft.tokenize_records(
        records, tokenizer, template, tp.max_length, seq2seq=card.kind != "causal", num_proc=tp.num_proc
    )
    stats: dict[str, Any] = {
        "model": mp.name,
        "card": card.name,
        "template": template,
        "records": len(records),
        "tokenize": tok_report.to_dict(),
        "packing": False,
    }
    config = SimpleNamespace(**models.read_config(mp))
    problem = packing.packing_problem(config) if tp.packing else "train.packing: false"
    stats["padding_reason"] = problem
    lengths = [len(x) for x in tokenized.select_columns(["input_ids"]).to_dict()["input_ids"]]
    stats["padded_efficiency"] = packing.token_efficiency(
        [[lengths[i] for i in b] for b in packing.random_batches(len(lengths), tp.per_device_batch_size, params.seed)]
    )
    if problem is None:
        stats["packing"] = True
        tokenized, pack_report = packing.pack(tokenized, tp.max_length)
        stats["pack"] = pack_report.to_dict()
    final = rd.dataset(mp.name)
    partial = final.with_name(f".{final.name}.partial")  # written whole, then renamed: never half a dataset
    if partial.exists():
        shutil.rmtree(partial)
    tokenized.save_to_disk(str(partial))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    atomic_write(rd.data_stats(mp.name), json.dumps(stats, indent=2))
    return stats


# --------------------------------------------------------------------------------------------- the worker


def _loader(ds, tp, collator, seed: int):
    """Shuffled batches (accelerate's seedable sampler reshuffles per epoch); padding mode may group by length."""
    g = torch.Generator().manual_seed(seed)
    if tp.group_by_length and "seq_lens" not in ds.column_names:
        lengths = [len(x) for x in ds.select_columns(["input_ids"]).to_dict()["input_ids"]]
        batches = packing.length_grouped_batches(lengths, tp.per_device_batch_size, seed)
        return DataLoader(ds, batch_sampler=batches, collate_fn=collator)
    return DataLoader(
        ds, batch_size=tp.per_device_batch_size, shuffle=True, generator=g, collate_fn=collator, drop_last=False
    )


def worker(job: dict) -> None:
    """Train one model of a study. ``job``: ``params_path``, ``overrides``, ``run_dir``, ``model`` (plain data,
    so the function can be pickled for spawn and started by any launcher). It always runs in a child process of
    its launcher, and exits when that parent dies (a killed kernel leaves no orphan holding GPUs)."""
    exit_with_parent()
    hf_logging.disable_progress_bar()  # a forked worker's widget bars cannot reach the notebook
    params = load_params(job["params_path"], job.get("overrides", []))
    tp, mp = params.train, params.model(job["model"])
    rd = RunDir(job["run_dir"])
    on_cpu = trains_on_cpu(tp)
    card = models.model_card(mp)
    acc = make_accelerator(tp, card, on_cpu)
    set_seed(params.seed)
    tokenizer = models.load_tokenizer(mp)
    model = models.load_model(mp)  # attention: the params' attn_implementation, else transformers' default
    models.add_special_tokens(tokenizer, model)
    if card.kind != "causal" and tp.fsdp.enabled and tp.fsdp.version == 2:
        _share_t5_embeddings(model)
    if tp.method == "lora":
        model = _apply_lora(model, tp.lora, card)
    ds = sft_dataset(rd.dataset(mp.name))
    dtype = next(model.parameters()).dtype
    collator = _Counting(  # packed rows on CPU: per-example attention (the model switches to packing.PACKED_SDPA)
        packing.packed_collator(model, tokenizer.pad_token_id, dtype=dtype, on_cpu=on_cpu)
        if "seq_lens" in ds.column_names
        else packing.PaddedCollator(tokenizer)
    )
    loader = _loader(ds, tp, collator, params.seed)
    full_size = sum(p.numel() for p in model.parameters())

    def adamw(m):
        return torch.optim.AdamW(
            [p for p in m.parameters() if p.requires_grad], lr=tp.learning_rate, weight_decay=tp.weight_decay
        )

    if tp.fsdp.enabled and tp.fsdp.version == 1:  # FSDP1: the optimizer must see the wrapped (flat) parameters
        model = acc.prepare(model)
        optimizer, loader = acc.prepare(adamw(model), loader)
    else:  # FSDP2 (and DDP): model and optimizer are prepared together
        model, optimizer, loader = acc.prepare(model, adamw(model), loader)
    steps_per_epoch = math.ceil(len(loader) / tp.gradient_accumulation_steps)
    total = min(tp.max_steps or 10**12, math.ceil(steps_per_epoch * tp.num_epochs))
    scheduler = get_scheduler(
        tp.lr_scheduler, optimizer, num_warmup_steps=math.ceil(tp.warmup_ratio * total), num_training_steps=total
    )
    check = fsdp_report(acc, model, full_size)
    if acc.is_main_process:
        atomic_write(rd.fsdp(mp.name), json.dumps(check, indent=2))
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    if tp.resume and rd.checkpoints(mp.name):  # the launcher checked the checkpoint's fingerprint (prepare_run)
        trainer = load_checkpoint(acc, model, optimizer, scheduler, rd.checkpoints(mp.name)[-1])
        state = {k: trainer[k] for k in state}
        acc.print(f"resumed from step {state['step']} (epoch {state['epoch']}, batch {state['batches_in_epoch']})")
    fingerprint = job.get("fingerprint")
    log = MetricsLog(rd, mp.name, acc, resumed_at=state["step"], total=total, n_params=global_parameters(model))
    model.train()
    stop_after = job.get("stop_after")
    done = state["step"] >= total
    while not done:
        loader.set_epoch(state["epoch"])
        skip = state["batches_in_epoch"]
        for batch in acc.skip_first_batches(loader, skip) if skip else loader:
            real_tokens = batch.pop("num_tokens")
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                log.add(loss, real_tokens)
                grad_norm = None
                if acc.sync_gradients and tp.max_grad_norm:
                    grad_norm = acc.clip_grad_norm_(model.parameters(), tp.max_grad_norm)
                optimizer.step()
                if acc.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            if not acc.sync_gradients:
                continue
            state["step"] += 1
            log.step(state, scheduler.get_last_lr()[0], grad_norm, tp.logging_steps)
            done = state["step"] >= total or state["step"] == stop_after
            if state["step"] % tp.save_steps == 0 or done:
                ckpt_state = {**state, "fingerprint": fingerprint}
                save_checkpoint(acc, model, optimizer, scheduler, rd, mp.name, ckpt_state, tp.save_total_limit)
            if done:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    if state["step"] < total:  # stopped on purpose (tests of resume): the checkpoint is the result
        acc.print(f"stopped after step {state['step']} of {total} (checkpoint saved)")
        return
    final = save_final(acc, model, tokenizer, rd.final(mp.name), card, tp.lora.save if tp.method == "lora" else None)
    if acc.is_main_process:
        atomic_write(
            rd.train_summary(mp.name),
            json.dumps(
                {
                    "model": mp.name,
                    "card": card.name,
                    "steps": state["step"],
                    "total_steps": total,
                    "final": str(final),
                    "fsdp": check,
                    "fingerprint": fingerprint,
                    **log.summary(),
                },
                indent=2,
            ),
        )
    acc.wait_for_everyone()


class _Counting:
    """Wraps a collator: adds ``num_tokens`` (real, unpadded tokens of the batch) for tokens/s; popped before
    the forward pass."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        batch = self.collator(features)
        batch["num_tokens"] = sum(len(f["input_ids"]) for f in features)
        return batch


def sft_dataset(path: Path):
    if not path.is_dir():
        raise KitError(f"{path}: no tokenised dataset — the launcher builds it (train.build_dataset) first")
    return datasets.load_from_disk(str(path))


def _share_t5_embeddings(model) -> None:
    """FSDP2 refuses T5's shared embedding in two groups: make encoder/decoder embed the very ``shared`` module."""
    model.encoder.embed_tokens = model.shared
    model.decoder.embed_tokens = model.shared


def _apply_lora(model, lp, card):
    task = TaskType.CAUSAL_LM if card.kind == "causal" else TaskType.SEQ_2_SEQ_LM
    cfg = LoraConfig(
        task_type=task, r=lp.r, lora_alpha=lp.alpha, lora_dropout=lp.dropout, target_modules=lp.target_modules
    )
    return get_peft_model(model, cfg)


# --------------------------------------------------------------------------------------------- launching


def launch(
    params_path: str | Path,
    run_dir: str | Path,
    model: str,
    overrides: list[str] | tuple = (),
    stop_after: int | None = None,
) -> dict:
    """Build the dataset, then run ``worker`` in ``train.num_processes`` processes via accelerate's
    ``notebook_launcher`` (never an ``Accelerator`` in this process). Returns the run's summary."""
    setup_environment()
    params = load_params(params_path, overrides)
    mp = params.model(model)
    stats = build_dataset(params, mp, run_dir)
    n = params.train.num_processes
    fingerprint, finished = prepare_run(params, mp, RunDir(run_dir), n)
    if finished is not None:
        return {**finished, "data": stats, "reused": True}
    job = {
        "params_path": str(Path(params_path).resolve()),
        "overrides": list(overrides),
        "run_dir": str(Path(run_dir).resolve()),
        "model": model,
        "stop_after": stop_after,
        "fingerprint": fingerprint,
    }
    cpu = trains_on_cpu(params.train)
    print(
        f"Training {model}: {n} worker process(es) on {'CPU (gloo)' if cpu else 'GPU'} "
        f"({'FSDP' + str(params.train.fsdp.version) if params.train.fsdp.enabled else 'DDP'}); accelerate's "
        "launcher below may call them CUDAs either way.",
        flush=True,
    )
    if n == 1:  # accelerate would run it inside this process (the notebook kernel), its state kept afterwards
        worker_in_child(job, "llm4academic.train")
    else:
        notebook_launcher(worker, args=(job,), num_processes=n, use_port=str(params.train.main_process_port))
    summary = RunDir(run_dir).read_train_summary(model) or {}
    return {**summary, "data": stats}


def worker_in_child(job: dict, module: str) -> None:
    """``<module>.worker(job)`` in a child process, its output relayed line by line (the notebook cell shows
    progress). The train and align steps run one process this way."""
    code = f"import json, sys; from {module} import worker; worker(json.loads(sys.argv[1]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(job)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
    finally:
        if proc.poll() is None:  # interrupted: the worker goes with the cell
            proc.terminate()
        proc.wait()
    if proc.returncode != 0:
        raise KitError(f"{module} {job['model']}: the worker process failed (exit {proc.returncode}):\n{''.join(tail)}")


def launch_all(params_path: str | Path, run_dir: str | Path, overrides: list[str] | tuple = ()) -> dict[str, dict]:
    """``launch`` every model the study trains (``train.models``, default all), one after the other; returns each
    run's summary by model name."""
    params = load_params(params_path, overrides)
    return {mp.name: launch(params_path, run_dir, mp.name, overrides) for mp in params.trained_models}


def run_distributed(
    params_path: str | Path, run_dir: str | Path, model: str | None, overrides: list[str] | tuple = ()
) -> None:
    """``llm4academic train``: this process is one of the workers that ``accelerate launch`` / torchrun started.
    Only the global main process builds the dataset (into a temporary name, then renamed; the run directory is
    shared by every node), the others wait for it; then every process runs ``worker``."""
    params = load_params(params_path, overrides)
    names = [m.name for m in params.trained_models]
    if model is None and len(names) != 1:
        raise KitError(f"--model: the study trains {len(names)} models ({', '.join(names)}); name one per launch")
    model = model or names[0]
    mp = params.model(model)
    on_cpu = trains_on_cpu(params.train)
    state = PartialState(cpu=on_cpu)
    with state.main_process_first():
        if state.is_main_process:
            build_dataset(params, mp, run_dir)
        fingerprint, finished = prepare_run(params, mp, RunDir(run_dir), state.num_processes, state.is_main_process)
    state.wait_for_everyone()  # the main process has cleared an old run (train.resume: false)
    if finished is None:
        worker(
            {
                "params_path": str(Path(params_path).resolve()),
                "overrides": list(overrides),
                "run_dir": str(Path(run_dir).resolve()),
                "model": model,
                "fingerprint": fingerprint,
            }
        )
    state.destroy_process_group()


# --------------------------------------------------------------------------------------------- notebook tables


def data_stats_table(results: dict):
    """Per model: records, tokens, truncation, and token efficiency of packing vs stanford's padded batches."""
    rows = []
    for name, r in results.items():
        d = r.get("data", {})
        tok, pack = d.get("tokenize", {}), d.get("pack", {})
        rows.append(
            {
                "model": name,
                "template": d.get("template"),
                "records": d.get("records"),
                "packing": d.get("packing"),
                "padding_reason": d.get("padding_reason"),
                "efficiency (packed)": pack.get("efficiency"),
                "efficiency (stanford padded batches)": d.get("padded_efficiency"),
                **{f"tokenize.{k}": v for k, v in tok.items() if k not in ("template", "max_length")},
                **{f"pack.{k}": v for k, v in pack.items() if k not in ("efficiency", "max_length")},
            }
        )
    return pd.DataFrame(rows)


def fsdp_table(results: dict):
    return pd.DataFrame(
        [
            {
                "model": name,
                **r.get("fsdp", {}),
                "steps": r.get("steps"),
                "first_loss": r.get("first_loss"),
                "last_loss": r.get("last_loss"),
            }
            for name, r in results.items()
        ]
    )


def curves(run_dir: str | Path, names: list[str]):
    """Long table (model, step, metric, value) of loss, lr and tokens/s for seaborn."""
    rd = RunDir(run_dir)
    frames = []
    for name in names:
        m = rd.read_metrics(name)
        if len(m):
            keep = [c for c in ("loss", "lr", "tokens_per_s", "mfu") if c in m and m[c].notna().any()]
            frames.append(m.melt(id_vars="step", value_vars=keep, var_name="metric").assign(model=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_checkpoint_index(run_dir: str | Path, results: dict) -> dict:
    """The run directory's checkpoint index: each trained model's final checkpoint, for the evaluation step."""
    return RunDir(run_dir).write_checkpoint_index(
        [
            {"model": name, "final": r.get("final"), "steps": r.get("steps"), "last_loss": r.get("last_loss")}
            for name, r in results.items()
        ]
    )
