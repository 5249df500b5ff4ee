"""Scoring Z-Bench answers: reference scorers, a judge model with position swap, aggregation with bootstrap CIs.

Everything here works on answers as data — a long table ``item_id, split, model, answer`` (``zbench.answers_long``
or generate.py's output) — and never calls generation.

Reference scorers (``SCORERS``) judge an answer against the item's reference; each says which references it can
judge (``applies(reference)``) and scores in [0, 1]. Dispatch (``scorers_for(reference)``), first match of the first
three, plus rouge_l:

* ``option``   — the reference is one option letter (``d``, ``E``, ``(B)``; 38 items): the letter the answer chooses
  must match (``extract_option``: the last explicit statement — ``答案是 (B)``, ``选C``, ``The answer is d`` — else a
  leading ``(D) …``, else the one letter its first sentence or the whole answer marks; several letters, a copy of
  the options or a letter it calls wrong is no choice; an answer naming one option only by its text or, for numeric
  options, by its number counts as that option).
* ``number``   — else, when the whole reference is a number or simple expression (``4``, ``80%``, ``-2kg``,
  ``7.22 m/s/s``, ``2/7``, ``pi^2/6``, ``(40*70)/(20*60)``, ``29 或 27``; 45 items): the answer's number must match
  one of them. The answer's number is the first number after its last explicit cue (``答案是``, ``结果为``, ``the
  answer is``), else its *final* number — not any number it mentions, which would credit a derivation that passes
  the right value on the way to a wrong one. Numbers: thousands commas, full-width digits, signs, decimals,
  percentages, fractions, ``π``/``√``/``^``/``×`` expressions, LaTeX ``\\frac``, Chinese numerals before a classifier
  (``四条腿``); equal up to ``rel_tol`` or to the rounding of whichever side is written with decimals.
* ``contains`` — else, a reference of 2..``CONTAINS_MAX_CHARS`` normalised characters: it (or one of its
  ``猫/家猫`` alternatives) must occur in the answer, both normalised (NFKC, case, whitespace, punctuation), and not
  right after a negation (正确 in 不正确). One-character references (是, 否, 手) get only rouge_l.
* ``rouge_l``  — every item: Chinese ROUGE-L F1 (jieba words, exactly rouge-chinese 1.0.3's ``rouge-l`` ``f``)
  against the reference, or — for the 69 open items — against GPT-4's answer (``against`` says which; GPT-4 is not
  scored against itself).

The judge (``Judge``) is any local causal LM: it grades 1–10 by reading its next-token distribution over the score
strings (multi-token scores such as ``1``+``0`` handled exactly) and compares two answers in both orders; an
order-inconsistent verdict is a tie and counts towards the position-bias rate (``pairwise_summary``).
``aggregate`` gives means with seeded bootstrap CIs per split or tag and overall; ``leaderboard`` scores the 14
reference models' shipped answers with the reference scorers. No torch at import time (the judge imports it), and
jieba/rouge-chinese only when ROUGE-L is first computed.
"""

from __future__ import annotations

import ast
import math
import operator
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from .base import KitError
from .zbench import PROVENANCE, SPLITS, _split_names, load_zbench

FALLBACK_MODEL = "GPT4"  # open items (no reference) are compared with this model's answer by rouge_l
CONTAINS_MAX_CHARS = 40  # longer references are prose: only rouge_l judges them
SCORE_COLUMNS: tuple[str, ...] = ("item_id", "split", "model", "scorer", "score", "against")
AGG_COLUMNS: tuple[str, ...] = ("n", "score", "ci_low", "ci_high")
OVERALL = "overall"


class ScoringError(KitError):
    """Scoring was asked for something the tables do not hold."""


# --------------------------------------------------------------------------------------------- normalisation
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff"


