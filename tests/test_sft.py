import collections
import os

import datasets
import pytest
import torch
from conftest import SAMPLES
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from benchmarks import stanford
from llm4academic import packing, sft
from llm4academic.data.formats import RECORD_FEATURES, load_file
from llm4academic.templates import render

ALPACA = SAMPLES / "alpaca" / "alpaca_data.first1825.json"
SHIPPED = (
    ALPACA,
    SAMPLES / "chinese_alpaca" / "alpaca_data-0-3252-zh.first2000.json",
    SAMPLES / "belle" / "dev1K.json",
)
DIALOGUE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def rec(i=0, instruction="Name a colour.", input_="", output="Blue.", conversation=()):
    return {
        "id": f"t-{i}",
        "source": "t",
        "language": "en",
        "instruction": instruction,
        "input": input_,
        "output": output,
        "conversation": list(conversation),
        "chosen": "",
        "rejected": "",
    }


def as_ds(records) -> datasets.Dataset:
    return datasets.Dataset.from_list(list(records), features=RECORD_FEATURES)


@pytest.fixture(scope="module")
def tok(tiny_models):
    return lambda arch: AutoTokenizer.from_pretrained(tiny_models(arch))


@pytest.fixture(scope="module")
def alpaca():
    return load_file(ALPACA, source="alpaca", on_invalid="skip")[0]


@pytest.fixture(scope="module")
def mixed(alpaca):
    """Real records (English, Chinese, with and without input) plus dialogues."""
    zh = load_file(SHIPPED[1], source="zh", on_invalid="skip", max_records=20)[0]
    dialogues = as_ds([rec(i, conversation=DIALOGUE) for i in range(3)])
    return datasets.concatenate_datasets([alpaca.select(range(30)), zh, dialogues])


def rows(ds, *cols):
    data = ds.select_columns(list(cols)).to_dict()
    return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]


# --------------------------------------------------------------------------------------------- tokenisation


@pytest.mark.parametrize("arch", ["llama", "bloom", "opt", "glm"])
def test_eos_id_labelled_after_every_reply(arch, tok, mixed):
    t = tok(arch)
    out, report = sft.tokenize_records(mixed, t, "alpaca", 2048)
    assert report.records == report.kept == len(mixed) and report.truncated == report.dropped == 0
    replies = [len([x for x in c if x["role"] == "assistant"]) or 1 for c in mixed.to_dict()["conversation"]]
    for r, n in zip(rows(out, "input_ids", "labels"), replies, strict=True):
        assert r["labels"][-1] == r["input_ids"][-1] == t.eos_token_id
        assert r["labels"].count(t.eos_token_id) == n  # one EOS per assistant reply, labelled
        assert len(r["labels"]) == len(r["input_ids"])
    bos = {"bloom": []}.get(arch, [t.bos_token_id])  # the tokenizer's own framing, once
    assert all(
        r["input_ids"][: len(bos)] == bos and r["input_ids"].count(t.bos_token_id) == len(bos)
        for r in rows(out, "input_ids")
    )


def test_where_stanford_and_segment_tokens_can_differ(tok):
    t = tok("llama")
    prompt = stanford.stanford_sources_targets([rec()], t)[0][0]  # ends in "### Response:"
    assert not any(stanford.stanford_boundary_differs(prompt, o, t) for o in ('"Blue."', "- Blue", "（蓝）", " Blue"))
    assert not any(tokn.startswith(":") and len(tokn) > 1 for tokn in t.get_vocab())  # no merge across ':'
    assert stanford.stanford_boundary_differs("x_", "_y", t)  # '__' is a merge: joined text tokenises differently


def sentencepiece_like(records):
    """A LLaMA-like SentencePiece BPE (Metaspace dummy prefix, byte fallback for newlines) built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sp = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    specials = ["<pad>", "<s>", "</s>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)]
    lines = [x.replace("\n", " ") for r in records for x in (r["instruction"], r["input"], r["output"]) if x]
    sp.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=800, special_tokens=specials, show_progress=False))
    sp.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=sp, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def test_sentencepiece_dummy_prefix_is_not_put_before_each_reply(alpaca):
    records = alpaca.select(range(200))
    t = sentencepiece_like(records)
    outputs = records.to_dict()["output"]
    naive = t(outputs, add_special_tokens=False)["input_ids"]
    assert all(t.convert_ids_to_tokens(ids[0]).startswith("▁") for ids in naive)  # the trap: "▁" before every reply
    out, _ = sft.tokenize_records(records, t, "alpaca", 512)
    ref = stanford.stanford_alpaca_preprocess(*stanford.stanford_sources_targets(records, t), t, 512)
    assert out.select_columns(["labels"]).to_dict()["labels"] == ref["labels"]


def llama3_like(records):
    """A byte-level BPE behind LLaMA-3's split pattern (punctuation keeps the newlines after it: ``":\n"`` is one
    pre-token, so the fixed prompt start cannot end between them), built offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+"
    )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    texts = [x for r in records for x in (r["instruction"], r["input"], r["output"]) if x]
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*texts, *stanford.stanford_sources_targets(records, _Eos())[0]], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="</s>")


