"""What a judge model is asked and how its answers are read — everything of the judge but the model, no torch.

``grading_prompt`` / ``pairwise_prompt`` are the MT-Bench-style rubrics (Chinese or English); ``sequence_probs``
reads the probability of each score string from next-token distributions (multi-token scores such as ``1``+``0``
handled exactly); ``Grade`` is a 1–10 grade; ``Verdict`` / ``combine_orders`` a pairwise judgement asked in both
orders — an order-inconsistent verdict is a tie and counts towards the position-bias rate (``pairwise_summary``);
``pairwise_tasks`` what both judges ask pairwise (each answer against the baseline, each DPO model against the model
it started from). The model itself is ``judge.Judge``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .tables import SCORE_COLUMNS, ScoringError
from .text import cell_text

SCORE_STRINGS: tuple[str, ...] = tuple(str(i) for i in range(1, 11))
_RUBRIC = {
    "zh": (
        "请作为一名公正的评审，评估下面 AI 助手对用户问题的回答质量。请考虑回答的有用性、相关性、准确性、深度和细节"
        "{ref_note}。不要因回答的长短而偏心。请给出 1 到 10 之间的整数评分，10 分最好。\n\n[问题]\n{question}\n\n"
        "{reference}[助手的回答]\n{answer}\n\n",
        "评分（1-10）：",
        "[参考答案]\n{reference}\n\n",
        "；参考答案可用于判断回答是否正确",
    ),
    "en": (
        "Please act as an impartial judge and evaluate the quality of the AI assistant's answer to the user "
        "question below. Consider helpfulness, relevance, accuracy, depth and level of detail{ref_note}. Do not let "
        "the length of the answer influence you. Rate the answer with an integer from 1 to 10, 10 being best.\n\n"
        "[Question]\n{question}\n\n{reference}[Assistant's answer]\n{answer}\n\n",
        "Rating (1-10): ",
        "[Reference answer]\n{reference}\n\n",
        "; use the reference answer to judge correctness",
    ),
}
_PAIRWISE = {
    "zh": (
        "请作为一名公正的评审，比较两个 AI 助手对同一用户问题的回答，判断哪一个更好。请考虑有用性、相关性、准确性、深度"
        "和细节。不要让回答出现的顺序或长短影响你的判断。只回答 A 或 B。\n\n[问题]\n{question}\n\n[助手 A 的回答]\n"
        "{answer_a}\n\n[助手 B 的回答]\n{answer_b}\n\n",
        "更好的回答是助手 ",
    ),
    "en": (
        "Please act as an impartial judge and compare two AI assistants' answers to the same user question; decide "
        "which is better. Consider helpfulness, relevance, accuracy, depth and detail. Do not let the order in "
        "which the answers appear or their length influence you. Answer only A or B.\n\n[Question]\n{question}\n\n"
        "[Assistant A's answer]\n{answer_a}\n\n[Assistant B's answer]\n{answer_b}\n\n",
        "The better answer is assistant ",
    ),
}


def _clip(text: str, max_chars: int) -> str:
    text = cell_text(text).strip()
    return text if len(text) <= max_chars else text[: max_chars // 2] + " … " + text[-max_chars // 2 :]


def grading_prompt(
    question: str, answer: str, reference: str = "", *, language: str = "zh", max_chars: int = 2000
) -> tuple[str, str]:
    """The single-answer rubric (MT-Bench style, Chinese or English) as ``(instruction, lead)``: the judge's score is
    read right after ``lead`` (``评分（1-10）：``). Long texts are cut to ``max_chars`` (head … tail)."""
    body, lead, ref_block, ref_note = _RUBRIC[rubric_language(language)]
    reference = _clip(reference, max_chars)
    return body.format(
        question=_clip(question, max_chars),
        answer=_clip(answer, max_chars),
        reference=ref_block.format(reference=reference) if reference else "",
        ref_note=ref_note if reference else "",
    ), lead


def pairwise_prompt(
    question: str, answer_a: str, answer_b: str, *, language: str = "zh", max_chars: int = 2000
) -> tuple[str, str]:
    """The pairwise rubric as ``(instruction, lead)``; the verdict (``A``/``B``) is read right after ``lead``."""
    body, lead = _PAIRWISE[rubric_language(language)]
    return body.format(
        question=_clip(question, max_chars), answer_a=_clip(answer_a, max_chars), answer_b=_clip(answer_b, max_chars)
    ), lead


def rubric_language(language: str) -> str:
    """The rubric language, checked: ``zh`` or ``en``."""
    if language not in _RUBRIC:
        raise ScoringError(f"unknown judge language {language!r}; expected zh or en")
    return language


def sequence_probs(
    next_probs: Callable[[tuple[int, ...]], np.ndarray], sequences: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """Probability that the continuation is exactly each token sequence, renormalised over the sequences.

    ``next_probs(prefix)`` is the model's next-token distribution after the prompt plus ``prefix``. A sequence is the
    product of its tokens' probabilities; one that is a proper prefix of another (``1`` of ``1``+``0``) is also
    multiplied by the probability of *not* continuing into the longer one, so the candidates are exclusive. Each
    distinct prefix costs one forward pass: one for single-token scores, two when ``10`` is ``1``+``0``."""
    if len(set(sequences)) != len(sequences) or any(not s for s in sequences):
        raise ScoringError("the judge's choices must tokenise to distinct, non-empty token sequences")
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def dist(prefix: tuple[int, ...]) -> np.ndarray:
        if prefix not in cache:
            cache[prefix] = np.asarray(next_probs(prefix), dtype=float)
        return cache[prefix]

    probs = []
    for seq in sequences:
        p = math.prod(float(dist(seq[:k])[tok]) for k, tok in enumerate(seq))
        longer = {o[len(seq)] for o in sequences if len(o) > len(seq) and o[: len(seq)] == seq}
        if longer:
            p *= max(0.0, 1.0 - sum(float(dist(seq)[t]) for t in longer))
        probs.append(p)
    out = np.asarray(probs)
    return out / out.sum() if out.sum() > 0 else np.full(len(out), 1 / len(out))


@dataclass(frozen=True)
class Grade:
    """A judge's 1–10 grade: ``expected`` Σ s·p(s), ``greedy`` the most probable score, ``probs`` p(1)..p(10)."""

    expected: float
    greedy: int
    probs: tuple[float, ...]

    @property
    def score(self) -> float:
        """The expected grade on [0, 1]: (expected − 1) / 9."""
        return (self.expected - 1) / 9


