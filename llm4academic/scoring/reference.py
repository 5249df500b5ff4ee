"""Reference scorers: judging an answer against the item's reference, and scoring a whole answers table.

Each scorer (``SCORERS``) says which references it can judge (``applies(reference)``) and scores in [0, 1].
Dispatch (``scorers_for(reference)``), first match of the first three, plus rouge_l:

* ``option``   — the reference is one option letter (``d``, ``E``, ``(B)``; 38 items): the letter the answer chooses
  must match (``extract_option``, options.py).
* ``number``   — else, when the whole reference is a number or simple expression (``4``, ``80%``, ``-2kg``,
  ``7.22 m/s/s``, ``2/7``, ``pi^2/6``, ``29 或 27``; 45 items): the answer's number must match one of them
  (``answer_number``, ``numbers_match``, numbers.py).
* ``contains`` — else, a reference of 2..``CONTAINS_MAX_CHARS`` normalised characters: it (or one of its
  ``猫/家猫`` alternatives) must occur in the answer, both normalised (NFKC, case, whitespace, punctuation), and not
  right after a negation (正确 in 不正确). One-character references (是, 否, 手) get only rouge_l.
* ``rouge_l``  — every item: Chinese ROUGE-L F1 (rouge.py) against the reference, or — for the 69 open items —
  against GPT-4's answer (``against`` says which; GPT-4 is not scored against itself).

``score_answers`` applies them to a long answers table (``zbench.answers_long`` or generate.py's output).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import pandas as pd
from tqdm.auto import tqdm

from ..zbench import PROVENANCE
from .keyed import KeyedScorer
from .numbers import Number, answer_number, numbers_match, reference_numbers
from .options import extract_option, numbered_choice, option_letter
from .rouge import rouge_l
from .tables import FALLBACK_MODEL, SCORE_COLUMNS, ScoringError, answer_items
from .text import CJK, cell_text, normalize_text

CONTAINS_MAX_CHARS = 40  # longer references are prose: only rouge_l judges them


class ReferenceScorer:
    """A scorer that judges an answer against an item's reference. ``applies(reference)`` says which items it can
    judge; ``score(answer, reference, prompt)`` is in [0, 1] (the prompt helps read options)."""

    name = ""

    def applies(self, reference: str) -> bool:
        raise NotImplementedError

    def score(self, answer: str, reference: str, prompt: str = "") -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<scorer {self.name}>"


class OptionScorer(ReferenceScorer):
    """Multiple choice: the reference is one option letter; 1 when the answer chooses it (``extract_option``)."""

    name = "option"

    def applies(self, reference: str) -> bool:
        return option_letter(reference) is not None

    def score(self, answer: str, reference: str, prompt: str = "") -> float:
        return float(extract_option(answer, prompt) == option_letter(reference))


class NumberScorer(ReferenceScorer):
    """Numeric answers: 1 when the answer's number (``answer_number``) matches one of the reference's numbers
    (``numbers_match``). An answer without a number to a prompt with numbered choices (``1. … 2. …``) is read as the
    choice whose text it states."""

    name = "number"

    def __init__(self, rel_tol: float = 1e-6):
        self.rel_tol = rel_tol

    def applies(self, reference: str) -> bool:
        return option_letter(reference) is None and reference_numbers(reference) is not None

    def score(self, answer: str, reference: str, prompt: str = "") -> float:
        references = reference_numbers(reference) or []
        number = answer_number(answer)
        if number is None and prompt and (choice := numbered_choice(answer, prompt)):
            number = Number(float(choice), choice)
        return float(number is not None and any(numbers_match(number, r, self.rel_tol) for r in references))


_NEGATIONS = "不没非无未"


class ContainsScorer(ReferenceScorer):
    """Short text references (2..``max_chars`` normalised characters, neither an option nor a number): 1 when the
    normalised reference — or one of its ``/``-separated Chinese alternatives (``猫/家猫``) — occurs in the normalised
    answer (``normalize_text``: NFKC, case, whitespace, punctuation), not right after a negation (``正确`` does not
    occur in ``不正确``). One-character references (``是``, ``否``, ``手``) are left to rouge_l: containment cannot
    tell them from any other use of the character."""

    name = "contains"

    def __init__(self, max_chars: int = CONTAINS_MAX_CHARS):
        self.max_chars = max_chars

    def applies(self, reference: str) -> bool:
        return (
            option_letter(reference) is None
            and reference_numbers(reference) is None
            and 2 <= len(normalize_text(reference)) <= self.max_chars
        )

    @staticmethod
    def alternatives(reference: str) -> list[str]:
        parts = [p for p in re.split(r"\s*/+\s*", str(reference)) if p.strip()]
        if len(parts) > 1 and all(re.search(rf"[{CJK}]", p) for p in parts):
            return [normalize_text(p) for p in parts if normalize_text(p)]
        return [normalize_text(reference)]

    def score(self, answer: str, reference: str, prompt: str = "") -> float:
        text = normalize_text(answer)
        return float(any(self._occurs(alt, text) for alt in self.alternatives(reference)))

    @staticmethod
    def _occurs(needle: str, text: str) -> bool:
        """``needle`` occurs in ``text`` other than right after a Chinese negation (正确 in 不正确, 存在 in 不存在)."""
        if needle[:1] in _NEGATIONS:
            return needle in text
        return any(
            m.start() == 0 or text[m.start() - 1] not in _NEGATIONS for m in re.finditer(re.escape(needle), text)
        )


class RougeLScorer(ReferenceScorer):
    """Every item: Chinese ROUGE-L F1 (``rouge_l``) against the reference, or — for open items — against the
    fallback model's answer (``score_answers``)."""

    name = "rouge_l"

    def applies(self, reference: str) -> bool:
        return bool(str(reference).strip())

    def score(self, answer: str, reference: str, prompt: str = "") -> float:
        return rouge_l(answer, reference)


