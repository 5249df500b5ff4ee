"""The judge: a local causal LM that grades answers 1–10 and compares two answers in both orders, read
deterministically from its next-token distribution (``Judge``), and its scoring of a whole answers table
(``judge_scores``, ``pairwise_scores``). Loads the model through ``models.load_causal_lm``; imports torch — the
scoring package imports this module only when one of its names is first used."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..models import load_causal_lm
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
    ``models.load_causal_lm``."""

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
    ):
        self.language = rubric_language(language)
        self.max_chars = max_chars
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

    def _encode(self, text: str, special: bool = True) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if special and ids and eos is not None and ids[-1] == eos and not text.endswith(str(self.tokenizer.eos_token)):
            ids = ids[:-1]  # tokenizers that append EOS (the prompt continues)
        return ids

    def render(self, instruction: str, lead: str) -> str:
        """The text the judge reads: the rubric (in the chat template when used) followed by the lead."""
        if not self.chat_template:
            return instruction + lead
        chat = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
        return chat + lead

    def choice_probs(self, text: str, choices: Sequence[str]) -> np.ndarray:
        """The judge's renormalised probabilities of continuing ``text`` with each choice (``sequence_probs``)."""
        base = self._encode(text, special=not self.chat_template)
        sequences = []
        for choice in choices:
            full = self._encode(text + choice, special=not self.chat_template)
            ids = (
                full[len(base) :]
                if full[: len(base)] == base and len(full) > len(base)
                else self._encode(choice, special=False)
            )
            sequences.append(tuple(ids))
        keep = self.max_length - max(map(len, sequences)) - 1
        if len(base) > keep:  # keep the start token and the end of the prompt
            base = base[:1] + base[len(base) - keep + 1 :]

        @torch.no_grad()
        def next_probs(prefix: tuple[int, ...]) -> np.ndarray:
            ids = torch.tensor([base + list(prefix)], device=self.device)
            logits = self.model(input_ids=ids).logits[0, -1].float()
            return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)

        return sequence_probs(next_probs, sequences)

    def grade(self, question: str, answer: str, reference: str = "") -> Grade:
        """Grade one answer 1–10 (with the reference in the rubric when given)."""
        instruction, lead = grading_prompt(
            question, answer, reference, language=self.language, max_chars=self.max_chars
        )
        probs = self.choice_probs(self.render(instruction, lead), SCORE_STRINGS)
        expected = float(np.dot(probs, np.arange(1, len(SCORE_STRINGS) + 1)))
        return Grade(expected, int(np.argmax(probs)) + 1, tuple(float(p) for p in probs))

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
    rows = []
    for rec in tqdm(
        answers.itertuples(index=False),
        total=len(answers),
        desc=f"judge {judge.name}",
        disable=None if progress is None else not progress,
        leave=False,
    ):
        item = items.loc[rec.item_id]
        reference = cell_text(item["reference"]) if use_reference else ""
        grade = judge.grade(cell_text(item["prompt"]), cell_text(rec.answer), reference)
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
    rows = [
        pairwise_row(t.rec, t.against, judge.compare(t.question, t.answer, t.baseline_answer), t.scorer)
        for t in tqdm(
            tasks,
            desc=pairwise_label(baseline, starts),
            disable=None if progress is None else not progress,
            leave=False,
        )
    ]
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
