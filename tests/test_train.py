"""Training under FSDP on 2 CPU processes (launched by accelerate's notebook_launcher): FSDP really engages,
the loss falls, the consolidated checkpoint reloads, and a resumed run ends where an uninterrupted one does."""

import contextlib
import json
import subprocess
import sys

import datasets
import pytest
import torch
from conftest import ROOT, SMOKE

from llm4academic import train
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
    assert fsdp["global_parameters"] == fsdp["parameters"]  # what MFU counts: FSDP2 DTensors and FSDP1 flat shards
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
    if arch == "llama":  # the consolidated final checkpoint holds exactly the weights of the last sharded checkpoint
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        last = RunDir(tmp_path).checkpoints(f"tiny-{arch}")[-1]
        dcp_to_torch_save(str(last / "state"), str(tmp_path / "last.pt"))
        sharded = torch.load(tmp_path / "last.pt", weights_only=False)["model"]
        saved = load_file(final / "model.safetensors")
        assert set(saved) <= set(sharded) and all(torch.equal(saved[k], sharded[k]) for k in saved)


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
    again = launch(resumed, "tiny-llama", study("llama", 29624))  # the same run once more: reused, not retrained
    assert again["reused"] and again["steps"] == 8 and metrics(resumed, "tiny-llama") == b


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
        assert t.fsdp.enabled and t.method == "full"
        assert p.steps == ["explore", "train", *([] if t5 else ["align"]), "evaluate", "compare"]
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


# --------------------------------------------------------------------------------------------- issue 13: unit tests


class DeviceOnlyAccelerator:
    """An accelerator on a device that is not the CPU (like NCCL's GPUs): its collectives refuse other tensors."""

    device = torch.device("meta")
    num_processes = 2
    is_main_process = True

    def __init__(self):
        self.reduced = []

    def reduce(self, tensor, reduction):
        assert tensor.device == self.device, f"a collective on a {tensor.device} tensor (NCCL has no CPU backend)"
        self.reduced.append(reduction)
        return torch.tensor(7.0 if reduction == "mean" else 1000.0)


def test_metrics_reduce_only_tensors_on_the_accelerators_device(tmp_path, capsys):
    from llm4academic.train_log import MetricsLog

    acc = DeviceOnlyAccelerator()
    log = MetricsLog(RunDir(tmp_path), "m", acc, resumed_at=0, total=30, n_params=10)
    log.add(torch.ones((), device=acc.device), 500)
    log.add(torch.ones((), device=acc.device), 500)
    log.step({"step": 3, "epoch": 0}, 1e-3, None, every=1)
    assert acc.reduced == ["mean", "sum"]
    assert metrics(tmp_path, "m")[0] | {"seconds": 0, "tokens_per_s": 0} == {
        "step": 3,
        "epoch": 0,
        "loss": 7.0,
        "lr": 1e-3,
        "grad_norm": None,
        "tokens": 1000.0,
        "seconds": 0,
        "tokens_per_s": 0,
        "mfu": None,
    }
    line = capsys.readouterr().out.strip()  # the progress line the training cell shows
    assert line.startswith("step 3/30 · loss 7 · ") and line.endswith(" tok/s"), line


def test_a_resumed_run_drops_the_metrics_rows_past_its_checkpoint(tmp_path):
    from llm4academic.train_log import MetricsLog

    path = RunDir(tmp_path).metrics("m")
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 7)))  # killed after 6
    MetricsLog(RunDir(tmp_path), "m", DeviceOnlyAccelerator(), resumed_at=4, total=8, n_params=1).summary()
    assert [r["step"] for r in metrics(tmp_path, "m")] == [1, 2, 3, 4]  # 5 and 6 are trained (and logged) again


