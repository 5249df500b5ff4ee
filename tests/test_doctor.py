"""`llm4academic doctor` (the GPU acceptance check; here its CPU dry run) and the SLURM example for clusters."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from llm4academic.config import load_params

KEYS = {
    "dpo_ok",
    "fsdp_engaged",
    "loss_falls",
    "resume_exact",
    "reload_equal",
    "generation_ok",
    "vllm",
    "mfu",
    "peak_memory_gb",
    "gpus",
    "ok",
}


@pytest.mark.slow
def test_doctor_dry_run_on_cpu(tmp_path):
    out = tmp_path / "verdict.json"
    r = subprocess.run(
        [sys.executable, "-m", "llm4academic", "doctor", "--dry-run", "--out", str(out), "--work-dir", tmp_path / "w"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    verdict = json.loads(r.stdout)  # stdout is the verdict only; the training output went to stderr
    assert verdict == json.loads(out.read_text())
    assert KEYS <= set(verdict)
    assert verdict["ok"] is True and verdict["gpus"] == 0
    for check in ("fsdp_engaged", "loss_falls", "resume_exact", "reload_equal", "generation_ok", "dpo_ok"):
        assert verdict[check] is True, (check, verdict["details"])
    d = verdict["details"]
    assert d["dry_run"] and d["processes"] == 2 and d["fsdp"]["parameter_types"] == ["DTensor"]
    assert d["resume"]["stopped_at"] == ["checkpoint-4"] and d["resume"]["steps_logged"]
    assert d["reload"]["complete"] and d["generation"]["answers"] == 8
    dpo = d["align"]  # DPO from the SFT checkpoint: DDP on CPU (FSDP2 is what --gpu requires)
    assert dpo["distributed"]["distributed_type"] == "MULTI_CPU" and dpo["steps"] == 4
    study = yaml.safe_load((tmp_path / "w" / "doctor.yaml").read_text())  # what it trained: packing, FSDP2
    assert study["train"]["packing"] and study["train"]["fsdp"] == {"enabled": True, "version": 2}
    load_params(tmp_path / "w" / "doctor.yaml")  # a valid study


def test_doctor_needs_one_mode():
    r = subprocess.run(
        [sys.executable, "-m", "llm4academic", "doctor"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode != 0 and "--gpu" in r.stderr and "--dry-run" in r.stderr


def test_slurm_example_runs_a_recipe_through_the_multinode_config():
    sbatch = sorted((ROOT / "params" / "slurm").glob("*.sbatch"))
    assert sbatch
    for path in sbatch:
        text = path.read_text()
        assert text.startswith("#!/bin/bash") and "#SBATCH --gpus-per-node=4" in text
        recipe = re.search(r"RECIPE=\$\{RECIPE:-(\S+)\}", text).group(1)
        config = re.search(r"ACCELERATE_CONFIG=\$\{ACCELERATE_CONFIG:-(\S+)\}", text).group(1)
        load_params(ROOT / recipe)  # an existing, valid seed recipe
        acc = yaml.safe_load((ROOT / config).read_text())
        assert acc["distributed_type"] == "FSDP" and acc["num_machines"] > 1
        assert "srun" in text and "accelerate launch" in text and "-m llm4academic train" in text
        assert re.search(r"--machine_rank \"?\$SLURM_NODEID", text)
        assert re.search(r"--main_process_ip \"?\$MASTER_ADDR", text)
        assert "SLURM_JOB_NODELIST" in text and "MASTER_PORT" in text and "SLURM_NNODES" in text
        assert "llm4academic doctor --gpu" in text
