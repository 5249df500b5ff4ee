"""SFT preprocessing: template → tokens → label masking, packing, collators, token efficiency.

Tokenisation (``tokenize_records``) renders each record with ``templates.render`` and tokenises the segments
**separately**, in one batched call per ``datasets.map`` batch: the tokenizer's own leading special tokens (BOS for
LLaMA/GLM/OPT, none for BLOOM) once at the start, labels -100 on prompt segments, and the EOS token **id** appended
after every assistant reply and labelled — never ``"</s>"`` as text, which some fast LLaMA tokenizers split into
``<``, ``/``, ``s``, ``>``. Every segment but the first is encoded after ``ANCHOR`` whose ids are then removed, so
SentencePiece's dummy prefix (LLaMA, T5) is not put before each reply. Segment-wise tokens are the tokens a model
meets at generation time, when the prompt is tokenised alone (``encode_prompt``).

Given that the tokenizer reads ``"</s>"`` as the EOS id, the labels equal stanford_alpaca's ``preprocess`` except
where a merge crosses the prompt/reply join; stanford's reference lives in the checkout's benchmarks/stanford.py.

Packing (``pack``) puts whole examples into rows of at most ``max_length`` (best-fit decreasing), with position ids
restarting at 0 per example and ``seq_lens``. ``PackedCollator`` gives a 4D block-diagonal causal mask. Transformers 5
(``masking_utils``) passes a user 4D mask through unchanged: SDPA reads a bool mask as "True = attend" but eager
attention *adds* the mask to the scores, so a bool mask is silently wrong there; the collator therefore returns an
**additive float** mask (0 = attend, dtype-min = blocked), right for both. With ``flash_attention_2`` it flattens the
batch instead (``flatten_for_flash``: one row, restarting ``position_ids`` and ``cu_seq_lens``). BLOOM cannot take a
packed batch: it builds its ALiBi bias from a 2D mask (see ``packing_problem``); pad it instead.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import datasets
import torch

from .templates import get_template, render

IGNORE_INDEX = -100
ANCHOR = "\n"  # encoded before every segment but the first, then removed (see encode_segments)
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


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
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token_id: SFT needs one to end every reply")
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


# --------------------------------------------------------------------------------------------- packing


@dataclass
class PackReport:
    """What ``pack`` did. ``efficiency`` = real tokens / (rows × max_length)."""

    max_length: int
    examples: int = 0  # examples packed
    rows: int = 0
    tokens: int = 0  # real tokens in the rows
    dropped_examples: int = 0  # longer than max_length, or in the dropped last partial row
    dropped_tokens: int = 0

    @property
    def processed_tokens(self) -> int:
        return self.rows * self.max_length

    @property
    def efficiency(self) -> float:
        return self.tokens / self.processed_tokens if self.rows else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "processed_tokens": self.processed_tokens, "efficiency": self.efficiency}


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` (each ≤ capacity) grouped into bins: longest first, each into the fullest bin with
    room, else a new bin. Deterministic."""
    bins: list[list[int]] = []
    spaces: list[int] = []  # sorted free space of every bin with some room left…
    owners: dict[int, list[int]] = {}  # …and the bins with that much room
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        need = lengths[i]
        k = bisect.bisect_left(spaces, need)
        if k < len(spaces):
            space = spaces[k]
            b = owners[space].pop()
            if not owners[space]:
                del owners[space], spaces[k]
        else:
            space, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if (left := space - need) > 0:
            if left not in owners:
                bisect.insort(spaces, left)
            owners.setdefault(left, []).append(b)
    return bins


def _packed_row(members: list[int], ids: list[list[int]], labels: list[list[int]]) -> dict:
    row = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for i in members:
        n = len(ids[i])
        row["input_ids"] += ids[i]
        row["labels"] += [IGNORE_INDEX] + labels[i][1:]  # no prediction across the example boundary
        row["position_ids"] += range(n)
        row["seq_lens"].append(n)
    return row


def pack(
    ds: datasets.Dataset, max_length: int, *, drop_last_partial: bool = False
) -> tuple[datasets.Dataset, PackReport]:
    """Tokenised causal examples → rows ``input_ids, labels, position_ids, seq_lens`` of at most ``max_length``.

    No example is split across rows; each example's first label is -100 (the model never predicts it from the
    example before). Examples longer than ``max_length`` are dropped and counted, as is the last row when
    ``drop_last_partial`` and it is not full.
    """
    cols = ds.select_columns(["input_ids", "labels"]).to_dict()
    lengths = [len(x) for x in cols["input_ids"]]
    fits = [i for i, n in enumerate(lengths) if 0 < n <= max_length]
    bins = [[fits[j] for j in b] for b in best_fit_decreasing([lengths[i] for i in fits], max_length)]
    report = PackReport(max_length=max_length)
    dropped = [i for i, n in enumerate(lengths) if n > max_length]
    if drop_last_partial and bins and sum(lengths[i] for i in bins[-1]) < max_length:
        dropped += bins.pop()
    rows = [_packed_row(b, cols["input_ids"], cols["labels"]) for b in bins]
    report.rows, report.examples = len(rows), sum(len(b) for b in bins)
    report.tokens = sum(len(r["input_ids"]) for r in rows)
    report.dropped_examples, report.dropped_tokens = len(dropped), sum(lengths[i] for i in dropped)
    keys = ("input_ids", "labels", "position_ids", "seq_lens")
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in keys}), report