SCORERS: dict[str, ReferenceScorer] = {
    s.name: s for s in (OptionScorer(), NumberScorer(), ContainsScorer(), RougeLScorer())
}
REFERENCE_SCORERS: tuple[str, ...] = tuple(SCORERS)
KEYED = "keyed"  # the answer-key scorer (keyed.py): the primary score wherever it ran
DEFAULT_SCORERS: tuple[str, ...] = (KEYED, *REFERENCE_SCORERS)


@lru_cache(maxsize=1)
def keyed_scorer() -> KeyedScorer:
    """The keyed scorer with the shipped answer key, loaded once per process."""
    return KeyedScorer()


def scorers_for(
    reference: str, scorers: Iterable[str | ReferenceScorer] = REFERENCE_SCORERS, item_id: str | None = None
) -> list[str]:
    """The names of the scorers that can judge an item with this reference (dispatch): keyed for an item the answer
    key grades (given its ``item_id``), option for an option letter, number for a number, contains for other short
    references, rouge_l for any reference."""
    return [
        s.name
        for s in resolve_scorers(scorers)
        if str(reference).strip() and (s.applies(item_id) if isinstance(s, KeyedScorer) else s.applies(reference))
    ]


def resolve_scorers(scorers: Iterable[str | ReferenceScorer | KeyedScorer]) -> list[ReferenceScorer | KeyedScorer]:
    """The scorers named (``"keyed"``, ``"option"``, …) or given, in order; one name or scorer alone is a list of
    one."""
    resolved = []
    for s in [scorers] if isinstance(scorers, str | ReferenceScorer | KeyedScorer) else scorers:
        if isinstance(s, ReferenceScorer | KeyedScorer):
            resolved.append(s)
        elif s == KEYED:
            resolved.append(keyed_scorer())
        elif s in SCORERS:
            resolved.append(SCORERS[s])
        else:
            raise ScoringError(
                f"unknown scorer {s!r}; the reference scorers are: {', '.join(DEFAULT_SCORERS)} "
                "(the judge scores with judge_scores / pairwise_scores)"
            )
    return resolved


def score_answers(
    answers: pd.DataFrame,
    zbench: pd.DataFrame | None = None,
    scorers: Iterable[str | ReferenceScorer | KeyedScorer] = DEFAULT_SCORERS,
    *,
    fallback_model: str | None = FALLBACK_MODEL,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Score stored answers with the reference scorers: a long table ``item_id, split, model, scorer, score,
    against`` with one row per answer and applicable scorer (``scorers_for``); ``against`` is ``reference``, or, for
    rouge_l on an item without a reference, the fallback model whose answer served instead (that model's own answer
    is not scored against itself; no row where that answer is empty or the table lacks its column). An empty answer
    scores 0. ``zbench`` defaults to ``load_zbench()``; answers may come from any model (``answers_long`` or
    generate.py's output). When ``answers`` has a ``truncated`` column (the answer was cut at ``max_new_tokens``), each
    score row carries its answer's flag in a ``truncated`` column (nullable boolean)."""
    resolved = resolve_scorers(scorers)
    items = answer_items(answers, zbench)
    fallback = fallback_model if fallback_model in items.columns else None
    rows, rules = [], {}
    for rec in tqdm(
        answers.itertuples(index=False),
        total=len(answers),
        desc="scoring",
        disable=None if progress is None else not progress,
        leave=False,
    ):
        item = items.loc[rec.item_id]
        reference, prompt, answer = cell_text(item["reference"]), cell_text(item["prompt"]), cell_text(rec.answer)
        for scorer in resolved:
            if isinstance(scorer, KeyedScorer):
                if reference.strip() and scorer.applies(rec.item_id):
                    cut = getattr(rec, "truncated", False) is True  # NA (unknown) is not cut
                    graded = scorer.grade(rec.item_id, answer, prompt, truncated=cut)
                    rows.append((rec.item_id, rec.split, rec.model, scorer.name, graded.score, "reference"))
                    rules[len(rows) - 1] = graded.rule
            elif reference.strip():
                if scorer.applies(reference):
                    rows.append(
                        (
                            rec.item_id,
                            rec.split,
                            rec.model,
                            scorer.name,
                            scorer.score(answer, reference, prompt),
                            "reference",
                        )
                    )
            elif scorer.name == "rouge_l" and fallback and rec.model != fallback and cell_text(item[fallback]).strip():
                rows.append(
                    (
                        rec.item_id,
                        rec.split,
                        rec.model,
                        scorer.name,
                        scorer.score(answer, cell_text(item[fallback]), prompt),
                        fallback,
                    )
                )
    scores = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    scores["score"] = scores["score"].astype(float)
    if rules:  # which rule decided each keyed score (keyed.py)
        scores["rule"] = [rules.get(i, "") for i in range(len(scores))]
    if "truncated" in answers.columns:  # passed through for scorers that treat a cut answer apart; no score changes
        flags = answers.drop_duplicates(["item_id", "model"]).set_index(["item_id", "model"])["truncated"]
        where = pd.MultiIndex.from_frame(scores[["item_id", "model"]])
        scores["truncated"] = flags.astype("boolean").reindex(where).array
    scores.attrs["scoring"] = {
        "scorers": [s.name for s in resolved],
        "fallback_model": fallback,
        "zbench": dict(PROVENANCE),
    }
    return scores
