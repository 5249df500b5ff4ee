"""Option letters: which option a multiple-choice answer chooses.

``option_letter`` reads the letter a reference names (``d``, ``(B)``); ``parse_options`` the ``(A) …`` options of a
prompt; ``extract_option`` / ``explain_option`` the letter an answer chooses — the last explicit statement
(``答案是 (B)``, ``选C``, ``The answer is d``), else a leading ``(D) …``, else the one letter its first sentence or
the whole answer marks; several letters, a copy of the options or a letter it calls wrong is no choice; an answer
naming one option only by its text or, for numeric options, by its number counts as that option.
``parse_numbered_options`` / ``numbered_choice`` read ``1. … 2. …`` choices for the number scorer.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence

from .numbers import answer_number, numbers_match, reference_numbers
from .text import CJK, normalize_text

_L = "A-H"  # option letters
_REF_OPTION = re.compile(r"\s*\(?\s*([A-Ha-h])\s*\)?\s*[.。]?\s*")
# An explicit answer statement, then one or more letters: 答案是 (B) · 正确答案：A · 选C · 故选项为 D · answer is d
_CUE = re.compile(
    r"(?<!请)(?<!不)(?:(?:正确|最终|最后)?答案(?:应该|应|就|也)?(?:是|为|选择?|:)|(?:正确|最终|最后)?答案\s*:"
    r"|(?:应该|应|故|所以|因此|则|我)?选(?:择)?(?![项题])|(?:故|所以|因此)?选项(?:应)?(?:为|是)"
    r"|正确的?(?:选项|答案|回答|说法|陈述|判断|是)(?:是|为|:)?|(?:the\s+)?(?:correct\s+|final\s+)?answer\s*(?:is|:)"
    r"|\b(?:choose|select|pick)\b)",
    re.I,
)
_CUE_LETTERS = re.compile(
    rf"\s*:?\s*(?:选项|option|答案)?\s*(?:"
    rf"\(([{_L}a-h])\)|((?-i:[{_L}]{{1,5}}))(?![A-Za-z])|([a-h])(?=\s*(?:$|[).。,，:;!?]))"  # (b) · B · BD · d.
    rf")((?:\s*(?:[,、和与及/&]|and)\s*\(?(?-i:[{_L}])\)?(?![A-Za-z]))*)",
    re.I,
)
# A letter followed by its verdict: 选项B是正确的 · (C) 是正确答案 · D 项正确
_VERDICT = re.compile(
    rf"(?:选项\s*)?(?:\(([{_L}])\)|(?<![A-Za-z])([{_L}]))\s*(?:选?项)?\s*(?:是|为)?\s*(?:正确|对)的?(?:答案|选项)?"
    rf"(?![A-Za-z])"
)
# Letters marked as options anywhere: (B) · 选项B · B项 · B选项 · line-leading "B." / "B、" / "B:" / "B)"
_MARK = re.compile(
    rf"\(([{_L}a-h])\)|选项\s*\(?([{_L}a-h])\)?(?![A-Za-z])|(?<![A-Za-z])([{_L}])\s*(?:选项|项)"
    rf"|(?:^|\n)\s*([{_L}])\s*(?:[.)、:]|\s)|(?:^|(?<=[\n，。:;；]))([{_L}])\)",
    re.M,
)
_LEAD = re.compile(rf"\s*(?:\(([{_L}a-h])\)|([{_L}])(?:\s*[.)、:。]|\s|$))")
_NEG = re.compile(r"错误|不正确|不对|排除|不成立|无关|incorrect|wrong", re.I)
_NEGATIVE_QUESTION = re.compile(r"不正确|错误|不是|除了|除外|不包括|不显示|不可能|最不|不能|\bnot\b|\bexcept\b", re.I)
_SENTENCE_END = re.compile(r"[。！？!?\n]|\.(?:\s|$)")


def option_letter(reference: str) -> str | None:
    """The option letter a reference names (``d`` → ``D``, ``(B)`` / ``（Ｂ）`` → ``B``), else None."""
    m = _REF_OPTION.fullmatch(unicodedata.normalize("NFKC", str(reference)))
    return m.group(1).upper() if m else None


def parse_options(prompt: str) -> dict[str, str]:
    """The ``(A) …`` options of a multiple-choice prompt: ``{"A": "text", …}`` (full-width brackets included)."""
    text = unicodedata.normalize("NFKC", str(prompt))
    marks = list(re.finditer(rf"\(([{_L}])\)", text))
    options = {}
    for m, nxt in zip(marks, [*marks[1:], None], strict=False):
        body = text[m.end() : nxt.start() if nxt else len(text)].split("\n")[0]
        options.setdefault(m.group(1), body.strip(" 。.;；,，"))
    return options


def _first(groups: Sequence[str | None]) -> str:
    return next(g for g in groups if g)


def _stated_letters(text: str) -> tuple[set[str], int] | None:
    """Letters of the last explicit statement (``答案是 D,E`` → {D, E}; ``选项B是正确的`` → {B}) and where its
    letters start; None when the answer makes no such statement."""
    found = None
    for cue in _CUE.finditer(text):
        m = _CUE_LETTERS.match(text, cue.end())
        if m:
            more = re.findall(rf"[{_L}]", m.group(4) or "")
            found = ({c.upper() for c in (*_first(m.groups()[:3]), *more)}, m.start())
    for m in _VERDICT.finditer(text):
        if found is None or m.start() > found[1]:
            found = ({_first(m.groups())}, m.start())
    return found


def _marks(text: str) -> list[tuple[int, str]]:
    return [(m.start(), _first(m.groups()).upper()) for m in _MARK.finditer(text)]


def _copied_in_order(text: str, options: dict[str, str]) -> int:
    """How many options the text copies (letter + its own text) in the options' own order (A before B before …)."""
    positions = []
    for letter, body in sorted(options.items()):
        head = normalize_text(body)[:6]
        for m in re.finditer(rf"{letter}\s*[).、:]?", text):
            if head and normalize_text(text[m.end() : m.end() + 3 * len(head) + 6]).startswith(head):
                positions.append(m.start())
                break
    longest = []  # longest increasing run of positions (patience sorting)
    for pos in positions:
        i = next((k for k, p in enumerate(longest) if p >= pos), len(longest))
        longest[i : i + 1] = [pos]
    return len(longest)


