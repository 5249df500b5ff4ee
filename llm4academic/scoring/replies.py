"""Reading the endpoint judge's reply strictly: ``parse_grade`` a bare 1–10 score, ``parse_label`` a bare ``A`` or
``B``; when the server returns ``top_logprobs``, the probabilities come from them (``grade_probs``, ``label_prob``).
``read_reply`` turns a chat completion into a verdict-cache row's body (``ok``, ``malformed`` or ``refused``) and
``row_grade`` an ``ok`` grade row into a ``Grade``. Imports no torch.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

from .endpoint_http import JudgeFailure
from .verdicts import SCORE_STRINGS, Grade

_GRADE_RE = re.compile(
    r"(?:评分\(1-10\):|(?i:rating \(1-10\):))?\s*(?:\[\[(10|[1-9])\]\]|(10|[1-9])(?:\s*/\s*10|\s*分)?)\s*[.。]?"
)
_LABEL_RE = re.compile(
    r"(?:(?:更好的回答是|(?i:the better answer is))\s*)?(?:(?:助手|(?i:assistant))\s*)?"
    r"(?:\[\[([AB])\]\]|([AB]))\s*[.。]?"
)


def parse_grade(text: str) -> int | None:
    """The 1–10 score of a reply that is the score and nothing else (``8``, ``8/10``, ``8分``, ``[[8]]``, the rubric's
    lead then the score); ``None`` for anything else."""
    m = _GRADE_RE.fullmatch(unicodedata.normalize("NFKC", text or "").strip())
    return int(m.group(1) or m.group(2)) if m else None


def parse_label(text: str) -> str | None:
    """``A`` or ``B`` from a reply that is the label and nothing else (``B``, ``[[A]]``, ``助手 A``, the lead then the
    label); ``None`` for anything else."""
    m = _LABEL_RE.fullmatch(unicodedata.normalize("NFKC", text or "").strip())
    return (m.group(1) or m.group(2)) if m else None


def _top(entry: dict) -> dict[str, float]:
    """One position's ``top_logprobs`` as probabilities by stripped token text."""
    out: dict[str, float] = {}
    for alt in entry.get("top_logprobs") or []:
        token, lp = str(alt.get("token", "")).strip(), alt.get("logprob")
        if token and isinstance(lp, int | float) and math.isfinite(lp):
            out[token] = out.get(token, 0.0) + math.exp(lp)
    return out


def grade_probs(entries: list[dict], greedy: int) -> tuple[float, ...]:
    """p(1)..p(10) from the ``top_logprobs`` at the score's first token (``10`` as one token, or as ``1`` then ``0``
    when the reply's own token was ``1``: read at the next position); one-hot at ``greedy`` without them."""
    p = np.zeros(len(SCORE_STRINGS))
    for i, entry in enumerate(entries):
        token = str(entry.get("token", "")).strip()
        if token and token[0] in "0123456789":
            top = _top(entry)
            p = np.array([top.get(s, 0.0) for s in SCORE_STRINGS])
            if token == "1" and i + 1 < len(entries):
                p_zero = _top(entries[i + 1]).get("0", 0.0)
                p[9], p[0] = p[9] + p[0] * p_zero, p[0] * (1 - p_zero)
            break
    if p.sum() <= 0:
        p = np.eye(len(SCORE_STRINGS))[greedy - 1]
    return tuple(float(x) for x in p / p.sum())


def label_prob(entries: list[dict], label: str) -> float:
    """p(A) among A/B from the ``top_logprobs`` at the label's token; 1 or 0 (the label) without them."""
    for entry in entries:
        if str(entry.get("token", "")).strip() in ("A", "B"):
            top = _top(entry)
            p_a, p_b = top.get("A", 0.0), top.get("B", 0.0)
            if p_a + p_b > 0:
                return p_a / (p_a + p_b)
            break
    return 1.0 if label == "A" else 0.0


def read_reply(kind: str, response) -> dict:
    """What a chat completion says, as a cache row's body: ``status`` ``ok`` (with ``greedy``/``probs`` for a grade,
    ``label``/``p_a`` for a pairwise order), ``malformed`` or ``refused``. A response that is no chat completion raises
    ``JudgeFailure("bad_response")``."""
    try:
        choice = response["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise TypeError
    except (KeyError, IndexError, TypeError, AttributeError):
        raise JudgeFailure("bad_response", "no choices[0].message.content in the server's reply") from None
    finish = choice.get("finish_reason")
    row = {"kind": kind, "reply": text[:500], "finish_reason": finish}
    if message.get("refusal") or finish == "content_filter":
        return {**row, "status": "refused", "detail": str(message.get("refusal") or "finish_reason content_filter")}
    logprobs = choice.get("logprobs")
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    cut = " (cut at the reply's token limit)" if finish == "length" else ""
    if kind == "grade":
        greedy = parse_grade(text)
        if greedy is None:
            return {**row, "status": "malformed", "detail": f"not a bare 1-10 score{cut}"}
        return {
            **row,
            "status": "ok",
            "greedy": greedy,
            "probs": grade_probs(entries, greedy),
            "logprobs": bool(entries),
        }
    label = parse_label(text)
    if label is None:
        return {**row, "status": "malformed", "detail": f"not a bare A or B{cut}"}
    return {**row, "status": "ok", "label": label, "p_a": label_prob(entries, label), "logprobs": bool(entries)}


def row_grade(row: dict) -> Grade:
    probs = tuple(row["probs"])
    return Grade(float(np.dot(probs, np.arange(1, len(probs) + 1))), int(row["greedy"]), probs)
