"""Batched generation and its cache, on tiny models: batched == one by one, length buckets, the runner's own
decoding loop == transformers' generate, resume, cache keys, sampling seeds."""

import importlib.util
import json
import os

import pandas as pd
import pytest
import torch
import transformers

from llm4academic import answer_cache
from llm4academic import generate as G
from llm4academic.config import BACKENDS, ConfigError, KitError, ModelParams, load_params
from llm4academic.generate import GenParams, generate_answers, model_identity
from llm4academic.models import EOS, build_tiny, load_model, load_tokenizer
from llm4academic.runners import TransformersRunner, prefill_groups
from llm4academic.zbench import load_zbench

QUICK = GenParams(max_new_tokens=8, batch_size=4)


@pytest.fixture(scope="module")
def items():
    """Seven Z-Bench prompts of mixed lengths (so that batches are padded)."""
    zb = load_zbench()
    return zb.iloc[[0, 3, 70, 101, 150, 250, 300]][["item_id", "prompt"]].reset_index(drop=True)


def params(path, name="m", **kw) -> ModelParams:
    return ModelParams(name=name, path=str(path), **kw)


def run(mp, items, out, gen=QUICK, **kw):
    return generate_answers(mp, items, out, gen, progress=False, **kw)


def one_by_one(mp, items, out, monkeypatch, gen=QUICK):
    """``generate_answers`` with every prompt in a batch of its own (``batch_size=1`` may still batch short prompts)."""
    with monkeypatch.context() as m:
        m.setattr(G, "length_batches", lambda lengths, *a, **k: [[i] for i in range(len(lengths))])
        return run(mp, items, out, gen)


@pytest.fixture(scope="module")
def eos_llama(tiny_models, tmp_path_factory):
    """Tiny LLaMA whose EOS logit copies (×1.05) that of a token it often picks: its answers end at different steps."""
    src = tiny_models("llama")
    model, tok = load_model(params(src)), load_tokenizer(params(src))
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[EOS] = head[900] * 1.05
    out = tmp_path_factory.mktemp("eos") / "llama"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("arch", ["llama", "opt", "bloom", "t5"])
def test_batched_equals_one_by_one(arch, tiny_models, items, tmp_path, monkeypatch):
    """llama and opt go through the runner's own loop, bloom (ALiBi) and t5 through generate."""
    mp = params(tiny_models(arch))
    batched, rep = run(mp, items, tmp_path / "b")
    single, rep1 = one_by_one(mp, items, tmp_path / "s", monkeypatch)
    assert rep.generated == len(items) and rep.batches == 2 and rep1.batches == len(items)
    assert list(batched["item_id"]) == list(items["item_id"])  # the original order, not the length order
    for col in ("answer", "new_tokens", "finish_reason", "key"):
        assert list(batched[col]) == list(single[col]), col
    assert (batched["new_tokens"] > 0).all()


def test_one_by_one_is_plain_generate(tiny_models, items, tmp_path):
    """The kit's answer = transformers' greedy generate on the unpadded training-time prompt ids."""
    mp = params(tiny_models("llama"))
    df, _ = run(mp, items.iloc[:2], tmp_path, GenParams(max_new_tokens=8, batch_size=2))
    tok, model = load_tokenizer(mp), load_model(mp)
    ids = G.prompt_ids(G.zbench_record(items["prompt"][1]), tok, "alpaca", seq2seq=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids) :].tolist()
    assert df["answer"][1] == tok.decode([t for t in out if t != EOS], skip_special_tokens=True)


def test_eos_stops_rows_at_different_steps(eos_llama, items, tmp_path, monkeypatch):
    mp = params(eos_llama)
    gen = GenParams(max_new_tokens=12, batch_size=7)
    batched, _ = run(mp, items, tmp_path / "b", gen)
    single, _ = one_by_one(mp, items, tmp_path / "s", monkeypatch, gen)
    assert set(batched["finish_reason"]) == {"eos", "length"}
    assert batched.loc[batched["finish_reason"] == "length", "new_tokens"].eq(12).all()
    assert list(batched["answer"]) == list(single["answer"])
    assert list(batched["new_tokens"]) == list(single["new_tokens"])