def _restates_options(text: str, options: dict[str, str]) -> bool:
    """True when the answer copies three or more options in order — a restatement of the question, not a choice.
    Without the prompt: the answer starts with an option and marks three or more letters."""
    if options:
        return _copied_in_order(text, options) >= 3
    return _LEAD.match(text) is not None and len({c for _, c in _marks(text)}) >= 3


def _distinctive(options: dict[str, str]) -> dict[str, str]:
    """Each option's normalised text without the prefix and suffix all options share (一位年长的…美国妇女)."""
    texts = {k: normalize_text(v) for k, v in options.items()}
    values = list(texts.values())
    if len(values) < 2:
        return texts
    prefix = len(os.path.commonprefix(values))
    suffix = len(os.path.commonprefix([v[::-1] for v in values]))
    return {k: v[prefix : len(v) - suffix] if len(v) - suffix > prefix else v for k, v in texts.items()}


def _option_by_text(text: str, options: dict[str, str]) -> str | None:
    """The one option whose (distinctive) text the answer contains — in its first sentence, else anywhere — where a
    text found inside a longer option's text does not count; only texts of two or more letters or CJK characters."""
    keys = {k: v for k, v in _distinctive(options).items() if len(v) >= 2 and re.search(rf"[{CJK}A-Za-z]", v)}
    end = _SENTENCE_END.search(text)
    for part in (text[: end.end()] if end else text, text):
        norm = normalize_text(part)
        spans = [
            (m.start(), m.start() + len(key), letter)
            for letter, key in keys.items()
            for m in re.finditer(re.escape(key), norm)
        ]
        outer = {c for s, e, c in spans if not any(s2 <= s and e <= e2 and e2 - s2 > e - s for s2, e2, _ in spans)}
        if outer:
            return outer.pop() if len(outer) == 1 else None
    return None


def _option_by_number(text: str, options: dict[str, str]) -> str | None:
    """For options that are all numbers (``(A) 2/15 (B) 1/7``): the option equal to the answer's number."""
    values = {k: reference_numbers(v) for k, v in options.items()}
    if not values or any(v is None or len(v) != 1 for v in values.values()):
        return None
    number = answer_number(text)
    hits = [k for k, v in values.items() if number is not None and numbers_match(number, v[0])]
    return hits[0] if len(hits) == 1 else None


