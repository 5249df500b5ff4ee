"""The keyed scorer: each referenced Z-Bench item graded by its answer-key entry (``answer_key.py``), as a careful
grader would — so that an echo of the prompt, a list of every option or a negated reference earns nothing.

For one answer (``KeyedScorer.grade``, which also says which rule decided):

1. **The echo goes.** Runs of ``ECHO_MIN`` or more characters copied from the prompt are cut out of the answer, except
   where they are an accepted form or an option's own text (those stay, so that a restated list of every option is
   still seen as naming every option). What is left is what the model added.
2. **The committed answer.** The text after the last explicit conclusion cue (答案是, 答案：, 所以, 因此, 综上,
   最终, 结论, the answer is, therefore …) up to the end of its sentence; without a cue, the first sentence, then
   the whole answer.
3. **By the entry's type.** ``option``: the letter (or number) the answer chooses (``options.py``: several letters, a
   copy of the options or a letter called wrong is no choice; a bare ``c`` is read) or the one option whose text it
   states; ``number``: the committed number within the entry's tolerance of its value or alternatives;
   ``yes_no``: the key's own forms, else the first polarity word of the committed sentence; ``entity``,
   ``short_text``: an accepted form occurs, not negated (不是 X, 并非 X, not X; "A 而不是 B" → A), and no rejected
   form does (hedging between them is wrong) — a longer match wins (不成立 over 成立); a multi-part answer
   (``艾森豪威尔，共和党``) is right when every part is stated; ``ordered_list``: every item, in order.
   ``free_text`` and ``rubric`` items are a judge's: no keyed score.
4. **Truncation.** An answer cut at ``max_new_tokens`` that never committed to an answer scores 0.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher

from ..answer_key import AnswerKey, KeyEntry, load_answer_key
from .numbers import Number, answer_number, extract_numbers
from .options import explain_option, numbered_choice, parse_numbered_options, parse_options
from .text import normalize_text

ECHO_MIN = 10  # characters copied from the prompt in one run that count as an echo
ECHO_SHARE = 0.4  # a run this share of the prompt or longer is an echo throughout, edges included
_EDGE = 2  # a form within this many characters of a copied run's start or end is at its edge
GRADED_TYPES = ("option", "number", "yes_no", "entity", "short_text", "ordered_list")
DEFAULT_REL_TOL = 0.01

_STRONG = re.compile(
    r"(?:最终|最后|正确)?答案(?:应该|应|就|也)?(?:是|为|:)|答案\s*:|综上(?:所述)?|结论(?:是|为|:)|总之"
    r"|(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:)",
    re.I,
)
_WEAK = re.compile(r"所以|因此|故|\btherefore\b|\bthus\b|\bso\b", re.I)
_SENTENCE = re.compile(r"[。！？!?\n]|[.;；](?:\s|$)")
_NEGATION = re.compile(
    r"(?:不是|并非|而非|并不是|不属于|不应该是|不应是|不一定是|不会是|而不是|不能说是|没有|不为|非|不|"
    r"\bnot\s+(?:a\s+|an\s+|the\s+)?|\bisn't\s+|\bno\s+)\s*[\"“'‘《(]?$",
    re.I,
)
_YES = (
    "是的",
    "对的",
    "正确",
    "真实",
    "属实",
    "成立",
    "确实",
    "能",
    "可以",
    "可能",
    "存在",
    "会",
    "有",
    "是",
    "对",
    "真",
    "yes",
    "true",
    "correct",
    "right",
)
_NO = (
    "不是", "不对", "不正确", "错误", "不能", "不可以", "不可能", "不存在", "不成立", "不属实", "没有", "虚假", "假的",
    "不会", "无法", "不行", "并非", "否", "错", "假", "不", "no", "not", "false", "incorrect", "wrong",
)  # fmt: skip
_UNSURE = re.compile(
    r"很难(?:判断|说|确定)|难以(?:判断|确定)|无法(?:判断|确定|回答)|不能确定|不确定|不好说|取决于|视情况而定|拒绝回答"
    r"|\bit depends\b|\bcannot (?:determine|be determined|tell)\b|\bnot sure\b|\bunclear\b",
    re.I,
)
_NEG_OPEN = re.compile(r"\s*(?:答案|回答|答)?\s*[:：]?\s*(?:不是|并非|并不是|(?:it\s+is\s+)?not\b)", re.I)
_CONTRAST = re.compile(r"而是|但是|却是|而应该是|\bbut\b|\brather\b|\binstead\b", re.I)
_NEGATIVE_WORD = re.compile(r"\s*[\"“'‘]?\s*(?:否|不|无|没|非|错|假|no\b|not\b|false\b|wrong\b|incorrect\b)", re.I)
_BARE_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?%?")
_PARTS = re.compile(r"[，,、；;/]|\band\b")
_STRONG_CUE = re.compile(r"(?:答案|结果|得数|answer|result)\s*(?:应该|应|就|也|约|大约)?\s*(?:是|为|:|=|is)", re.I)


@dataclass(frozen=True)
class Graded:
    """A keyed grade: ``score`` 1 or 0, and the ``rule`` that decided it."""

    score: float
    rule: str


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", str(text))


def _find_all(text: str, form: str) -> list[tuple[int, int]]:
    """Where ``form`` occurs in ``text``, case-insensitively; Latin words only as whole words (no 'no' in 'know')."""
    form = _nfkc(form).strip().lower()
    if not form:
        return []
    if re.fullmatch(r"[a-z0-9 .'-]+", form):
        pattern = rf"(?<![a-z0-9]){re.escape(form)}(?![a-z0-9])"
    else:
        pattern = re.escape(form)
    return [(m.start(), m.end()) for m in re.finditer(pattern, text.lower())]


def remove_echo(answer: str, prompt: str, keep: list[str] = ()) -> str:
    """The answer without runs of ``ECHO_MIN``+ characters copied from the prompt. A form of ``keep`` (an accepted
    or rejected form, an option's text, a list item) at the start or the end of a copied run stays: the answer
    copies the question's words up to its own choice (``…存在因果关系，因为…``); a form inside a run — a copied
    question, a copied list of every option — goes with the run. Cut runs become ``…``, so that no form is matched
    across a cut."""
    a, p = _squash(answer), _squash(prompt)
    if not p.strip() or not a.strip():
        return a
    forms = [span for form in keep for span in _find_all(a, _squash(form))]
    cut = [False] * len(a)
    for block in SequenceMatcher(None, p.lower(), a.lower(), autojunk=False).get_matching_blocks():
        start, end = block.b, block.b + block.size
        if block.size < ECHO_MIN:
            continue
        for i in range(start, end):
            cut[i] = True
        touching = [e - s for s, e in forms if s < end and start < e]
        if block.size >= ECHO_SHARE * len(p) and block.size > 2 * max(touching, default=0):
            continue  # a copy of much of the prompt around a short form: nothing in it is the answer's own
        for s, e in forms:  # a form at the run's edge (or across it) is the answer's own statement
            if s < end and start < e and (s <= start + _EDGE or e >= end - _EDGE):
                for i in range(s, min(e, len(a))):
                    cut[i] = False
    out, i = [], 0
    while i < len(a):
        if cut[i]:
            while i < len(a) and cut[i]:
                i += 1
            out.append(" … ")
        else:
            out.append(a[i])
            i += 1
    return "".join(out)


def _sentence_after(text: str, start: int) -> str:
    rest = text[start:].lstrip(" :：,，")
    end = _SENTENCE.search(rest)
    return rest[: end.end()] if end and end.start() > 0 else rest


def committed_regions(text: str) -> tuple[list[str], str | None]:
    """Where the committed answer is, most specific first — the sentence after the last explicit answer cue
    (答案是, 综上, the answer is), the sentence after the last 所以/因此/therefore, the first sentence, the whole
    answer — and which cue committed it: ``strong`` (a hedge there is wrong), ``weak`` or None."""
    strong, weak = list(_STRONG.finditer(text)), list(_WEAK.finditer(text))
    regions = []
    if strong:
        regions.append(_sentence_after(text, strong[-1].end()))
    if weak and (not strong or weak[-1].start() > strong[-1].end()):
        regions.append(_sentence_after(text, weak[-1].end()))
    stripped = text.strip()
    regions += [_sentence_after(stripped, 0), stripped]
    return regions, "strong" if strong else "weak" if weak else None


def _negated(text: str, start: int) -> bool:
    return bool(_NEGATION.search(text[max(0, start - 8) : start]))


def _outer(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Matches not inside a longer match (不成立 hides the 成立 inside it)."""
    return [
        (s, e, k) for s, e, k in spans if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in spans)
    ]