@dataclass(frozen=True)
class Verdict:
    """A pairwise judgement of a candidate answer against a baseline, asked in both orders.

    ``first``: the label the judge chose with the candidate as A; ``second``: with the candidate as B. ``outcome`` is
    ``win``/``loss`` when both orders agree, else ``tie`` (``consistent`` False: a position-biased verdict).
    ``p_first``/``p_second``: the judge's probability for the candidate in each order."""

    outcome: str
    first: str
    second: str
    consistent: bool
    p_first: float
    p_second: float

    @property
    def score(self) -> float:
        return {"win": 1.0, "tie": 0.5, "loss": 0.0}[self.outcome]


def combine_orders(first: str, second: str, p_first: float = math.nan, p_second: float = math.nan) -> Verdict:
    """The verdict from the two orders: ``first`` is the label (``A``/``B``) chosen with the candidate as A,
    ``second`` with the candidate as B. Agreement → win/loss; disagreement (the same position won twice) → tie."""
    if first not in ("A", "B") or second not in ("A", "B"):
        raise ScoringError(f"pairwise labels must be A or B, got {first!r} and {second!r}")
    candidate_first, candidate_second = first == "A", second == "B"
    if candidate_first == candidate_second:
        return Verdict("win" if candidate_first else "loss", first, second, True, p_first, p_second)
    return Verdict("tie", first, second, False, p_first, p_second)