def test_long_prompt_keeps_its_end_and_fits(tiny_models, items, tmp_path, monkeypatch):
    """OPT's learned positions stop at 512: a longer prompt keeps BOS and its end (### Response:)."""
    long = pd.DataFrame({"item_id": ["long"], "prompt": ["这是一个很长的问题。" * 200]})
    mixed = pd.concat([items.iloc[:3], long], ignore_index=True)
    mp = params(tiny_models("opt"))
    batched, rep = run(mp, mixed, tmp_path / "b")
    single, _ = one_by_one(mp, mixed, tmp_path / "s", monkeypatch)
    assert rep.prompts_truncated == 1 and batched["prompt_truncated"].tolist() == [False] * 3 + [True]
    assert batched["prompt_tokens"][3] > 512
    assert list(batched["answer"]) == list(single["answer"])
    tok = load_tokenizer(mp)
    ids, cut = G.fit_prompt(G.prompt_ids(G.zbench_record(long["prompt"][0]), tok, "alpaca", False), 504, 1)
    assert cut and len(ids) == 504 and tok.decode(ids).endswith("### Response:")


def test_resume_generates_only_the_rest(tiny_models, items, tmp_path, monkeypatch):
    mp = params(tiny_models("llama"))
    gen = GenParams(max_new_tokens=8, batch_size=2)
    part, rep = run(mp, items, tmp_path, gen, stop_after_batches=2)  # batches of 2 (the longest), 3, 2 prompts
    assert (rep.generated, rep.cached, rep.missing, len(part)) == (5, 0, 2, 5)
    full, rep = run(mp, items, tmp_path, gen)
    assert (rep.generated, rep.cached, rep.missing) == (2, 5, 0)
    lines = [json.loads(x) for x in open(rep.cache_file, encoding="utf-8")]
    assert len(lines) == len(items) == len({r["key"] for r in lines}) == len(full)
    assert list(full["item_id"]) == list(items["item_id"])
    single, _ = one_by_one(mp, items, tmp_path / "fresh", monkeypatch)
    assert list(full["answer"]) == list(single["answer"])
    # all cached: the model is not even loaded
    monkeypatch.setitem(G.RUNNERS, "transformers", lambda *a, **k: pytest.fail("model loaded"))
    again, rep = run(mp, items, tmp_path, gen)
    assert (rep.generated, rep.cached) == (0, len(items))
    assert again.equals(full)


def test_config_template_and_weights_are_in_the_key(tiny_models, items, tmp_path):
    src = tiny_models("llama")
    mp, few = params(src), items.iloc[:3]
    _, rep = run(mp, few, tmp_path)
    assert rep.generated == 3
    # same answers whatever the batch size or (greedy) seed: cached
    assert run(mp, few, tmp_path, GenParams(max_new_tokens=8, batch_size=2, seed=9))[1].cached == 3
    assert run(mp, few, tmp_path, GenParams(max_new_tokens=9, batch_size=4))[1].generated == 3
    assert run(params(src, template="belle"), few, tmp_path)[1].generated == 3
    assert run(params(src, dtype="bfloat16"), few, tmp_path)[1].generated == 3
    # other weights at the same path: a new identity
    model = tmp_path / "model"
    build_tiny("llama", model, seed=0)
    first = run(params(model), few, tmp_path)[1]
    build_tiny("llama", model, seed=1)
    second = run(params(model), few, tmp_path)[1]
    assert second.generated == 3 and second.identity != first.identity and second.cache_file != first.cache_file


def test_identity_hashes_each_file_once(tmp_path, monkeypatch):
    import hashlib

    model = build_tiny("opt", tmp_path / "opt")
    calls = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, name: calls.append(fh.name) or real(fh, name))
    first = model_identity(str(model))
    assert first.startswith(f"{model.resolve()}@sha256:") and any(c.endswith(".safetensors") for c in calls)
    calls.clear()
    assert model_identity(str(model)) == first and calls == []
    answer_cache._MEMO.clear()  # a new process: the memo file still knows the hashes
    assert model_identity(str(model)) == first and calls == []
    weights = model / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: hashed again, same id
    assert model_identity(str(model)) == first and [os.path.basename(c) for c in calls] == ["model.safetensors"]