_SQUASH = re.compile(r"(?<=[\u3400-\u9fff])\s+|\s+(?=[\u3400-\u9fff])")
_QUOTES = "\"'“”‘’「」『』《》"


def _squash(text: str) -> str:
    """No whitespace next to CJK characters (``2021 年 5 月`` reads as ``2021年5月``, ``马 凡斯`` as ``马凡斯``)."""
    return _SQUASH.sub("", _nfkc(text))


def _quoted(region: str, start: int, end: int) -> bool:
    """A form in quotation marks: the answer citing a phrase (the question's), not stating it."""
    return start > 0 and end < len(region) and region[start - 1] in _QUOTES and region[end] in _QUOTES


def _forms_verdict(region: str, accepted: list[str], rejected: list[str], pick: str | None = None) -> str | None:
    """``right``, ``wrong``, ``hedge`` or None (nothing of either kind stated — un-negated, unquoted — in
    ``region``). With ``pick`` (``first`` or ``last``) a region naming both kinds is read by its first or last
    statement instead."""
    region = _squash(region)
    spans = [(s, e, "a") for f in accepted for s, e in _find_all(region, _squash(f))]
    spans += [(s, e, "r") for f in rejected for s, e in _find_all(region, _squash(f))]
    found = sorted(
        (s, k) for s, e, k in _outer(spans) if not _negated(region, s) and not (_quoted(region, s, e) and k == "r")
    )
    kinds = {k for _, k in found}
    if len(kinds) == 2 and pick == "last":  # a derivation's last value is its result (4 + 11 = 15)
        kinds = {found[-1][1]}
    elif len(kinds) == 2 and pick == "first":  # the first statement — unless both stand in one sentence (A、B)
        other = next(pos for pos, k in found if k != found[0][1])
        if _SENTENCE.search(region[found[0][0] : other]):
            kinds = {found[0][1]}
    if kinds == {"a"}:
        return "right"
    if kinds == {"r"}:
        return "wrong"
    return "hedge" if kinds else None