class _Eos:
    eos_token = "</s>"


def shipped_records(per_file: int | None = None) -> datasets.Dataset:
    parts = [load_file(p, source=p.parent.name, on_invalid="skip", max_records=per_file)[0] for p in SHIPPED]
    return datasets.concatenate_datasets(parts)


def kept_stanford(records: datasets.Dataset, t, max_length: int) -> dict:
    """stanford's preprocess of the records, without those the kit drops (no trainable token left)."""
    ref = stanford.stanford_alpaca_preprocess(*stanford.stanford_sources_targets(records, t), t, max_length)
    keep = [any(x != sft.IGNORE_INDEX for x in lab[1:]) for lab in ref["labels"]]
    return {k: [x for x, kept in zip(v, keep, strict=True) if kept] for k, v in ref.items()}


@pytest.fixture(scope="module")
def shipped():
    return shipped_records()


@pytest.mark.parametrize("arch", ["llama", "bloom", "opt", "glm", "sentencepiece", "llama3"])
def test_fixed_prompt_start_once_and_labels_equal_stanford_on_the_shipped_samples(arch, tok, shipped, monkeypatch):
    t = {"sentencepiece": sentencepiece_like, "llama3": llama3_like}.get(arch)
    t = t(shipped.select(range(0, len(shipped), 4)).to_list()) if t else tok(arch)
    assert t("x" + t.eos_token, add_special_tokens=False)["input_ids"][-1] == t.eos_token_id  # "</s>" text = EOS id
    shipped = shipped if arch == "llama" else shipped.select(range(0, len(shipped), 3))  # every file, a third
    fixed = sft.heads(t, "alpaca")
    assert len(fixed) == 2  # with and without input: each tokenised once, most of it kept out of the per-record call
    assert all(len(h.ids) >= 15 and len(h.context) <= 2 for h in fixed)
    if arch == "llama3":  # ":\n" is one pre-token there: the per-record text starts before the colon
        assert all(h.text[h.cut :].endswith(":\n") and len(h.text) - h.cut > 2 for h in fixed)
    out, report = sft.tokenize_records(shipped, t, "alpaca", 512, num_proc=1)
    kit = out.select_columns(["input_ids", "labels"]).to_dict()
    ref = kept_stanford(shipped, t, 512)
    assert report.records == len(shipped) > 1600 and report.truncated > 0
    if arch == "llama3":  # stanford tokenises prompt + reply as one text: ":" joins a reply's leading "\n" there
        sources, targets = stanford.stanford_sources_targets(shipped, t)
        differs = [stanford.stanford_boundary_differs(a, b, t) for a, b in zip(sources, targets, strict=True)]
        assert 0 < sum(differs) < len(differs) / 4 and report.dropped == 0
        kit, ref = (
            {k: [x for x, d in zip(v, differs, strict=True) if not d] for k, v in c.items()} for c in (kit, ref)
        )
    assert kit["labels"] == ref["labels"]
    assert kit["input_ids"] == ref["input_ids"]
    monkeypatch.setattr(sft, "heads", lambda *_: ())  # the same examples as with every prompt tokenised whole
    assert sft.tokenize_records(shipped, t, "alpaca", 512, num_proc=1)[0].to_dict() == out.to_dict()


TRICKY_STARTS = (
    "",
    " x",
    "  x",
    "\n",
    "\n\nx",
    "\t\tx",
    " \n x",
    "：x",
    ":x",
    "-",
    '"x"',
    "’s",
    "1.",
    "中文",
    "\u3000x",
)


def tricky_segments() -> list[list[str]]:
    starts = [(a, b, c) for a in TRICKY_STARTS for b in ("", *TRICKY_STARTS[1:4]) for c in TRICKY_STARTS[:5]]
    records = [rec(i, instruction=a + "Name it.", input_=b, output=c) for i, (a, b, c) in enumerate(starts)]
    return [[text for text, _ in render(r, "alpaca")] for r in records]


