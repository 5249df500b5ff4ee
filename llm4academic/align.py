"""The align step: Direct Preference Optimisation of each studied model after SFT, with TRL's ``DPOTrainer``.

Each model starts from its SFT checkpoint (``<base>-tuned``; the base model when the study tunes none — see
``align.start``) and that starting point is the reference policy. The result is ``<start>-dpo``, which the
evaluate step scores like any other model. ``launch(params_path, run_dir, model)`` runs the workers through
accelerate's ``notebook_launcher`` (one process: a child process; never an Accelerator in the kernel);
``llm4academic align PARAMS --model M`` runs the same ``worker`` under ``accelerate launch`` / torchrun.

What the kit adds to TRL: the pairs are tokenised by the kit exactly as SFT trains them (``sft.encode_pairs``:
TRL's own tokenisation joins prompt and reply as text and may merge tokens across the join), so
``_KitDPOTrainer`` skips TRL's dataset preparation; TRL 1.16 has no prompt limit, so over-long prompts are skipped
and counted here; and the run fingerprint, metrics.jsonl/TensorBoard, stop-and-resume and the consolidated save
follow the train step's contract. On GPUs the trainer shards policy and reference with FSDP2 (the card's wrap
class); on CPU TRL's trainer runs DDP on gloo (or one process), and ``distributed.json`` records what ran.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import datasets
import torch
from accelerate import PartialState, notebook_launcher
from peft import LoraConfig
from torch.utils.tensorboard import SummaryWriter
from transformers import PrinterCallback, TrainerCallback, set_seed
from transformers.utils import logging as hf_logging
from trl import DPOConfig, DPOTrainer

from . import models, preference
from .base import KitError, atomic_write, exit_with_parent, read_json, setup_environment, write_json
from .config import ModelParams, StudyParams, load_params
from .rundir import DPO_SUFFIX, FINGERPRINT_FILE, TUNED_SUFFIX, RunDir
from .train import worker_in_child
from .train_log import fingerprint_differences, weights_identity

# align.* settings that do not change the trajectory
NOT_TRAJECTORY = {
    "resume": True,
    "save_steps": True,
    "save_total_limit": True,
    "logging_steps": True,
    "main_process_port": True,
    "models": True,
    "num_processes": True,  # recorded as the processes that really train
    "eval_batch_size": True,
    "examples": True,
    "example_max_new_tokens": True,
    "fsdp": {"activation_checkpointing", "cpu_offload"},
}
LOGGED = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen",
          "logps/rejected", "entropy", "num_tokens")  # fmt: skip


# --------------------------------------------------------------------------------------------- where a run starts


def start_of(params: StudyParams, mp: ModelParams, rd: RunDir) -> tuple[str, ModelParams]:
    """The model a DPO run starts from (and keeps as its reference): ``(name, params)``."""
    sft = next((e for e in rd.read_checkpoint_index() if e.get("model") == mp.name), None)
    has_sft = bool(sft and sft.get("final") and Path(sft["final"]).is_dir())
    wants_sft = params.align.start == "sft" or (
        params.align.start == "auto" and "train" in params.steps and mp in params.trained_models
    )
    if has_sft and params.align.start != "base":
        name = f"{mp.name}{TUNED_SUFFIX}"
        return name, mp.model_copy(update={"name": name, "path": sft["final"]})
    if wants_sft:
        raise KitError(
            f"align: {mp.name} has no SFT checkpoint in {rd.checkpoint_index} (align.start: {params.align.start}); "
            "run the train step first, or set align.start: base to start from the base model"
        )
    return mp.name, mp


def dpo_name(params: StudyParams, mp: ModelParams, rd: RunDir) -> str:
    return start_of(params, mp, rd)[0] + DPO_SUFFIX


def on_cpu(ap) -> bool:
    return ap.cpu if ap.cpu is not None else not torch.cuda.is_available()


# --------------------------------------------------------------------------------------------- data (launcher side)


def ensure_pairs(params: StudyParams, rd: RunDir, rebuild: bool = False) -> dict:
    """The preference pairs (train / held-out) in the run directory; built when missing (or ``rebuild``)."""
    if rebuild or not rd.align_pairs.is_dir():
        split, report = preference.load_pairs(params)
        preference.save_pairs(split, report, rd)
    return read_json(rd.align_pairs_report) or {}


def build_dataset(params: StudyParams, mp: ModelParams, rd: RunDir) -> dict:
    """The training pairs tokenised for ``mp``'s DPO run (written whole, then renamed) and their statistics."""
    start, smp = start_of(params, mp, rd)
    name, card = start + DPO_SUFFIX, models.model_card(smp)
    if card.kind != "causal":
        raise KitError(
            f"align: {mp.name} is an encoder-decoder model ({card.name}); TRL's DPOTrainer (1.16) trains decoder-only "
            "models. Leave it out of align.models (its base and SFT rows still compare)"
        )
    tokenizer = models.load_tokenizer(smp)
    models.add_special_tokens(tokenizer)  # the worker's tokenizer gets the same tokens with the model
    template = mp.template or card.template
    ds, stats = preference.tokenize_pairs(preference.read_pairs(rd)["train"], tokenizer, template, params.align)
    if not len(ds):
        raise KitError(
            f"align: no training pair of {mp.name} fits align.max_prompt_length ({params.align.max_prompt_length} "
            f"tokens): all {stats['pairs']} prompts are longer"
        )
    digest = hashlib.sha256()
    for row in ds.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).iter(batch_size=1024):
        digest.update(json.dumps(row).encode())
    stats.update(model=name, start=start, template=template, sha256=digest.hexdigest())
    final = rd.align_dataset(name)
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json(rd.align_data_stats(name), stats)
    return stats


