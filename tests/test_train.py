"""Training under FSDP on 2 CPU processes (launched by accelerate's notebook_launcher): FSDP really engages,
the loss falls, the consolidated checkpoint reloads, and a resumed run ends where an uninterrupted one does."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SMOKE

from llm4academic.config import ModelParams, load_params
from llm4academic.models import load_model, load_tokenizer
from llm4academic.rundir import RunDir

SMALL = [
    "data.sources[0].max_records=60",
    "data.sources[1].max_records=60",
    "data.sources[2].max_records=30",
    "data.clean.near_dedup.enabled=false",
    "data.contamination.enabled=false",
    "train.max_length=128",
    "train.per_device_batch_size=2",
    "train.gradient_accumulation_steps=1",
    "train.max_steps=8",
    "train.save_steps=4",
    "train.learning_rate=1e-2",
    "train.warmup_ratio=0",
    "train.lr_scheduler=constant",
]


def study(arch: str, port: int, *extra: str) -> list[str]:
    return [
        *SMALL,
        f"models=[{{name: tiny-{arch}, path: 'tiny:{arch}'}}]",
        f"train.models=[tiny-{arch}]",
        f"train.main_process_port={port}",
        *extra,
    ]


def launch(run_dir, model: str, overrides: list[str], stop_after: int | None = None) -> dict:
    """``train.launch`` in a fresh Python process, as a notebook kernel runs it: notebook_launcher forks its
    workers, and a parent that has already run torch compute (as this test process does) is no safe fork point."""
    code = (
        "import json, sys; from llm4academic import train; a = json.loads(sys.argv[1]); "
        "r = train.launch(a['params'], a['run_dir'], a['model'], a['overrides'], stop_after=a['stop_after']); "
        "print('RESULT=' + json.dumps(r))"
    )
    args = json.dumps(
        {
            "params": str(SMOKE),
            "run_dir": str(run_dir),
            "model": model,
            "overrides": overrides,
            "stop_after": stop_after,
        }
    )
    r = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT="))[7:])


def metrics(run_dir, model):
    path = RunDir(run_dir).metrics(model)
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,port,version",
    [("llama", 29611, 2), ("bloom", 29612, 2), ("opt", 29613, 2), ("t5", 29614, 2), ("llama", 29615, 1)],
)
def test_fsdp_on_two_cpu_processes(arch, port, version, tmp_path):
    grouped = ["train.group_by_length=true"] if arch == "bloom" else []  # padding mode, batches grouped by length
    overrides = study(arch, port, f"train.fsdp.version={version}", *grouped)
    result = launch(tmp_path, f"tiny-{arch}", overrides)
    fsdp = result["fsdp"]
    assert fsdp["distributed_type"] == "FSDP" and fsdp["num_processes"] == 2 and fsdp["fsdp_version"] == version
    assert fsdp["sharded"] and fsdp["parameter_types"] == (["DTensor"] if version == 2 else ["Parameter"])
    assert fsdp["local_parameters"] <= fsdp["parameters"] // 2 + 64  # each of the 2 ranks holds about half
    rows = metrics(tmp_path, f"tiny-{arch}")
    assert [r["step"] for r in rows] == list(range(1, 9))
    losses = [r["loss"] for r in rows]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.005, losses  # falls (T5's small init learns slowest)
    assert result["data"]["packing"] == (arch in ("llama", "opt"))  # BLOOM (ALiBi) and T5 train padded
    final = RunDir(tmp_path).final(f"tiny-{arch}")
    assert (final / "model.safetensors").is_file() and not list(final.glob("*.bin"))
    mp = ModelParams(name="reloaded", path=str(final))
    model, tok = load_model(mp), load_tokenizer(mp)
    batch = tok(["Give three tips for staying healthy."], return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)
    assert sum(p.numel() for p in model.parameters()) == fsdp["parameters"]


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch(straight, "tiny-llama", study("llama", 29621))
    first = launch(resumed, "tiny-llama", study("llama", 29622), stop_after=4)
    rd = RunDir(resumed)
    assert not rd.final("tiny-llama").exists() and [p.name for p in rd.checkpoints("tiny-llama")] == ["checkpoint-4"]
    assert first.get("steps") is None  # no summary: the run stopped
    launch(resumed, "tiny-llama", study("llama", 29623))
    a, b = metrics(straight, "tiny-llama"), metrics(resumed, "tiny-llama")
    assert [r["step"] for r in b] == list(range(1, 9))  # steps 1-4 from the first launch, 5-8 after the resume
    # Tolerance: the same data order, optimizer, scheduler and RNG state; only float reduction order may differ.
    assert b[-1]["loss"] == pytest.approx(a[-1]["loss"], rel=1e-4)
    assert [p.name for p in rd.checkpoints("tiny-llama")] == ["checkpoint-8"]  # save_total_limit: 1


def test_recipes_carry_the_seeds_hyper_parameters():
    recipes = sorted((ROOT / "params" / "recipes").glob("*.yaml"))
    assert [p.stem for p in recipes] == ["bloomz-7b1-mt", "flan-t5-xxl", "galactica-6.7b", "glm-4-9b", "llama-7b"]
    cards = {}
    for path in recipes:
        p = load_params(path)
        t = p.train
        t5 = path.stem == "flan-t5-xxl"
        assert (t.num_processes, t.per_device_batch_size, t.gradient_accumulation_steps) == (
            4,
            1 if t5 else 4,
            32 if t5 else 8,
        )
        assert (t.learning_rate, t.weight_decay, t.lr_scheduler, t.warmup_ratio, t.num_epochs) == (
            2e-5,
            0.0,
            "cosine",
            0.03,
            3,
        )
        assert (t.mixed_precision, t.tf32, t.save_steps, t.save_total_limit) == ("bf16", True, 2000, 1)
        assert t.fsdp.enabled and t.method == "full" and p.steps == ["explore", "train", "evaluate", "compare"]
        assert [s.name for s in p.data.sources] == ["alpaca", "chinese_alpaca", "belle"]
        cards[path.stem] = (p.models[0].path, p.models[0].card)
    assert cards == {
        "llama-7b": ("huggyllama/llama-7b", "llama"),
        "bloomz-7b1-mt": ("bigscience/bloomz-7b1-mt", "bloom"),
        "galactica-6.7b": ("facebook/galactica-6.7b", "opt"),
        "flan-t5-xxl": ("google/flan-t5-xxl", "t5"),
        "glm-4-9b": ("zai-org/glm-4-9b-hf", "glm"),
    }


@pytest.mark.slow
def test_lora_trains_adapters_under_ddp_and_saves_merged(tmp_path):
    result = launch(
        tmp_path,
        "tiny-llama",
        study("llama", 29631, "train.method=lora", "train.fsdp.enabled=false", "train.lora.r=4", "train.max_steps=4"),
    )
    assert result["fsdp"]["distributed_type"] == "MULTI_CPU" and not result["fsdp"]["sharded"]
    final = RunDir(tmp_path).final("tiny-llama")
    merged = load_model(ModelParams(name="m", path=str(final)))
    assert not any("lora" in n for n, _ in merged.named_parameters())  # merged into the base weights
    losses = [r["loss"] for r in metrics(tmp_path, "tiny-llama")]
    assert len(losses) == 4 and all(loss == loss for loss in losses)


def test_lora_with_fsdp_is_refused():
    with pytest.raises(Exception, match="train.method: lora trains the adapters under DDP"):
        load_params(SMOKE, ["train.method=lora"])
