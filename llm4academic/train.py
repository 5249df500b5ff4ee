"""The training worker: the stanford_alpaca recipe under accelerate + FSDP, one worker for every launcher.

``launch(params_path, run_dir, model)`` wraps ``notebook_launcher(worker, …)`` (the notebook path);
``llm4academic train PARAMS`` runs the same ``worker`` under ``accelerate launch`` / torchrun / multi-node.

Per model, under ``run_dir/artifacts/train/<model>/``: ``dataset/`` (tokenised, packed; built once in the launching
process), ``data_stats.json``, ``metrics.jsonl`` + ``tensorboard/``, ``checkpoint-<step>/`` (sharded: torch
distributed checkpoint of model + optimizer, scheduler, data position and every rank's RNG), ``final/`` (a
consolidated Hugging Face checkpoint in safetensors, gathered to CPU on the main process) and ``summary.json``.

On CPU, accelerate 1.15 silently turns an FSDP request into DDP (``cpu=True``) or into independent runs; the
worker sets the accelerator state to FSDP on a plain ``cpu`` device (see DESIGN.md) and records what engaged in
``fsdp.json`` (distributed type, world size, sharded parameters) so that tests can prove it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .base import KitError, atomic_write

from .config import ModelParams, StudyParams, load_params

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "A10": 125e12}


def output_dir(run_dir: str | Path, model: str) -> Path:
    return Path(run_dir) / "artifacts" / "train" / model


# --------------------------------------------------------------------------------------------- data (launcher side)


def mix_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "artifacts" / "data" / "mix.jsonl"


def ensure_mix(params: StudyParams, run_dir: str | Path) -> Path:
    """The study's training mix, as the explore step wrote it (or built now with the same params)."""
    path = mix_path(run_dir)
    if not path.is_file():
        from . import data, models

        tok = models.load_tokenizer(params.length_tokenizer)
        data.save(data.prepare(params, tokenizer=tok), path.parent, params.seed)
    return path


def build_dataset(params: StudyParams, mp: ModelParams, run_dir: str | Path) -> dict:
    """Tokenise (template + label masks) and, for causal models with ``train.packing``, pack the mix for ``mp``;
    saved to ``<output>/dataset``. Returns the token statistics (also written to ``data_stats.json``)."""
    import datasets

    from . import models, sft
    from .data.formats import RECORD_FEATURES

    tp = params.train
    out = output_dir(run_dir, mp.name)
    records = datasets.Dataset.from_json(str(ensure_mix(params, run_dir)), features=RECORD_FEATURES)
    tokenizer = models.load_tokenizer(mp)
    card = models.model_card(mp)
    template = mp.template or card.template
    tokenized, tok_report = sft.tokenize_records(records, tokenizer, template, tp.max_length,
                                                 seq2seq=card.kind != "causal")
    stats: dict[str, Any] = {"model": mp.name, "card": card.name, "template": template, "records": len(records),
                             "tokenize": tok_report.to_dict(), "packing": False}
    config = SimpleNamespace(**models.read_config(mp))
    problem = sft.packing_problem(config) if tp.packing else "train.packing: false"
    stats["padding_reason"] = problem
    lengths = [len(x) for x in tokenized.select_columns(["input_ids"]).to_dict()["input_ids"]]
    stats["padded_efficiency"] = sft.token_efficiency(
        [[lengths[i] for i in b] for b in sft.random_batches(len(lengths), tp.per_device_batch_size, params.seed)])
    if problem is None:
        stats["packing"] = True
        tokenized, pack_report = sft.pack(tokenized, tp.max_length)
        stats["pack"] = pack_report.to_dict()
    if (out / "dataset").exists():
        shutil.rmtree(out / "dataset")
    tokenized.save_to_disk(str(out / "dataset"))
    atomic_write(out / "data_stats.json", json.dumps(stats, indent=2))
    return stats


# --------------------------------------------------------------------------------------------- accelerator


def trains_on_cpu(tp) -> bool:
    """``train.cpu``, or — when unset — whether no GPU is visible."""
    import torch

    return tp.cpu if tp.cpu is not None else not torch.cuda.is_available()