def run_fingerprint(params: StudyParams, smp: ModelParams, stats: dict, processes: int) -> dict:
    """What must be equal for an align checkpoint to be resumed: the start model's weights, the tokenised pairs,
    the seed, the processes and every trajectory setting of ``align``."""
    return {
        "start": weights_identity(smp),
        "template": stats["template"],
        "dtype": smp.dtype,
        "pairs_sha256": stats["sha256"],
        "seed": params.seed,
        "processes": processes,
        "align": params.align.model_dump(mode="json", exclude=NOT_TRAJECTORY),
    }


def finished_run(params: StudyParams, name: str, fingerprint: dict, rd: RunDir) -> dict | None:
    """The summary of this very run when it finished already (same start, pairs and settings), else None."""
    summary = rd.read_align_summary(name)
    if params.align.resume and summary and rd.align_final(name).is_dir():
        if not fingerprint_differences(summary.get("fingerprint"), fingerprint):
            return summary
    return None


def prepare_run(params: StudyParams, name: str, fingerprint: dict, rd: RunDir) -> dict | None:
    """Before the workers: reuse this very run when it finished, resume it from its latest checkpoint, or start
    fresh (``align.resume: false``); a checkpoint written by another run is an error naming what differs."""
    if not params.align.resume:
        for old in [*rd.align_checkpoints(name), rd.align_final(name)]:
            shutil.rmtree(old, ignore_errors=True)
        for f in (rd.align_summary(name), rd.align_metrics(name)):
            f.unlink(missing_ok=True)
        return None
    summary = finished_run(params, name, fingerprint, rd)
    if summary:
        print(f"{name}: reusing the finished DPO run ({summary.get('steps')} steps; same start, pairs and settings). "
              "To run it again, set `align.resume: false`.", flush=True)  # fmt: skip
        return summary
    checkpoints = rd.align_checkpoints(name)
    if checkpoints:
        differs = fingerprint_differences(read_json(checkpoints[-1] / FINGERPRINT_FILE), fingerprint)
        if differs:
            raise KitError(
                f"{name}: {checkpoints[-1]} was written by another run, so it cannot be resumed: "
                + "; ".join(differs)
                + ". To start fresh, set `align.resume: false` (or --set align.resume=false), or use another run dir."
            )
        _trim_metrics(rd.align_metrics(name), int(checkpoints[-1].name.split("-")[1]))
    elif rd.align_metrics(name).exists():
        rd.align_metrics(name).unlink()
    return None