def pairwise_summary(pairwise: pd.DataFrame) -> pd.DataFrame:
    """Per model and ``baseline`` (the pairwise table's ``against``): ``n, wins, ties, losses, inconsistent,
    position_bias`` (share of order-inconsistent verdicts, all counted as ties) and ``win_rate`` ((wins + ties/2) /
    n)."""
    keys = ["model", "against"] if "against" in pairwise.columns else ["model"]
    g = pairwise.groupby(keys, sort=False)
    out = pd.DataFrame(
        {
            "n": g.size(),
            "wins": g["verdict"].apply(lambda v: int((v == "win").sum())),
            "ties": g["verdict"].apply(lambda v: int((v == "tie").sum())),
            "losses": g["verdict"].apply(lambda v: int((v == "loss").sum())),
            "inconsistent": g["consistent"].apply(lambda v: int((~v.astype(bool)).sum())),
        }
    )
    out["position_bias"] = out["inconsistent"] / out["n"]
    out["win_rate"] = (out["wins"] + out["ties"] / 2) / out["n"]
    return out.reset_index().rename(columns={"against": "baseline"})


PAIRWISE_COLUMNS: tuple[str, ...] = (*SCORE_COLUMNS, "verdict", "first", "second", "consistent")
START_SCORER = "pairwise_start"  # the scorer of a DPO model's verdicts against the model its DPO run started from


def pairwise_row(rec, baseline: str, v: Verdict, scorer: str = "pairwise") -> tuple:
    """One row of a pairwise table (``PAIRWISE_COLUMNS``) for answer ``rec`` judged against ``baseline``."""
    return (rec.item_id, rec.split, rec.model, scorer, v.score, baseline, v.outcome, v.first, v.second,
            v.consistent)  # fmt: skip


def baseline_pairs(answers: pd.DataFrame, items: pd.DataFrame, baseline: str) -> tuple[pd.Series, pd.DataFrame]:
    """For pairwise judging: the baseline's answer per item — its rows in ``answers``, else the Z-Bench column of
    that name — and the other models' answers to the items it answered."""
    own = answers[answers["model"] == baseline].set_index("item_id")["answer"]
    if own.empty and baseline not in items.columns:
        raise ScoringError(
            f"no answers of the baseline {baseline!r} (evaluate.judge.baseline): neither rows of that model in the "
            "answers nor a Z-Bench column of that name"
        )
    base = own if not own.empty else items[baseline]
    return base, answers[(answers["model"] != baseline) & answers["item_id"].isin(base.index)]


class PairTask(NamedTuple):
    """One pairwise judgement to ask (in both orders): the candidate's answer row ``rec`` against ``against``."""

    rec: Any
    against: str
    scorer: str
    question: str
    answer: str
    baseline_answer: str


def pairwise_tasks(
    answers: pd.DataFrame, items: pd.DataFrame, baseline: str | None, starts: Mapping[str, str] | None = None
) -> list[PairTask]:
    """Everything pairwise judging asks, for the local and the endpoint judge alike: each answer against
    ``baseline``'s answer to the same item (scorer ``pairwise``; ``baseline_pairs``), then each model of ``starts``
    (a DPO model → the model its run started from) against its start model's answer (scorer ``START_SCORER``) —
    unless that start is ``baseline`` (already asked). Items where either answer is empty are skipped; a start
    model without answers gives no task."""
    jobs: list[tuple[str, str, pd.Series, pd.DataFrame]] = []
    if baseline:
        jobs.append((baseline, "pairwise", *baseline_pairs(answers, items, baseline)))
    for model, start in (starts or {}).items():
        if start != baseline:
            own = answers[answers["model"] == start].set_index("item_id")["answer"]
            todo = answers[(answers["model"] == model) & answers["item_id"].isin(own.index)]
            jobs.append((start, START_SCORER, own, todo))
    tasks = []
    for against, scorer, base, todo in jobs:
        for rec in todo.itertuples(index=False):
            answer, reference = cell_text(rec.answer), cell_text(base[rec.item_id])
            if answer.strip() and reference.strip():
                question = cell_text(items.loc[rec.item_id, "prompt"])
                tasks.append(PairTask(rec, against, scorer, question, answer, reference))
    return tasks


def pairwise_label(baseline: str | None, starts: Mapping[str, str] | None = None) -> str:
    """What a pairwise run compares with, for progress bars: ``pairwise vs GPT4 + start models``."""
    return "pairwise vs " + " + ".join([*([baseline] if baseline else []), *(["start models"] if starts else [])])
