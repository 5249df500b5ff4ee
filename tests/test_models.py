import json
import os
import subprocess
import sys

import pytest
import torch

from llm4academic import models
from llm4academic.catalog import card_for_config, get_model_card, model_cards
from llm4academic.config import TINY_ARCHS, KitError, ModelParams

ZH = "给出三个保持健康的提示。"
EN = "Give three tips for staying healthy."


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_builds_saves_reloads_offline_and_runs(arch, tiny_models):
    path = tiny_models(arch)
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)  # safetensors only
    meta = json.loads((path / "llm4academic.json").read_text())
    assert meta["tiny_arch"] == arch and 100_000 < meta["parameters"] < 400_000
    mp = ModelParams(name=arch, path=str(path))
    tok, model = models.load_tokenizer(mp), models.load_model(mp)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert model.config.model_type == {"opt": "opt", "glm": "glm"}.get(arch, arch)
    assert models.is_seq2seq(model.config) == (arch == "t5")
    batch = tok([EN, ZH], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss) and 5.5 < out.loss.item() < 8.5  # ≈ ln(vocab) for random weights
    assert out.logits.shape[-1] >= len(tok)


def test_tokenizer_round_trips_chinese_and_english(tiny_models):
    tok = models.load_tokenizer(ModelParams(name="l", path=str(tiny_models("llama"))))
    for text in (ZH, EN, "题目：小明每天早上花费10分钟 walking 2 km."):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok(ZH, add_special_tokens=False)["input_ids"]) < len(ZH.encode("utf-8"))  # merges learned


@pytest.mark.parametrize(
    "arch,first,last", [("llama", 1, None), ("opt", 1, None), ("bloom", None, None), ("t5", None, 2), ("glm", 1, None)]
)
def test_framing_matches_the_real_tokenizers(arch, first, last, tiny_models):
    tok = models.load_tokenizer(ModelParams(name=arch, path=str(tiny_models(arch))))
    ids = tok(EN)["input_ids"]
    bare = tok(EN, add_special_tokens=False)["input_ids"]
    assert ids == ([first] if first is not None else []) + bare + ([last] if last is not None else [])


def test_tiny_spec_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM4A_CACHE_DIR", str(tmp_path))
    path = models.resolve_model_path("tiny:opt")
    assert path.startswith(str(tmp_path / "models")) and models.resolve_model_path("tiny:opt") == path
    stamp = (tmp_path / "models").glob("tiny-opt-*/model.safetensors").__next__().stat().st_mtime_ns
    models.resolve_model_path("tiny:opt")
    assert next((tmp_path / "models").glob("tiny-opt-*/model.safetensors")).stat().st_mtime_ns == stamp
    assert models.resolve_model_path("org/name") == "org/name"
    assert not list((tmp_path / "models").glob(".*"))  # no half-written build left behind


def test_build_is_seeded(tmp_path):
    a, b = models.build_tiny("llama", tmp_path / "a", seed=1), models.build_tiny("llama", tmp_path / "b", seed=1)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_trust_remote_code_only_when_asked(monkeypatch, tiny_models):
    seen = []
    import transformers

    real = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        transformers.AutoTokenizer,
        "from_pretrained",
        lambda *a, **kw: seen.append(kw["trust_remote_code"]) or real(*a, **kw),
    )
    path = str(tiny_models("llama"))
    models.load_tokenizer(ModelParams(name="a", path=path))
    models.load_tokenizer(ModelParams(name="b", path=path, trust_remote_code=True))
    assert seen == [False, True]


