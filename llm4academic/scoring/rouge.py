"""Chinese ROUGE-L: exactly rouge-chinese 1.0.3's ``rouge-l`` ``f`` on jieba words, with a bit-parallel LCS.
jieba and rouge-chinese are slow to import and are imported when ROUGE-L is first computed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache


@lru_cache(maxsize=1)
def _rouge_cut_sent() -> Callable[[str], list[str]]:
    import jieba
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)
    return Rouge().cut_sent


@lru_cache(maxsize=65536)
def rouge_tokens(text: str) -> tuple[str, ...]:
    """The words ROUGE-L compares: jieba's segmentation (whitespace dropped), then rouge-chinese's own sentence
    split and word split of the space-joined words — exactly what ``Rouge().get_scores(" ".join(words), …)`` sees."""
    cut_sent = _rouge_cut_sent()
    import jieba

    joined = " ".join(w for w in jieba.cut(str(text)) if w.strip())
    sentences = [" ".join(s.split()) for s in cut_sent(joined) if len(s) > 0]
    return tuple(w for s in sentences for w in s.split(" ")) if joined else ()


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison–Dix / Crochemore et al.): O(|a|·|b|/64)."""
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(answer: str, reference: str) -> float:
    """Chinese ROUGE-L F1 of an answer against a reference: rouge-chinese 1.0.3's ``rouge-l`` ``f`` on jieba words
    (``rouge_tokens``), with the same formula ``2PR/(P+R+1e-8)``, its LCS computed bit-parallel; 0 when either is
    empty. (Plain ``rouge`` splits on spaces and scores unsegmented Chinese as 0.)"""
    hyp, ref = rouge_tokens(answer), rouge_tokens(reference)
    if not hyp or not ref:
        return 0.0
    lcs = _lcs_length(hyp, ref)
    p, r = lcs / len(hyp), lcs / len(ref)
    return 2.0 * ((p * r) / (p + r + 1e-8))