def test_truncated_last_line_is_dropped_and_reported(tiny_models, items, tmp_path):
    mp, few = params(tiny_models("llama")), items.iloc[:3]
    _, rep = run(mp, few, tmp_path)
    path = rep.cache_file
    lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
    with open(path, "w", encoding="utf-8") as fh:  # the last row half written, as after a crash
        fh.writelines(lines[:-1] + [lines[-1][:50]])
    with pytest.warns(UserWarning, match="half-written"):
        df, rep = run(mp, few, tmp_path)
    assert rep.dropped_partial_line and (rep.cached, rep.generated) == (2, 1) and len(df) == 3
    rows = [json.loads(x) for x in open(path, encoding="utf-8")]
    assert len(rows) == 3 == len({r["key"] for r in rows})
    lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
    with open(path, "w", encoding="utf-8") as fh:  # a broken line in the middle is not guessed at
        fh.writelines([lines[0], "{oops\n", *lines[1:]])
    with pytest.raises(KitError, match=r"\.jsonl:2: not a generation row"):
        run(mp, few, tmp_path)


def test_sampling_is_seeded_per_prompt(tiny_models, items, tmp_path, monkeypatch):
    mp = params(tiny_models("llama"))
    sample = GenParams(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=1, batch_size=4)
    a, _ = run(mp, items, tmp_path / "a", sample)
    b, _ = one_by_one(mp, items, tmp_path / "b", monkeypatch, sample)
    c, _ = run(mp, items, tmp_path / "c", GenParams(**{**sample.__dict__, "seed": 2}))
    greedy, _ = run(mp, items, tmp_path / "g")
    assert list(a["answer"]) == list(b["answer"])  # the same draws whatever the batch
    assert list(a["answer"]) != list(c["answer"]) and list(a["answer"]) != list(greedy["answer"])
    assert a["generation"][0] == {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "top_p": 0.9, "seed": 1}


def test_rows_carry_provenance_and_shared_prompts_run_once(tiny_models, items, tmp_path):
    twice = pd.DataFrame(
        {"item_id": ["x", "y", "z"], "prompt": [items["prompt"][0], items["prompt"][1], items["prompt"][0]]}
    )
    df, rep = run(params(tiny_models("t5"), name="t5-base"), twice, tmp_path, limit=3)
    assert rep.generated == 2 and list(df["item_id"]) == ["x", "y", "z"] and df["key"][0] == df["key"][2]
    row = df.iloc[1]
    assert (row["backend"], row["dtype"], row["batch_size"], row["model"], row["template"]) == (
        "transformers",
        "float32",
        4,
        "t5-base",
        "alpaca",
    )
    assert row["generation"] == {"max_new_tokens": 8, "do_sample": False}
    assert row["versions"] == {"torch": torch.__version__, "transformers": transformers.__version__}
    assert row["finish_reason"] in ("eos", "length") and row["seconds"] > 0 and row["prompt"] == items["prompt"][1]
    assert row["model_identity"] == rep.identity and df.attrs["generation"]["generated"] == 2


def test_bad_requests_are_kit_errors(tiny_models, items, tmp_path):
    mp = params(tiny_models("llama"))
    with pytest.raises(KitError, match="top_p"):
        GenParams(top_p=0)
    with pytest.raises(KitError, match="unknown generation backend"):
        run(mp, items, tmp_path, backend="tgi")
    with pytest.raises(KitError, match="item_id"):
        run(mp, items.rename(columns={"item_id": "id"}), tmp_path)
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(KitError, match="vllm package"):
            run(mp, items, tmp_path, backend="vllm")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_what_to_do_and_writes_nothing(items, tmp_path):
    out = tmp_path / "generations"
    with pytest.raises(
        KitError,
        match=r"evaluate\.backend.*vllm package.*install vllm on a GPU machine.*"
        r"set evaluate\.backend: transformers",
    ):
        run(params("tiny:llama"), items, out, backend="vllm")
    assert not out.exists()


