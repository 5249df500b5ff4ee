"""The align step (DPO after SFT, TRL): the kit's DPO loss equals the formula computed by hand, a few pairs are
learnt (reward accuracy past 0.9), pairs are tokenised exactly as SFT trains, bad preference data is counted or
named, held-out pairs stay out of training, and a stopped run resumes to the uninterrupted loss."""

import gzip
import json
import subprocess
import sys

import datasets
import pytest
import torch
from conftest import ROOT, SAMPLES, write

from llm4academic import align, align_eval, preference, sft
from llm4academic.base import KitError
from llm4academic.config import ConfigError, ModelParams, load_params
from llm4academic.models import add_special_tokens, load_tokenizer
from llm4academic.rundir import RunDir

HH = SAMPLES / "hh_rlhf" / "helpful-base-test.jsonl.gz"


def study(tmp_path, source: str = str(HH), **align) -> str:
    """A small align-only study on the tiny LLaMA (start: the base model)."""
    settings = {"sources": [{"name": "hh", "path": source, "max_records": 120}], "held_out": 0.1,
                "max_held_out": 8, "max_pairs": 48, "max_length": 384, "max_prompt_length": 320,
                "learning_rate": 5e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0, "per_device_batch_size": 4,
                "gradient_accumulation_steps": 1, "max_steps": 6, "save_steps": 3, "num_processes": 1,
                "examples": 2, "example_max_new_tokens": 4, **align}  # fmt: skip
    text = {
        "name": "align-test",
        "seed": 3,
        "data": {"sources": [{"name": "alpaca", "path": "pkg:instruct/alpaca/alpaca_data.first1825.json"}]},
        "models": [{"name": "tiny-llama", "path": "tiny:llama"}],
        "steps": ["align"],
        "align": settings,
    }
    return str(write(tmp_path / "study.yaml", json.dumps(text)))


def hh_line(prompt: str, chosen: str, rejected: str) -> str:
    return json.dumps({"chosen": f"\n\nHuman: {prompt}\n\nAssistant: {chosen}",
                       "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {rejected}"})  # fmt: skip


def trainer_on(params, rd, rows, tmp_path):
    smp = params.model("tiny-llama")
    ds = datasets.Dataset.from_list(rows).remove_columns(["id"])
    return align.make_trainer(params, smp, ds, tmp_path / "out")


def tokenised(params, n: int, split="train"):
    tok = load_tokenizer(params.model("tiny-llama"))
    add_special_tokens(tok)
    split, _ = preference.load_pairs(params)
    ds, _ = preference.tokenize_pairs(split["train"], tok, "alpaca", params.align)
    return ds.select(range(n)).to_list(), tok


def test_the_kits_dpo_loss_is_the_formula_computed_by_hand(tmp_path):
    params = load_params(study(tmp_path, beta=0.3))
    rows, tok = tokenised(params, 4)
    trainer = trainer_on(params, RunDir(tmp_path / "run"), rows, tmp_path)
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference, else every log-ratio is 0 and the loss log 2
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = trainer.data_collator([{k: v for k, v in r.items() if k != "id"} for r in rows])
    trainer.model.eval()
    with torch.no_grad():
        kit = trainer.compute_loss(trainer.model, batch).item()
    by_hand = preference.dpo_loss(
        preference.reply_logps(trainer.model, rows, params.align.max_length, tok.eos_token_id, ref=trainer.ref_model),
        beta=0.3,
    )
    assert abs(kit - 0.6931) > 1e-3  # the policy really differs from the reference
    assert kit == pytest.approx(by_hand, rel=1e-4)


@pytest.mark.slow
def test_a_few_pairs_are_learnt_past_ninety_percent_reward_accuracy(tmp_path):
    short = {"max_length": 192, "max_prompt_length": 128}
    params = load_params(study(tmp_path, max_steps=25, learning_rate=2e-2, per_device_batch_size=8, beta=0.1, **short))
    rows, tok = tokenised(params, 8)
    trainer = trainer_on(params, RunDir(tmp_path / "run"), rows, tmp_path)
    before = preference.reply_logps(trainer.model, rows, 192, tok.eos_token_id, ref=trainer.ref_model)
    trainer.train()
    after = preference.reply_logps(trainer.model, rows, 192, tok.eos_token_id, ref=trainer.ref_model)
    reward = lambda lp: (lp.logp_chosen - lp.ref_logp_chosen) - (lp.logp_rejected - lp.ref_logp_rejected)  # noqa: E731
    assert (reward(before) > 0).mean() < 0.9  # the start model does not already prefer them
    assert (reward(after) > 0).mean() > 0.9
    assert preference.dpo_loss(after, 0.1) < preference.dpo_loss(before, 0.1)