def test_mfu_counts_the_global_parameters_once(monkeypatch):
    from llm4academic import fsdp, train_log

    class DTensorLike(torch.nn.Parameter):  # FSDP2: numel() is already the global size, the shard is to_local()
        def to_local(self):
            return self[: len(self) // 4]

    model = torch.nn.Module()
    model.w = DTensorLike(torch.zeros(1000))
    assert fsdp.global_parameters(model) == 1000  # not 4 × 1000 on 4 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert train_log.mfu(fsdp.global_parameters(model), 1e9, world=4) == pytest.approx(6 * 1000 * 1e9 / (989e12 * 4))


def test_cuda_rng_state_is_saved_and_restored(monkeypatch):
    from llm4academic import fsdp

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: torch.tensor([1, 2, 3], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, *a: restored.append(s.tolist()))
    state = fsdp._rng_state()
    assert state["cuda"].tolist() == [1, 2, 3]
    fsdp._set_rng_state(state)
    assert restored == [[1, 2, 3]]


def test_fsdp1_final_save_gathers_on_rank0_offloaded_to_cpu(monkeypatch):
    import contextlib
    from types import SimpleNamespace

    from llm4academic import fsdp

    calls = []

    class FakeFSDP(torch.nn.Module):
        @staticmethod
        @contextlib.contextmanager
        def summon_full_params(module, **kw):
            calls.append(kw)
            yield

    model = FakeFSDP()
    model.lin = torch.nn.Linear(2, 2)
    monkeypatch.setattr(fsdp, "FSDP", FakeFSDP)
    sd = fsdp._full_state_dict(SimpleNamespace(is_main_process=True, device=torch.device("cuda", 0)), model)
    assert calls == [{"writeback": False, "rank0_only": True, "offload_to_cpu": True}]  # never the full model per GPU
    assert set(sd) == {"lin.weight", "lin.bias"}


def test_resume_checks_the_run_fingerprint(tmp_path, capsys):
    from llm4academic.base import KitError
    from llm4academic.train_log import prepare_run

    def params(*extra):
        p = load_params(SMOKE, study("llama", 29640, *extra))
        return p, p.model("tiny-llama")

    rd = RunDir(tmp_path)
    rd.mix.parent.mkdir(parents=True)
    rd.mix.write_text('{"id": "a"}\n')
    fp, finished = prepare_run(*params(), rd, 2)
    assert finished is None and fp["model"]["sha256"] and fp["train"]["learning_rate"] == 1e-2
    ckpt = rd.checkpoint("tiny-llama", 8)
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 8, "fingerprint": fp}))
    assert prepare_run(*params("train.save_steps=2", "train.logging_steps=2"), rd, 2) == (fp, None)  # resumable
    for extra, processes, differs in [
        (["train.learning_rate=2e-2"], 2, "train.learning_rate: 0.01 → 0.02"),
        (["train.max_steps=4"], 2, "train.max_steps: 8 → 4"),  # today: nothing trains, old weights evaluated
        (["seed=7"], 2, "seed: "),
        ([], 4, "processes: 2 → 4"),  # the data position would be wrong
    ]:
        with pytest.raises(KitError, match="cannot be resumed") as e:
            prepare_run(*params(*extra), rd, processes)
        assert differs in str(e.value) and "train.resume: false" in str(e.value), str(e.value)
    rd.mix.write_text('{"id": "b"}\n')
    with pytest.raises(KitError, match="mix_sha256"):
        prepare_run(*params(), rd, 2)
    rd.mix.write_text('{"id": "a"}\n')
    rd.final("tiny-llama").mkdir()
    rd.train_summary("tiny-llama").write_text(json.dumps({"steps": 8, "fingerprint": fp}))
    capsys.readouterr()
    assert prepare_run(*params(), rd, 2) == (fp, {"steps": 8, "fingerprint": fp})  # finished: reused, and said so
    assert "reusing the finished run" in capsys.readouterr().out
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 8}))  # a checkpoint from before fingerprints
    with pytest.raises(KitError, match="no run fingerprint"):
        prepare_run(*params("train.learning_rate=2e-2"), rd, 2)
    assert prepare_run(*params("train.resume=false"), rd, 2)[1] is None  # a fresh start clears the old run
    assert not rd.checkpoints("tiny-llama") and not rd.final("tiny-llama").exists()
    assert rd.read_train_summary("tiny-llama") is None


