"""The judge: a local causal LM that grades answers 1–10 and compares two answers in both orders, read
deterministically from its next-token distribution (``Judge``), and its scoring of a whole answers table
(``judge_scores``, ``pairwise_scores``), which batches the forward passes (``Judge.choice_probs_batch``: rows of
near-equal length, right-padded, each read at its own last positions). Loads the model through
``models.load_causal_lm``; imports torch — the scoring package imports this module only when one of its names is first
used."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..base import cache_batches
from ..models import load_causal_lm
from ..threads import cpu_threads
from ..zbench import PROVENANCE
from .tables import FALLBACK_MODEL, SCORE_COLUMNS, ScoringError, answer_items
from .text import cell_text
from .verdicts import (
    PAIRWISE_COLUMNS,
    SCORE_STRINGS,
    Grade,
    Verdict,
    combine_orders,
    grading_prompt,
    pairwise_label,
    pairwise_prompt,
    pairwise_row,
    pairwise_tasks,
    rubric_language,
    sequence_probs,
)


class Judge:
    """A local Hugging Face causal LM as a judge, read deterministically from its next-token distribution.

    ``grade`` scores one answer 1–10 (the distribution over ``1``..``10`` right after the rubric, multi-token scores
    handled by ``sequence_probs``); ``compare`` judges a candidate against a baseline in both orders (``A``/``B``).
    ``model``: a directory, hub id or ``tiny:<arch>`` — or a loaded model, with ``tokenizer``. With ``chat_template``
    (default: when the tokenizer has one) the rubric is the user turn and the lead starts the assistant turn. Prompts
    longer than the model's context keep their end (the lead and the answers' tails). The model is loaded with
    ``models.load_causal_lm``. ``grade_many`` / ``compare_many`` (what ``judge_scores`` and ``pairwise_scores`` use)
    batch the forward passes, ``batch_size`` rows of the longest prompts at a time (``choice_probs_batch``); ``grade``
    / ``compare`` run one item, one unpadded pass per prefix — the same probabilities within float rounding."""

    BATCH_CALL_TOKENS = 128  # one more forward call costs about as many padded tokens (tiny LLaMA, one CPU core)

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        language: str = "zh",
        device: str | None = None,
        dtype: str = "auto",
        max_chars: int = 2000,
        chat_template: bool | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 8,
    ):
        self.language = rubric_language(language)
        self.max_chars = max_chars
        if batch_size < 1:
            raise ScoringError(f"the judge's batch_size must be ≥ 1, got {batch_size}")
        self.batch_size = batch_size
        if isinstance(model, str | os.PathLike):
            self.name = str(model)
            model, tokenizer = load_causal_lm(
                str(model), dtype=dtype, trust_remote_code=trust_remote_code, tokenizer=tokenizer
            )
        else:
            self.name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        if tokenizer is None:
            raise ScoringError("a loaded judge model needs its tokenizer: Judge(model, tokenizer)")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.chat_template = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        tok_limit = getattr(tokenizer, "model_max_length", None)
        self.max_length = int(limit or (tok_limit if tok_limit and tok_limit < 10**6 else 2048))
        self.keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad = 0 if pad is None else pad  # only ever after a row's real tokens: never attended

    def _encode_many(self, texts: Sequence[str], special: bool = True) -> list[list[int]]:
        """The ids of each text (one tokenizer call), without the EOS a tokenizer appends (the prompt continues)."""
        eos, out = self.tokenizer.eos_token_id, []
        if not texts:
            return out
        for text, ids in zip(texts, self.tokenizer(list(texts), add_special_tokens=special)["input_ids"], strict=True):
            ids = list(ids)
            if (
                special
                and ids
                and eos is not None
                and ids[-1] == eos
                and not text.endswith(str(self.tokenizer.eos_token))
            ):
                ids = ids[:-1]
            out.append(ids)
        return out

    def render(self, instruction: str, lead: str) -> str:
        """The text the judge reads: the rubric (in the chat template when used) followed by the lead."""
        if not self.chat_template:
            return instruction + lead
        chat = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
        return chat + lead

    def choice_probs(self, text: str, choices: Sequence[str]) -> np.ndarray:
        """The judge's renormalised probabilities of continuing ``text`` with each choice (``sequence_probs``): one
        unpadded forward pass per prefix the choices need."""
        base, sequences = self._plan(text, choices)

        @torch.no_grad()
        def next_probs(prefix: tuple[int, ...]) -> np.ndarray:
            ids = torch.tensor([base + list(prefix)], device=self.device)
            logits = self.model(input_ids=ids).logits[0, -1].float()
            return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)

        with cpu_threads(self.device):
            return sequence_probs(next_probs, sequences)

    def _plan(self, text: str, choices: Sequence[str]) -> tuple[list[int], list[tuple[int, ...]]]:
        return self._plans([text], choices)[0]

    def _plans(self, texts: Sequence[str], choices: Sequence[str]) -> list[tuple[list[int], list[tuple[int, ...]]]]:
        """For each text: the prompt ids (cut to fit the context with the longest choice) and each choice's token
        sequence (the text + choice's ids after the text's, else the choice's own); one tokenizer call for all."""
        special, k = not self.chat_template, len(choices) + 1
        encoded = self._encode_many([t + c for t in texts for c in ("", *choices)], special)
        alone = self._encode_many(choices, False)
        plans = []
        for i in range(len(texts)):
            base, fulls = encoded[i * k], encoded[i * k + 1 : (i + 1) * k]
            sequences = [
                tuple(full[len(base) :] if full[: len(base)] == base and len(full) > len(base) else own)
                for full, own in zip(fulls, alone, strict=True)
            ]
            keep = self.max_length - max(map(len, sequences)) - 1
            if len(base) > keep:  # keep the start token and the end of the prompt
                base = base[:1] + base[len(base) - keep + 1 :]
            plans.append((base, sequences))
        return plans

    def choice_probs_batch(self, texts: Sequence[str], choices: Sequence[str]) -> list[np.ndarray]:
        """``choice_probs`` of many texts with the forward passes batched. Each text needs the next-token distribution
        after a few prefixes (``sequence_probs``); one row = the prompt + a longest needed prefix, read at the last
        position of every needed prefix it contains (``1`` and ``1``+``0`` from one row). Rows are sorted by length and
        cut into batches of near-equal length (``_batches``), padded on the right without an attention mask: causal
        attention never lets a real token see the padding after it, so each read position sees what it sees alone."""
        plans = self._plans(texts, choices)
        rows = []  # (text index, ids, {prefix: position read})
        for i, (base, sequences) in enumerate(plans):
            needed = {s[:k] for s in sequences for k in range(len(s))} | {
                s for s in sequences if any(len(o) > len(s) and o[: len(s)] == s for o in sequences)
            }
            for top in needed:
                if not any(len(o) > len(top) and o[: len(top)] == top for o in needed):  # a longest prefix
                    reads = {p: len(base) + len(p) - 1 for p in needed if top[: len(p)] == p}
                    rows.append((i, base + list(top), reads))
        dists: list[dict] = [{} for _ in texts]
        with cpu_threads(self.device):  # on CPU, every usable core
            for batch in _batches([len(ids) for _, ids, _ in rows], self.batch_size, self.BATCH_CALL_TOKENS):
                for j, probs in zip(batch, self._forward([rows[j] for j in batch]), strict=True):
                    dists[rows[j][0]].update(zip(rows[j][2], probs, strict=True))
        return [sequence_probs(d.__getitem__, sequences) for d, (_, sequences) in zip(dists, plans, strict=True)]

    @torch.no_grad()
    def _forward(self, rows: list[tuple[int, list[int], dict]]) -> list[np.ndarray]:
        """One right-padded forward pass: each row's next-token distributions at its read positions."""
        width, reads = max(len(ids) for _, ids, _ in rows), max(len(r) for _, _, r in rows)
        ids = torch.tensor([ids + [self.pad] * (width - len(ids)) for _, ids, _ in rows], device=self.device)
        at = torch.tensor(
            [[*r.values(), *[*r.values()][-1:] * (reads - len(r))] for _, _, r in rows], device=self.device
        )
        if self.keeps_logits:  # the vocabulary projection only where it is read
            logits = self.model(input_ids=ids, logits_to_keep=at).logits
        else:
            logits = self.model(input_ids=ids).logits
            logits = logits.gather(1, at[..., None].expand(-1, -1, logits.shape[-1]))
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
        return [probs[k, : len(r)] for k, (_, _, r) in enumerate(rows)]

    def grade(self, question: str, answer: str, reference: str = "") -> Grade:
        """Grade one answer 1–10 (with the reference in the rubric when given)."""
        instruction, lead = grading_prompt(
            question, answer, reference, language=self.language, max_chars=self.max_chars
        )
        return _grade(self.choice_probs(self.render(instruction, lead), SCORE_STRINGS))

    def grade_many(self, items: Sequence[tuple[str, str, str]]) -> list[Grade]:
        """``grade`` of many ``(question, answer, reference)`` items, the forward passes batched."""
        texts = [
            self.render(*grading_prompt(q, a, ref, language=self.language, max_chars=self.max_chars))
            for q, a, ref in items
        ]
        return [_grade(p) for p in self.choice_probs_batch(texts, SCORE_STRINGS)]

    def compare_many(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        """``compare`` of many ``(question, answer, baseline)`` items: both orders of every item in one batched run."""
        texts = [
            self.render(*pairwise_prompt(q, a, b, language=self.language, max_chars=self.max_chars))
            for q, answer, baseline in items
            for a, b in ((answer, baseline), (baseline, answer))
        ]
        p_a = [float(p[0]) for p in self.choice_probs_batch(texts, ("A", "B"))]
        label = ["A" if p >= 0.5 else "B" for p in p_a]
        return [combine_orders(label[k], label[k + 1], p_a[k], 1 - p_a[k + 1]) for k in range(0, len(p_a), 2)]

    def prefer(self, question: str, answer_a: str, answer_b: str) -> tuple[str, float]:
        """One order: the label the judge prefers (``A``/``B``) and its probability for A."""
        instruction, lead = pairwise_prompt(
            question, answer_a, answer_b, language=self.language, max_chars=self.max_chars
        )
        p_a = float(self.choice_probs(self.render(instruction, lead), ("A", "B"))[0])
        return ("A" if p_a >= 0.5 else "B"), p_a

    def compare(self, question: str, answer: str, baseline: str) -> Verdict:
        """Judge ``answer`` against ``baseline`` in both orders (A/B, then B/A); disagreement is a tie."""
        first, p_a1 = self.prefer(question, answer, baseline)
        second, p_a2 = self.prefer(question, baseline, answer)
        return combine_orders(first, second, p_a1, 1 - p_a2)


def _grade(probs: np.ndarray) -> Grade:
    expected = float(np.dot(probs, np.arange(1, len(SCORE_STRINGS) + 1)))
    return Grade(expected, int(np.argmax(probs)) + 1, tuple(float(p) for p in probs))


def _batches(lengths: Sequence[int], rows: int, call_tokens: int) -> list[list[int]]:
    """Indices in batches of near-equal length: runs of the length order (longest first), at most ``rows`` ×
    the run's longest row in tokens and at most ``4 × rows`` rows, split to minimise padded tokens + ``call_tokens``
    per forward call (dynamic programming, as ``runners.prefill_groups``)."""
    return cache_batches(lengths, rows, call_tokens)


def _in_chunks(fn: Callable[[list], list], items: list, bar, size: int = 64) -> Iterable:
    """``fn`` (a batched judge call) over ``items`` in chunks, so the progress bar moves."""
    for k in range(0, len(items), size):
        chunk = items[k : k + size]
        yield from fn(chunk)
        bar.update(len(chunk))


def judge_scores(
    answers: pd.DataFrame,
    judge: Judge,
    zbench: pd.DataFrame | None = None,
    *,
    use_reference: bool = True,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Grade every stored answer with the judge: ``score_answers``' columns (``scorer`` = ``judge``, ``score`` =
    (expected grade − 1) / 9, ``against`` = ``reference`` when the rubric showed the item's reference, else
    ``rubric``) plus ``judge_expected`` (1–10) and ``judge_greedy``."""
    items = answer_items(answers, zbench)
    recs = list(answers.itertuples(index=False))
    asks = []
    for rec in recs:
        item = items.loc[rec.item_id]
        reference = cell_text(item["reference"]) if use_reference else ""
        asks.append((cell_text(item["prompt"]), cell_text(rec.answer), reference))
    many = getattr(judge, "grade_many", None) or (lambda chunk: [judge.grade(*a) for a in chunk])
    bar = tqdm(
        total=len(recs), desc=f"judge {judge.name}", disable=None if progress is None else not progress, leave=False
    )
    with bar:
        grades = list(_in_chunks(many, asks, bar))
    rows = []
    for rec, (_, _, reference), grade in zip(recs, asks, grades, strict=True):
        rows.append(
            (
                rec.item_id,
                rec.split,
                rec.model,
                "judge",
                grade.score,
                "reference" if reference.strip() else "rubric",
                grade.expected,
                grade.greedy,
            )
        )
    out = pd.DataFrame(rows, columns=[*SCORE_COLUMNS, "judge_expected", "judge_greedy"])
    out.attrs["scoring"] = {
        "scorers": ["judge"],
        "judge": judge.name,
        "language": judge.language,
        "zbench": dict(PROVENANCE),
    }
    return out


def pairwise_scores(
    answers: pd.DataFrame,
    judge: Judge,
    baseline: str | None = FALLBACK_MODEL,
    zbench: pd.DataFrame | None = None,
    *,
    starts: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Judge every stored answer against the baseline model's answer to the same item, in both orders — and each
    DPO model of ``starts`` (→ the model its run started from) against its start model's answer.

    The baseline's answers come from ``answers`` (rows with ``model == baseline``) or else from the Z-Bench column of
    that name. Columns: ``score_answers``' (``scorer`` = ``pairwise``, or ``pairwise_start`` against a start model;
    ``score`` 1 win / 0.5 tie / 0 loss, ``against`` = the baseline) plus ``verdict``, ``first``, ``second``,
    ``consistent``. Items where either answer is empty are skipped; the baseline is not compared with itself
    (``verdicts.pairwise_tasks``). ``pairwise_summary`` counts the position bias."""
    items = answer_items(answers, zbench)
    tasks = pairwise_tasks(answers, items, baseline, starts)
    many = getattr(judge, "compare_many", None) or (lambda chunk: [judge.compare(*a) for a in chunk])
    asks = [(t.question, t.answer, t.baseline_answer) for t in tasks]
    bar = tqdm(
        total=len(tasks),
        desc=pairwise_label(baseline, starts),
        disable=None if progress is None else not progress,
        leave=False,
    )
    with bar:
        verdicts = list(_in_chunks(many, asks, bar))
    rows = [pairwise_row(t.rec, t.against, v, t.scorer) for t, v in zip(tasks, verdicts, strict=True)]
    out = pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
    out.attrs["scoring"] = {
        "scorers": sorted({t.scorer for t in tasks}) or ["pairwise"],
        "judge": judge.name,
        "baseline": baseline,
        "starts": dict(starts or {}),
        "language": judge.language,
        "zbench": dict(PROVENANCE),
    }
    return out