def normalize_text(text: str) -> str:
    """NFKC (full/half width), casefold, and drop whitespace and punctuation (symbols such as emoji stay)."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "Z", "C")))


# --------------------------------------------------------------------------------------------- option letters
_L = "A-H"  # option letters
_REF_OPTION = re.compile(r"\s*\(?\s*([A-Ha-h])\s*\)?\s*[.。]?\s*")
# An explicit answer statement, then one or more letters: 答案是 (B) · 正确答案：A · 选C · 故选项为 D · answer is d
_CUE = re.compile(
    r"(?<!请)(?<!不)(?:(?:正确|最终|最后)?答案(?:应该|应|就|也)?(?:是|为|选择?|:)|(?:正确|最终|最后)?答案\s*:"
    r"|(?:应该|应|故|所以|因此|则|我)?选(?:择)?(?![项题])|(?:故|所以|因此)?选项(?:应)?(?:为|是)"
    r"|正确的?(?:选项|答案|回答|说法|陈述|判断|是)(?:是|为|:)?|(?:the\s+)?(?:correct\s+|final\s+)?answer\s*(?:is|:)"
    r"|\b(?:choose|select|pick)\b)", re.I)
_CUE_LETTERS = re.compile(
    rf"\s*:?\s*(?:选项|option|答案)?\s*(?:"
    rf"\(([{_L}a-h])\)|((?-i:[{_L}]{{1,5}}))(?![A-Za-z])|([a-h])(?=\s*(?:$|[).。,，:;!?]))"  # (b) · B · BD · d.
    rf")((?:\s*(?:[,、和与及/&]|and)\s*\(?(?-i:[{_L}])\)?(?![A-Za-z]))*)", re.I)
# A letter followed by its verdict: 选项B是正确的 · (C) 是正确答案 · D 项正确
_VERDICT = re.compile(rf"(?:选项\s*)?(?:\(([{_L}])\)|(?<![A-Za-z])([{_L}]))\s*(?:选?项)?\s*(?:是|为)?\s*(?:正确|对)的?(?:答案|选项)?"
                      rf"(?![A-Za-z])")
# Letters marked as options anywhere: (B) · 选项B · B项 · B选项 · line-leading "B." / "B、" / "B:" / "B)"
_MARK = re.compile(
    rf"\(([{_L}a-h])\)|选项\s*\(?([{_L}a-h])\)?(?![A-Za-z])|(?<![A-Za-z])([{_L}])\s*(?:选项|项)"
    rf"|(?:^|\n)\s*([{_L}])\s*(?:[.)、:]|\s)|(?:^|(?<=[\n，。:;；]))([{_L}])\)", re.M)
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
    for m, nxt in zip(marks, [*marks[1:], None]):
        body = text[m.end(): nxt.start() if nxt else len(text)].split("\n")[0]
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
            if head and normalize_text(text[m.end(): m.end() + 3 * len(head) + 6]).startswith(head):
                positions.append(m.start())
                break
    longest = []  # longest increasing run of positions (patience sorting)
    for pos in positions:
        i = next((k for k, p in enumerate(longest) if p >= pos), len(longest))
        longest[i:i + 1] = [pos]
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
    return {k: v[prefix: len(v) - suffix] if len(v) - suffix > prefix else v for k, v in texts.items()}


def _option_by_text(text: str, options: dict[str, str]) -> str | None:
    """The one option whose (distinctive) text the answer contains — in its first sentence, else anywhere — where a
    text found inside a longer option's text does not count; only texts of two or more letters or CJK characters."""
    keys = {k: v for k, v in _distinctive(options).items() if len(v) >= 2 and re.search(rf"[{_CJK}A-Za-z]", v)}
    end = _SENTENCE_END.search(text)
    for part in (text[: end.end()] if end else text, text):
        norm = normalize_text(part)
        spans = [(m.start(), m.start() + len(key), letter)
                 for letter, key in keys.items() for m in re.finditer(re.escape(key), norm)]
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
        window = text[start: start + sum(len(v) + 12 for v in options.values())]
        return (None, "restated") if options and _copied_in_order(window, options) >= 3 else (letters.pop(), "cue")
    if _restates_options(text, options):
        return None, "restated"
    lead = _LEAD.match(text)
    if lead:
        return _first(lead.groups()).upper(), "lead"
    check_negation = not _NEGATIVE_QUESTION.search(unicodedata.normalize("NFKC", str(prompt)))

    def chosen(marks: list[tuple[int, str]]) -> set[str]:
        return {c for pos, c in marks
                if not (check_negation and _NEG.search(_SENTENCE_END.split(text[pos: pos + 24])[0]))}

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


# --------------------------------------------------------------------------------------------- numbers
@dataclass(frozen=True)
class Number:
    """A number read from text: its value, the text it was read from, and half a unit of its last written decimal
    place (0 for integers and expressions) — how far a correctly rounded number may lie from the exact one."""

    value: float
    text: str
    half_ulp: float = 0.0
    percent: bool = False


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+(?![\d.]))?|\.\d+"
_ATOM = rf"(?:√\s*)?(?:(?:{_NUM})?\s*(?:π|(?<![A-Za-z])pi(?![A-Za-z]))|{_NUM})%?"
_OP = r"(?:\*\*|[-+*/^×÷])"
_TERM = rf"(?:\(\s*{_ATOM}(?:\s*{_OP}\s*{_ATOM})*\s*\)|{_ATOM})"
_EXPR = rf"-?\s*{_TERM}(?:\s*(?:\*\*|[*/^×÷])\s*{_TERM})*"
_NUMBER = re.compile(rf"(?<![A-Za-z0-9_.^]){_EXPR}")
_UNIT = r"(?:[A-Za-zΩμ°%\u3400-\u9fff]|/)(?:[A-Za-zΩμ°/·\u3400-\u9fff]|\^-?\d)*"
_REFERENCE_NUMBER = re.compile(rf"\s*({_EXPR})\s*(?:{_UNIT})?\s*")
_DATE = re.compile(r"\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\s*")
_ALTERNATIVES = re.compile(r"\s*(?:或者?|\bor\b|;|；)\s*")
_ANSWER_CUE = re.compile(r"(?:答案|结果|答|得数|the answer|answer|result)\s*(?:应该|应|就|也|约|大约)?\s*"
                         r"(?:是|为|等于|=|:|is|was|≈)", re.I)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}


