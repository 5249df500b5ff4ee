"""What a training run records besides its weights: the metrics log (``metrics.jsonl``, TensorBoard, a progress
line per logging step), MFU, and the run fingerprint that a checkpoint carries so that a resume continues only the
very run it was written by.

The fingerprint holds what fixes the trajectory: the model (path, revision, sha256 of its weights, config and
tokenizer files), the training mix's sha256, the seed, the template, dtype and attention, the number of processes
and every ``train.*`` setting except the ones that only decide how often to save/log or where the launcher listens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from .answer_cache import IDENTITY_FILES, file_sha256
from .base import KitError, atomic_write
from .models import resolve_model_path
from .rundir import RunDir

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "A10": 125e12}

# train.* settings that do not change the trajectory (how often to save or log, where to listen, which models)
NOT_TRAJECTORY = {
    "resume": True,
    "save_steps": True,
    "save_total_limit": True,
    "logging_steps": True,
    "main_process_port": True,
    "models": True,
    "num_processes": True,  # recorded as the processes that really train (``processes``)
    "num_proc": True,  # tokenising processes: the same dataset with any number (tested)
    "fsdp": {"activation_checkpointing", "cpu_offload"},
    "lora": {"save"},
}


# --------------------------------------------------------------------------------------------- the fingerprint


def weights_identity(mp) -> dict:
    """Where the model is and the sha256 of its weights, config and tokenizer files (hashes remembered by size and
    mtime, see ``answer_cache.file_sha256``); a hub id not in the local cache yet is named by id and revision."""
    resolved = resolve_model_path(mp.path)
    local = Path(resolved) if Path(resolved).is_dir() else None
    if local is None:
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(resolved, revision=mp.revision, local_files_only=True))
        except Exception:  # noqa: BLE001 — not downloaded yet: the id and revision are all there is
            return {"path": mp.path, "revision": mp.revision, "sha256": None}
    files = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
    h = hashlib.sha256()
    for f in files + [local / n for n in IDENTITY_FILES if (local / n).is_file()]:
        h.update(f"{f.name}\t{file_sha256(f)}\n".encode())
    return {"path": mp.path, "revision": mp.revision, "sha256": h.hexdigest()}


def run_fingerprint(params, mp, rd: RunDir, processes: int) -> dict:
    """The run's fingerprint (plain JSON data): what must be equal for a checkpoint to be resumed."""
    if not rd.mix.is_file():
        raise KitError(f"{rd.mix}: no training mix — the launcher builds it (train.build_dataset) first")
    return {
        "model": weights_identity(mp),
        "card": mp.card,
        "template": mp.template,
        "dtype": mp.dtype,
        "attn_implementation": mp.attn_implementation,
        "mix_sha256": file_sha256(rd.mix),
        "seed": params.seed,
        "processes": processes,
        "train": params.train.model_dump(mode="json", exclude=NOT_TRAJECTORY),
    }


