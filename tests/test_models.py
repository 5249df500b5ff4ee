import json
import subprocess
import sys

import pytest
import torch

from llm4academic import models
from llm4academic.config import TINY_ARCHS, ModelParams

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


@pytest.mark.parametrize("arch,first,last", [("llama", 1, None), ("opt", 1, None), ("bloom", None, None),
                                             ("t5", None, 2), ("glm", 1, None)])
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
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **kw: seen.append(kw["trust_remote_code"]) or real(*a, **kw))
    path = str(tiny_models("llama"))
    models.load_tokenizer(ModelParams(name="a", path=path))
    models.load_tokenizer(ModelParams(name="b", path=path, trust_remote_code=True))
    assert seen == [False, True]


def test_cli_models_tiny(tmp_path):
    out = tmp_path / "glm"
    r = subprocess.run([sys.executable, "-m", "llm4academic", "models", "tiny", str(out), "--arch", "glm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "llm4academic", "models", "tiny", str(out), "--arch", "gpt2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "expected one of llama, bloom, opt, t5, glm" in bad.stderr