@pytest.mark.slow
def test_one_process_trains_in_a_child_process_and_shows_progress(tmp_path, capfd):
    from accelerate.state import PartialState

    from llm4academic import train

    before = dict(PartialState._shared_state)
    overrides = study("llama", 29641, "train.num_processes=1", "train.fsdp.enabled=false", "train.max_steps=3")
    result = train.launch(SMOKE, tmp_path, "tiny-llama", overrides)
    assert result["steps"] == 3 and result["fsdp"]["num_processes"] == 1
    assert PartialState._shared_state == before  # accelerate's state stays out of the notebook kernel's process
    out = capfd.readouterr().out
    assert [line.split(" · ")[0] for line in out.splitlines() if line.startswith("step ")] == [
        "step 1/3",
        "step 2/3",
        "step 3/3",
    ], out


def galactica_like(tiny_models, tmp_path):
    """A tiny OPT whose tokenizer declares no EOS and no pad token, as facebook/galactica-6.7b's does."""
    import shutil

    path = tmp_path / "galactica-like"
    shutil.copytree(tiny_models("opt"), path)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "eos_token"}))
    return path


def test_special_tokens_are_added_before_the_dataset_is_tokenised(tiny_models, tmp_path):
    from llm4academic import models, train

    path = galactica_like(tiny_models, tmp_path)
    mp = ModelParams(name="gal", path=str(path))
    assert load_tokenizer(mp).eos_token_id is None
    params = load_params(SMOKE, [*study("opt", 29642), f"models=[{{name: gal, path: '{path}'}}]", "train.models=[gal]"])
    stats = train.build_dataset(params, params.model("gal"), tmp_path / "run")  # today: ValueError in sft.framing
    worker_tok = load_tokenizer(mp)
    models.add_special_tokens(worker_tok, load_model(mp))  # what the worker trains with
    eos = worker_tok.eos_token_id
    assert eos is not None and stats["records"] > 0
    ds = train.sft_dataset(RunDir(tmp_path / "run").dataset("gal"))
    assert sum(labels.count(eos) for labels in ds["labels"]) > 0  # replies end with the worker's EOS (unless cut)


class _FakeState:
    """A node's second GPU process on a multi-node run: the main process of its node, not of the run."""

    num_processes, is_main_process, is_local_main_process = 8, False, True

    def __init__(self, cpu=False):
        pass

    @contextlib.contextmanager
    def main_process_first(self):
        yield

    local_main_process_first = main_process_first

    def wait_for_everyone(self):
        pass

    def destroy_process_group(self):
        pass


def test_only_the_global_main_process_builds_the_dataset(monkeypatch, tmp_path):
    """Every node's local main process used to delete and rewrite dataset/ in the shared run dir (a race)."""
    built = []
    monkeypatch.setattr(train, "PartialState", _FakeState)
    monkeypatch.setattr(train, "build_dataset", lambda *a, **k: built.append(a))
    monkeypatch.setattr(train, "prepare_run", lambda *a, **k: (None, {"steps": 1}))  # finished: no worker
    train.run_distributed(SMOKE, tmp_path, "tiny-llama")
    assert built == []


def test_the_dataset_is_written_whole_then_renamed(monkeypatch, tmp_path):
    params = load_params(SMOKE, SMALL)
    mp = params.model("tiny-llama")
    train.build_dataset(params, mp, tmp_path)
    dataset = RunDir(tmp_path).dataset("tiny-llama")
    before = sorted(p.name for p in dataset.iterdir())
    assert before and not list(dataset.parent.glob(".*partial"))

    def broken(self, path, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken)
    with pytest.raises(OSError, match="disk full"):
        train.build_dataset(params, mp, tmp_path)
    assert sorted(p.name for p in dataset.iterdir()) == before  # the old dataset is still whole