def _norm_answer(answer: str) -> str:
    return unicodedata.normalize("NFKC", str(answer)).replace("©", "(C)").replace("®", "(R)").strip()


def extract_option(answer: str, prompt: str = "") -> str | None:
    """The option letter an answer chooses (upper case), or None when it chooses none or several.

    In order: the last explicit statement (``答案是 (B)``, ``正确答案：A``, ``选C``, ``The answer is d``,
    ``选项B是正确的``; one naming several letters, ``答案：D,E``, or opening a copy of the options, is no choice); a
    letter the answer starts with (``(D) …``, ``B。``) unless the answer copies the options in order; the single
    letter marked in the first sentence; the single letter marked anywhere; and, given the prompt, the one option
    whose own text the answer states (first sentence first), or for numeric options the one equal to the answer's
    number. For a question asking for the true option, a letter its clause calls wrong (``选项 (D) 不正确``) is not
    chosen; for one asking for the false option (``哪个陈述是不正确的``) that is the choice itself.
    ``explain_option`` also says which rule decided.
    """
    return explain_option(answer, prompt)[0]


def explain_option(answer: str, prompt: str = "") -> tuple[str | None, str]:
    """``extract_option`` with the rule that decided: ``cue``, ``lead``, ``first-sentence``, ``marked``, ``text``,
    ``number``; or why there is no choice: ``empty``, ``several``, ``restated``, ``negated``, ``none``."""
    text = _norm_answer(answer)
    if not text:
        return None, "empty"
    options = parse_options(prompt) if prompt else {}
    stated = _stated_letters(text)
    if stated is not None:
        letters, start = stated
        if len(letters) > 1:
            return None, "several"
        window = text[start : start + sum(len(v) + 12 for v in options.values())]
        return (None, "restated") if options and _copied_in_order(window, options) >= 3 else (letters.pop(), "cue")
    if _restates_options(text, options):
        return None, "restated"
    lead = _LEAD.match(text)
    if lead:
        return _first(lead.groups()).upper(), "lead"
    check_negation = not _NEGATIVE_QUESTION.search(unicodedata.normalize("NFKC", str(prompt)))

    def chosen(marks: list[tuple[int, str]]) -> set[str]:
        return {
            c for pos, c in marks if not (check_negation and _NEG.search(_SENTENCE_END.split(text[pos : pos + 24])[0]))
        }

    end = _SENTENCE_END.search(text)
    first = chosen(_marks(text[: end.end() if end else len(text)]))
    if len(first) == 1:
        return first.pop(), "first-sentence"
    marks = _marks(text)
    anywhere = chosen(marks)
    if len(anywhere) == 1:
        return anywhere.pop(), "marked"
    if marks:
        return None, "several" if anywhere else "negated"
    if by_text := _option_by_text(text, options):
        return by_text, "text"
    if by_number := _option_by_number(text, options):
        return by_number, "number"
    return None, "none"


_NUMBERED_OPTION = re.compile(
    r"(?:(?<=\s)|(?<=^)|(?<=[：:，,。？?；;“\"]))(?:选项)?([1-9])\s*[.、:：)]?\s*(?=[^\d\s.])"
)


def parse_numbered_options(prompt: str) -> dict[str, str]:
    """Numbered choices in a prompt (``1. 学习… 2. 进行… 3 获取天气``, ``选项1：…``): ``{"1": "学习…", …}``, the
    longest run numbered 1, 2, 3, … in order; {} when the prompt has fewer than two."""
    text = unicodedata.normalize("NFKC", str(prompt))
    marks = list(_NUMBERED_OPTION.finditer(text))
    best: list[re.Match] = []
    for i, m in enumerate(marks):
        if m.group(1) != "1":
            continue
        run = [m]
        for nxt in marks[i + 1 :]:
            if int(nxt.group(1)) == len(run) + 1:
                run.append(nxt)
        best = run if len(run) > len(best) else best
    if len(best) < 2:
        return {}
    ends = [m.start() for m in best[1:]] + [len(text)]
    return {
        m.group(1): text[m.end() : e].split("\n")[0].strip(" ，,。.;；、") for m, e in zip(best, ends, strict=False)
    }


def numbered_choice(answer: str, prompt: str) -> str | None:
    """The number (``"2"``) of the one numbered choice of the prompt (``parse_numbered_options``) whose text the
    answer states, else None."""
    return _option_by_text(_norm_answer(answer), parse_numbered_options(prompt))
