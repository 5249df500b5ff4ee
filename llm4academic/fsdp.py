"""FSDP for every launcher: the accelerator (really FSDP on CPU too), what engaged, sharded checkpoints with
resume, and the consolidated final checkpoint.

On CPU, accelerate 1.15 silently turns an FSDP request into DDP (``cpu=True``) or into independent runs;
``make_accelerator`` sets the accelerator state to FSDP on a plain ``cpu`` device (docs/DESIGN.md) and
``fsdp_report`` records what engaged (distributed type, world size, sharded parameters) so that tests can prove it.
On GPUs the process group is NCCL. Checkpoints are torch distributed checkpoints written by every rank (model,
optimizer, scheduler, data position, each rank's RNG), complete once ``trainer_state.json`` exists.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DataLoaderConfiguration, DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from .base import atomic_write
from .rundir import RunDir


def trains_on_cpu(tp) -> bool:
    """``train.cpu``, or — when unset — whether no GPU is visible."""
    return tp.cpu if tp.cpu is not None else not torch.cuda.is_available()


def make_accelerator(tp, card, on_cpu: bool):
    """An ``Accelerator`` with the FSDP plugin (full shard, auto-wrap on the card's layer class) — really FSDP on
    CPU too: accelerate 1.15 would quietly fall back to DDP there, so the state is switched to FSDP by hand."""
    plugin = None
    if tp.fsdp.enabled:
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=tp.fsdp.version,
            sharding_strategy="FULL_SHARD" if tp.fsdp.version == 1 else None,
            reshard_after_forward=True if tp.fsdp.version == 2 else None,
            auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=[card.wrap_class],
            state_dict_type="SHARDED_STATE_DICT",
            activation_checkpointing=tp.fsdp.activation_checkpointing,
            cpu_offload=tp.fsdp.cpu_offload,
            cpu_ram_efficient_loading=False,
            sync_module_states=False if tp.fsdp.version == 1 else None,
            use_orig_params=True if tp.fsdp.version == 1 else None,
        )
    mixed = tp.mixed_precision if not on_cpu or tp.mixed_precision == "bf16" else "no"
    acc = Accelerator(
        cpu=on_cpu,
        fsdp_plugin=plugin,
        mixed_precision=mixed,
        gradient_accumulation_steps=tp.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if plugin is not None and on_cpu and acc.num_processes > 1:
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
    return {
        "distributed_type": str(acc.distributed_type).split(".")[-1],
        "num_processes": acc.num_processes,
        "fsdp_version": getattr(getattr(acc.state, "fsdp_plugin", None), "fsdp_version", None)
        if str(acc.distributed_type).endswith("FSDP")
        else None,
        "model_class": type(model).__name__,
        "parameter_types": sorted(kinds),
        "parameters": full,
        "global_parameters": global_parameters(model),
        "local_parameters": local,
        "sharded": local < full,
    }


def global_parameters(model) -> int:
    """The model's parameter count over all ranks, whatever holds them: FSDP2's DTensors report their global size
    (``numel``), FSDP1's flat parameters hold this rank's shard, so their original parameters' sizes are summed."""
    flat = [m._flat_param for m in FSDP.fsdp_modules(model) if getattr(m, "_flat_param", None) is not None]
    if flat:
        return sum(sum(f._numels) for f in flat)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- checkpoints


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def save_checkpoint(acc, model, optimizer, scheduler, rd: RunDir, name: str, state: dict, keep: int) -> Path:
    """Sharded checkpoint of model ``name`` (each rank writes its own shards: no full model on one device), then
    rename; only the newest ``keep`` checkpoints stay."""
    final = rd.checkpoint(name, state["step"])
    tmp = _partial(final)
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
        for old in rd.checkpoints(name)[:-keep]:
            shutil.rmtree(old)
    acc.wait_for_everyone()
    return final


def load_checkpoint(acc, model, optimizer, scheduler, path: Path) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG; returns the trainer state (step, epoch, batch)."""
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
    """This rank's RNG: Python, NumPy, torch's CPU generator and — on a GPU — its current device's generator."""
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state()
    return s


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def save_final(acc, model, tokenizer, final: Path, card, lora_save: str | None) -> Path:
    """A consolidated checkpoint ``from_pretrained`` loads, at ``final``: the full state dict is gathered to CPU on
    the main process (never the whole model on one GPU), loaded into a meta-device copy and saved as safetensors."""
    tmp = _partial(final)
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
    ``summon_full_params`` — on rank 0 only and (from GPUs) offloaded to CPU, never the full model on every GPU — and
    copied out under their original names."""
    if not isinstance(model, FSDP):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    sd = {}
    offload = acc.device.type != "cpu"  # on CPU, FSDP1's offload path crashes (SIGSEGV) and there is nothing to move
    with FSDP.summon_full_params(model, writeback=False, rank0_only=True, offload_to_cpu=offload):
        if acc.is_main_process:
            for name, t in [*model.named_parameters(), *model.named_buffers()]:
                key = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
                sd[key] = t.detach().clone()
    return sd


def _fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
