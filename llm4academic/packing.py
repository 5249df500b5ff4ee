"""Rows for training: best-fit packing with a block-diagonal mask, collators, batches, token efficiency.

Input: the tokenised examples of ``sft.tokenize_records`` (``input_ids, labels``; prompt labels -100). Packing
(``pack``) puts whole examples into rows of at most ``max_length`` (best-fit decreasing), with position ids
restarting at 0 per example and ``seq_lens``. ``PackedCollator`` gives a 4D block-diagonal causal mask. Transformers 5
(``masking_utils``) passes a user 4D mask through unchanged: SDPA reads a bool mask as "True = attend" but eager
attention *adds* the mask to the scores, so a bool mask is silently wrong there; the collator therefore returns an
**additive float** mask (0 = attend, dtype-min = blocked), right for both. With ``flash_attention_2`` it flattens the
batch instead (``flatten_for_flash``: one row, restarting ``position_ids`` and ``cu_seq_lens``). BLOOM cannot take a
packed batch: it builds its ALiBi bias from a 2D mask (see ``packing_problem``); pad it instead (``PaddedCollator``).

A dense block-diagonal mask makes SDPA compute every row's full length² scores, the masked cross-example blocks
included. ``PACKED_SDPA`` (registered with transformers' ``AttentionInterface``) computes each example's own causal
block only: it takes the flattened layout of ``flatten_for_flash`` and runs SDPA once per example (``is_causal``);
anything else (generation, padded batches, a cache) goes to transformers' SDPA unchanged. ``packed_collator`` is what
the trainer uses: on CPU it switches an SDPA model to ``PACKED_SDPA`` and flattens the batches; flash attention keeps
its varlen path; other implementations get the 4D mask.

Batches: ``random_batches`` (stanford's seeded shuffle) or ``length_grouped_batches``; ``token_efficiency`` says how
many of the processed tokens are real ones.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

import datasets
import torch

from .sft import IGNORE_INDEX

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")
PACKED_SDPA = "sdpa_packed"  # the kit's attention for packed rows (``packed_sdpa_attention``)
VARLEN = (*FLASH_ATTENTION, PACKED_SDPA)  # implementations that take the flattened layout (``flatten_for_flash``)


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
    ``flash_attention_2``/``_3`` and ``PACKED_SDPA``: ``flatten_for_flash``."""

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
        if self.attn_implementation in VARLEN:
            return flatten_for_flash(features)
        length = _round_up(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        return {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, length),
            "labels": _pad([f["labels"] for f in features], IGNORE_INDEX, length),
            "position_ids": _pad([f["position_ids"] for f in features], 0, length),
            "attention_mask": block_causal_mask([f["seq_lens"] for f in features], length, self.dtype),
        }


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function ``PACKED_SDPA``. Given ``cu_seq_lens_q`` (one flattened row of examples back
    to back, ``flatten_for_flash``), SDPA runs on each example's own slice, causal (within a sliding window where
    the model has one): Σ n² / 2 score positions instead of the row's length². Without ``cu_seq_lens_q``
    (generation, padded batches) it is transformers' SDPA unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    bounds = cu.tolist()
    spans = list(pairwise(bounds))
    n = query.shape[2]
    if query.shape[0] != 1 or bounds[-1] != n or key.shape[2] != n or kwargs.get("position_bias") is not None:
        raise ValueError(
            f"{PACKED_SDPA}: cu_seq_lens_q must describe one flattened row of examples (no cache, no position bias); "
            f"got query {tuple(query.shape)}, key {tuple(key.shape)}, cu_seq_lens_q {bounds[:3]}…{bounds[-1:]}"
        )
    window = kwargs.get("sliding_window")
    rest = {k: v for k, v in kwargs.items() if not k.startswith(("cu_seq_lens", "max_length"))}
    out = []
    for s, e in spans:
        mask = None
        if window and e - s > window:  # causal within the window (transformers: kv_idx > q_idx - window)
            full = torch.ones(e - s, e - s, dtype=torch.bool, device=query.device)
            mask = full.tril() & ~full.tril(-window)
        q, k, v = query[:, :, s:e], key[:, :, s:e], value[:, :, s:e]
        out.append(sdpa_attention_forward(module, q, k, v, mask, dropout, scaling, **rest)[0])
    return torch.cat(out, dim=1), None


def register_packed_sdpa() -> str:
    """Register ``PACKED_SDPA`` with transformers (attention function; SDPA's mask builder). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def packed_collator(model, pad_token_id: int, *, dtype: torch.dtype, on_cpu: bool) -> PackedCollator:
    """The trainer's collator for packed rows, matched to ``model``'s attention: flash attention → flattened
    (varlen); SDPA on CPU → the model switched to ``PACKED_SDPA`` and flattened batches; anything else (SDPA on
    GPU, eager) → the 4D block-diagonal mask. A model that cannot switch its attention keeps the mask."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    if on_cpu and impl == "sdpa":
        register_packed_sdpa()
        try:
            model.set_attn_implementation(PACKED_SDPA)
        except (AttributeError, ValueError):
            pass
        impl = getattr(config, "_attn_implementation", None) or impl
    return PackedCollator(pad_token_id, attn_implementation=impl, dtype=dtype)


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
