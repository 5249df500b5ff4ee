"""SFT preprocessing: template → tokens → label masking (packing and batching live in ``packing.py``).

Tokenisation (``tokenize_records``) renders each record with ``templates.render`` and tokenises the segments
**separately**, in one batched call per ``datasets.map`` batch: the tokenizer's own leading special tokens (BOS for
LLaMA/GLM/OPT, none for BLOOM) once at the start, labels -100 on prompt segments, and the EOS token **id** appended
after every assistant reply and labelled — never ``"</s>"`` as text, which some fast LLaMA tokenizers split into
``<``, ``/``, ``s``, ``>``. Every segment but the first is encoded after ``ANCHOR`` whose ids are then removed, so
SentencePiece's dummy prefix (LLaMA, T5) is not put before each reply. Segment-wise tokens are the tokens a model
meets at generation time, when the prompt is tokenised alone (``encode_prompt``).

Given that the tokenizer reads ``"</s>"`` as the EOS id, the labels equal stanford_alpaca's ``preprocess`` except
where a merge crosses the prompt/reply join; stanford's reference lives in the checkout's benchmarks/stanford.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import datasets

from .base import KitError
from .templates import get_template, render

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


def encode_segments(tokenizer, texts: list[list[str]], fr: Framing) -> list[list[list[int]]]:
    """Token ids of each record's segments, in one tokenizer call: the first segment as is, every later one as
    ``ANCHOR + text`` with the anchor's ids removed, so that a tokenizer that prepends a space to every text
    (SentencePiece's dummy prefix: LLaMA, T5) does not put one at each segment start. Where the anchor's ids are
    not a prefix (the text merged into them), that segment is encoded alone."""
    flat = [t if k == 0 else ANCHOR + t for segs in texts for k, t in enumerate(segs)]
    ids = _encode_batch(tokenizer, flat)
    n, out, pos = len(fr.anchor), [], 0
    for segs in texts:
        rec = []
        for k, text in enumerate(segs):
            toks = ids[pos + k]
            if k and list(toks[:n]) == list(fr.anchor):
                toks = toks[n:]
            elif k:
                toks = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            rec.append(list(toks))
        out.append(rec)
        pos += len(segs)
    return out


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts without special tokens: straight from the Rust tokenizer when there is one (the same
    ids as ``tokenizer(texts)``, without transformers' per-text conversion), else through the tokenizer's call."""
    if not texts:
        return []
    if getattr(tokenizer, "is_fast", False):
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
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


def _tokenize_causal(rendered, tokenizer, fr: Framing, max_length: int) -> dict:
    seg_ids = encode_segments(tokenizer, [[t for t, _ in segs] for segs in rendered], fr)
    out = {k: [] for k in ("input_ids", "labels", *HELPER_COLUMNS)}
    for segs, toks in zip(rendered, seg_ids, strict=True):
        ids, labels = _causal(segs, toks, fr)
        ids, labels, truncated = ids[:max_length], labels[:max_length], len(ids) > max_length
        trainable = len(labels) - labels.count(IGNORE_INDEX)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["_truncated"].append(truncated)
        out["_keep"].append(trainable - (labels[0] != IGNORE_INDEX) > 0)  # label 0 is never predicted
        out["_tokens"].append(len(ids))
        out["_trainable"].append(trainable)
    return out


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


def _tokenize_batch(batch: dict, *, tokenizer, template: str, max_length: int, fr: Framing, seq2seq: bool) -> dict:
    """``datasets.map`` function: one tokenizer call for every text of every record in the batch."""
    rendered = [render(dict(zip(batch, values, strict=True)), template) for values in zip(*batch.values(), strict=True)]
    out = (_tokenize_seq2seq if seq2seq else _tokenize_causal)(rendered, tokenizer, fr, max_length)
    if "id" in batch:
        out["id"] = list(batch["id"])
    return out


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
    id after every reply, cut at ``max_length``; records left with no trainable token are dropped.
    Seq2seq: encoder = the text before the last reply (framed like the tokenizer:
    T5 appends ``</s>``), labels = last reply + EOS id; each side cut at ``max_length``.
    """
    get_template(template)
    kwargs = {
        "tokenizer": tokenizer,
        "template": template,
        "max_length": max_length,
        "fr": framing(tokenizer),
        "seq2seq": seq2seq,
    }
    out = ds.map(
        _tokenize_batch,
        batched=True,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        fn_kwargs=kwargs,
        desc=f"tokenise ({template})",
    )
    report = TokenizeReport(template=template, max_length=max_length, seq2seq=seq2seq)
    return _report(out, report), report


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
