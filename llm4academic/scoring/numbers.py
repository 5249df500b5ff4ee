"""Reading numbers from answers and references, and matching them.

``Number`` is a value read from text with the precision it was written to. ``extract_numbers`` reads every number of
a text (thousands commas, full-width digits, signs, decimals, percentages, fractions, ``π``/``√``/``^``/``×``
expressions, LaTeX ``\\frac``, Chinese numerals before a classifier such as ``四条腿``); ``reference_numbers`` the
number(s) a whole reference is (``-2kg``, ``7.22 m/s/s``, ``29 或 27``); ``answer_number`` the number an answer gives
(the first after its last explicit cue such as ``答案是``, else its *final* number — not any number it mentions,
which would credit a derivation that passes the right value on the way to a wrong one); ``numbers_match`` compares
up to ``rel_tol`` or the rounding of whichever side is written with decimals.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import unicodedata
from dataclasses import dataclass


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
_ANSWER_CUE = re.compile(
    r"(?:答案|结果|答|得数|the answer|answer|result)\s*(?:应该|应|就|也|约|大约)?\s*"
    r"(?:是|为|等于|=|:|is|was|≈)",
    re.I,
)
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


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
        half = 0.5 * 10**-decimals / (100 if plain.group(3) else 1) if decimals and significant >= 2 else 0.0
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
_CLASSIFIERS = (
    "个|条|只|种|次|人|位|名|页|米|天|年|岁|本|件|块|元|匹|头|张|颗|座|辆|台|份|道|组|队|支|号|层|秒|分钟|"
    "小时|公里|千克|公斤|克|倍|度|排|行|列|节|章|处|朵|杯|袋|打|句|遍|步|届|项|类|部|间|所|家|棵|"
    "根|把|双|对|套|批|群|片|粒|瓶|盒|箱|包|碗|盘|顿|场|回|段|篇|首|幅|门|架|艘|枚|封|笔|票|股|代|美元|英里|磅"
)
# A Chinese numeral counts when a classifier or the end of a clause follows (四条腿 · 三个人 · 答案是三。) and it is
# neither an ordinal (第二) nor part of a word (之一 · 唯一 · 星期一 · 百日咳); a lone 一 before a classifier is the
# article "a" (一个非常接近的值), not the number one.
_CN_NUMERAL = rf"[零〇一二两三四五六七八九十百千万亿]+(?=(?:{_CLASSIFIERS})|[。，,.！!？?；;、:：\s)）]|$)"
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
        if expr.startswith("-") and re.search(r"[A-Za-z0-9)\]]\s*$", text[: m.start()]):  # x - 2: minus, not a sign
            expr = expr[1:]
        if number := _read(expr):
            found.append((m.start(), number))
    for pattern in (_CN_NUMBER, _CN_ORDINAL) if ordinals else (_CN_NUMBER,):
        found += [
            (m.start(), Number(float(_chinese_int(m.group())), m.group())) for m in pattern.finditer(text, start, end)
        ]
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
        r, r_half = (
            (reference.value * 100, reference.half_ulp * 100)
            if reference.percent
            else (reference.value, reference.half_ulp)
        )
        return close(a, r, a_half, r_half)
    return False
