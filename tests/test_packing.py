"""Packed rows on CPU: ``PACKED_SDPA`` computes each example's own attention block; loss, gradients and logits equal
stanford-style padded training, everything that is not a packed batch is transformers' SDPA unchanged."""

import inspect
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLES
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm4academic import packing, sft, train
from llm4academic.data.formats import load_file


@pytest.fixture(scope="module")
def records():
    """English records of several lengths plus Chinese ones: rows of several examples each."""
    en = load_file(SAMPLES / "alpaca" / "alpaca_data.first1825.json", source="en", on_invalid="skip", max_records=14)
    zh = load_file(SAMPLES / "chinese_alpaca" / "alpaca_data-0-3252-zh.first2000.json", source="zh", max_records=6)
    from datasets import concatenate_datasets

    return concatenate_datasets([en[0], zh[0]])


def _examples(path, records):
    tok = AutoTokenizer.from_pretrained(path)
    examples, _ = sft.tokenize_records(records, tok, "alpaca", 256)
    return tok, examples


def _features(ds, *cols):
    d = ds.select_columns(list(cols)).to_dict()
    return [dict(zip(d, v, strict=True)) for v in zip(*d.values(), strict=True)]


def _summed(model, batch) -> tuple[torch.Tensor, int]:
    """Σ next-token cross-entropy over the batch's labels (what padded and packed training both minimise)."""
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    target = labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
    return loss, int((target != -100).sum())


@pytest.mark.parametrize("arch", ["llama", "opt", "glm"])
def test_packed_sdpa_loss_and_gradients_equal_padded(arch, tiny_models, records):
    tok, examples = _examples(tiny_models(arch), records)
    torch.manual_seed(0)
    # eval(): no dropout (OPT's is functional); gradients flow all the same
    padded_model = AutoModelForCausalLM.from_pretrained(tiny_models(arch), attn_implementation="sdpa").eval()
    packed_model = AutoModelForCausalLM.from_pretrained(tiny_models(arch), attn_implementation="sdpa").eval()

    collate = packing.packed_collator(packed_model, tok.pad_token_id, dtype=torch.float32, on_cpu=True)
    assert collate.attn_implementation == packing.PACKED_SDPA == packed_model.config._attn_implementation
    rows, _ = packing.pack(examples, 512)
    features = _features(rows, "input_ids", "labels", "position_ids", "seq_lens")
    assert max(len(f["seq_lens"]) for f in features) > 2
    batch = collate(features)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # flattened, no dense mask
    lp, np_ = _summed(packed_model, batch)
    lp.backward()

    solo = _features(examples, "input_ids", "labels")
    ld, nd = torch.zeros(()), 0
    for i in range(0, len(solo), 5):  # stanford's way: right-padded batches, 2D mask
        x, n = _summed(padded_model, packing.PaddedCollator(tok)(solo[i : i + 5]))
        ld, nd = ld + x, nd + n
    ld.backward()
    assert np_ == nd
    assert abs(lp.item() - ld.item()) / ld.item() <= 1e-5
    grads = dict(padded_model.named_parameters())
    for name, p in packed_model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_each_example_sees_only_itself(tiny_models, records):
    """The summed loss hardly moves when examples leak into each other (random tiny weights): compare logits."""
    tok, examples = _examples(tiny_models("llama"), records)
    model = AutoModelForCausalLM.from_pretrained(tiny_models("llama")).eval()
    solo = {}
    with torch.no_grad():
        for e in _features(examples, "input_ids"):
            solo[tuple(e["input_ids"])] = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
        batch = packing.packed_collator(model, tok.pad_token_id, dtype=torch.float32, on_cpu=True)(
            _features(packing.pack(examples, 512)[0], "input_ids", "labels", "position_ids", "seq_lens")
        )
        logits = model(**batch).logits[0]
    cu = batch["cu_seq_lens_q"].tolist()
    ids = batch["input_ids"][0].tolist()
    assert len(cu) - 1 == len(solo)
    for s, e in zip(cu, cu[1:], strict=False):
        torch.testing.assert_close(logits[s:e], solo[tuple(ids[s:e])], atol=1e-5, rtol=1e-5)