def _trim_metrics(path: Path, step: int) -> None:
    """A resumed run trains the steps after its checkpoint again: their rows go."""
    if path.is_file():
        rows = [r for r in path.read_text(encoding="utf-8").splitlines() if r.strip()]
        atomic_write(path, "".join(r + "\n" for r in rows if json.loads(r)["step"] <= step))


# --------------------------------------------------------------------------------------------- the worker


class _KitDPOTrainer(DPOTrainer):
    """TRL's DPO, on pairs the kit tokenised (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) exactly as SFT
    trains: TRL's text tokenisation is skipped."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class _Record(TrainerCallback):
    """metrics.jsonl + TensorBoard + a progress line per logged step (main process), the run fingerprint in every
    checkpoint (written last: a checkpoint without it is incomplete), and a stop after ``stop_after`` steps."""

    def __init__(self, rd: RunDir, name: str, fingerprint: dict, beta: float, stop_after: int | None):
        self.rd, self.name, self.fingerprint, self.beta, self.stop_after = rd, name, fingerprint, beta, stop_after
        self.writer, self.t0 = None, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.writer = SummaryWriter(str(self.rd.align_tensorboard(self.name)), purge_step=state.global_step + 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row = {"step": state.global_step, "epoch": logs.get("epoch"), "loss": logs["loss"],
               "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}  # fmt: skip
        row.update({k: logs[k] for k in LOGGED if k in logs})
        if "rewards/chosen" in row:  # mean log π/π_ref over the batch's replies: the implicit KL estimate
            row["kl/implicit"] = (row["rewards/chosen"] + row["rewards/rejected"]) / (2 * self.beta)
        row["seconds"] = time.perf_counter() - self.t0
        with open(self.rd.align_metrics(self.name), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, int | float):
                self.writer.add_scalar(f"align/{k}", v, state.global_step)
        self.writer.flush()
        acc = row.get("rewards/accuracies")
        print(f"step {state.global_step}/{state.max_steps} · DPO loss {row['loss']:.4g}"
              + (f" · reward acc {acc:.2f} · margin {row['rewards/margins']:.3g}" if acc is not None else ""),
              flush=True)  # fmt: skip

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank has written its part (RNG state) of the checkpoint
        if state.is_world_process_zero:
            write_json(self.rd.align_checkpoint(self.name, state.global_step) / FINGERPRINT_FILE, self.fingerprint)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_after is not None and state.global_step >= self.stop_after:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()


def dpo_config(params: StudyParams, output_dir: Path, cpu: bool, wrap_class: str) -> DPOConfig:
    """TRL's settings from ``align``: the recipe, TRL's loss, FSDP2 on GPUs (policy and reference)."""
    ap = params.align
    fsdp = {}
    if ap.fsdp.enabled and not cpu:
        fsdp_config = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": [wrap_class],
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
            "activation_checkpointing": ap.fsdp.activation_checkpointing,
            "cpu_offload": ap.fsdp.cpu_offload,
        }
        fsdp = {"fsdp": True, "fsdp_config": fsdp_config}
    return DPOConfig(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        per_device_train_batch_size=ap.per_device_batch_size,
        gradient_accumulation_steps=ap.gradient_accumulation_steps,
        learning_rate=ap.learning_rate,
        lr_scheduler_type=ap.lr_scheduler,
        warmup_steps=ap.warmup_ratio,  # a float below 1: a share of the total steps
        weight_decay=ap.weight_decay,
        num_train_epochs=ap.num_epochs,
        max_steps=ap.max_steps or -1,
        max_grad_norm=ap.max_grad_norm or 0.0,
        bf16=ap.mixed_precision == "bf16",
        fp16=ap.mixed_precision == "fp16",
        activation_checkpointing=ap.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        beta=ap.beta,
        loss_type=[ap.loss_type],
        label_smoothing=ap.label_smoothing,
        max_length=ap.max_length,
        logging_steps=ap.logging_steps,
        save_strategy="steps",
        save_steps=ap.save_steps,
        save_total_limit=ap.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        use_cpu=cpu,
        dataloader_num_workers=0,
        **fsdp,
    )


def make_trainer(params: StudyParams, smp: ModelParams, dataset, output_dir: Path, callbacks=()):
    """The kit's DPO trainer for a start model: policy and reference loaded through the family card
    (safetensors; remote code only from params), the reference a frozen copy (none with LoRA: the adapter-free
    model is the reference)."""
    ap, card = params.align, models.model_card(smp)
    tokenizer = models.load_tokenizer(smp)
    model = models.load_model(smp)
    models.add_special_tokens(tokenizer, model)
    ref = None if ap.lora.enabled else copy.deepcopy(model).eval()
    lora = None
    if ap.lora.enabled:
        lora = LoraConfig(task_type="CAUSAL_LM", r=ap.lora.r, lora_alpha=ap.lora.alpha,
                          lora_dropout=ap.lora.dropout, target_modules=ap.lora.target_modules)  # fmt: skip
    config = dpo_config(params, output_dir, on_cpu(ap), card.wrap_class)
    trainer = _KitDPOTrainer(model=model, ref_model=ref, args=config, train_dataset=dataset,
                             processing_class=tokenizer, peft_config=lora, callbacks=list(callbacks))  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # the kit's progress line replaces its raw log dicts
    return trainer


def worker(job: dict) -> None:
    """One DPO run (``job``: ``params_path``, ``overrides``, ``run_dir``, ``model``, ``fingerprint``,
    ``stop_after``); exits with its launcher."""
    exit_with_parent()
    hf_logging.disable_progress_bar()
    params = load_params(job["params_path"], job.get("overrides", []))
    rd, ap = RunDir(job["run_dir"]), params.align
    start, smp = start_of(params, params.model(job["model"]), rd)
    name = start + DPO_SUFFIX
    set_seed(params.seed)
    dataset = datasets.load_from_disk(str(rd.align_dataset(name))).remove_columns(["id"])
    record = _Record(rd, name, job["fingerprint"], ap.beta, job.get("stop_after"))
    trainer = make_trainer(params, smp, dataset, rd.align_model_dir(name), [record])
    checkpoints = rd.align_checkpoints(name)
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if ap.resume and checkpoints else None)
    acc = trainer.accelerator
    ran = {"distributed_type": str(acc.distributed_type).split(".")[-1], "num_processes": acc.num_processes,
           "fsdp_requested": ap.fsdp.enabled, "fsdp_version": 2 if trainer.is_fsdp_enabled else None,
           "device": str(acc.device), "lora": ap.lora.enabled}  # fmt: skip
    if ap.fsdp.enabled and not trainer.is_fsdp_enabled:
        ran["note"] = "CPU: TRL's trainer cannot shard on gloo; it ran DDP (or one process)"
    if acc.is_main_process:
        write_json(rd.align_distributed(name), ran)
    steps, total = trainer.state.global_step, trainer.state.max_steps
    if steps < total:
        acc.print(f"stopped after step {steps} of {total} (checkpoint saved)")
        return
    final = rd.align_final(name)
    tmp = final.with_name(f".{final.name}.partial")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    if ap.lora.enabled:  # merged weights, so that the evaluate step loads a plain checkpoint
        if acc.is_main_process:
            acc.unwrap_model(trainer.model).merge_and_unload().save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))
    if acc.is_main_process:
        trainer.processing_class.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        rows = rd.read_align_metrics(name)
        write_json(rd.align_summary(name), {
            "model": name, "start": start, "base": job["model"], "steps": steps, "total_steps": total,
            "final": str(final), "distributed": ran, "fingerprint": job["fingerprint"],
            "first_loss": float(rows["loss"].iloc[0]) if len(rows) else None,
            "last_loss": float(rows["loss"].iloc[-1]) if len(rows) else None,
            "train_runtime_s": trainer.state.log_history[-1].get("train_runtime")})  # fmt: skip
    acc.wait_for_everyone()


# --------------------------------------------------------------------------------------------- launching


def launch(params_path, run_dir, model: str, overrides=(), stop_after: int | None = None) -> dict:
    """Tokenise the pairs for ``model``, then run ``worker`` in ``align.num_processes`` processes via
    ``notebook_launcher`` (one process: a child process). Returns the run's summary."""
    setup_environment()
    params, rd = load_params(params_path, overrides), RunDir(run_dir)
    ap, mp = params.align, params.model(model)
    ensure_pairs(params, rd)
    stats = build_dataset(params, mp, rd)
    start, smp = start_of(params, mp, rd)
    name, n = start + DPO_SUFFIX, ap.num_processes
    fingerprint = run_fingerprint(params, smp, stats, n)
    finished = prepare_run(params, name, fingerprint, rd)
    if finished is not None:
        return {**finished, "data": stats, "reused": True}
    job = {"params_path": str(Path(params_path).resolve()), "overrides": list(overrides), "run_dir": str(rd.root),
           "model": model, "stop_after": stop_after, "fingerprint": fingerprint}  # fmt: skip
    where = "CPU (gloo, DDP)" if on_cpu(ap) else ("GPU (FSDP2)" if ap.fsdp.enabled else "GPU (DDP)")
    print(f"DPO {start} → {name}: {n} worker process(es) on {where}", flush=True)
    if n == 1:
        worker_in_child(job, "llm4academic.align")
    else:
        notebook_launcher(worker, args=(job,), num_processes=n, use_port=str(ap.main_process_port))
    return {**(rd.read_align_summary(name) or {}), "data": stats}