def make_accelerator(tp, card, on_cpu: bool):
    """An ``Accelerator`` with the FSDP plugin (full shard, auto-wrap on the card's layer class) — really FSDP on
    CPU too: accelerate 1.15 would quietly fall back to DDP there, so the state is switched to FSDP by hand."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedType, FullyShardedDataParallelPlugin

    plugin = None
    if tp.fsdp.enabled:
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=tp.fsdp.version,
            sharding_strategy="FULL_SHARD" if tp.fsdp.version == 1 else None,
            reshard_after_forward=True if tp.fsdp.version == 2 else None,
            auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=[card.wrap_class],
            state_dict_type="SHARDED_STATE_DICT", activation_checkpointing=tp.fsdp.activation_checkpointing,
            cpu_offload=tp.fsdp.cpu_offload, cpu_ram_efficient_loading=False,
            sync_module_states=False if tp.fsdp.version == 1 else None,
            use_orig_params=True if tp.fsdp.version == 1 else None)
    mixed = tp.mixed_precision if not on_cpu or tp.mixed_precision == "bf16" else "no"
    acc = Accelerator(cpu=on_cpu, fsdp_plugin=plugin, mixed_precision=mixed,
                      gradient_accumulation_steps=tp.gradient_accumulation_steps,
                      dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    if plugin is not None and on_cpu and acc.num_processes > 1:
        from accelerate.state import PartialState

        state = acc.state
        for shared in (state, PartialState()):  # both singletons: later PartialState() calls must agree
            shared.distributed_type = DistributedType.FSDP
            shared.device = torch.device("cpu")  # not cpu:0: FSDP1 rejects an indexed CPU device
        state.fsdp_plugin = plugin
        if mixed == "bf16":
            plugin.set_mixed_precision("bf16")
    if not on_cpu and tp.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return acc


def fsdp_report(acc, model, full: int) -> dict:
    """What engaged: distributed type, world size, and how the parameters are held: ``full`` parameters in the
    model, ``local`` on this rank (a DTensor's local shard under FSDP2, the flat shard's views under FSDP1)."""
    local = 0
    kinds = set()
    for p in model.parameters():
        kinds.add(type(p).__name__)
        local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
    return {"distributed_type": str(acc.distributed_type).split(".")[-1], "num_processes": acc.num_processes,
            "fsdp_version": getattr(getattr(acc.state, "fsdp_plugin", None), "fsdp_version", None)
            if str(acc.distributed_type).endswith("FSDP") else None,
            "model_class": type(model).__name__, "parameter_types": sorted(kinds),
            "parameters": full, "local_parameters": local, "sharded": local < full}


# --------------------------------------------------------------------------------------------- checkpoints


def checkpoints(out: Path) -> list[Path]:
    """Completed checkpoints, oldest first (a checkpoint is complete once its ``trainer_state.json`` exists)."""
    found = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(acc, model, optimizer, scheduler, out: Path, state: dict, keep: int) -> Path:
    """Sharded checkpoint (each rank writes its own shards: no full model on one device), then rename."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = out / f"checkpoint-{state['step']}"
    tmp = out / f".checkpoint-{state['step']}.partial"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / "state"))
    torch.save(_rng_state(), tmp / f"rng-{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        atomic_write(tmp / "trainer_state.json", json.dumps({**state, "scheduler": scheduler.state_dict()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    acc.wait_for_everyone()
    return final


def load_checkpoint(acc, model, optimizer, scheduler, path: Path) -> dict:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path / "state"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    trainer = json.loads((path / "trainer_state.json").read_text())
    scheduler.load_state_dict(trainer.pop("scheduler"))
    rng = path / f"rng-{acc.process_index}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    return trainer


def _rng_state() -> dict:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    import numpy as np
    import torch

    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def save_final(acc, model, tokenizer, out: Path, card, lora_save: str | None) -> Path:
    """A consolidated checkpoint ``from_pretrained`` loads: the full state dict is gathered to CPU on the main
    process (never the whole model on one GPU), loaded into a meta-device copy and saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    final = out / "final"
    tmp = out / ".final.partial"
    if lora_save is not None:  # LoRA trains under DDP: every rank holds the whole (peft) model
        if acc.is_main_process:
            _fresh(tmp)
            inner = acc.unwrap_model(model)
            (inner if lora_save == "adapter" else inner.merge_and_unload()).save_pretrained(tmp)
    else:
        sd = _full_state_dict(acc, model)
        if acc.is_main_process:
            _fresh(tmp)
            auto = AutoModelForCausalLM if card.kind == "causal" else AutoModelForSeq2SeqLM
            with torch.device("meta"):
                fresh = auto.from_config(acc.unwrap_model(model).config)
            sd = {k: v for k, v in sd.items() if k in fresh.state_dict()}  # persistent entries only
            fresh.load_state_dict(sd, assign=True, strict=True)
            fresh.tie_weights()
            fresh.save_pretrained(tmp)
    if acc.is_main_process:
        tokenizer.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    acc.wait_for_everyone()
    return final


def _full_state_dict(acc, model) -> dict:
    """The whole model's weights on the main process's CPU. FSDP2 (and DDP): torch's full state dict with CPU
    offload. FSDP1 on CPU crashes in that path (SIGSEGV), so its parameters are gathered with
    ``summon_full_params`` and copied out under their original names."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if not isinstance(model, FSDP):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    sd = {}
    with FSDP.summon_full_params(model, writeback=False):
        if acc.is_main_process:
            for name, t in [*model.named_parameters(), *model.named_buffers()]:
                key = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
                sd[key] = t.detach().clone()
    return sd


def _fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


# --------------------------------------------------------------------------------------------- the worker


def _loader(ds, tp, collator, seed: int):
    """Shuffled batches (accelerate's seedable sampler reshuffles per epoch); padding mode may group by length."""
    import torch
    from torch.utils.data import DataLoader

    from . import sft

    g = torch.Generator().manual_seed(seed)
    if tp.group_by_length and "seq_lens" not in ds.column_names:
        lengths = [len(x) for x in ds.select_columns(["input_ids"]).to_dict()["input_ids"]]
        batches = sft.length_grouped_batches(lengths, tp.per_device_batch_size, seed)
        return DataLoader(ds, batch_sampler=batches, collate_fn=collator)
    return DataLoader(ds, batch_size=tp.per_device_batch_size, shuffle=True, generator=g, collate_fn=collator,
                      drop_last=False)


def worker(job: dict) -> None:
    """Train one model of a study. ``job``: ``params_path``, ``overrides``, ``run_dir``, ``model`` (plain data,
    so the function can be pickled for spawn and started by any launcher)."""
    import torch
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from . import models, sft

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a forked worker's widget bars cannot reach the notebook
    params = load_params(job["params_path"], job.get("overrides", []))
    tp, mp = params.train, params.model(job["model"])
    out = output_dir(job["run_dir"], mp.name)
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
    ds = sft_dataset(out)
    dtype = next(model.parameters()).dtype
    collator = _Counting(sft.PackedCollator(tokenizer.pad_token_id, attn_implementation=mp.attn_implementation
                                            or "sdpa", dtype=dtype) if "seq_lens" in ds.column_names
                         else sft.PaddedCollator(tokenizer))
    loader = _loader(ds, tp, collator, params.seed)
    full_size = sum(p.numel() for p in model.parameters())

    def adamw(m):
        return torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=tp.learning_rate,
                                 weight_decay=tp.weight_decay)

    if tp.fsdp.enabled and tp.fsdp.version == 1:  # FSDP1: the optimizer must see the wrapped (flat) parameters
        model = acc.prepare(model)
        optimizer, loader = acc.prepare(adamw(model), loader)
    else:  # FSDP2 (and DDP): model and optimizer are prepared together
        model, optimizer, loader = acc.prepare(model, adamw(model), loader)
    steps_per_epoch = math.ceil(len(loader) / tp.gradient_accumulation_steps)
    total = min(tp.max_steps or 10**12, math.ceil(steps_per_epoch * tp.num_epochs))
    scheduler = get_scheduler(tp.lr_scheduler, optimizer, num_warmup_steps=math.ceil(tp.warmup_ratio * total),
                              num_training_steps=total)
    check = fsdp_report(acc, model, full_size)
    if acc.is_main_process:
        atomic_write(out / "fsdp.json", json.dumps(check, indent=2))
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    if tp.resume and checkpoints(out):
        state = load_checkpoint(acc, model, optimizer, scheduler, checkpoints(out)[-1])
        acc.print(f"resumed from step {state['step']} (epoch {state['epoch']}, batch {state['batches_in_epoch']})")
    log = _MetricsLog(out, acc, resumed_at=state["step"])
    model.train()
    stop_after = job.get("stop_after")
    done = state["step"] >= total
    while not done:
        loader.set_epoch(state["epoch"])
        skip = state["batches_in_epoch"]
        for batch in (acc.skip_first_batches(loader, skip) if skip else loader):
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
            log.step(state, scheduler.get_last_lr()[0], grad_norm, model, tp.logging_steps)
            done = state["step"] >= total or state["step"] == stop_after
            if state["step"] % tp.save_steps == 0 or done:
                save_checkpoint(acc, model, optimizer, scheduler, out, dict(state), tp.save_total_limit)
            if done:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    if state["step"] < total:  # stopped on purpose (tests of resume): the checkpoint is the result
        acc.print(f"stopped after step {state['step']} of {total} (checkpoint saved)")
        return
    final = save_final(acc, model, tokenizer, out, card, tp.lora.save if tp.method == "lora" else None)
    if acc.is_main_process:
        atomic_write(out / "summary.json", json.dumps(
            {"model": mp.name, "card": card.name, "steps": state["step"], "total_steps": total, "final": str(final),
             "fsdp": check, **log.summary()}, indent=2))
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