def test_sliding_window_is_kept_inside_each_example():
    """Mistral-style sliding window shorter than the examples: per-example logits equal each example run alone."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=5, attn_implementation="sdpa",
    )  # fmt: skip
    model = MistralForCausalLM(cfg).eval()
    lens = [12, 3, 9]
    feats = [{"input_ids": torch.randint(0, 64, (n,)).tolist()} for n in lens]
    feats = [{**f, "labels": f["input_ids"]} for f in feats]
    collate = packing.packed_collator(model, 0, dtype=torch.float32, on_cpu=True)
    assert collate.attn_implementation == packing.PACKED_SDPA
    with torch.no_grad():
        logits = model(**collate(feats)).logits[0]
        start = 0
        for f, n in zip(feats, lens, strict=True):
            solo = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[start : start + n], solo, atol=1e-5, rtol=1e-5)
            start += n


def test_outside_packed_batches_it_is_plain_sdpa(tiny_models, records):
    """Padded batches, generation with a cache, and a flattened batch without ``cu_seq_lens`` (transformers then
    builds the block mask from the restarting positions): the same numbers as transformers' SDPA."""
    tok, examples = _examples(tiny_models("llama"), records)
    plain = AutoModelForCausalLM.from_pretrained(tiny_models("llama"), attn_implementation="sdpa").eval()
    switched = AutoModelForCausalLM.from_pretrained(tiny_models("llama"), attn_implementation="sdpa").eval()
    packing.packed_collator(switched, tok.pad_token_id, dtype=torch.float32, on_cpu=True)
    assert switched.config._attn_implementation == packing.PACKED_SDPA
    padded = packing.PaddedCollator(tok)(_features(examples.select(range(6)), "input_ids", "labels"))
    flat = packing.flatten_for_flash(_features(examples.select(range(6)), "input_ids", "labels"))
    no_cu = {k: flat[k] for k in ("input_ids", "labels", "position_ids")} | {"use_cache": False}
    tok.padding_side = "left"
    prompts = tok(["Give three tips.", "Name a colour that is warm and bright."], return_tensors="pt", padding=True)
    with torch.no_grad():
        for batch in (padded, no_cu):
            torch.testing.assert_close(switched(**batch).logits, plain(**batch).logits, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(switched(**no_cu).logits, switched(**flat).logits, atol=1e-4, rtol=1e-4)
        kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tok.pad_token_id}
        assert switched.generate(**prompts, **kw).tolist() == plain.generate(**prompts, **kw).tolist()


class _Model:
    def __init__(self, impl):
        self.config = type("Config", (), {"_attn_implementation": impl})()

    def set_attn_implementation(self, impl):
        raise AssertionError("must not switch")


@pytest.mark.parametrize(
    "impl,on_cpu,expected",
    [("flash_attention_2", False, "flash_attention_2"), ("eager", True, "eager"), ("sdpa", False, "sdpa")],
)
def test_collator_keeps_flash_varlen_and_the_mask_elsewhere(impl, on_cpu, expected):
    collate = packing.packed_collator(_Model(impl), 0, dtype=torch.bfloat16, on_cpu=on_cpu)
    assert collate.attn_implementation == expected
    features = [
        {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8], "position_ids": [0, 1, 0, 1], "seq_lens": [2, 2]}
    ]
    batch = collate(features)
    if impl.startswith("flash"):
        assert batch["cu_seq_lens_q"].tolist() == [0, 2, 4] and "attention_mask" not in batch
    else:
        assert batch["attention_mask"].shape == (1, 1, 4, 4) and batch["attention_mask"].dtype == torch.bfloat16


def test_switched_model_saves_and_reloads_as_plain(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models("llama"), attn_implementation="sdpa")
    packing.packed_collator(model, 0, dtype=torch.float32, on_cpu=True)
    model.save_pretrained(tmp_path)
    assert packing.PACKED_SDPA not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config._attn_implementation != packing.PACKED_SDPA


def test_the_trainer_builds_its_packed_collator_here():
    assert "packing.packed_collator(" in inspect.getsource(train.worker)