def _option_texts(prompt: str) -> dict[str, str]:
    return {**parse_options(prompt), **parse_numbered_options(prompt)}


class KeyedScorer:
    """Grades answers by the answer key (``key`` defaults to the shipped one)."""

    name = "keyed"

    def __init__(self, key: AnswerKey | None = None):
        self.key = key if key is not None else load_answer_key()

    def applies(self, item_id: str) -> bool:
        entry = self.key.entries.get(item_id)
        return entry is not None and entry.type in GRADED_TYPES

    def grade(self, item_id: str, answer: str, prompt: str, truncated: bool = False) -> Graded:
        e = self.key[item_id]
        items = list(e.answer) if isinstance(e.answer, list) else []
        options = _option_texts(prompt)
        text = remove_echo(answer, prompt, keep=[*_accepted(e), *items, *e.reject, *options.values()])
        if not text.strip():
            return Graded(0.0, "empty" if not str(answer).strip() else "echo")
        regions, cue = committed_regions(text)
        if truncated and cue is None:
            return Graded(0.0, "truncated")
        if e.type != "yes_no" and _NEG_OPEN.match(regions[-1]) and not _CONTRAST.search(regions[-2]):
            return Graded(0.0, "negated")  # 不是 X (with no 而是 Y): the answer says what it is not
        self._strict = cue == "strong"
        return getattr(self, f"_{e.type}")(e, text, regions, prompt, options)

    # ----------------------------------------------------------------------------------------- by type
    def _option(self, e: KeyEntry, text: str, regions: list[str], prompt: str, options: dict[str, str]) -> Graded:
        bare = normalize_text(text)
        if len(bare) == 1 and bare.upper() in "ABCDEFGH123456789":
            return Graded(float(bare.upper() == e.answer), "bare-letter")
        if e.answer.isdigit():
            numbered = parse_numbered_options(prompt)
            if len(numbered) >= 2 and all(_find_all(_squash(text), _squash(t)) for t in numbered.values() if t):
                return Graded(0.0, "numbered-restated")  # every choice restated: no choice
            choice = numbered_choice(text, prompt) or _stated_number(regions[0])
            if choice is not None:
                at = regions[0].find(choice)
                if at >= 0 and _negated(regions[0], at):
                    return Graded(0.0, "numbered-negated")
                return Graded(float(choice == e.answer), "numbered")
        else:
            letter, rule = explain_option(text, prompt)
            if letter is not None:
                return Graded(float(letter == e.answer), f"option-{rule}")
            if rule in ("several", "restated"):
                return Graded(0.0, f"option-{rule}")
        others = [t for k, t in options.items() if k != e.answer and t]
        return self._by_forms(e, regions, extra_rejected=others, rule="option-text")

    def _number(self, e: KeyEntry, text: str, regions: list[str], prompt: str, options: dict[str, str]) -> Graded:
        textual = [[f for f in forms if not _BARE_NUMBER.fullmatch(f.strip())] for forms in (_accepted(e), e.reject)]
        # 轻2公斤 / 重2公斤 decide as stated; a bare number (11) is compared as the committed number below
        by_forms = _first_verdict(regions, *textual, pick="last", strict=self._strict, every_region=True)
        if by_forms in ("wrong", "hedge"):
            return Graded(0.0, f"number-form-{by_forms}")
        if by_forms == "right":
            return Graded(1.0, "number-form")
        number = _committed_number(regions[0]) or answer_number(text)
        if number is None:
            return Graded(0.0, "number-none")
        if _restates_numbers(text, prompt):
            return Graded(0.0, "number-restated")
        if _number_negated(regions[0], number) or _number_negated(text, number):
            return Graded(0.0, "number-negated")
        targets = [e.value, *e.alternatives]
        tol = DEFAULT_REL_TOL if e.rel_tol is None else e.rel_tol
        return Graded(float(any(_close(number, t, tol, e.unit) for t in targets)), "number")

    def _yes_no(self, e: KeyEntry, text: str, regions: list[str], prompt: str, options: dict[str, str]) -> Graded:
        if _UNSURE.search(regions[0]) or _UNSURE.search(regions[-2]):  # "很难判断" takes no side
            return Graded(0.0, "yes_no-unsure")
        flipped = _double_negation(regions[0])
        if flipped is not None:  # 不是错误, 不是逻辑不成立: not no = yes
            return Graded(float(flipped == e.polarity), "yes_no-double-negation")
        long_forms = ([f for f in e.accept if len(_squash(f)) > 1], [f for f in e.reject if len(_squash(f)) > 1])
        verdict = _first_verdict(regions, *long_forms, strict=self._strict)  # 1-character forms: as polarity words
        if verdict in ("right", "wrong"):
            return Graded(float(verdict == "right"), f"yes_no-form-{verdict}")
        polarity = _polarity(regions[0]) or _polarity(regions[-1])
        if polarity is None:
            return Graded(0.0, "yes_no-none")
        return Graded(float(polarity == e.polarity), "yes_no-polarity")

    def _entity(self, e: KeyEntry, text: str, regions: list[str], prompt: str, options: dict[str, str]) -> Graded:
        return self._by_forms(e, regions, rule="forms")

    _short_text = _entity

    def _ordered_list(self, e: KeyEntry, text: str, regions: list[str], prompt: str, options: dict[str, str]) -> Graded:
        verdict = _first_verdict(regions, list(e.accept), list(e.reject), strict=self._strict)
        if verdict is not None:
            return Graded(float(verdict == "right"), f"list-form-{verdict}")
        for region in regions:
            if _sequence_in(region, e.answer):
                first = _find_all(region, e.answer[0])[0][0]
                return Graded(0.0, "list-negated") if _negated(region, first) else Graded(1.0, "list-order")
        if all(_find_all(regions[-1], item) for item in e.answer):
            return Graded(0.0, "list-wrong-order")
        return Graded(0.0, "list-missing")

    def _by_forms(self, e: KeyEntry, regions: list[str], extra_rejected: list[str] = (), rule: str = "forms"):
        verdict = _first_verdict(regions, _accepted(e), [*e.reject, *extra_rejected], pick="first", strict=self._strict)
        if verdict is not None:
            return Graded(float(verdict == "right"), f"{rule}-{verdict}")
        parts = [p.strip() for p in _PARTS.split(str(e.answer)) if len(p.strip()) >= 2]
        if len(parts) >= 2 and all(_forms_verdict(regions[-1], [p], []) == "right" for p in parts):
            return Graded(1.0, f"{rule}-all-parts")
        return Graded(0.0, f"{rule}-none")