def test_evaluate_backend_is_checked_by_the_params(tmp_path):
    body = (
        "name: t\ndata:\n  sources:\n    - name: a\n      path: pkg:instruct/alpaca/alpaca_data.first1825.json\n"
        "models:\n  - name: m\n    path: tiny:llama\nevaluate:\n  backend: {}\n"
    )
    path = tmp_path / "study.yaml"
    path.write_text(body.format("nonsense"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"study\.yaml:10: evaluate\.backend: .*'transformers' or 'vllm'"):
        load_params(path)
    path.write_text(body.format("vllm"), encoding="utf-8")
    assert load_params(path).evaluate.backend == "vllm" and BACKENDS == ("transformers", "vllm")


def test_truncated_is_a_cut_at_the_limit_not_an_eos_there(eos_llama, items, tmp_path):
    """``truncated`` = stopped by max_new_tokens (``finish_reason == "length"``); an answer whose EOS is exactly the
    max_new_tokens-th token ended on its own — in a padded batch and alone."""
    mp = params(eos_llama)
    df, _ = run(mp, items, tmp_path / "a", GenParams(max_new_tokens=12, batch_size=7))
    assert list(df["truncated"]) == list(df["finish_reason"] == "length") and set(df["truncated"]) == {True, False}
    ended = df[df["finish_reason"] == "eos"].iloc[0]
    k = int(ended["new_tokens"])  # its EOS is the k-th new token
    assert k >= 2
    at, _ = run(mp, items, tmp_path / "at", GenParams(max_new_tokens=k, batch_size=7))
    ends_by_k = (df["finish_reason"] == "eos") & (df["new_tokens"] <= k)
    assert list(at["finish_reason"]) == ["eos" if e else "length" for e in ends_by_k]
    assert list(at["truncated"]) == list(~ends_by_k) and at["new_tokens"].le(k).all()
    row = at[at["item_id"] == ended["item_id"]].iloc[0]
    assert (row["finish_reason"], row["truncated"], row["new_tokens"], row["answer"]) == (
        "eos",
        False,
        k,
        ended["answer"],
    )
    one = items[items["item_id"] == ended["item_id"]]
    cut, _ = run(mp, one, tmp_path / "cut", GenParams(max_new_tokens=k - 1, batch_size=1))
    assert (cut["finish_reason"][0], cut["truncated"][0], cut["new_tokens"][0]) == ("length", True, k - 1)
    # read back from the cache: the same flags (derived from finish_reason, not stored)
    again, rep = run(mp, items, tmp_path / "a", GenParams(max_new_tokens=12, batch_size=7))
    assert rep.cached == len(items) and list(again["truncated"]) == list(df["truncated"])
    assert all("truncated" not in json.loads(line) for line in open(rep.cache_file, encoding="utf-8"))


def test_vllm_finish_mapping_reads_the_ids():
    """vLLM's outputs → (new ids, finish): an EOS in the ids ends the answer whatever vLLM's finish_reason says (also
    when it is the max_tokens-th id); a "stop" whose EOS id was left out of the ids gets it back; else a cut."""
    from types import SimpleNamespace

    from llm4academic.runners import VllmRunner

    eos = 2
    cases = [  # (token_ids, vLLM finish_reason) → (new ids, finish)
        (([5, 6, eos], "stop"), ([5, 6, eos], "eos")),
        (([5, 6], "stop"), ([5, 6, eos], "eos")),
        (([5, 6, 7], "length"), ([5, 6, 7], "length")),
        (([5, 6, eos], "length"), ([5, 6, eos], "eos")),  # EOS exactly at max_tokens: not truncated
    ]
    runner = object.__new__(VllmRunner)
    runner.gen, runner.eos = GenParams(max_new_tokens=3), eos
    runner.vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    outputs = [SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, finish_reason=why)]) for (ids, why), _ in cases]
    runner.llm = SimpleNamespace(generate=lambda prompts, sampling, use_tqdm: outputs)
    got = runner.run([[1]] * len(cases), [0] * len(cases))
    assert got == [expected for _, expected in cases]
    assert [G.is_truncated({"finish_reason": finish}) for _, finish in got] == [False, False, True, False]