def test_pairs_are_tokenised_exactly_as_sft_trains_the_dialogue(tiny_models):
    tok = load_tokenizer(ModelParams(name="t", path="tiny:llama"))
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "2+2?"}]  # fmt: skip
    (p, c, r) = sft.encode_pairs([turns], ["It is 4."], ["No idea"], tok, "alpaca")[0]
    rec = {"id": "x", "instruction": "", "input": "", "output": "", "chosen": "", "rejected": "",
           "conversation": [*turns, {"role": "assistant", "content": "It is 4."}]}  # fmt: skip
    ids = sft.tokenize_records(datasets.Dataset.from_list([rec]), tok, "alpaca", 512)[0][0]["input_ids"]
    assert ids == p + c and c[-1] == r[-1] == tok.eos_token_id
    assert p == sft.encode_prompt(rec, tok, "alpaca")


def test_bad_pairs_are_counted_and_held_out_pairs_never_trained_on(tmp_path):
    lines = [hh_line(f"question {i}?", f"good answer {i}", f"bad answer {i}") for i in range(20)]
    lines += [hh_line("same?", "identical reply", "identical reply"), hh_line("empty?", "a reply", "")]
    lines += [hh_line("long " * 400, "x", "y")]
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    params = load_params(study(tmp_path, source=str(path), max_prompt_length=200, max_length=256, held_out=0.25))
    split, report = preference.load_pairs(params)
    assert report["skipped"] == {"identical": 1, "empty_rejected": 1}
    assert report["pairs"] == 21 and report["held_out"] == 6 and report["train"] == 15
    assert not set(split["train"]["id"]) & set(split["held_out"]["id"])
    assert preference.load_pairs(params)[0]["held_out"]["id"] == split["held_out"]["id"]  # seeded
    tok = load_tokenizer(params.model("tiny-llama"))
    everything = datasets.concatenate_datasets([split["train"], split["held_out"]])
    _, stats = preference.tokenize_pairs(everything, tok, "alpaca", params.align)
    assert stats["skipped"] == {"prompt_too_long": 1} and stats["kept"] == 20


def test_a_source_without_preference_pairs_is_an_error_naming_the_file(tmp_path):
    alpaca = SAMPLES / "alpaca" / "alpaca_data.first1825.json"
    params = load_params(study(tmp_path, source=str(alpaca)))
    with pytest.raises(KitError, match=r"alpaca_data\.first1825\.json: align\.sources\[0\] \(hh\) holds no preference"):
        preference.load_pairs(params)


def test_align_params_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="max_prompt_length"):
        load_params(study(tmp_path, max_prompt_length=400, max_length=384))
    with pytest.raises(ConfigError, match="align.models"):
        load_params(study(tmp_path), ["align.models=[nope]"])
    with pytest.raises(ConfigError, match="DDP"):
        load_params(study(tmp_path), ["align.lora.enabled=true"])


def test_sft_start_needs_the_sft_checkpoint(tmp_path):
    params = load_params(study(tmp_path), ["align.start=sft"])
    with pytest.raises(KitError, match="has no SFT checkpoint"):
        align.start_of(params, params.model("tiny-llama"), RunDir(tmp_path / "run"))