@pytest.mark.parametrize("arch", ["llama", "sentencepiece", "llama3"])
def test_fields_that_meet_the_fixed_text_tokenise_as_the_whole_segment(arch, tok, alpaca):
    make = {"sentencepiece": sentencepiece_like, "llama3": llama3_like}.get(arch)
    t = make(alpaca.select(range(300)).to_list()) if make else tok(arch)
    fr, segs = sft.framing(t), tricky_segments()
    got = sft.encode_segments(t, segs, fr, sft.heads(t, "alpaca"))
    assert [g[0] for g in got] == [t(s[0], add_special_tokens=False)["input_ids"] for s in segs]
    assert got == sft.encode_segments(t, segs, fr)  # the same ids as without the fixed starts


def test_a_record_whose_context_ids_change_is_encoded_whole(tok, monkeypatch):
    t = tok("llama")
    fr, segs = sft.framing(t), tricky_segments()
    forged = tuple(sft.Head(h.text, h.cut, (-1,), (-2,)) for h in sft.heads(t, "alpaca"))  # never matches
    calls = []
    encode = sft._encode_batch
    monkeypatch.setattr(sft, "_encode_batch", lambda tk, texts: calls.append(len(texts)) or encode(tk, texts))
    got = sft.encode_segments(t, segs, fr, forged)
    assert len(calls) == 2 and calls[1] >= len(segs)  # one more call: every prompt, whole (and some replies)
    assert got == sft.encode_segments(t, segs, fr) and -2 not in {x for g in got for s in g for x in s}


def test_a_tokenizer_that_reads_text_as_one_piece_gets_no_fixed_start():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    whole = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1}, unk_token="<unk>"))  # no pre-tokenizer: one token
    t = PreTrainedTokenizerFast(tokenizer_object=whole, unk_token="<unk>", eos_token="</s>")
    assert sft.heads(t, "alpaca") == () and len(sft.tokenize_records(as_ds([rec(0)]), t, "alpaca", 64)[0]) == 1


# --------------------------------------------------------------------------------------------- processes


def test_worker_count():
    assert sft.worker_count(100, 8) == 1  # a small mix stays in this process
    assert sft.worker_count(4 * sft.MIN_RECORDS_PER_PROC, 2) == 2
    assert sft.worker_count(4 * sft.MIN_RECORDS_PER_PROC, 8) == 4
    assert sft.worker_count(10**6, 1) == 1 and sft.worker_count(10**6, None) >= 1


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_two_processes_give_what_one_gives(arch, tok, mixed, monkeypatch):
    monkeypatch.setattr(sft, "MIN_RECORDS_PER_PROC", 10)
    t, seq2seq = tok(arch), arch == "t5"
    one, r1 = sft.tokenize_records(mixed, t, "alpaca", 128, seq2seq=seq2seq, num_proc=1)
    two, r2 = sft.tokenize_records(mixed, t, "alpaca", 128, seq2seq=seq2seq, num_proc=2)
    assert one.features == two.features and one.to_dict() == two.to_dict() and r1 == r2
    assert r1.dropped > 0 or seq2seq  # dropped records are dropped the same way


FORK_CHECK = """
import os, sys, time
import datasets
from transformers import AutoTokenizer
from llm4academic import sft
from llm4academic.data.formats import load_file

tok = AutoTokenizer.from_pretrained(sys.argv[1])
ds = load_file(sys.argv[2], source="alpaca", on_invalid="skip")[0]
tok.backend_tokenizer.encode_batch([r["output"] for r in ds.to_list()] * 4)  # the Rust thread pool is now in use
sft.MIN_RECORDS_PER_PROC = 200
t0 = time.perf_counter()
two, _ = sft.tokenize_records(ds, tok, "alpaca", 512, num_proc=2)
seconds = time.perf_counter() - t0
one, _ = sft.tokenize_records(ds, tok, "alpaca", 512, num_proc=1)
assert two.to_dict() == one.to_dict(), "2 processes differ from 1"
print("ok", os.environ.get("TOKENIZERS_PARALLELISM"), round(seconds, 2))
"""