def _accepted(e: KeyEntry) -> list[str]:
    head = [e.answer] if isinstance(e.answer, str) and e.type not in ("yes_no", "option") else []
    return [*head, *e.accept]


def _first_verdict(
    regions: list[str],
    accepted: list[str],
    rejected: list[str],
    pick: str = "first",
    strict: bool = False,
    every_region: bool = False,
) -> str | None:
    """The verdict of the most specific region that states one kind. A hedge in the region after an explicit
    answer cue (``strict``) is final; elsewhere the next region is read, and the whole answer (the last region) by
    its ``pick`` statement (every region, with ``every_region``: a derivation's last value is its result)."""
    for i, region in enumerate(regions):
        last = i == len(regions) - 1
        verdict = _forms_verdict(region, accepted, rejected, pick=pick if last or every_region else None)
        if verdict in ("right", "wrong") or (verdict == "hedge" and (last or (strict and i == 0))):
            return verdict
    return None


def _sequence_in(region: str, items: list[str]) -> bool:
    """Every item, each found after the previous one."""
    pos = 0
    for item in items:
        hits = [s for s, _ in _find_all(region[pos:], item)]
        if not hits:
            return False
        pos += hits[0] + len(_nfkc(item).strip())
    return True


def _committed_number(region: str) -> Number | None:
    """The committed sentence's number: the first after an explicit 答案是/结果为, else its last."""
    if _STRONG_CUE.search(region):
        return answer_number(region)
    numbers = extract_numbers(region)
    return numbers[-1] if numbers else None


