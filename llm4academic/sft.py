"""SFT preprocessing: template → tokens → label masking (packing and batching live in ``packing.py``).

Tokenisation (``tokenize_records``) renders each record with ``templates.render`` and tokenises the segments
**separately**, in one batched call per ``datasets.map`` batch: the tokenizer's own leading special tokens (BOS for
LLaMA/GLM/OPT, none for BLOOM) once at the start, labels -100 on prompt segments, and the EOS token **id** appended
after every assistant reply and labelled — never ``"</s>"`` as text, which some fast LLaMA tokenizers split into
``<``, ``/``, ``s``, ``>``. Every segment but the first is encoded after ``ANCHOR`` whose ids are then removed, so
SentencePiece's dummy prefix (LLaMA, T5) is not put before each reply. Segment-wise tokens are the tokens a model
meets at generation time, when the prompt is tokenised alone (``encode_prompt``). The template's fixed prompt start
(stanford's "Below is an instruction…### Instruction:\n", ~30% of an Alpaca example's tokens) is tokenised once
where the tokenizer allows it (``heads``), with the same ids. Labels and the Arrow columns are built flat in NumPy;
large mixes run in forked worker processes (``num_proc``), each on one tokenizer thread.

Given that the tokenizer reads ``"</s>"`` as the EOS id, the labels equal stanford_alpaca's ``preprocess`` except
where a merge crosses the prompt/reply join; stanford's reference lives in the checkout's benchmarks/stanford.py.
"""

from __future__ import annotations

import gc
import os
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from .base import KitError, resolve_num_proc
from .templates import fixed_starts, get_template, render

IGNORE_INDEX = -100
ANCHOR = "\n"  # encoded before every segment but the first, then removed (see encode_segments)


# --------------------------------------------------------------------------------------------- tokenisation


@dataclass
class TokenizeReport:
    """What ``tokenize_records`` did. Token counts are over the records kept (after truncation)."""

    template: str
    max_length: int
    seq2seq: bool
    records: int = 0
    truncated: int = 0  # records cut to max_length (kept or dropped)
    dropped: int = 0  # records with no trainable token left after truncation
    tokens: int = 0
    trainable_tokens: int = 0

    @property
    def kept(self) -> int:
        return self.records - self.dropped

    def to_dict(self) -> dict:
        return {**asdict(self), "kept": self.kept}


@dataclass(frozen=True)
class Framing:
    """How a tokenizer frames texts, probed once: special ids before/after a text, the anchor's ids, EOS id."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    anchor: tuple[int, ...]
    eos: int


def framing(tokenizer) -> Framing:
    """Probe the tokenizer: ``prefix`` = its leading special tokens (BOS for LLaMA/GLM/OPT), ``suffix`` = its
    trailing ones (T5's ``</s>``), ``anchor`` = the ids of ``ANCHOR`` alone."""
    if tokenizer.eos_token_id is None:
        raise KitError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no EOS "
            "token, and SFT ends every reply with it. Train the model through the kit's train step (it adds "
            "stanford_alpaca's missing special tokens, `</s>` among them, before tokenising), or give the tokenizer "
            "an eos_token (its tokenizer_config.json / special_tokens_map.json)"
        )
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a")["input_ids"]
    start = next((i for i in range(len(framed) - len(bare) + 1) if framed[i : i + len(bare)] == bare), None)
    if start is None:
        raise ValueError(f"cannot find how {type(tokenizer).__name__} frames a text: {framed} vs {bare}")
    anchor = tokenizer(ANCHOR, add_special_tokens=False)["input_ids"]
    return Framing(tuple(framed[:start]), tuple(framed[start + len(bare) :]), tuple(anchor), tokenizer.eos_token_id)