def _number_text(text: str) -> str:
    """Text ready for number reading: superscripts as ``^n``, LaTeX fractions/π/×, NFKC, one minus sign."""
    text = re.sub(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+", lambda m: "^" + m.group().translate(_SUPERSCRIPTS), str(text))
    for _ in range(3):  # nested \frac
        text = re.sub(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", text)
    text = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"√(\1)", text)
    text = text.replace("\\pi", "π").replace("\\times", "×").replace("\\cdot", "×").replace("\\div", "÷")
    text = unicodedata.normalize("NFKC", text.replace("$", " ").replace("\\%", "%"))
    return text.replace("−", "-").replace("–", "-").replace("·", "×").replace("（", "(").replace("）", ")")


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "pi":
        return math.pi
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "sqrt" and len(node.args) == 1:
        return math.sqrt(_evaluate(node.args[0]))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    raise ValueError(f"not a simple expression: {ast.dump(node)}")


def _read(expr: str) -> Number | None:
    """One matched number expression (``1,234.5``, ``80%``, ``3/4``, ``π^2/6``, ``(40*70)/(20*60)``) → Number."""
    text = expr.strip()
    plain = re.fullmatch(rf"(-?)\s*({_NUM})(%?)", text)
    if plain:
        digits = plain.group(2).replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits and "e" not in digits.lower() else 0
        significant = len(digits.replace(".", "").lstrip("0"))
        value = float(digits) * (-1 if plain.group(1) else 1) / (100 if plain.group(3) else 1)
        half = 0.5 * 10 ** -decimals / (100 if plain.group(3) else 1) if decimals and significant >= 2 else 0.0
        return Number(value, text, half, bool(plain.group(3)))
    py = text.replace(",", "").replace("×", "*").replace("÷", "/").replace("^", "**")
    py = re.sub(r"(\d)\s*(π|pi)", r"\1*\2", py).replace("π", "pi")
    py = re.sub(r"√\s*(\([^()]*\)|[\d.]+|pi)", r"sqrt(\1)", py)
    py = re.sub(rf"({_NUM}|pi|\))%", r"(\1/100)", py)
    try:
        value = _evaluate(ast.parse(py, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return Number(value, text, percent=text.endswith("%")) if math.isfinite(value) else None


_CN_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_BIG = {"万": 10**4, "亿": 10**8}
_CLASSIFIERS = ("个|条|只|种|次|人|位|名|页|米|天|年|岁|本|件|块|元|匹|头|张|颗|座|辆|台|份|道|组|队|支|号|层|秒|分钟|"
                "小时|公里|千克|公斤|克|倍|度|排|行|列|节|章|处|朵|杯|袋|打|句|遍|步|届|项|类|部|间|所|家|棵|"
                "根|把|双|对|套|批|群|片|粒|瓶|盒|箱|包|碗|盘|顿|场|回|段|篇|首|幅|门|架|艘|枚|封|笔|票|股|代|美元|英里|磅")
# A Chinese numeral counts when a classifier or the end of a clause follows (四条腿 · 三个人 · 答案是三。) and it is
# neither an ordinal (第二) nor part of a word (之一 · 唯一 · 星期一 · 百日咳); a lone 一 before a classifier is the
# article "a" (一个非常接近的值), not the number one.
_CN_NUMERAL = r"[零〇一二两三四五六七八九十百千万亿]+(?=(?:{})|[。，,.！!？?；;、:：\s)）]|$)".format(_CLASSIFIERS)
_CN_NUMBER = re.compile(rf"(?<![第之统唯万专单某同逐期拜周])(?!一(?:{_CLASSIFIERS}))(?![百千万亿]){_CN_NUMERAL}")
_CN_ORDINAL = re.compile(rf"(?<=第)(?![百千万亿]){_CN_NUMERAL}")


def _chinese_int(text: str) -> int:
    """``四`` → 4, ``十二`` → 12, ``一百零五`` → 105, ``三万五千`` → 35000, ``二〇二一`` → 2021."""
    if len(text) > 1 and all(c in _CN_DIGITS for c in text):
        return int("".join(str(_CN_DIGITS[c]) for c in text))
    total = section = number = 0
    for c in text:
        if c in _CN_DIGITS:
            number = _CN_DIGITS[c]
        elif c in _CN_UNITS:
            section, number = section + (number or 1) * _CN_UNITS[c], 0
        else:
            total, section, number = (total + section + number) * _CN_BIG[c], 0, 0
    return total + section + number


def _scan(text: str, start: int = 0, end: int | None = None, ordinals: bool = False) -> list[Number]:
    """Numbers (Arabic expressions and Chinese numerals; with ``ordinals`` the 二 of 第二 too) in ``text[start:end]``
    of prepared text, in order."""
    end = len(text) if end is None else end
    found = []
    for m in _NUMBER.finditer(text, start, end):
        expr = m.group()
        if expr.startswith("-") and re.search(r"[A-Za-z0-9)\]]\s*$", text[:m.start()]):  # x - 2: minus, not a sign
            expr = expr[1:]
        if number := _read(expr):
            found.append((m.start(), number))
    for pattern in (_CN_NUMBER, _CN_ORDINAL) if ordinals else (_CN_NUMBER,):
        found += [(m.start(), Number(float(_chinese_int(m.group())), m.group()))
                  for m in pattern.finditer(text, start, end)]
    return [n for _, n in sorted(found, key=lambda t: t[0])]


def extract_numbers(text: str) -> list[Number]:
    """Every number in a text, in order: thousands commas, full-width digits, signs, decimals, ``e`` notation,
    percentages (``80%`` = 0.8), fractions and simple ``* / ^ ×`` expressions with π and √ are one number each; a
    number glued to a Latin letter or after ``^`` (``m/s2``, ``x2``, ``s^2``) is an index, not a number. Chinese
    numerals count before a classifier or at the end of a clause (``四条腿`` = 4, ``一百零五个`` = 105)."""
    return _scan(_number_text(text))


def reference_numbers(reference: str) -> list[Number] | None:
    """The number(s) a reference gives, when the whole reference is one — ``-2kg``, ``7.22 m/s/s``, ``80%``,
    ``pi^2/6`` — or alternatives (``29 或 27``); None for anything else (dates, lists, tuples, prose)."""
    text = _number_text(reference)
    if not text.strip() or _DATE.fullmatch(text):
        return None
    numbers = []
    for part in _ALTERNATIVES.split(text.strip()):
        m = _REFERENCE_NUMBER.fullmatch(part)
        number = _read(m.group(1)) if m else None
        if number is None:
            return None
        numbers.append(number)
    return numbers


def answer_number(answer: str) -> Number | None:
    """The number an answer gives: the first number within 20 characters after its last explicit answer cue
    (``答案是``, ``结果为``, ``答：``, ``the answer is`` …), else its last number (``extract_numbers``); an ordinal
    (``第一句``) counts only in an answer with no other number."""
    text = _number_text(answer)
    for cue in reversed(list(_ANSWER_CUE.finditer(text))):
        if numbers := _scan(text, cue.end(), cue.end() + 20):
            return numbers[0]
    numbers = _scan(text) or _scan(text, ordinals=True)
    return numbers[-1] if numbers else None


def numbers_match(answer: Number, reference: Number, rel_tol: float = 1e-6) -> bool:
    """Equal up to ``rel_tol``, or up to the rounding of whichever side is written with decimals (``0.29`` for
    2/7, ``1.64493`` for π²/6, ``7.2207`` for ``7.22``); integers and single-digit decimals compare exactly. A
    percentage on one side only also matches its bare number on the other (``60%`` answers a reference ``60``)."""
    def close(a: float, r: float, a_half: float, r_half: float) -> bool:
        return abs(a - r) <= max(rel_tol * max(abs(a), abs(r)), a_half, r_half) + 1e-12

    if close(answer.value, reference.value, answer.half_ulp, reference.half_ulp):
        return True
    if answer.percent != reference.percent:
        a, a_half = (answer.value * 100, answer.half_ulp * 100) if answer.percent else (answer.value, answer.half_ulp)
        r, r_half = ((reference.value * 100, reference.half_ulp * 100) if reference.percent
                     else (reference.value, reference.half_ulp))
        return close(a, r, a_half, r_half)
    return False


_NUMBERED_OPTION = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=[：:，,。？?；;“\"]))(?:选项)?([1-9])\s*[.、:：)]?\s*(?=[^\d\s.])")


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
        for nxt in marks[i + 1:]:
            if int(nxt.group(1)) == len(run) + 1:
                run.append(nxt)
        best = run if len(run) > len(best) else best
    if len(best) < 2:
        return {}
    ends = [m.start() for m in best[1:]] + [len(text)]
    return {m.group(1): text[m.end(): e].split("\n")[0].strip(" ，,。.;；、") for m, e in zip(best, ends)}


# --------------------------------------------------------------------------------------------- Chinese ROUGE-L
@lru_cache(maxsize=1)
def _rouge_cut_sent() -> Callable[[str], list[str]]:
    import logging

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


# --------------------------------------------------------------------------------------------- reference scorers
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
        if number is None and prompt and (choice := _option_by_text(_norm_answer(answer),
                                                                     parse_numbered_options(prompt))):
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
        return (option_letter(reference) is None and reference_numbers(reference) is None
                and 2 <= len(normalize_text(reference)) <= self.max_chars)

    @staticmethod
    def alternatives(reference: str) -> list[str]:
        parts = [p for p in re.split(r"\s*/+\s*", str(reference)) if p.strip()]
        if len(parts) > 1 and all(re.search(rf"[{_CJK}]", p) for p in parts):
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
        return any(m.start() == 0 or text[m.start() - 1] not in _NEGATIONS
                   for m in re.finditer(re.escape(needle), text))


class RougeLScorer(ReferenceScorer):
    """Every item: Chinese ROUGE-L F1 (``rouge_l``) against the reference, or — for open items — against the
    fallback model's answer (``score_answers``)."""

    name = "rouge_l"

    def applies(self, reference: str) -> bool:
        return bool(str(reference).strip())

    def score(self, answer: str, reference: str, prompt: str = "") -> float:
        return rouge_l(answer, reference)


SCORERS: dict[str, ReferenceScorer] = {s.name: s for s in (OptionScorer(), NumberScorer(), ContainsScorer(),
                                                            RougeLScorer())}
REFERENCE_SCORERS: tuple[str, ...] = tuple(SCORERS)


def scorers_for(reference: str, scorers: Iterable[str | ReferenceScorer] = REFERENCE_SCORERS) -> list[str]:
    """The names of the scorers that can judge an item with this reference (dispatch): option for an option letter,
    number for a number, contains for other short references, rouge_l for any reference."""
    return [s.name for s in _resolve(scorers) if str(reference).strip() and s.applies(reference)]


def _resolve(scorers: Iterable[str | ReferenceScorer]) -> list[ReferenceScorer]:
    resolved = []
    for s in [scorers] if isinstance(scorers, str | ReferenceScorer) else scorers:
        if isinstance(s, ReferenceScorer):
            resolved.append(s)
        elif s in SCORERS:
            resolved.append(SCORERS[s])
        else:
            raise ScoringError(f"unknown scorer {s!r}; the reference scorers are: {', '.join(SCORERS)} "
                               "(the judge scores with judge_scores / pairwise_scores)")
    return resolved


# --------------------------------------------------------------------------------------------- answers → scores
ANSWER_COLUMNS: tuple[str, ...] = ("item_id", "split", "model", "answer")


def _items(answers: pd.DataFrame, zbench: pd.DataFrame | None) -> pd.DataFrame:
    """Check the answers table and return the Z-Bench rows of its items, indexed by item_id."""
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise ScoringError(f"the answers table lacks column(s) {', '.join(missing)}; expected the long table "
                           f"{', '.join(ANSWER_COLUMNS)} (zbench.answers_long or generate.py's output)")
    zbench = load_zbench() if zbench is None else zbench
    items = zbench.drop_duplicates("item_id").set_index("item_id")
    unknown = sorted(set(answers["item_id"]) - set(items.index))
    if unknown:
        raise ScoringError(f"{len(unknown)} answer item_id(s) are not in the Z-Bench table: "
                           f"{', '.join(map(str, unknown[:5]))}{' …' if len(unknown) > 5 else ''}")
    return items


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def score_answers(answers: pd.DataFrame, zbench: pd.DataFrame | None = None,
                  scorers: Iterable[str | ReferenceScorer] = REFERENCE_SCORERS, *,
                  fallback_model: str | None = FALLBACK_MODEL, progress: bool | None = None) -> pd.DataFrame:
    """Score stored answers with the reference scorers: a long table ``item_id, split, model, scorer, score,
    against`` with one row per answer and applicable scorer (``scorers_for``); ``against`` is ``reference``, or, for
    rouge_l on an item without a reference, the fallback model whose answer served instead (that model's own answer
    is not scored against itself; no row where that answer is empty or the table lacks its column). An empty answer
    scores 0. ``zbench`` defaults to ``load_zbench()``; answers may come from any model (``answers_long`` or
    generate.py's output)."""
    from tqdm.auto import tqdm

    resolved = _resolve(scorers)
    items = _items(answers, zbench)
    fallback = fallback_model if fallback_model in items.columns else None
    rows = []
    for rec in tqdm(answers.itertuples(index=False), total=len(answers), desc="scoring",
                    disable=None if progress is None else not progress, leave=False):
        item = items.loc[rec.item_id]
        reference, prompt, answer = _text(item["reference"]), _text(item["prompt"]), _text(rec.answer)
        for scorer in resolved:
            if reference.strip():
                if scorer.applies(reference):
                    rows.append((rec.item_id, rec.split, rec.model, scorer.name,
                                 scorer.score(answer, reference, prompt), "reference"))
            elif scorer.name == "rouge_l" and fallback and rec.model != fallback and _text(item[fallback]).strip():
                rows.append((rec.item_id, rec.split, rec.model, scorer.name,
                             scorer.score(answer, _text(item[fallback]), prompt), fallback))
    scores = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    scores["score"] = scores["score"].astype(float)
    scores.attrs["scoring"] = {"scorers": [s.name for s in resolved], "fallback_model": fallback,
                               "zbench": dict(PROVENANCE)}
    return scores


# --------------------------------------------------------------------------------------------- aggregation
def bootstrap_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 1000, ci: float = 0.95,
                 rng: np.random.Generator | int | None = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval ``(mean, low, high)`` of the values (resampled with
    replacement ``n_boot`` times, numpy); a seed or generator makes it reproducible."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return math.nan, math.nan, math.nan
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(x.mean()), float(low), float(high)


def _with_tags(scores: pd.DataFrame, zbench: pd.DataFrame | None) -> pd.DataFrame:
    if "tags" not in scores.columns:
        zbench = load_zbench() if zbench is None else zbench
        scores = scores.merge(zbench[["item_id", "tags"]].drop_duplicates("item_id"), on="item_id", how="left")
    tagged = scores.assign(tag=scores["tags"].map(lambda t: list(t) if isinstance(t, list | tuple) and len(t)
                                                  else ["(none)"]))
    return tagged.explode("tag").drop(columns="tags")


def aggregate(scores: pd.DataFrame, by: Sequence[str] = ("model", "split", "scorer"), *, overall: bool = True,
              n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
              zbench: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean score per group with a seeded percentile-bootstrap CI over items: ``[*by], n, score, ci_low, ci_high``.

    ``by`` names columns of ``scores`` (``score_answers``' output), plus ``tag``: tags are lists, so each item
    counts once under each of its tags (taken from ``zbench``, default Z-Bench, when ``scores`` has no ``tags``
    column). With ``overall`` the ``split`` (or ``tag``) column also holds ``"overall"``: all items once, micro-averaged
    over the splits. Each group's resampling is seeded from ``seed`` and the group's key, so a group's CI does not
    depend on which other groups are in the table."""
    by = list(by)
    unknown = [c for c in by if c not in scores.columns and c != "tag"]
    if unknown:
        raise ScoringError(f"cannot aggregate by {', '.join(unknown)}; the scores have columns "
                           f"{', '.join(scores.columns)} (and tag)")
    facet = "tag" if "tag" in by else "split" if "split" in by else None
    data = _with_tags(scores, zbench) if facet == "tag" else scores
    parts = [(data, by)]
    if overall and facet:
        parts.append((scores.assign(**{facet: OVERALL}), by))
    rows = []
    for frame, keys in parts:
        for key, group in frame.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            rng = np.random.default_rng([seed, zlib.crc32(repr(tuple(map(str, key))).encode())])
            mean, low, high = bootstrap_ci(group["score"].to_numpy(), n_boot=n_boot, ci=ci, rng=rng)
            rows.append((*key, int(group["score"].notna().sum()), mean, low, high))
    out = pd.DataFrame(rows, columns=[*by, *AGG_COLUMNS])
    if facet:
        order = [*SPLITS, OVERALL] if facet == "split" else sorted(set(out[facet]) - {OVERALL}) + [OVERALL]
        order += sorted(set(out[facet]) - set(order))
        out[facet] = pd.Categorical(out[facet], categories=order, ordered=True)
        out = out.sort_values(by, kind="stable").reset_index(drop=True)
        out[facet] = out[facet].astype(str)
    out.attrs["aggregate"] = {"by": by, "n_boot": n_boot, "ci": ci, "seed": seed,
                              "method": "mean over items; percentile bootstrap over items, seeded per group",
                              **scores.attrs.get("scoring", {})}
    return out


# --------------------------------------------------------------------------------------------- leaderboard
@lru_cache(maxsize=8)
def _reference_scores(splits: tuple[str, ...], scorers: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                   dict[str, int]]:
    """The reference-model scores (cached per process), the (split, scorer) pairs that apply, items per split."""
    from .zbench import answers_long

    zbench = load_zbench(list(splits))
    scores = score_answers(answers_long(zbench), zbench, scorers, fallback_model=None)
    applicable = pd.DataFrame([(row.split, name) for row in zbench.itertuples(index=False)
                               for name in scorers_for(row.reference, scorers)], columns=["split", "scorer"])
    return scores, applicable.assign(items=1), zbench.groupby("split").size().to_dict()


def leaderboard(splits: str | Iterable[str] | None = None, *, scorers: Iterable[str] = REFERENCE_SCORERS,
                n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """The 14 reference models' shipped Z-Bench answers scored with the reference scorers (not the judge), per
    split and overall: ``model, split, scorer, n, coverage, score, ci_low, ci_high`` — ``n`` answers judged,
    ``coverage`` the share of the split's items that scorer can judge, ``score`` the mean with a seeded bootstrap CI.
    Only items with a reference count (rouge_l's GPT-4 fallback would favour GPT-4). Rows: split, scorer, then best
    score first. ``attrs["leaderboard"]`` carries the provenance."""
    names = tuple(_split_names(splits))
    chosen = tuple(s.name for s in _resolve(scorers))
    scores, applicable, sizes = _reference_scores(names, chosen)
    table = aggregate(scores, ("model", "split", "scorer"), n_boot=n_boot, ci=ci, seed=seed)
    covered = applicable.groupby(["split", "scorer"])["items"].sum()
    covered = pd.concat([covered, applicable.groupby("scorer")["items"].sum().rename(lambda s: (OVERALL, s))])
    totals = {**sizes, OVERALL: sum(sizes.values())}
    table.insert(4, "coverage", [covered.get((sp, sc), 0) / totals[sp] for sp, sc in zip(table["split"],
                                                                                            table["scorer"])])
    order = {s: i for i, s in enumerate([*names, OVERALL])}
    scorer_order = {s: i for i, s in enumerate(chosen)}
    table = table.sort_values(["split", "scorer", "score", "model"], key=lambda c: c.map(order) if c.name == "split"
                              else c.map(scorer_order) if c.name == "scorer" else -c if c.name == "score" else c,
                              kind="stable").reset_index(drop=True)
    table.attrs["leaderboard"] = {"zbench": dict(PROVENANCE), "splits": list(names), "scorers": list(chosen),
                                  "answers": "the 14 reference models' answers shipped with Z-Bench",
                                  "against": "reference", "n_boot": n_boot, "ci": ci, "seed": seed}
    return table


LEADERBOARD_KEYS: tuple[str, ...] = ("model", "split", "scorer", "n", "score", "ci_low", "ci_high", "coverage")


def leaderboard_json(splits: str | Iterable[str] | None = None, **kwargs) -> list[dict]:
    """``leaderboard`` as JSON-ready records ``{model, split, scorer, n, score, ci_low, ci_high, coverage}``
    (floats to 4 decimals), for ``llm4academic zbench leaderboard --json``."""
    table = leaderboard(splits, **kwargs)
    return [{k: (round(float(r[k]), 4) if k in ("score", "ci_low", "ci_high", "coverage")
                 else int(r[k]) if k == "n" else str(r[k])) for k in LEADERBOARD_KEYS}
            for r in table.to_dict("records")]


# --------------------------------------------------------------------------------------------- judge model
SCORE_STRINGS: tuple[str, ...] = tuple(str(i) for i in range(1, 11))
_RUBRIC = {
    "zh": ("请作为一名公正的评审，评估下面 AI 助手对用户问题的回答质量。请考虑回答的有用性、相关性、准确性、深度和细节"
           "{ref_note}。不要因回答的长短而偏心。请给出 1 到 10 之间的整数评分，10 分最好。\n\n[问题]\n{question}\n\n"
           "{reference}[助手的回答]\n{answer}\n\n", "评分（1-10）：", "[参考答案]\n{reference}\n\n",
           "；参考答案可用于判断回答是否正确"),
    "en": ("Please act as an impartial judge and evaluate the quality of the AI assistant's answer to the user "
           "question below. Consider helpfulness, relevance, accuracy, depth and level of detail{ref_note}. Do not let the "
           "length of the answer influence you. Rate the answer with an integer from 1 to 10, 10 being best.\n\n"
           "[Question]\n{question}\n\n{reference}[Assistant's answer]\n{answer}\n\n", "Rating (1-10): ",
           "[Reference answer]\n{reference}\n\n", "; use the reference answer to judge correctness"),
}
_PAIRWISE = {
    "zh": ("请作为一名公正的评审，比较两个 AI 助手对同一用户问题的回答，判断哪一个更好。请考虑有用性、相关性、准确性、深度"
           "和细节。不要让回答出现的顺序或长短影响你的判断。只回答 A 或 B。\n\n[问题]\n{question}\n\n[助手 A 的回答]\n"
           "{answer_a}\n\n[助手 B 的回答]\n{answer_b}\n\n", "更好的回答是助手 "),
    "en": ("Please act as an impartial judge and compare two AI assistants' answers to the same user question; decide "
           "which is better. Consider helpfulness, relevance, accuracy, depth and detail. Do not let the order in "
           "which the answers appear or their length influence you. Answer only A or B.\n\n[Question]\n{question}\n\n"
           "[Assistant A's answer]\n{answer_a}\n\n[Assistant B's answer]\n{answer_b}\n\n", "The better answer is "
           "assistant "),
}


def _clip(text: str, max_chars: int) -> str:
    text = _text(text).strip()
    return text if len(text) <= max_chars else text[: max_chars // 2] + " … " + text[-max_chars // 2:]


def grading_prompt(question: str, answer: str, reference: str = "", *, language: str = "zh",
                   max_chars: int = 2000) -> tuple[str, str]:
    """The single-answer rubric (MT-Bench style, Chinese or English) as ``(instruction, lead)``: the judge's score is
    read right after ``lead`` (``评分（1-10）：``). Long texts are cut to ``max_chars`` (head … tail)."""
    body, lead, ref_block, ref_note = _RUBRIC[_language(language)]
    reference = _clip(reference, max_chars)
    return body.format(question=_clip(question, max_chars), answer=_clip(answer, max_chars),
                       reference=ref_block.format(reference=reference) if reference else "",
                       ref_note=ref_note if reference else ""), lead


def pairwise_prompt(question: str, answer_a: str, answer_b: str, *, language: str = "zh",
                    max_chars: int = 2000) -> tuple[str, str]:
    """The pairwise rubric as ``(instruction, lead)``; the verdict (``A``/``B``) is read right after ``lead``."""
    body, lead = _PAIRWISE[_language(language)]
    return body.format(question=_clip(question, max_chars), answer_a=_clip(answer_a, max_chars),
                       answer_b=_clip(answer_b, max_chars)), lead


def _language(language: str) -> str:
    if language not in _RUBRIC:
        raise ScoringError(f"unknown judge language {language!r}; expected zh or en")
    return language


def sequence_probs(next_probs: Callable[[tuple[int, ...]], np.ndarray],
                   sequences: Sequence[tuple[int, ...]]) -> np.ndarray:
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
        longer = {o[len(seq)] for o in sequences if len(o) > len(seq) and o[:len(seq)] == seq}
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


class Judge:
    """A local Hugging Face causal LM as a judge, read deterministically from its next-token distribution.

    ``grade`` scores one answer 1–10 (the distribution over ``1``..``10`` right after the rubric, multi-token scores
    handled by ``sequence_probs``); ``compare`` judges a candidate against a baseline in both orders (``A``/``B``).
    ``model``: a directory, hub id or ``tiny:<arch>`` — or a loaded model, with ``tokenizer``. With ``chat_template``
    (default: when the tokenizer has one) the rubric is the user turn and the lead starts the assistant turn. Prompts
    longer than the model's context keep their end (the lead and the answers' tails). Torch is imported here only."""

    def __init__(self, model, tokenizer=None, *, language: str = "zh", device: str | None = None,
                 dtype: str = "auto", max_chars: int = 2000, chat_template: bool | None = None,
                 trust_remote_code: bool = False):
        import torch

        self.language = _language(language)
        self.max_chars = max_chars
        if isinstance(model, str | os.PathLike):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from .models import resolve_model_path, resolve_dtype

            path = resolve_model_path(str(model))
            self.name = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype),
                                                         trust_remote_code=trust_remote_code)
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
        chat = self.tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                                  add_generation_prompt=True)
        return chat + lead

    def choice_probs(self, text: str, choices: Sequence[str]) -> np.ndarray:
        """The judge's renormalised probabilities of continuing ``text`` with each choice (``sequence_probs``)."""
        import torch

        base = self._encode(text, special=not self.chat_template)
        sequences = []
        for choice in choices:
            full = self._encode(text + choice, special=not self.chat_template)
            ids = full[len(base):] if full[: len(base)] == base and len(full) > len(base) else \
                self._encode(choice, special=False)
            sequences.append(tuple(ids))
        keep = self.max_length - max(map(len, sequences)) - 1
        if len(base) > keep:  # keep the start token and the end of the prompt
            base = base[:1] + base[len(base) - keep + 1:]

        @torch.no_grad()
        def next_probs(prefix: tuple[int, ...]) -> np.ndarray:
            ids = torch.tensor([base + list(prefix)], device=self.device)
            logits = self.model(input_ids=ids).logits[0, -1].float()
            return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)

        return sequence_probs(next_probs, sequences)

    def grade(self, question: str, answer: str, reference: str = "") -> Grade:
        """Grade one answer 1–10 (with the reference in the rubric when given)."""
        instruction, lead = grading_prompt(question, answer, reference, language=self.language,
                                           max_chars=self.max_chars)
        probs = self.choice_probs(self.render(instruction, lead), SCORE_STRINGS)
        expected = float(np.dot(probs, np.arange(1, len(SCORE_STRINGS) + 1)))
        return Grade(expected, int(np.argmax(probs)) + 1, tuple(float(p) for p in probs))

    def prefer(self, question: str, answer_a: str, answer_b: str) -> tuple[str, float]:
        """One order: the label the judge prefers (``A``/``B``) and its probability for A."""
        instruction, lead = pairwise_prompt(question, answer_a, answer_b, language=self.language,
                                            max_chars=self.max_chars)
        p_a = float(self.choice_probs(self.render(instruction, lead), ("A", "B"))[0])
        return ("A" if p_a >= 0.5 else "B"), p_a

    def compare(self, question: str, answer: str, baseline: str) -> Verdict:
        """Judge ``answer`` against ``baseline`` in both orders (A/B, then B/A); disagreement is a tie."""
        first, p_a1 = self.prefer(question, answer, baseline)
        second, p_a2 = self.prefer(question, baseline, answer)
        return combine_orders(first, second, p_a1, 1 - p_a2)


def judge_scores(answers: pd.DataFrame, judge: Judge, zbench: pd.DataFrame | None = None, *,
                 use_reference: bool = True, progress: bool | None = None) -> pd.DataFrame:
    """Grade every stored answer with the judge: ``score_answers``' columns (``scorer`` = ``judge``, ``score`` =
    (expected grade − 1) / 9, ``against`` = ``reference`` when the rubric showed the item's reference, else
    ``rubric``) plus ``judge_expected`` (1–10) and ``judge_greedy``."""
    from tqdm.auto import tqdm

    items = _items(answers, zbench)
    rows = []
    for rec in tqdm(answers.itertuples(index=False), total=len(answers), desc=f"judge {judge.name}",
                    disable=None if progress is None else not progress, leave=False):
        item = items.loc[rec.item_id]
        reference = _text(item["reference"]) if use_reference else ""
        grade = judge.grade(_text(item["prompt"]), _text(rec.answer), reference)
        rows.append((rec.item_id, rec.split, rec.model, "judge", grade.score,
                     "reference" if reference.strip() else "rubric", grade.expected, grade.greedy))
    out = pd.DataFrame(rows, columns=[*SCORE_COLUMNS, "judge_expected", "judge_greedy"])
    out.attrs["scoring"] = {"scorers": ["judge"], "judge": judge.name, "language": judge.language,
                            "zbench": dict(PROVENANCE)}
    return out


def pairwise_scores(answers: pd.DataFrame, judge: Judge, baseline: str = FALLBACK_MODEL,
                    zbench: pd.DataFrame | None = None, *, progress: bool | None = None) -> pd.DataFrame:
    """Judge every stored answer against the baseline model's answer to the same item, in both orders.

    The baseline's answers come from ``answers`` (rows with ``model == baseline``) or else from the Z-Bench column of
    that name. Columns: ``score_answers``' (``scorer`` = ``pairwise``, ``score`` 1 win / 0.5 tie / 0 loss,
    ``against`` = the baseline) plus ``verdict``, ``first``, ``second``, ``consistent``. Items where either answer is
    empty are skipped; the baseline is not compared with itself. ``pairwise_summary`` counts the position bias."""
    from tqdm.auto import tqdm

    items = _items(answers, zbench)
    own = answers[answers["model"] == baseline].set_index("item_id")["answer"]
    if own.empty and baseline not in items.columns:
        raise ScoringError(f"no answers of the baseline {baseline!r}: neither rows of that model in the answers "
                           "nor a Z-Bench column of that name")
    base = own if not own.empty else items[baseline]
    todo = answers[(answers["model"] != baseline) & answers["item_id"].isin(base.index)]
    rows = []
    for rec in tqdm(todo.itertuples(index=False), total=len(todo), desc=f"pairwise vs {baseline}",
                    disable=None if progress is None else not progress, leave=False):
        answer, reference = _text(rec.answer), _text(base[rec.item_id])
        if not answer.strip() or not reference.strip():
            continue
        v = judge.compare(_text(items.loc[rec.item_id, "prompt"]), answer, reference)
        rows.append((rec.item_id, rec.split, rec.model, "pairwise", v.score, baseline, v.outcome, v.first, v.second,
                     v.consistent))
    out = pd.DataFrame(rows, columns=[*SCORE_COLUMNS, "verdict", "first", "second", "consistent"])
    out.attrs["scoring"] = {"scorers": ["pairwise"], "judge": judge.name, "baseline": baseline,
                            "language": judge.language, "zbench": dict(PROVENANCE)}
    return out


def pairwise_summary(pairwise: pd.DataFrame) -> pd.DataFrame:
    """Per model: ``n, wins, ties, losses, inconsistent, position_bias`` (share of order-inconsistent verdicts, all
    counted as ties) and ``win_rate`` ((wins + ties/2) / n)."""
    g = pairwise.groupby("model", sort=False)
    out = pd.DataFrame({"n": g.size(), "wins": g["verdict"].apply(lambda v: int((v == "win").sum())),
                        "ties": g["verdict"].apply(lambda v: int((v == "tie").sum())),
                        "losses": g["verdict"].apply(lambda v: int((v == "loss").sum())),
                        "inconsistent": g["consistent"].apply(lambda v: int((~v.astype(bool)).sum()))})
    out["position_bias"] = out["inconsistent"] / out["n"]
    out["win_rate"] = (out["wins"] + out["ties"] / 2) / out["n"]
    return out.reset_index()