def test_forked_workers_after_the_parent_used_the_rust_thread_pool(tiny_models):
    """The launcher's fork constraint, met: the parent has used tokenizers' thread pool (parallelism on), then forks
    the map's workers — no deadlock (tokenizers 0.23 hangs a child that encodes in parallel after such a fork), no
    "huggingface/tokenizers: The current process just got forked" warning (older versions), the same examples, and
    the parent's TOKENIZERS_PARALLELISM as it was."""
    import subprocess
    import sys

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", FORK_CHECK, str(tiny_models("llama")), str(ALPACA)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[:2] == ["ok", "true"]
    assert "huggingface/tokenizers" not in proc.stdout + proc.stderr and "deadlock" not in proc.stderr


def test_truncation_and_dropped_counts(tok):
    t = tok("llama")
    long = "word " * 300
    ds = as_ds([rec(0), rec(1, output=long), rec(2, instruction=long), rec(3, conversation=DIALOGUE)])
    out, report = sft.tokenize_records(ds, t, "alpaca", 128)
    assert (report.records, report.truncated, report.dropped, report.kept) == (4, 2, 1, 3)
    kept = rows(out, "id", "input_ids", "labels")
    assert [r["id"] for r in kept] == ["t-0", "t-1", "t-3"]  # the prompt-only record is dropped
    assert len(kept[1]["input_ids"]) == 128 and kept[1]["labels"][-1] != -100  # cut inside the reply, no EOS
    assert report.tokens == sum(len(r["input_ids"]) for r in kept)
    assert report.trainable_tokens == sum(x != -100 for r in kept for x in r["labels"])
    assert set(report.to_dict()) >= {"records", "truncated", "dropped", "tokens", "trainable_tokens", "kept"}


def test_multi_turn_trains_only_the_replies_and_encode_prompt_matches_training(tok):
    t = tok("llama")
    r = rec(conversation=DIALOGUE)
    out, _ = sft.tokenize_records(as_ds([r]), t, "belle", 512)
    row = rows(out, "input_ids", "labels")[0]
    trainable = [x for x in row["labels"] if x != -100]
    assert t.decode(trainable) == "Hello there!</s>4</s>"
    prompt = sft.encode_prompt(r, t, "belle")
    assert row["input_ids"][: len(prompt)] == prompt and row["labels"][len(prompt) - 1] == -100
    assert row["input_ids"][len(prompt) :] == t("4", add_special_tokens=False)["input_ids"] + [t.eos_token_id]


def test_seq2seq_path_on_tiny_t5(tok, tiny_models, mixed):
    t = tok("t5")
    out, report = sft.tokenize_records(mixed, t, "plain", 128, seq2seq=True)
    assert report.dropped == 0 and set(out.column_names) == {"id", "input_ids", "attention_mask", "labels"}
    first = rows(out, "input_ids", "labels")[0]
    r0 = mixed[0]
    enc = t(f"{r0['instruction']}\n{r0['input']}" if r0["input"] else r0["instruction"])["input_ids"]
    assert enc[-1] == t.eos_token_id and len(enc) < 128  # T5 framing: "$A </s>"
    assert first["input_ids"] == enc
    assert first["labels"] == (t(r0["output"], add_special_tokens=False)["input_ids"] + [t.eos_token_id])[:128]
    assert all(r["labels"][-1] == t.eos_token_id for r in rows(out, "labels") if len(r["labels"]) < 128)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models("t5"))
    batch = packing.PaddedCollator(t)(rows(out.select(range(4)), "input_ids", "attention_mask", "labels"))
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


# --------------------------------------------------------------------------------------------- packing


@pytest.fixture(scope="module")
def llama_examples(tok, mixed):
    return sft.tokenize_records(mixed, tok("llama"), "alpaca", 256)[0]


def test_packed_rows_keep_examples_whole_and_restart_positions(llama_examples):
    packed, report = packing.pack(llama_examples, 256)
    original = [tuple(r["input_ids"]) for r in rows(llama_examples, "input_ids")]
    pieces = []
    for row in rows(packed, "input_ids", "labels", "position_ids", "seq_lens"):
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) == sum(row["seq_lens"]) <= 256
        start = 0
        for n in row["seq_lens"]:
            assert row["position_ids"][start : start + n] == list(range(n))
            assert row["labels"][start] == -100
            pieces.append(tuple(row["input_ids"][start : start + n]))
            start += n
    assert collections.Counter(pieces) == collections.Counter(original)  # each example once, never split
    assert report.examples == len(original) and report.rows == len(packed) < len(original)
    assert report.dropped_examples == report.dropped_tokens == 0