def _restates_numbers(text: str, prompt: str) -> bool:
    """The answer is nothing but two or more of the question's own numbers (12、5、3): no answer."""
    mine = [n.text for n in extract_numbers(text)]
    if len(mine) < 2 or re.search(r"[A-Za-z\u3400-\u9fff]", text):
        return False
    theirs = {n.text for n in extract_numbers(prompt)}
    return all(m in theirs for m in mine)


def _number_negated(text: str, number: Number) -> bool:
    """The number is stated as what the answer is not (不是 15)."""
    at = text.rfind(number.text)
    return at >= 0 and _negated(text, at)


def _stated_number(region: str) -> str | None:
    """The numbered choice a sentence names explicitly: 选项2, 第2个, 2号, or a bare ``2`` / ``2.`` alone."""
    m = re.search(
        r"选项\s*([1-9])|第\s*([1-9])\s*(?:个|项|句|种|条)|([1-9])\s*号|^\s*\(?([1-9])\)?\s*[.、:。]?\s*$", region
    )
    return next(g for g in m.groups() if g) if m else None


def _close(number: Number, target: float, rel_tol: float, unit: str | None) -> bool:
    values = [number.value]
    if number.percent or (unit or "").strip() == "%":
        values += [number.value * 100, number.value / 100]
    return any(abs(v - target) <= rel_tol * abs(target) + 1e-9 for v in values)


def _clause_start(region: str, start: int) -> bool:
    """At the start of the region or of a clause (after punctuation, ``答：``): where a bare 是/不/能 answers."""
    before = region[:start].rstrip()
    return not before or before[-1] in ",，。:：;；!！?？\n…\"“'‘「" or before.endswith(("答", "回答"))


def _double_negation(region: str) -> str | None:
    """An opening 不是/并非/not whose clause states a polarity again: the opposite of that polarity (不是错误,
    不是逻辑不成立 → yes; 不是正确 → no); else None."""
    region = _squash(region).lstrip(" …")
    head = re.match(r"(?:答案|回答|答)?\s*[:：]?\s*(不是|并非|并不是|not\b)\s*", region, re.I)
    if not head:
        return None
    clause = re.split(r"[,，。;；!！?？\n]", region[head.end() :], maxsplit=1)[0]
    if not clause:
        return None
    polarity = _polarity(clause) if len(clause) > 1 or clause in "否不无没非错假对是" else None
    if polarity is None and _NEGATIVE_WORD.match(clause):
        polarity = "no"
    return None if polarity is None else ("yes" if polarity == "no" else "no")


def _polarity(region: str) -> str | None:
    """``yes`` or ``no``: the first polarity word of ``region`` (是的, 正确, 不是, 不能, yes, no, … — longer words
    first: 不是 before 是); a one-character word counts only where it opens a clause (这是一个… is no answer). A
    negation of a polarity word flips it (不是错误: yes)."""
    region = _squash(region)
    found = []
    for words, polarity in ((_NO, "no"), (_YES, "yes")):
        found += [(s, e, polarity) for w in words for s, e in _find_all(region, w)]
    # two or more characters anywhere; a bare 是/对/有/不 only where it opens a clause (这是一个… is no answer)
    opening = [f for f in sorted(_outer(found)) if f[1] - f[0] > 1 or _clause_start(region, f[0])]
    if not opening:
        return None
    start, end, polarity = opening[0]
    following = [p for s, _, p in sorted(_outer(found)) if s >= end and not region[end:s].strip(" \"“”'‘’")]
    if polarity == "no" and region[start:end] in ("不是", "不", "not") and following:  # 不是错误: not wrong = yes
        return "yes" if following[0] == "no" else "no"
    if polarity == "no" and region[start:end] in ("不是", "not") and _NEGATIVE_WORD.match(region, end):
        return "yes"  # 不是无 / 不是否: a double negation
    return polarity