# --------------------------------------------------------------------------------------------- length buckets


def test_length_batches_share_lengths_within_the_first_batch_memory():
    lengths = [480, 96, 95, 95, 300, 97, 94, 93, 290, 96, 310, 95] + [100] * 40
    batches = G.length_batches(lengths, 4, 32)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert flat == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # runs of the length order
    budget = 4 * (480 + 32)
    assert all(len(b) * (lengths[b[0]] + 32) <= budget and len(b) <= 16 for b in batches)
    assert batches[0] == [0, 10, 4, 8]  # the longest prompts: batch_size rows
    assert max(map(len, batches)) == 15  # short prompts share larger batches in the same memory
    # a batch is cut where its padding costs more than one more batch
    assert G.length_batches([480, 100, 100, 100, 100], 4, 32) == [[0], [1, 2, 3, 4]]
    assert G.length_batches([480, 470, 100], 4, 32) == [[0, 1, 2]]  # 380 padded positions: cheaper than a batch
    assert G.length_batches([480, 470, 100], 4, 32, batch_positions=100) == [[0, 1], [2]]
    assert G.length_batches([], 4) == [] and G.length_batches([5], 1) == [[0]]
    assert G.length_batches([10] * 5, 2) == [[0, 1], [2, 3], [4]]  # equal lengths: batch_size rows
    assert max(map(len, G.length_batches([480] + [10] * 30, 2))) == 8  # at most 4 × batch_size rows


def test_prefill_groups_pad_little_and_call_rarely():
    assert prefill_groups([50, 50, 50]) == [[0, 1, 2]]  # one exact-length call
    assert prefill_groups([400, 100, 98, 97]) == [[0], [1, 2, 3]]  # padding 100 → 400 costs more than a call
    assert prefill_groups([100, 99, 101]) == [[2, 0, 1]]  # 3 padded tokens are cheaper than a second call
    assert prefill_groups([300, 100], call_tokens=10**6) == [[0, 1]]
    assert prefill_groups([300, 100], call_tokens=0) == [[0], [1]]


@pytest.mark.parametrize("arch", ["llama", "opt", "bloom", "t5"])
def test_runner_loop_only_where_it_is_generate(arch, tiny_models):
    mp = params(tiny_models(arch))
    runner = TransformersRunner(mp, load_tokenizer(mp), arch == "t5", QUICK, "cpu")
    assert runner.direct == (arch in ("llama", "opt"))


@pytest.mark.parametrize("sample", [False, True])
def test_runner_loop_equals_generate(eos_llama, tiny_models, items, sample):
    """The runner's own loop (bucketed prefill, buffer cache, per-row positions) answers what transformers' generate
    answers, row by row: greedy and seeded sampling, rows ending at EOS at different steps, one row or many, on
    LLaMA (rotary positions) and OPT (learned positions)."""
    gen = GenParams(max_new_tokens=12, do_sample=sample, temperature=1.3, top_p=0.8)
    for mp in (params(eos_llama), params(tiny_models("opt"))):
        tok = load_tokenizer(mp)
        runner = TransformersRunner(mp, tok, False, gen, "cpu")
        prompts = [G.prompt_ids(G.zbench_record(p), tok, "alpaca", False) for p in items["prompt"]]
        prompts += [prompts[0][:40], prompts[0][:40], prompts[1][:2]]  # equal lengths; a 2-token prompt
        seeds = [G.item_seed(3, str(i)) for i in range(len(prompts))]
        assert runner.direct
        loop = runner.run(prompts, seeds)
        alone = [runner.run_generate([p], [s])[0] for p, s in zip(prompts, seeds, strict=True)]
        assert loop == alone == runner.run_generate(prompts, seeds)
        assert [runner.run([p], [s])[0] for p, s in zip(prompts, seeds, strict=True)] == alone
        if mp.path == str(eos_llama) and not sample:
            assert {f for _, f in loop} == {"eos", "length"}