@dataclass(frozen=True)
class Head:
    """A template's fixed prompt start, tokenised once: a first segment that starts with ``text`` is encoded from
    ``cut`` on, and the ids of ``text[cut:end]`` alone (``context``, kept so that the record's own text meets the
    characters it follows) are replaced by ``ids``, the ids of ``text[:end]``. Found by ``heads``."""

    text: str
    cut: int
    context: tuple[int, ...]
    ids: tuple[int, ...]


# letters (the first must keep a head's context intact), digits, spaces, newlines, punctuation, CJK, accents
HEAD_PROBES = tuple("a|A b| a|  a|1| 1|\n|\n\nx| |\t|:|-|\"x|'s|#|.|(|（|中文|é".split("|"))


def heads(tokenizer, template: str) -> tuple[Head, ...]:
    """The template's fixed prompt starts (``templates.fixed_starts``) that this tokenizer lets the kit tokenise
    once. For each start, the latest ``end`` and the shortest context ``text[cut:end]`` (up to 8 characters each)
    are taken for which ``start + probe`` tokenises exactly as ``ids`` + the probe encoded after the context, for
    every probe in ``HEAD_PROBES`` (letters, digits, spaces, newlines, punctuation, CJK), each leaving the context's
    ids intact; failing that, for every probe that leaves them intact (the others fall back, as a record would; the
    first probe must not). ``encode_segments`` checks the context's ids again on every record and encodes the whole
    segment where they changed. A tokenizer that reads a text as one piece gets none."""
    out = []
    for text in fixed_starts(template):
        whole = _encode_batch(tokenizer, [text + p for p in HEAD_PROBES])
        spans = [(e, c) for e in range(len(text), max(len(text) - 8, 0), -1) for c in range(e - 1, max(e - 9, 0), -1)]
        found = next((h for strict in (True, False) for h in _probe(tokenizer, text, spans, whole, strict) if h), None)
        if found:
            out.append(found)
    return tuple(out)


def _probe(tokenizer, text: str, spans, whole, strict: bool):
    """``heads``' candidates in order: a ``Head`` where ``(end, cut)`` passes, else None."""
    for end, cut in spans:
        ids, context = _encode_batch(tokenizer, [text[:end], text[cut:end]])
        if len(ids) - len(context) < 2:
            yield None
            continue
        rest = _encode_batch(tokenizer, [text[cut:] + p for p in HEAD_PROBES])
        n = len(context)
        kept = [r[:n] == context for r in rest]
        ok = kept[0] and (all(kept) or not strict)
        yield (
            Head(text, cut, tuple(context), tuple(ids))
            if ok and all(ids + r[n:] == w for r, w, k in zip(rest, whole, kept, strict=True) if k)
            else None
        )