def launch_all(params_path, run_dir, overrides=()) -> dict[str, dict]:
    """``launch`` every model of ``align.models`` (default: the ones the train step tunes), after building the
    preference pairs afresh; writes the align index the evaluate step reads."""
    params, rd = load_params(params_path, overrides), RunDir(run_dir)
    ensure_pairs(params, rd, rebuild=True)
    results = {mp.name: launch(params_path, run_dir, mp.name, overrides) for mp in params.aligned_models}
    rd.write_align_index([
        {"model": r.get("model"), "base": base, "start": r.get("start"), "final": r.get("final"),
         "steps": r.get("steps"), "last_loss": r.get("last_loss")}
        for base, r in results.items() if r.get("final")])  # fmt: skip
    return results


def run_distributed(params_path, run_dir, model: str | None, overrides=()) -> None:
    """``llm4academic align``: one of the workers that ``accelerate launch`` / torchrun started. The global main
    process builds the pairs and the dataset (written whole, then renamed); the others wait."""
    params, rd = load_params(params_path, overrides), RunDir(run_dir)
    names = [m.name for m in params.aligned_models]
    if model is None and len(names) != 1:
        raise KitError(f"--model: the study aligns {len(names)} models ({', '.join(names)}); name one per launch")
    mp = params.model(model or names[0])
    state = PartialState(cpu=on_cpu(params.align))
    start, smp = start_of(params, mp, rd)
    name = start + DPO_SUFFIX
    with state.main_process_first():
        if state.is_main_process:
            ensure_pairs(params, rd)
            stats = build_dataset(params, mp, rd)
            fingerprint = run_fingerprint(params, smp, stats, state.num_processes)
            finished = prepare_run(params, name, fingerprint, rd)
        else:  # after the main process: the dataset is there, an old run cleared or resumable
            fingerprint = run_fingerprint(params, smp, read_json(rd.align_data_stats(name)), state.num_processes)
            finished = finished_run(params, name, fingerprint, rd)
    if finished is None:
        job = {"params_path": str(Path(params_path).resolve()), "overrides": list(overrides),
               "run_dir": str(rd.root), "model": mp.name, "fingerprint": fingerprint}  # fmt: skip
        worker(job)
    entries = [e for e in rd.read_align_index() if e.get("model") != name]
    summary = rd.read_align_summary(name)
    if state.is_main_process and summary:
        rd.write_align_index([*entries, {"model": name, "base": mp.name, "start": start, "final": summary["final"],
                                         "steps": summary["steps"], "last_loss": summary["last_loss"]}])  # fmt: skip
    state.destroy_process_group()