def fingerprint_differences(old: dict | None, new: dict) -> list[str]:
    """``key: old → new`` for every setting that differs (nested keys dotted); empty when they agree."""
    if old is None:
        return ["the checkpoint has no run fingerprint (written by an older version of the kit)"]

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old), flat(new)
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def prepare_run(params, mp, rd: RunDir, processes: int, clear: bool = True) -> tuple[dict, dict | None]:
    """Before any worker starts: this run's fingerprint (``train_log.run_fingerprint``), checked against the model's
    folder. Returns ``(fingerprint, summary)``; ``summary`` is not None when this very run finished already (reused,
    with a message). ``train.resume: false`` starts fresh (``clear``: old checkpoints, final checkpoint and summary
    removed); a checkpoint written by another run (other model, data or settings) is an error naming what differs."""
    name = mp.name
    fingerprint = run_fingerprint(params, mp, rd, processes)
    if not params.train.resume:
        if clear:
            for old in [*rd.checkpoints(name), rd.final(name)]:
                shutil.rmtree(old, ignore_errors=True)
            rd.train_summary(name).unlink(missing_ok=True)
        return fingerprint, None
    summary = rd.read_train_summary(name)
    if summary and rd.final(name).is_dir() and not fingerprint_differences(summary.get("fingerprint"), fingerprint):
        print(
            f"{name}: reusing the finished run in {rd.model_dir(name)} ({summary.get('steps')} steps; same model, "
            "data and settings). To train it again, set `train.resume: false`.",
            flush=True,
        )
        return fingerprint, summary
    if rd.checkpoints(name):
        latest = rd.checkpoints(name)[-1]
        old = json.loads((latest / "trainer_state.json").read_text(encoding="utf-8")).get("fingerprint")
        differs = fingerprint_differences(old, fingerprint)
        if differs:
            raise KitError(
                f"{name}: {latest} was written by another run, so it cannot be resumed: "
                + "; ".join(differs)
                + ". To start this run fresh (its checkpoints replaced), set `train.resume: false` in the params "
                "(or --set train.resume=false), or use another run directory."
            )
    return fingerprint, None


# --------------------------------------------------------------------------------------------- metrics


class MetricsLog:
    """``metrics.jsonl`` + TensorBoard on the main process: loss, lr, grad norm, real tokens/s, MFU on GPU, and a
    progress line per logging step. Every reduced tensor lives on the accelerator's device (NCCL has no CPU
    backend). A resumed run drops the rows (and TensorBoard events) past the step it resumes from."""

    def __init__(self, rd: RunDir, name: str, acc, resumed_at: int, total: int, n_params: int):
        self.acc, self.path, self.total, self.n_params = acc, rd.metrics(name), total, n_params
        self.t0, self.losses, self.all_tokens = time.perf_counter(), [], 0
        self.first_loss = self.last_loss = None
        self.writer = None
        if acc.is_main_process:
            self.writer = SummaryWriter(str(rd.tensorboard(name)), purge_step=resumed_at + 1)
            if resumed_at == 0 and self.path.exists():
                self.path.unlink()
            elif self.path.is_file():  # steps after the checkpoint are trained again: their rows go
                rows = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
                kept = [r for r in rows if json.loads(r)["step"] <= resumed_at]
                atomic_write(self.path, "".join(r + "\n" for r in kept))

    def add(self, loss, real_tokens: int) -> None:
        self.losses.append(loss.detach().float())
        self.all_tokens += int(real_tokens)

    def step(self, state: dict, lr: float, grad_norm, every: int) -> None:
        device = self.acc.device
        loss = self.acc.reduce(torch.stack(self.losses).mean().to(device), reduction="mean").item()
        tokens = self.acc.reduce(torch.tensor(self.all_tokens, device=device), reduction="sum").item()
        elapsed = time.perf_counter() - self.t0
        row = {
            "step": state["step"],
            "epoch": state["epoch"],
            "loss": loss,
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens": tokens,
            "seconds": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed else None,
        }
        row["mfu"] = mfu(self.n_params, row["tokens_per_s"], self.acc.num_processes)
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
            print(progress_line(row, self.total), flush=True)

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


def progress_line(row: dict, total: int) -> str:
    """``step 3/30 · loss 6.82 · 1,234 tok/s`` (and MFU where known)."""
    parts = [f"step {row['step']}/{total}", f"loss {row['loss']:.4g}"]
    if row.get("tokens_per_s"):
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    if row.get("mfu") is not None:
        parts.append(f"MFU {row['mfu']:.1%}")
    return " · ".join(parts)


def mfu(n_params: int, tokens_per_s, world: int) -> float | None:
    """Model FLOPs utilisation on GPU: 6 · parameters · tokens/s over the dense bf16 peak of all ``world`` GPUs.
    ``n_params`` is the model's global parameter count (``fsdp.global_parameters``), whatever the sharding."""
    if not tokens_per_s or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    if peak is None:
        return None
    return 6 * n_params * tokens_per_s / (peak * world)