def encode_segments(
    tokenizer, texts: list[list[str]], fr: Framing, fixed: tuple[Head, ...] = ()
) -> list[list[list[int]]]:
    """Token ids of each record's segments, in one tokenizer call: the first segment as is (from a ``Head``'s
    context on when it starts with one of ``fixed``), every later one as ``ANCHOR + text`` with the anchor's ids
    removed, so that a tokenizer that prepends a space to every text (SentencePiece's dummy prefix: LLaMA, T5) does
    not put one at each segment start. Where the anchor's or the context's ids are not a prefix (the text merged
    into them), that segment is encoded alone, whole."""
    flat, how = [], []
    for segs in texts:
        for k, text in enumerate(segs):
            head = None if k else next((h for h in fixed if text.startswith(h.text)), None)
            how.append(head or k)
            flat.append(ANCHOR + text if k else text[head.cut :] if head else text)
    ids = _encode_batch(tokenizer, flat)
    redo = []
    for i, (toks, kind) in enumerate(zip(ids, how, strict=True)):
        if kind == 0:
            continue
        expected = fr.anchor if isinstance(kind, int) else kind.context
        if toks[: len(expected)] == list(expected):
            ids[i] = toks[len(expected) :] if isinstance(kind, int) else [*kind.ids, *toks[len(expected) :]]
        else:
            redo.append(i)
    if redo:
        whole = [
            flat[i][len(ANCHOR) :] if isinstance(how[i], int) else how[i].text[: how[i].cut] + flat[i] for i in redo
        ]
        for i, toks in zip(redo, _encode_batch(tokenizer, whole), strict=True):
            ids[i] = toks
    out, pos = [], 0
    for segs in texts:
        out.append(ids[pos : pos + len(segs)])
        pos += len(segs)
    return out


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts without special tokens: straight from the Rust tokenizer when there is one (the same
    ids as ``tokenizer(texts)``, without transformers' per-text conversion and without offsets), else through the
    tokenizer's call."""
    if not texts:
        return []
    if getattr(tokenizer, "is_fast", False):
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _causal(segments, seg_ids, fr: Framing) -> tuple[list[int], list[int]]:
    """input_ids and labels of one example: prefix, segments, EOS id after each trainable one."""
    ids, labels = list(fr.prefix), [IGNORE_INDEX] * len(fr.prefix)
    for (_, trainable), toks in zip(segments, seg_ids, strict=True):
        ids += toks
        labels += toks if trainable else [IGNORE_INDEX] * len(toks)
        if trainable:
            ids.append(fr.eos)
            labels.append(fr.eos)
    return ids, labels


def _prompt_and_reply(segments) -> tuple[str, str] | None:
    """Seq2seq texts: everything before the last reply (the encoder's), and the last reply; None without one."""
    last = max((i for i, (_, trainable) in enumerate(segments) if trainable), default=None)
    if last is None:
        return None
    return "".join(t for t, _ in segments[:last]), segments[last][0]


def _tokenize_causal(rendered, tokenizer, fr: Framing, max_length: int, fixed: tuple[Head, ...] = ()):
    """Causal examples of a batch as an Arrow table: token lists built flat (one list of ids for the batch, offsets,
    the prompt spans whose labels are -100), so that neither the labels nor the Arrow columns cost a Python list
    per record."""
    seg_ids = encode_segments(tokenizer, [[t for t, _ in segs] for segs in rendered], fr, fixed)
    flat, offsets, starts, stops = [], [0], [], []
    helpers = {k: [] for k in HELPER_COLUMNS}
    prefix, eos = list(fr.prefix), fr.eos
    for segs, toks in zip(rendered, seg_ids, strict=True):
        first = len(flat)
        flat += prefix
        spans = [[first, len(flat)]]  # [start, stop) of the -100 labels: the prefix, then every prompt segment
        for (_, trainable), ids in zip(segs, toks, strict=True):
            if trainable:
                flat += ids
                flat.append(eos)
            else:
                if spans[-1][1] != len(flat):
                    spans.append([len(flat), len(flat)])
                flat += ids
                spans[-1][1] = len(flat)
        stop = min(len(flat), first + max_length)
        helpers["_truncated"].append(len(flat) > stop)
        del flat[stop:]
        masked = 0
        for a, b in spans:
            b = min(b, stop)
            if b > a:
                starts.append(a)
                stops.append(b)
                masked += b - a
        n = stop - first
        helpers["_tokens"].append(n)
        helpers["_trainable"].append(n - masked)
        helpers["_keep"].append(n - masked - (spans[0][1] == first) > 0)  # label 0 is never predicted
        offsets.append(stop)
    ids = np.array(flat, dtype=np.int32)
    edges = np.zeros(len(ids) + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, stops, -1)
    labels = np.where(np.cumsum(edges[:-1]) > 0, IGNORE_INDEX, ids.astype(np.int64))
    offsets = pa.array(offsets, type=pa.int32())
    return {
        "input_ids": pa.ListArray.from_arrays(offsets, pa.array(ids)),
        "labels": pa.ListArray.from_arrays(offsets, pa.array(labels)),
        **{k: pa.array(v) for k, v in helpers.items()},
    }


def _tokenize_seq2seq(rendered, tokenizer, fr: Framing, max_length: int) -> dict:
    pairs = [_prompt_and_reply(segs) or ("", "") for segs in rendered]
    flat = tokenizer([t for pair in pairs for t in pair], add_special_tokens=False, verbose=False)["input_ids"]
    out = {k: [] for k in ("input_ids", "attention_mask", "labels", *HELPER_COLUMNS)}
    room = max_length - len(fr.prefix) - len(fr.suffix)
    for i, segs in enumerate(rendered):
        body, labels = flat[2 * i], list(flat[2 * i + 1]) + [fr.eos]
        ids = [*fr.prefix, *body[:room], *fr.suffix]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels[:max_length])
        out["_truncated"].append(len(body) > room or len(labels) > max_length)
        out["_keep"].append(any(trainable for _, trainable in segs))
        out["_tokens"].append(len(ids))
        out["_trainable"].append(len(out["labels"][-1]))
    return out