def packing_problem(config) -> str | None:
    """Why a model cannot train on packed rows (None when it can)."""
    if getattr(config, "is_encoder_decoder", False):
        return "packing is for decoder-only models; seq2seq models use PaddedCollator"
    if getattr(config, "model_type", None) == "bloom":
        return (
            "BLOOM builds its ALiBi bias from a 2D attention mask and rejects the 4D block-diagonal one; "
            "use PaddedCollator (padding mode) for BLOOM"
        )
    return None


# --------------------------------------------------------------------------------------------- collators


def _pad(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def _round_up(n: int, multiple: int | None) -> int:
    return -(-n // multiple) * multiple if multiple else n


def block_causal_mask(
    seq_lens: Sequence[Sequence[int]], length: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive (batch, 1, length, length) mask: 0 where a token may attend (earlier or same token of its own
    example), dtype-min elsewhere. Padding tokens attend only to themselves (no fully blocked row, no NaN)."""
    seg = torch.empty(len(seq_lens), length, dtype=torch.long)
    for b, lens in enumerate(seq_lens):
        ids = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(list(lens), dtype=torch.long))
        seg[b, : len(ids)] = ids
        seg[b, len(ids) :] = -1 - torch.arange(length - len(ids))  # each pad token its own block
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def flatten_for_flash(features: Sequence[dict]) -> dict:
    """Packed rows (or plain examples) → one row for flash-attention's variable-length path: ``input_ids``,
    ``labels`` and restarting ``position_ids`` of shape (1, tokens), ``cu_seq_lens_q/k`` (int32),
    ``max_length_q/k`` (DataCollatorWithFlattening's layout). No padding, no mask."""
    ids, labels, positions, lens = [], [], [], []
    for f in features:
        f_lens = list(f.get("seq_lens") or [len(f["input_ids"])])
        ids += list(f["input_ids"])
        first = list(f["labels"][:1]) if "seq_lens" in f else [IGNORE_INDEX]  # packed rows did this already
        labels += first + list(f["labels"][1:])
        positions += [p for n in f_lens for p in range(n)]
        lens += f_lens
    cu = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max(lens),
        "max_length_k": max(lens),
    }


class PackedCollator:
    """Batches of packed rows. SDPA/eager: ``input_ids, labels, position_ids`` padded to the longest row and a 4D
    additive block-diagonal causal ``attention_mask`` in ``dtype`` (the model's compute dtype, e.g. bfloat16).
    ``flash_attention_2``/``_3``: ``flatten_for_flash``."""

    def __init__(
        self,
        pad_token_id: int,
        *,
        attn_implementation: str | None = "sdpa",
        dtype: torch.dtype = torch.float32,
        pad_to_multiple_of: int | None = None,
    ):
        self.pad_token_id = pad_token_id
        self.attn_implementation = attn_implementation
        self.dtype = dtype
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict:
        if self.attn_implementation in FLASH_ATTENTION:
            return flatten_for_flash(features)
        length = _round_up(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        return {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, length),
            "labels": _pad([f["labels"] for f in features], IGNORE_INDEX, length),
            "position_ids": _pad([f["position_ids"] for f in features], 0, length),
            "attention_mask": block_causal_mask([f["seq_lens"] for f in features], length, self.dtype),
        }


class PaddedCollator:
    """stanford-style batches: right padding to the longest example, labels padded with -100, a 2D
    ``attention_mask`` from the real lengths (stanford's ``input_ids.ne(pad)`` would also hide EOS tokens when
    pad == eos). Seq2seq features (with ``attention_mask``) get encoder and labels padded separately."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no pad token: set one before padding batches")
        self.pad_token_id = tokenizer.pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def _longest(self, rows) -> int:
        return _round_up(max(len(r) for r in rows), self.pad_to_multiple_of)

    def __call__(self, features: Sequence[dict]) -> dict:
        ids = [f["input_ids"] for f in features]
        labels = [f["labels"] for f in features]
        n = self._longest(ids)
        m = self._longest(labels) if "attention_mask" in features[0] else n
        return {
            "input_ids": _pad(ids, self.pad_token_id, n),
            "labels": _pad(labels, IGNORE_INDEX, m),
            "attention_mask": _pad([[1] * len(r) for r in ids], 0, n),
        }


# --------------------------------------------------------------------------------------------- batches, efficiency


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """stanford's sampler: a seeded shuffle cut into batches of ``batch_size`` (last one may be short)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, mega_batch_mult: int = 50
) -> list[list[int]]:
    """Batches of similar lengths (transformers' LengthGroupedSampler idea): shuffle, cut into mega-batches of
    ``batch_size × mega_batch_mult``, sort each by length, cut into batches, shuffle the batches; the batch holding
    the longest example goes first (out-of-memory shows at once)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * mega_batch_mult
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    if batches:
        top = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(top))
    return batches


def token_efficiency(batches: Iterable[Sequence[int]], row_length: int | None = None) -> float:
    """Real tokens / processed tokens. Each batch is the real lengths of its rows; rows are processed at the
    longest row of their batch (padding), or at ``row_length`` each (packed rows of ``max_length``)."""
    real = processed = 0
    for rows in batches:
        if rows:
            real += sum(rows)
            processed += len(rows) * (row_length or max(rows))
    return real / processed if processed else 0.0