def start_launch(params_path, run_dir, overrides=(), stop_after=None) -> subprocess.Popen:
    """``align.launch`` in a fresh Python process, as a notebook kernel runs it (``finish`` waits for it)."""
    code = (
        "import json, sys; from llm4academic import align; a = json.loads(sys.argv[1]); "
        "r = align.launch(a['p'], a['d'], 'tiny-llama', a['o'], stop_after=a['s']); print('RESULT=' + json.dumps(r))"
    )
    arg = json.dumps({"p": params_path, "d": str(run_dir), "o": list(overrides), "s": stop_after})
    return subprocess.Popen(
        [sys.executable, "-c", code, arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT="))[7:])


def run_launch(params_path, run_dir, overrides=(), stop_after=None) -> dict:
    return finish(start_launch(params_path, run_dir, overrides, stop_after))


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_uninterrupted_loss(tmp_path):
    p = study(tmp_path)
    runs = [start_launch(p, tmp_path / "whole"), start_launch(p, tmp_path / "parts", stop_after=3)]  # side by side
    whole, stopped = map(finish, runs)
    assert "final" not in stopped and RunDir(tmp_path / "parts").align_checkpoints("tiny-llama-dpo")
    resumed = run_launch(p, tmp_path / "parts")
    assert resumed["steps"] == whole["steps"] == 6
    assert resumed["last_loss"] == pytest.approx(whole["last_loss"], rel=1e-5)
    rows = RunDir(tmp_path / "parts").read_align_metrics("tiny-llama-dpo")
    assert list(rows["step"]) == list(range(1, 7))  # no step twice after the resume
    assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "kl/implicit"} <= set(rows.columns)
    with pytest.raises(AssertionError, match="another run"):  # another beta: the checkpoint is not this run's
        run_launch(p, tmp_path / "parts", ["align.beta=0.5", "align.max_steps=9"])


def test_dpo_recipes_follow_zephyr_on_the_seeds_four_gpus(monkeypatch, tmp_path):
    """alignment-handbook's Zephyr-7B-β full DPO: beta 0.01, lr 5e-7, 1 epoch, cosine, warmup 0.1, max length 1024
    (prompt 512), 128 pairs per step — here 8 per device × 4 accumulation × 4 GPUs; FSDP2 on the card's layer."""
    import transformers.training_args as ta

    from llm4academic.catalog import get_model_card

    monkeypatch.setattr(ta, "is_torch_bf16_gpu_available", lambda: True)  # the recipe's bf16, as on its GPUs
    wraps = {}
    for name in ("llama-7b", "bloomz-7b1-mt", "galactica-6.7b", "glm-4-9b"):
        p = load_params(ROOT / "params" / "recipes" / f"{name}.yaml")
        a = p.align
        assert "align" in p.steps and a.start == "sft" and a.loss_type == "sigmoid"
        assert (a.beta, a.learning_rate, a.num_epochs, a.lr_scheduler, a.warmup_ratio) == (0.01, 5e-7, 1, "cosine", 0.1)
        assert (a.max_length, a.max_prompt_length, a.mixed_precision) == (1024, 512, "bf16")
        assert (a.per_device_batch_size, a.gradient_accumulation_steps, a.num_processes) == (8, 4, 4)
        card = get_model_card(p.models[0].card)
        cfg = align.dpo_config(p, tmp_path / name, cpu=False, wrap_class=card.wrap_class)
        assert cfg.beta == 0.01 and cfg.loss_type == ["sigmoid"] and cfg.bf16 and cfg.warmup_steps == 0.1
        assert cfg.fsdp and cfg.fsdp_config["version"] == 2
        wraps[name] = cfg.fsdp_config["transformer_layer_cls_to_wrap"]
    assert wraps == {"llama-7b": ["LlamaDecoderLayer"], "bloomz-7b1-mt": ["BloomBlock"],
                     "galactica-6.7b": ["OPTDecoderLayer"], "glm-4-9b": ["GlmDecoderLayer"]}  # fmt: skip
    t5 = load_params(ROOT / "params" / "recipes" / "flan-t5-xxl.yaml")
    assert "align" not in t5.steps  # TRL's DPOTrainer trains decoder-only models


def test_an_encoder_decoder_model_is_refused_with_the_reason(tmp_path):
    params = load_params(study(tmp_path), ["models=[{name: tiny-t5, path: 'tiny:t5'}]"])
    rd = RunDir(tmp_path / "run")
    align.ensure_pairs(params, rd)
    with pytest.raises(KitError, match="decoder-only"):
        align.build_dataset(params, params.model("tiny-t5"), rd)


@pytest.mark.slow
def test_the_cli_worker_runs_under_torchrun_on_two_processes(tmp_path):
    p = study(tmp_path, num_processes=2, max_steps=3)
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731"]
    out = subprocess.run([*torchrun, "-m", "llm4academic", "align", p, "--run-dir", str(run)],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rd = RunDir(run)
    ran = json.loads(rd.align_distributed("tiny-llama-dpo").read_text())
    assert (ran["distributed_type"], ran["num_processes"]) == ("MULTI_CPU", 2)
    [entry] = rd.read_align_index()
    assert entry["model"] == "tiny-llama-dpo" and entry["steps"] == 3
    assert (rd.align_final("tiny-llama-dpo") / "model.safetensors").is_file()


def test_held_out_answers_are_shown_as_text(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.align_dir.mkdir(parents=True)
    row = {"model": "m-tuned-dpo", "start": "m-tuned", "id": "hh-1", "prompt": "<b>hi</b>", "chosen": "a & b",
           "m-tuned": "<script>alert(1)</script>", "m-tuned-dpo": "<img src=x onerror=alert(2)>"}  # fmt: skip
    rd.align_examples.write_text(json.dumps([row]))
    page = align_eval.examples_html(rd.root)
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a &amp; b" in page


def test_held_out_rows_measure_both_models_on_the_same_pairs():
    import pandas as pd

    start = pd.DataFrame({"id": list("abcd"), "logp_chosen": [-5.0, -9, -3, -8], "logp_rejected": [-6.0, -4, -7, -2],
                          "tokens_chosen": [5, 9, 3, 8], "tokens_rejected": [6, 2, 7, 1]})  # fmt: skip
    dpo = start.assign(logp_chosen=[-4.0, -3, -3, -1], ref_logp_chosen=start.logp_chosen,
                       ref_logp_rejected=start.logp_rejected, kl_chosen=0.1)  # fmt: skip
    [s] = preference.held_out_rows("m-tuned", "sft", start, beta=0.1, seed=0)
    [d] = preference.held_out_rows("m-tuned-dpo", "sft+dpo", dpo, beta=0.1, seed=0)
    assert s["preference_accuracy"] == 0.5 and d["preference_accuracy"] == 1.0 and "reward_accuracy" not in s
    assert d["reward_accuracy"] == 0.75  # item c: chosen unchanged, rejected unchanged → reward 0, not a win
    assert d["reward_margin"] == pytest.approx(0.1 * (1 + 6 + 0 + 7) / 4)
    gain = preference.paired_gain(start, dpo, seed=0, key="m")
    assert gain["gain"] == 0.5 and gain["gain_ci_low"] <= 0.5 <= gain["gain_ci_high"]