RECORD_COLUMNS = ("instruction", "input", "output", "conversation")  # what templates.render reads


def _tokenize_batch(batch: pa.Table, *, tokenizer, template: str, max_length: int, fr: Framing, seq2seq: bool, fixed):
    """``datasets.map`` function on Arrow batches: one tokenizer call for every text of every record in the batch."""
    cols = batch.select([c for c in RECORD_COLUMNS if c in batch.column_names]).to_pydict()
    rendered = [render(dict(zip(cols, values, strict=True)), template) for values in zip(*cols.values(), strict=True)]
    ids = {"id": batch.column("id")} if "id" in batch.column_names else {}
    if seq2seq:  # Python lists: datasets picks the column types (int32 input_ids, as for causal examples)
        return {**_tokenize_seq2seq(rendered, tokenizer, fr, max_length), **{k: v.to_pylist() for k, v in ids.items()}}
    return pa.table({**ids, **_tokenize_causal(rendered, tokenizer, fr, max_length, fixed)})


HELPER_COLUMNS: tuple[str, ...] = ("_truncated", "_keep", "_tokens", "_trainable")


def _report(ds: datasets.Dataset, report: TokenizeReport) -> datasets.Dataset:
    """Fill the report from the helper columns, drop the records to drop and the helper columns."""
    cols = ds.select_columns(list(HELPER_COLUMNS)).to_dict()  # small columns: the token lists stay in Arrow
    keep = cols["_keep"]
    report.records, report.truncated, report.dropped = len(keep), sum(cols["_truncated"]), keep.count(False)
    report.tokens = sum(n for n, k in zip(cols["_tokens"], keep, strict=True) if k)
    report.trainable_tokens = sum(n for n, k in zip(cols["_trainable"], keep, strict=True) if k)
    if report.dropped:
        ds = ds.select([i for i, k in enumerate(keep) if k])
    return ds.remove_columns(list(HELPER_COLUMNS))


MIN_RECORDS_PER_PROC = 5_000  # a worker costs ~0.1 s to start and to hand its shard back: fewer records stay here