def sft_dataset(out: Path):
    import datasets

    path = out / "dataset"
    if not path.is_dir():
        raise KitError(f"{path}: no tokenised dataset — the launcher builds it (train.build_dataset) first")
    return datasets.load_from_disk(str(path))


def _share_t5_embeddings(model) -> None:
    """FSDP2 refuses T5's shared embedding in two groups: make encoder/decoder embed the very ``shared`` module."""
    model.encoder.embed_tokens = model.shared
    model.decoder.embed_tokens = model.shared


def _apply_lora(model, lp, card):
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.CAUSAL_LM if card.kind == "causal" else TaskType.SEQ_2_SEQ_LM
    cfg = LoraConfig(task_type=task, r=lp.r, lora_alpha=lp.alpha, lora_dropout=lp.dropout,
                     target_modules=lp.target_modules)
    return get_peft_model(model, cfg)


class _MetricsLog:
    """``metrics.jsonl`` + TensorBoard on the main process: loss, lr, grad norm, real tokens/s, MFU on GPU."""

    def __init__(self, out: Path, acc, resumed_at: int):
        self.acc, self.path = acc, out / "metrics.jsonl"
        self.t0, self.losses, self.all_tokens = time.perf_counter(), [], 0
        self.first_loss = self.last_loss = None
        self.writer = None
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
            if resumed_at == 0 and self.path.exists():
                self.path.unlink()

    def add(self, loss, real_tokens: int) -> None:
        self.losses.append(loss.detach().float())
        self.all_tokens += int(real_tokens)

    def step(self, state: dict, lr: float, grad_norm, model, every: int) -> None:
        import torch

        loss = self.acc.reduce(torch.stack(self.losses).mean(), reduction="mean").item()
        tokens = self.acc.reduce(torch.tensor(self.all_tokens), reduction="sum").item()
        elapsed = time.perf_counter() - self.t0
        row = {"step": state["step"], "epoch": state["epoch"], "loss": loss, "lr": lr,
               "grad_norm": float(grad_norm) if grad_norm is not None else None,
               "tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed if elapsed else None}
        row["mfu"] = _mfu(model, row["tokens_per_s"], self.acc.num_processes)
        self.first_loss = loss if self.first_loss is None else self.first_loss
        self.last_loss = loss
        self.losses, self.all_tokens, self.t0 = [], 0, time.perf_counter()
        if self.acc.is_main_process and (state["step"] % every == 0 or state["step"] == 1):
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                if row[k] is not None:
                    self.writer.add_scalar(f"train/{k}", row[k], state["step"])
            self.writer.flush()

    def summary(self) -> dict:
        """First and last logged loss of the whole run, resumed parts included (read back from metrics.jsonl)."""
        if self.writer is not None:
            self.writer.close()
        first, last = self.first_loss, self.last_loss
        if self.acc.is_main_process and self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if rows:
                first, last = rows[0]["loss"], rows[-1]["loss"] if last is None else last
        return {"first_loss": first, "last_loss": last}


def _mfu(model, tokens_per_s, world: int) -> float | None:
    """Model FLOPs utilisation on GPU: 6 · parameters · tokens/s over the card's dense bf16 peak."""
    import torch

    if not tokens_per_s or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    if peak is None:
        return None
    n = sum(p.numel() for p in model.parameters()) * (world if any(hasattr(p, "to_local") for p in
                                                                  model.parameters()) else 1)
    return 6 * n * tokens_per_s / (peak * world)


# --------------------------------------------------------------------------------------------- launching


def launch(params_path: str | Path, run_dir: str | Path, model: str, overrides: list[str] | tuple = (),
           stop_after: int | None = None) -> dict:
    """Build the dataset, then run ``worker`` in ``train.num_processes`` processes via accelerate's
    ``notebook_launcher`` (never an ``Accelerator`` in this process). Returns the run's summary."""
    from accelerate import notebook_launcher

    from .base import setup_environment

    setup_environment()
    params = load_params(params_path, overrides)
    mp = params.model(model)
    stats = build_dataset(params, mp, run_dir)
    job = {"params_path": str(Path(params_path).resolve()), "overrides": list(overrides),
           "run_dir": str(Path(run_dir).resolve()), "model": model, "stop_after": stop_after}

    n = params.train.num_processes
    cpu = trains_on_cpu(params.train)
    print(f"Training {model}: {n} worker process(es) on {'CPU (gloo)' if cpu else 'GPU'} "
          f"({'FSDP' + str(params.train.fsdp.version) if params.train.fsdp.enabled else 'DDP'}); accelerate's "
          "launcher below may call them CUDAs either way.", flush=True)
    notebook_launcher(worker, args=(job,), num_processes=n, use_port=str(params.train.main_process_port))
    out = output_dir(run_dir, model)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return {**summary, "data": stats}


def run_distributed(params_path: str | Path, run_dir: str | Path, model: str | None,
                    overrides: list[str] | tuple = ()) -> None:
    """``llm4academic train``: this process is one of the workers that ``accelerate launch`` / torchrun started.
    The local main process of each node builds the dataset first; then every process runs ``worker``."""
    from accelerate import PartialState

    params = load_params(params_path, overrides)
    names = [m.name for m in params.trained_models]
    if model is None and len(names) != 1:
        raise KitError(f"--model: the study trains {len(names)} models ({', '.join(names)}); name one per launch")
    model = model or names[0]
    mp = params.model(model)
    on_cpu = trains_on_cpu(params.train)
    state = PartialState(cpu=on_cpu)
    with state.local_main_process_first():
        if state.is_local_main_process:
            build_dataset(params, mp, run_dir)
    worker({"params_path": str(Path(params_path).resolve()), "overrides": list(overrides),
            "run_dir": str(Path(run_dir).resolve()), "model": model})
    state.destroy_process_group()


def read_metrics(run_dir: str | Path, model: str):
    import pandas as pd

    path = output_dir(run_dir, model) / "metrics.jsonl"
    return pd.read_json(path, lines=True) if path.is_file() else pd.DataFrame()


# --------------------------------------------------------------------------------------------- notebook tables


def data_stats_table(results: dict):
    """Per model: records, tokens, truncation, and token efficiency of packing vs stanford's padded batches."""
    import pandas as pd

    rows = []
    for name, r in results.items():
        d = r.get("data", {})
        tok, pack = d.get("tokenize", {}), d.get("pack", {})
        rows.append({"model": name, "template": d.get("template"), "records": d.get("records"),
                     "packing": d.get("packing"), "padding_reason": d.get("padding_reason"),
                     "efficiency (packed)": pack.get("efficiency"),
                     "efficiency (stanford padded batches)": d.get("padded_efficiency"),
                     **{f"tokenize.{k}": v for k, v in tok.items() if k not in ("template", "max_length")},
                     **{f"pack.{k}": v for k, v in pack.items() if k not in ("efficiency", "max_length")}})
    return pd.DataFrame(rows)


def fsdp_table(results: dict):
    import pandas as pd

    return pd.DataFrame([{"model": name, **r.get("fsdp", {}), "steps": r.get("steps"),
                          "first_loss": r.get("first_loss"), "last_loss": r.get("last_loss")}
                         for name, r in results.items()])


def curves(run_dir: str | Path, names: list[str]):
    """Long table (model, step, metric, value) of loss, lr and tokens/s for seaborn."""
    import pandas as pd

    frames = []
    for name in names:
        m = read_metrics(run_dir, name)
        if len(m):
            keep = [c for c in ("loss", "lr", "tokens_per_s", "mfu") if c in m and m[c].notna().any()]
            frames.append(m.melt(id_vars="step", value_vars=keep, var_name="metric").assign(model=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_checkpoint_index(run_dir: str | Path, results: dict) -> dict:
    """``artifacts/train/checkpoints.json``: each trained model's final checkpoint, for the evaluation step."""
    index = {"models": [{"model": name, "final": r.get("final"), "steps": r.get("steps"),
                         "last_loss": r.get("last_loss")} for name, r in results.items()]}
    atomic_write(Path(run_dir) / "artifacts" / "train" / "checkpoints.json", json.dumps(index, indent=2))
    return index
