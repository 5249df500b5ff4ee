"""P5: ``benchmarks/gpu.py`` — tokens/s/GPU and MFU of full fine-tuning a ~1B LLaMA (FSDP2, bf16, packing), run in
its own process. Without CUDA only its ``--dry-run`` runs (CPU) and the goal is not judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from .common import Case, Context, Goal, Sizes, Skip, fmt_n, fmt_pct, verdict

CASE = Case(
    "P5",
    "gpu_mfu",
    "full fine-tuning of a ~1B LLaMA with FSDP2, bf16, packing: tokens/s/GPU and MFU",
    (Goal("mfu", ">=", 0.40, "%", "MFU on one H100"),),
)
SCRIPT = Path(__file__).resolve().with_name("gpu.py")


def run_gpu_script(args: list[str], timeout: float = 900) -> dict:
    """Run ``benchmarks/gpu.py`` in its own process and parse the JSON it prints."""
    if not SCRIPT.is_file():
        raise Skip(f"{SCRIPT} not found")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=SCRIPT.parent.parent
    )
    out = proc.stdout
    start = out.find("{")
    if proc.returncode != 0 or start < 0:
        tail = (proc.stderr or out)[-2000:]
        raise RuntimeError(f"benchmarks/gpu.py {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return json.loads(out[start:])


def run(ctx: Context, sz: Sizes) -> dict:
    if torch.cuda.is_available():
        ctx.progress("  P5: benchmarks/gpu.py on the GPU …")
        res = run_gpu_script(list(sz.p5_args))
        return {
            "value": res.get("mfu"),
            "metrics": {"mfu": res.get("mfu")},
            "checks": {"losses_finite": res.get("losses_finite")},
            "repeats": 1,
            "raw": {"tokens_per_s_per_gpu": res.get("tokens_per_s_per_gpu"), "steps": res.get("steps"), "gpu.py": res},
        }
    ctx.progress("  P5: no CUDA device — benchmarks/gpu.py --dry-run (CPU, scaled down) …")
    res = run_gpu_script(["--dry-run"])
    ok = bool(res.get("dry_run")) and res.get("losses_finite") and (res.get("tokens_per_s_per_gpu") or 0) > 0
    raise Skip(
        "no CUDA device here: the GPU goal is not judged. benchmarks/gpu.py --dry-run ran on CPU "
        f"({'ok' if ok else 'FAILED'}) so the script is known to work",
        {"dry_run": res, "dry_run_ok": ok},
    )


def row(c: dict) -> list[str] | None:
    raw = c["raw"]
    if c["status"] == "ok":
        g = raw["gpu.py"]
        return [
            c["id"],
            f"full fine-tuning ~1B LLaMA, FSDP2, bf16, packing on {g['device_name']}: tokens/s/GPU, MFU",
            f"{fmt_n(g['tokens_per_s_per_gpu'])} tok/s/GPU, {fmt_pct(g['mfu'])} MFU "
            f"({fmt_n(g['peak_memory_gib'], 1)} GiB)",
            "",
            fmt_pct(c["value"]),
            CASE.goal_cell,
            "",
            verdict(c),
        ]
    dry = raw.get("dry_run", {})
    return [
        c["id"],
        "full fine-tuning ~1B LLaMA, FSDP2, bf16, packing: tokens/s/GPU, MFU",
        "not run: no CUDA device",
        "",
        "",
        f"{CASE.goal_cell} MFU",
        f"gpu.py --dry-run (CPU): {'ok' if raw.get('dry_run_ok') else 'FAILED'}" if dry else "",
        verdict(c),
    ]