def test_pack_counts_what_it_drops(llama_examples):
    lengths = [len(x) for x in llama_examples.select_columns(["input_ids"]).to_dict()["input_ids"]]
    packed, report = packing.pack(llama_examples, 120, drop_last_partial=True)
    too_long = [n for n in lengths if n > 120]
    assert report.dropped_examples >= len(too_long) and report.dropped_tokens >= sum(too_long)
    assert report.examples + report.dropped_examples == len(lengths)
    assert report.tokens + report.dropped_tokens == sum(lengths)


def unpacked_loss(model, examples):
    """Token-weighted mean loss of the examples run one by one: Σ loss_i·n_i / Σ n_i, plus their logits."""
    total = count = 0
    logits = []
    with torch.no_grad():
        for e in examples:
            out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
            n = sum(x != -100 for x in e["labels"][1:])
            total, count = total + out.loss.item() * n, count + n
            logits.append(out.logits[0])
    return total / count, logits


@pytest.mark.parametrize("arch", ["llama", "opt", "glm"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked_mean(arch, attn, tiny_models, tok, mixed):
    t = tok(arch)
    some = mixed.select([*range(10), *range(30, 34), 50, 51])  # English, Chinese, dialogues
    examples, _ = sft.tokenize_records(some, t, "alpaca", 256)
    model = AutoModelForCausalLM.from_pretrained(tiny_models(arch), attn_implementation=attn).eval()
    expected, solo_logits = unpacked_loss(model, rows(examples, "input_ids", "labels"))
    packed, _ = packing.pack(examples, 512)
    features = rows(packed, "input_ids", "labels", "position_ids", "seq_lens")
    batch = packing.PackedCollator(t.pad_token_id)(features)
    assert batch["attention_mask"].shape == (len(features), 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    with torch.no_grad():
        out = model(**batch)
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)
    # the loss alone hardly moves when examples leak into each other (random tiny weights): compare the logits
    assert max(len(f["seq_lens"]) for f in features) > 2
    inside = {}
    for b, f in enumerate(features):
        for start, n in _spans(f["seq_lens"]):
            inside[tuple(f["input_ids"][start : start + n])] = out.logits[b, start : start + n]
    for e, solo in zip(rows(examples, "input_ids"), solo_logits, strict=True):  # no attention across examples
        torch.testing.assert_close(inside[tuple(e["input_ids"])], solo, atol=1e-4, rtol=1e-4)


def _spans(lens):
    start = 0
    for n in lens:
        yield start, n
        start += n


def test_mask_convention_additive_float_not_bool(tiny_models, tok, llama_examples):
    """transformers 5 passes a 4D mask through as is: SDPA reads bool as 'True = attend', eager adds it."""
    packed, _ = packing.pack(llama_examples.select(range(8)), 256)
    batch = packing.PackedCollator(0)(rows(packed, "input_ids", "labels", "position_ids", "seq_lens"))
    mask = batch["attention_mask"]
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}
    as_bool = {**batch, "attention_mask": mask == 0}
    out = {}
    for attn in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_models("llama"), attn_implementation=attn).eval()
        with torch.no_grad():
            out[attn, "float"], out[attn, "bool"] = model(**batch).logits, model(**as_bool).logits
    torch.testing.assert_close(out["sdpa", "float"], out["eager", "float"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["sdpa", "bool"], out["sdpa", "float"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out["eager", "bool"], out["eager", "float"], atol=1e-3)  # bool under eager: wrong
    bf16 = packing.PackedCollator(0, dtype=torch.bfloat16)(
        rows(packed, "input_ids", "labels", "position_ids", "seq_lens")
    )
    assert bf16["attention_mask"].dtype == torch.bfloat16


def test_flatten_for_flash_layout_and_llama_equivalence(tiny_models, tok, llama_examples):
    examples = llama_examples.select(range(12))
    packed, _ = packing.pack(examples, 256)
    features = rows(packed, "input_ids", "labels", "position_ids", "seq_lens")
    flat = packing.PackedCollator(0, attn_implementation="flash_attention_2")(features)
    lens = [n for f in features for n in f["seq_lens"]]
    assert flat["input_ids"].shape == flat["position_ids"].shape == flat["labels"].shape == (1, sum(lens))
    assert flat["cu_seq_lens_q"].tolist() == [sum(lens[:i]) for i in range(len(lens) + 1)]
    assert flat["cu_seq_lens_q"].dtype == torch.int32 and flat["max_length_k"] == max(lens)
    # on CPU, LLaMA's SDPA path finds the example boundaries from restarting position_ids (without a cache)
    model = AutoModelForCausalLM.from_pretrained(tiny_models("llama")).eval()
    expected, _ = unpacked_loss(model, rows(examples, "input_ids", "labels"))
    with torch.no_grad():
        loss = model(
            input_ids=flat["input_ids"], labels=flat["labels"], position_ids=flat["position_ids"], use_cache=False
        ).loss
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_bloom_cannot_pack_but_pads_exactly(tiny_models, tok, mixed):
    t = tok("bloom")
    model = AutoModelForCausalLM.from_pretrained(tiny_models("bloom")).eval()
    assert "ALiBi" in packing.packing_problem(model.config)
    assert packing.packing_problem(AutoModelForCausalLM.from_pretrained(tiny_models("opt")).config) is None
    examples, _ = sft.tokenize_records(mixed.select(range(16)), t, "alpaca", 256)
    packed, _ = packing.pack(examples, 256)
    with pytest.raises(ValueError), torch.no_grad():  # BLOOM's ALiBi needs a 2D mask: no silent leak
        model(**packing.PackedCollator(t.pad_token_id)(rows(packed, "input_ids", "labels", "position_ids", "seq_lens")))
    expected, _ = unpacked_loss(model, rows(examples, "input_ids", "labels"))
    with torch.no_grad():
        loss = model(**packing.PaddedCollator(t)(rows(examples, "input_ids", "labels"))).loss
    assert loss.item() == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------------------------- collators, batches


def test_padded_collator_shapes(tok):
    t = tok("llama")
    feats = [
        {"input_ids": [1, 5, 6], "labels": [-100, 5, 6]},
        {"input_ids": [1, 7, 8, 9, 2], "labels": [-100] * 4 + [2]},
    ]
    batch = packing.PaddedCollator(t)(feats)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, 5)
    assert batch["input_ids"][0].tolist() == [1, 5, 6, 0, 0] and batch["labels"][0].tolist() == [-100, 5, 6, -100, -100]
    assert batch["attention_mask"].sum(1).tolist() == [3, 5]
    assert packing.PaddedCollator(t, pad_to_multiple_of=8)(feats)["input_ids"].shape == (2, 8)
    s2s = [
        {"input_ids": [5, 2], "attention_mask": [1, 1], "labels": [7, 8, 9, 2]},
        {"input_ids": [5, 6, 7, 2], "attention_mask": [1] * 4, "labels": [2]},
    ]
    batch = packing.PaddedCollator(t)(s2s)
    assert batch["input_ids"].shape == (2, 4) and batch["labels"].shape == (2, 4)
    assert batch["labels"][1].tolist() == [2, -100, -100, -100]


def test_length_grouped_batches():
    lengths = [(i * 37) % 101 + 1 for i in range(250)]
    batches = packing.length_grouped_batches(lengths, 8, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(250))
    assert batches == packing.length_grouped_batches(lengths, 8, seed=3)
    assert max(lengths) in [lengths[i] for i in batches[0]]
    assert packing.token_efficiency([[lengths[i] for i in b] for b in batches]) > 0.9


def test_token_efficiency_arithmetic():
    assert packing.token_efficiency([[3, 5], [4]]) == pytest.approx(12 / 14)
    assert packing.token_efficiency([[7, 8]], row_length=10) == pytest.approx(0.75)
    assert packing.token_efficiency([]) == 0.0


def test_packing_efficiency_on_the_shipped_samples(tok):
    parts = [load_file(p, source=p.parent.name, on_invalid="skip")[0] for p in SHIPPED]
    ds = datasets.concatenate_datasets(parts)
    examples, report = sft.tokenize_records(ds, tok("llama"), "alpaca", 512)
    lengths = [len(x) for x in examples.select_columns(["input_ids"]).to_dict()["input_ids"]]
    _, packed = packing.pack(examples, 512)
    padded = packing.token_efficiency(
        [[lengths[i] for i in b] for b in packing.random_batches(len(lengths), 8, seed=0)]
    )
    assert report.kept == len(lengths) > 4500
    assert packed.efficiency >= 0.9 and packed.tokens == report.tokens
    assert 0.3 < padded < packed.efficiency


def test_a_tokenizer_without_eos_is_the_kits_error_naming_it(tok):
    from llm4academic.base import KitError

    t = tok("llama")
    t.eos_token = None
    with pytest.raises(KitError, match="has no EOS token") as e:
        sft.framing(t)
    assert t.name_or_path in str(e.value) and "eos_token" in str(e.value) and "train step" in str(e.value)