def worker_count(records: int, num_proc: int | None = None) -> int:
    """Processes ``tokenize_records`` uses for ``records``: ``num_proc`` (None = every usable CPU), but at least
    ``MIN_RECORDS_PER_PROC`` records each, so that a small mix is tokenised in this process."""
    return max(1, min(resolve_num_proc(num_proc), records // MIN_RECORDS_PER_PROC))


@contextmanager
def _no_cyclic_gc():
    """Pause Python's cyclic garbage collector (the workers inherit the pause): a batch makes tens of thousands of
    token lists, which set off full collections over every object of a process that has imported torch — a quarter
    of a second each. Token lists hold no cycles; reference counting frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _fork_safe():
    """Fork ``datasets.map``'s workers with ``TOKENIZERS_PARALLELISM=false``, restored afterwards. Each worker
    tokenises on one thread with a tokenizer unpickled from the job (datasets sends ``fn_kwargs`` to its workers), so
    no worker touches the Rust thread pool: with tokenizers 0.23 a forked child that encodes in parallel after its
    parent used the pool hangs, without a warning (parallelism turned on by the user; the kit keeps it off, so the
    training launcher's later fork is safe too)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def tokenize_records(
    ds: datasets.Dataset,
    tokenizer,
    template: str,
    max_length: int,
    *,
    seq2seq: bool = False,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, TokenizeReport]:
    """Unified records → ``id, input_ids, labels`` (+ ``attention_mask`` for seq2seq) and a ``TokenizeReport``.

    Causal: one sequence (the tokenizer's leading special tokens, not its trailing ones), prompt labels -100, EOS
    id after every reply, cut at ``max_length``; records left with no trainable token are dropped. The template's
    fixed prompt start is tokenised once where the tokenizer allows it (``heads``); the ids are the same.
    Seq2seq: encoder = the text before the last reply (framed like the tokenizer:
    T5 appends ``</s>``), labels = last reply + EOS id; each side cut at ``max_length``.
    ``num_proc``: worker processes (``worker_count``; None = every usable CPU); the result does not depend on it.
    """
    get_template(template)
    kwargs = {
        "tokenizer": tokenizer,
        "template": template,
        "max_length": max_length,
        "fr": framing(tokenizer),
        "seq2seq": seq2seq,
        "fixed": () if seq2seq else heads(tokenizer, template),
    }
    procs, spill = worker_count(len(ds), num_proc), {}
    if procs > 1 and not ds.cache_files:  # workers write Arrow files (removed at exit) rather than pickle tables back
        folder = Path(datasets.fingerprint.get_temporary_cache_files_directory())
        spill["cache_file_name"] = str(folder / f"tokenised-{uuid.uuid4().hex}.arrow")
    with _fork_safe() if procs > 1 else nullcontext(), _no_cyclic_gc():
        out = ds.with_format("arrow").map(
            _tokenize_batch,
            batched=True,
            num_proc=procs if procs > 1 else None,
            **spill,
            remove_columns=ds.column_names,
            fn_kwargs=kwargs,
            desc=f"tokenise ({template})",
        )
    report = TokenizeReport(template=template, max_length=max_length, seq2seq=seq2seq)
    return _report(out.with_format(None), report), report


def encode_prompt(record: dict, tokenizer, template: str) -> list[int]:
    """Causal-LM prompt ids for generation, exactly as trained: everything before the last reply, with the
    tokenizer's leading special tokens and the EOS id after earlier replies."""
    segments = render(record, template)
    if segments and segments[-1][1]:
        segments = segments[:-1]
    fr = framing(tokenizer)
    return _causal(segments, encode_segments(tokenizer, [[t for t, _ in segments]], fr)[0], fr)[0]


def encode_pairs(prompts: list[list[dict]], chosen: list[str], rejected: list[str], tokenizer, template: str):
    """Preference pairs as SFT trains and generation prompts: ``(prompt_ids, chosen_ids, rejected_ids)`` per pair.
    The prompt is the dialogue before the last reply (``encode_prompt``); each reply is encoded as SFT encodes a
    reply segment (after the prompt, ``ANCHOR`` trick) and ends with the EOS id. One tokenizer call for the batch."""
    fr = framing(tokenizer)
    rendered = []
    for turns in prompts:
        segments = render({"conversation": [*turns, {"role": "assistant", "content": "-"}]}, template)[:-1]
        rendered.append(segments)
    texts = [[*(t for t, _ in segs), c, r] for segs, c, r in zip(rendered, chosen, rejected, strict=True)]
    out = []
    for segs, ids in zip(rendered, encode_segments(tokenizer, texts, fr), strict=True):
        prompt = _causal(segs, ids[:-2], fr)[0]
        out.append((prompt, [*ids[-2], fr.eos], [*ids[-1], fr.eos]))
    return out