def test_cli_models_tiny(tmp_path):
    out = tmp_path / "glm"
    r = subprocess.run(
        [sys.executable, "-m", "llm4academic", "models", "tiny", str(out), "--arch", "glm"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "llm4academic", "models", "tiny", str(out), "--arch", "gpt2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expected one of llama, bloom, opt, t5, glm" in bad.stderr


# --------------------------------------------------------------------------------------------- model cards


@pytest.mark.parametrize("card", [c for c in model_cards() if c.name in TINY_ARCHS], ids=lambda c: c.name)
def test_every_card_instantiates_its_architecture_at_tiny_size(card):
    import transformers

    config = models.tiny_config(card.name)
    assert card_for_config(config) is card
    model = getattr(transformers, card.auto_class).from_config(config)
    assert type(model).__name__ == card.architecture
    classes = {type(m).__name__ for m in model.modules()}
    assert card.wrap_class in classes  # FSDP's auto-wrap policy finds the block it names
    assert card.wrap_class in model._no_split_modules
    assert models.is_seq2seq(config) == card.is_seq2seq


def test_the_cards_without_a_tiny_model_need_remote_code():
    assert {c.name for c in model_cards()} - set(TINY_ARCHS) == {"chatglm"}
    assert get_model_card("chatglm").needs_remote_code


def _checkpoint(tmp_path, **config) -> str:
    """A local model directory holding only a config.json: enough for every check made before the weights."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def _no_loading(monkeypatch):
    """Fail the test if anything gets as far as transformers' own config/model/tokenizer loading."""
    import transformers

    def refuse(*a, **kw):
        raise AssertionError("loading went past the checks")

    for auto in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", refuse)


def test_chatglm_without_remote_code_fails_clearly_before_loading(tmp_path, monkeypatch):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    path = _checkpoint(
        tmp_path,
        model_type="chatglm",
        architectures=["ChatGLMModel"],
        auto_map={
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
    )
    _no_loading(monkeypatch)
    mp = ModelParams(name="chatglm6b", path=path)
    for call in (models.load_model, models.load_tokenizer, models.model_card):
        with pytest.raises(KitError) as err:
            call(mp)
        message = str(err.value)
        for part in ("'chatglm6b'", path, "ChatGLM-6B", "card 'chatglm'", "models[i].trust_remote_code: true"):
            assert part in message, (call.__name__, part, message)
    assert models.model_card(ModelParams(name="c", path=path, trust_remote_code=True)).name == "chatglm"


def test_unknown_model_type_without_remote_code_fails_clearly(tmp_path, monkeypatch):
    _no_loading(monkeypatch)
    bare = ModelParams(name="odd", path=_checkpoint(tmp_path / "a", model_type="oddformer"))
    with pytest.raises(KitError, match="model_type 'oddformer', which transformers .* does not implement.*auto_map"):
        models.load_model(bare)
    coded = ModelParams(
        name="odd",
        path=_checkpoint(
            tmp_path / "b", model_type="oddformer", auto_map={"AutoModelForCausalLM": "modeling_odd.OddLM"}
        ),
    )
    with pytest.raises(KitError, match="models\\[i\\].trust_remote_code: true"):
        models.load_model(coded)
    with pytest.raises(KitError, match="no model card covers model_type 'oddformer'"):  # code allowed, still no card
        models.model_card(coded.model_copy(update={"trust_remote_code": True}))
    with pytest.raises(KitError, match="no model card covers model_type 'gpt2'"):  # in transformers, not a card
        models.model_card(ModelParams(name="g", path=_checkpoint(tmp_path / "c", model_type="gpt2")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KitError, match="no config.json"):
        models.load_model(ModelParams(name="e", path=str(tmp_path / "empty")))


def test_missing_hub_model_offline_is_a_kit_error():
    with pytest.raises(KitError, match="'x'.*config.json"):
        models.load_model(ModelParams(name="x", path="no-such-org/no-such-model"))


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_load_model_uses_the_cards_auto_class_and_params(arch, tiny_models, monkeypatch):
    import transformers

    card = get_model_card(arch)
    auto = getattr(transformers, card.auto_class)
    seen = []
    real = auto.from_pretrained
    monkeypatch.setattr(auto, "from_pretrained", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    path = str(tiny_models(arch))
    model = models.load_model(
        ModelParams(name="m", path=path, card=arch, dtype="bfloat16", attn_implementation="eager")
    )
    assert type(model).__name__ == card.architecture
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert seen[-1]["use_safetensors"] is True and seen[-1]["trust_remote_code"] is False
    model = models.load_model(
        ModelParams(name="m", path=path, dtype="bfloat16"), dtype=torch.float32, attn_implementation="sdpa"
    )  # arguments override the params
    assert next(model.parameters()).dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    assert seen[-1]["dtype"] is torch.float32
    models.load_model(ModelParams(name="m", path=path))
    assert seen[-1]["dtype"] == "auto" and "attn_implementation" not in seen[-1]


def test_a_card_that_does_not_fit_the_checkpoint_is_refused(tiny_models):
    mp = ModelParams(name="m", path=str(tiny_models("llama")), card="bloom")
    with pytest.raises(KitError, match="card 'bloom'.*model_type bloom.*'llama'"):
        models.load_model(mp)
    assert models.resolve_card(mp.model_copy(update={"card": None}), {"model_type": "llama"}).name == "llama"
    assert models.model_card(ModelParams(name="m", path="tiny:glm")).wrap_class == "GlmDecoderLayer"


def test_resolve_dtype():
    assert models.resolve_dtype("auto") == "auto" and models.resolve_dtype(None) is None
    assert models.resolve_dtype("bfloat16") is torch.bfloat16 and models.resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(KitError, match="unknown dtype"):
        models.resolve_dtype("int4")


# --------------------------------------------------------------------------------------------- special tokens


def _load(tiny_models, arch):
    mp = ModelParams(name=arch, path=str(tiny_models(arch)))
    return models.load_tokenizer(mp), models.load_model(mp)


def _runs(tok, model):
    batch = tok([EN, ZH], return_tensors="pt", padding=True)
    assert (batch.input_ids == tok.pad_token_id).any()  # the shorter text was padded
    with torch.no_grad():
        out = model(**batch, labels=batch.input_ids.masked_fill(batch.attention_mask == 0, -100))
    assert torch.isfinite(out.loss)


def test_missing_pad_token_gets_stanfords_pad_with_mean_rows(tiny_models):
    tok, model = _load(tiny_models, "llama")  # untied input and output embeddings, like LLaMA-7B
    tok.pad_token = None
    vocab = len(tok)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert models.add_special_tokens(tok, model) == 1
    assert tok.pad_token == models.DEFAULT_PAD_TOKEN == "[PAD]" and tok.pad_token_id == vocab == len(tok) - 1
    new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert new_in.shape[0] == new_out.shape[0] == vocab + 1 == model.config.vocab_size
    torch.testing.assert_close(new_in[vocab], old_in.mean(dim=0))
    torch.testing.assert_close(new_out[vocab], old_out.mean(dim=0))
    assert torch.equal(new_in[:vocab], old_in) and torch.equal(new_out[:vocab], old_out)
    assert model.config.pad_token_id == model.generation_config.pad_token_id == vocab
    _runs(tok, model)


def test_tied_embeddings_and_spare_rows(tiny_models):
    tok, model = _load(tiny_models, "t5")  # tied at tiny size
    model.resize_token_embeddings(len(tok) + 8)  # spare rows past the vocabulary, like Flan-T5's 32128 for 32100
    rows = model.get_input_embeddings().weight.shape[0]
    old = model.get_input_embeddings().weight.detach().clone()
    tok.pad_token = None
    assert models.add_special_tokens(tok, model) == 1
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == rows  # the new token fits: nothing shrinks, nothing grows
    torch.testing.assert_close(weight[tok.pad_token_id], old[: len(tok) - 1].mean(dim=0))
    _runs(tok, model)


def test_undeclared_tokens_already_in_the_vocabulary_are_declared_not_added(tiny_models):
    tok, model = _load(tiny_models, "opt")
    tok.bos_token, tok.unk_token = None, None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert models.add_special_tokens(tok, model) == 0
    assert (tok.bos_token, tok.unk_token, tok.bos_token_id, tok.unk_token_id) == ("<s>", "<unk>", 1, 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_nothing_changes_when_all_special_tokens_exist(arch, tiny_models):
    tok, model = _load(tiny_models, arch)
    vocab, before = len(tok), {k: v.clone() for k, v in model.state_dict().items()}
    assert models.add_special_tokens(tok, model) == 0
    assert len(tok) == vocab and model.config.pad_token_id == models.PAD
    assert before.keys() == model.state_dict().keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _bin_only_copy(src, dst):
    """A copy of a tiny checkpoint whose weights are only PyTorch's pickle (``pytorch_model.bin``), as older hub
    checkpoints publish them (transformers 5's save_pretrained writes safetensors only)."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    torch.save(load_file(dst / "model.safetensors"), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


def test_bin_only_model_is_refused_unless_the_params_allow_pickle_weights(tiny_models, tmp_path, monkeypatch):
    import transformers

    path = _bin_only_copy(tiny_models("llama"), tmp_path / "bin-only")
    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **kw: seen.append(kw) or real(*a, **kw)
    )
    with pytest.raises(KitError, match=r"'old'.*no \*\.safetensors.*pickle.*models\[i\]\.allow_pickle_weights: true"):
        models.load_model(ModelParams(name="old", path=str(path)))
    assert seen == []  # refused before loading anything
    assert ModelParams(name="old", path=str(path)).allow_pickle_weights is False
    model = models.load_model(ModelParams(name="old", path=str(path), allow_pickle_weights=True))
    assert seen[-1]["use_safetensors"] is not True
    reference = models.load_model(ModelParams(name="new", path=str(tiny_models("llama"))))
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the same weights, read from the pickle


def test_bin_only_hub_model_is_refused_with_the_kits_message(tiny_models, tmp_path, monkeypatch):
    """A hub id: whether it has safetensors is known only when transformers looks; its error becomes the kit's."""
    import huggingface_hub

    snapshot = tmp_path / "hub" / "models--some-org--old-model" / "snapshots" / ("0" * 40)
    _bin_only_copy(tiny_models("llama"), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(KitError, match=r"'old'.*safetensors.*models\[i\]\.allow_pickle_weights: true"):
        models.load_model(ModelParams(name="old", path="some-org/old-model"))
    model = models.load_model(ModelParams(name="old", path="some-org/old-model", allow_pickle_weights=True))
    assert model.config.model_type == "llama"


def test_special_tokens_for_the_tokenizer_alone_match_the_models(tiny_models):
    """The dataset is tokenised before the worker loads the model: the tokenizer alone gets the very tokens and
    ids that the worker's tokenizer gets with the model."""
    alone, (with_model, model) = _load(tiny_models, "opt")[0], _load(tiny_models, "opt")
    for t in (alone, with_model):
        t.pad_token = None
    assert models.add_special_tokens(alone) == 1 and models.add_special_tokens(with_model, model) == 1
    assert alone.pad_token_id == with_model.pad_token_id == model.config.pad_token_id == len(alone) - 1
    assert alone.get_vocab() == with_model.get_vocab()
