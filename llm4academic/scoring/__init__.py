"""Scoring Z-Bench answers: the answer key, reference scorers, judges with position swap, bootstrap aggregation.

Everything here works on answers as data — a long table ``item_id, split, model, answer`` (``zbench.answers_long``
or generate.py's output) — and never calls generation. One job per module:

* ``text``      — ``normalize_text`` (NFKC, case, whitespace, punctuation) and the shared text helpers;
* ``tables``    — the answers and scores tables' columns, the answers check, ``ScoringError``;
* ``options``   — the option letter an answer chooses (``extract_option``, ``explain_option``, ``option_letter``);
* ``numbers``   — the number an answer gives and matching it (``Number``, ``answer_number``, ``numbers_match``);
* ``rouge``     — Chinese ROUGE-L (``rouge_l``), exactly rouge-chinese's on jieba words;
* ``keyed``     — the primary scorer: each referenced item graded by Z-Bench's answer key (``KeyedScorer``);
* ``validate``  — how far it can be trusted: agreement with labelled answers, adversarial baselines;
* ``reference`` — the classic reference scorers (``SCORERS``: option, number, contains, rouge_l; ``scorers_for``) and
  ``score_answers`` (keyed + the classic four by default);
* ``stats``     — ``bootstrap_ci``, ``group_rng`` and ``aggregate`` (means with seeded CIs per split or tag and
  overall);
* ``board``     — the 14 reference models' leaderboard (``leaderboard``, ``leaderboard_json``);
* ``verdicts``  — the judge's rubrics and how its distributions are read (``sequence_probs``, ``Grade``,
  ``Verdict``, ``combine_orders``, ``pairwise_summary``), without torch;
* ``judge``     — the judge model (``Judge``, ``judge_scores``, ``pairwise_scores``): any local causal LM that grades
  1–10 from its next-token distribution and compares two answers in both orders; an order-inconsistent verdict is
  a tie and counts towards the position-bias rate;
* ``endpoint``  — the judge behind an OpenAI-compatible endpoint (``EndpointJudge``, ``endpoint_judge_scores``,
  ``endpoint_pairwise_scores``): the same rubrics and outputs, concurrent requests; ``endpoint_http`` its transport
  (retries, backoff, the key from the environment), ``replies`` strict reply parsing, ``verdict_cache`` the
  resumable ``VerdictCache``; failed replies are recorded per item and never scored. ``judge_bias``:
  ``judge_report`` (either judge's position, length and self-preference biases). No torch.

Every public name is importable from here. No torch at import time: ``judge`` (which imports it) is imported when
one of its names is first used; jieba/rouge-chinese only when ROUGE-L is first computed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .board import LEADERBOARD_KEYS, leaderboard, leaderboard_json
from .endpoint import EndpointJudge, endpoint_judge_scores, endpoint_pairwise_scores
from .endpoint_http import FAILURE_REASONS, EndpointError, JudgeFailure
from .judge_bias import bias_table, judge_report
from .numbers import Number, answer_number, extract_numbers, numbers_match, reference_numbers
from .options import explain_option, extract_option, option_letter, parse_numbered_options, parse_options
from .reference import (
    CONTAINS_MAX_CHARS,
    REFERENCE_SCORERS,
    SCORERS,
    ContainsScorer,
    NumberScorer,
    OptionScorer,
    ReferenceScorer,
    RougeLScorer,
    score_answers,
    scorers_for,
)
from .replies import parse_grade, parse_label
from .rouge import rouge_l, rouge_tokens
from .stats import AGG_COLUMNS, OVERALL, aggregate, bootstrap_ci, group_rng
from .tables import ANSWER_COLUMNS, FALLBACK_MODEL, SCORE_COLUMNS, ScoringError
from .text import normalize_text
from .verdict_cache import VerdictCache
from .verdicts import (
    SCORE_STRINGS,
    Grade,
    Verdict,
    combine_orders,
    grading_prompt,
    pairwise_prompt,
    pairwise_summary,
    sequence_probs,
)

if TYPE_CHECKING:
    from .judge import Judge, judge_scores, pairwise_scores

SCORER_VERSION = "2"  # bump when a scorer's behaviour changes (compare refuses studies scored by different versions)

_LAZY = {"Judge": "judge", "judge_scores": "judge", "pairwise_scores": "judge"}  # name → module (imports torch)

__all__ = [
    "AGG_COLUMNS",
    "ANSWER_COLUMNS",
    "CONTAINS_MAX_CHARS",
    "FAILURE_REASONS",
    "FALLBACK_MODEL",
    "LEADERBOARD_KEYS",
    "OVERALL",
    "REFERENCE_SCORERS",
    "SCORERS",
    "SCORE_COLUMNS",
    "SCORER_VERSION",
    "SCORE_STRINGS",
    "ContainsScorer",
    "EndpointError",
    "EndpointJudge",
    "Grade",
    "Judge",
    "JudgeFailure",
    "Number",
    "NumberScorer",
    "OptionScorer",
    "ReferenceScorer",
    "RougeLScorer",
    "ScoringError",
    "Verdict",
    "VerdictCache",
    "aggregate",
    "answer_number",
    "bootstrap_ci",
    "combine_orders",
    "endpoint_judge_scores",
    "endpoint_pairwise_scores",
    "explain_option",
    "extract_numbers",
    "extract_option",
    "grading_prompt",
    "group_rng",
    "bias_table",
    "judge_report",
    "judge_scores",
    "leaderboard",
    "leaderboard_json",
    "normalize_text",
    "numbers_match",
    "option_letter",
    "pairwise_prompt",
    "pairwise_scores",
    "pairwise_summary",
    "parse_grade",
    "parse_label",
    "parse_numbered_options",
    "parse_options",
    "reference_numbers",
    "rouge_l",
    "rouge_tokens",
    "score_answers",
    "scorers_for",
    "sequence_probs",
]


def __getattr__(name: str):
    """The judge's names, imported (with torch) on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
