"""One adapter per on-disk format: a raw JSON object → unified records, or ``InvalidRecord`` naming what is wrong.

``formats.py`` registers the adapters (``FORMATS``), detects which one fits a file, and loads files through them;
the adapters fill the record's content columns (not ``id``/``source``/``language``, which loading adds).

Record conventions. Single-turn formats fill ``instruction``/``input``/``output`` and keep ``conversation`` empty.
Multi-turn formats (firefly, sharegpt, oig, hh_rlhf) fill ``conversation`` with ``{role, content}`` turns (role:
system, user, assistant; an optional system turn first, then user and assistant alternating, ending with an
assistant reply) and set ``instruction`` = the first user turn, ``input`` = "", ``output`` = the first assistant
reply. Preference data (hh_rlhf) also fills ``chosen``/``rejected`` with the final reply of each transcript;
``conversation`` is the chosen transcript. Every other record has ``chosen`` = ``rejected`` = "".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import zip_longest

from .raw import InvalidRecord

# --------------------------------------------------------------------------------------------- field checks


def _reason(kind: str, path: str) -> str:
    """Counting key for a field path: ``empty:conversations.value`` for ``conversations[3].value``."""
    return kind + ":" + re.sub(r"\[\d+\]", "", path)


def _text(obj: dict, key: str, *, required: bool = True, allow_empty: bool = False, path: str | None = None) -> str:
    path = path or key
    if key not in obj or obj[key] is None:
        if required:
            raise InvalidRecord(_reason("missing", path), f"missing field {path!r} (expected a string)")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidRecord(_reason("wrong_type", path), f"field {path!r} is {type(value).__name__}, expected a string")
    if not allow_empty and not value.strip():
        raise InvalidRecord(_reason("empty", path), f"field {path!r} is empty")
    return value


def _objects(obj: dict, key: str) -> list[dict]:
    """A non-empty list of JSON objects (turns, instances)."""
    value = obj.get(key)
    if value is None:
        raise InvalidRecord(f"missing:{key}", f"missing field {key!r} (expected a list of objects)")
    if not isinstance(value, list):
        raise InvalidRecord(f"wrong_type:{key}", f"field {key!r} is {type(value).__name__}, expected a list of objects")
    if not value:
        raise InvalidRecord(f"empty:{key}", f"field {key!r} is an empty list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRecord(f"wrong_type:{key}", f"field '{key}[{i}]' is {type(item).__name__}, expected an object")
    return value


def _single(instruction: str, input_: str, output: str) -> dict:
    return {
        "instruction": instruction,
        "input": input_,
        "output": output,
        "conversation": [],
        "chosen": "",
        "rejected": "",
    }


def _columns(obj: dict, instruction: str, output: str, input_: str | None = None) -> list[dict]:
    """One single-turn record from three named fields (the input field optional, and may be empty)."""
    given = _text(obj, input_, required=False, allow_empty=True) if input_ else ""
    return [_single(_text(obj, instruction), given, _text(obj, output))]


# --------------------------------------------------------------------------------------------- turns

Turn = tuple[str, str, str]  # (role, content, label naming where it came from, for messages)


def _check_turns(turns: list[Turn], field: str, *, empty_replies: bool = False) -> list[Turn]:
    """An optional first system turn, then user and assistant alternating, ending with an assistant reply; turns
    hold text (assistant turns may be empty with ``empty_replies``)."""
    body = turns[1:] if turns and turns[0][0] == "system" else turns
    for i, (role, _content, label) in enumerate(body):
        expected = ("user", "assistant")[i % 2]
        if role != expected:
            raise InvalidRecord(
                f"not_alternating:{field}",
                f"{label} has role {role!r}, expected {expected!r} "
                "(user and assistant turns alternate, after an optional first system turn)",
            )
    for role, content, label in turns:
        if not content.strip() and not (empty_replies and role == "assistant"):
            raise InvalidRecord(f"empty:{field}", f"{label} is empty (expected the {role} turn's text)")
    if not body or body[-1][0] != "assistant":
        raise InvalidRecord(
            f"not_alternating:{field}",
            f"field {field!r} ends with a {turns[-1][0]} turn, expected it to end with an assistant reply",
        )
    return turns


def _dialogue(turns: list[Turn]) -> dict:
    """The unified multi-turn record from checked turns: instruction = first user turn, output = the reply to it."""
    first = 1 if turns[0][0] == "system" else 0
    (_, instruction, _), (_, output, label) = turns[first : first + 2]
    if not output.strip():
        raise InvalidRecord("empty:output", f"{label}, the first assistant reply, is empty")
    rec = _single(instruction, "", output)
    rec["conversation"] = [{"role": role, "content": content} for role, content, _ in turns]
    return rec


@dataclass(frozen=True)
class Speakers:
    """Speaker tags that split a transcript string into turns."""

    pattern: re.Pattern  # one capturing group: the tag name
    roles: dict[str, str]  # tag name → role
    described: str  # for messages


def _split_turns(text: str, speakers: Speakers, field: str) -> list[Turn]:
    found = list(speakers.pattern.finditer(text))
    before = text[: found[0].start()].strip() if found else ""
    if not found or before:
        what = f"starts with untagged text {before[:40]!r}" if before else "holds no speaker tag"
        raise InvalidRecord(
            f"unsplittable:{field}",
            f"field {field!r} cannot be split into turns: it {what}; expected turns tagged {speakers.described}",
        )
    ends = [m.start() for m in found[1:]] + [len(text)]
    return [
        (speakers.roles[m.group(1)], text[m.end() : end].strip(), f"{field} turn {i} ({m.group(1)}:)")
        for i, (m, end) in enumerate(zip(found, ends, strict=False), 1)
    ]


# --------------------------------------------------------------------------------------------- adapters

# OIG: "<human>:" / "<bot>:" tags, or the bot's name at the start of a line (unified_joke_explanations: "Rosey:").
OIG_BOT_NAMES = ("Rosey",)
OIG_SPEAKERS = Speakers(
    re.compile(rf"(<human>|<bot>|^(?:{'|'.join(OIG_BOT_NAMES)})):", re.M),
    {"<human>": "user", "<bot>": "assistant", **dict.fromkeys(OIG_BOT_NAMES, "assistant")},
    "<human>: and <bot>: (or a bot name at a line start: " + ", ".join(f"{n}:" for n in OIG_BOT_NAMES) + ")",
)
HH_SPEAKERS = Speakers(
    re.compile(r"(?:^|\n\n)(Human|Assistant):"),
    {"Human": "user", "Assistant": "assistant"},
    "'\\n\\nHuman:' and '\\n\\nAssistant:'",
)
# ShareGPT "from" values → roles; FastChat maps chatgpt/bing/bard replies to the assistant too.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


def alpaca(obj: dict) -> list[dict]:
    return _columns(obj, "instruction", "output", "input")


def dolly(obj: dict) -> list[dict]:
    return _columns(obj, "instruction", "response", "context")


def gpt4all(obj: dict) -> list[dict]:
    return _columns(obj, "prompt", "response")


def seed_tasks(obj: dict) -> list[dict]:
    """Self-Instruct seed task: one record per instance, all sharing the task's instruction."""
    instruction = _text(obj, "instruction")
    return [
        _single(
            instruction,
            _text(inst, "input", required=False, allow_empty=True, path=f"instances[{i}].input"),
            _text(inst, "output", path=f"instances[{i}].output"),
        )
        for i, inst in enumerate(_objects(obj, "instances"))
    ]


def firefly(obj: dict) -> list[dict]:
    """Firefly's multi-turn ``conversation[{human, assistant}]``, or the 1.1M release's flat ``kind, input, target``."""
    if "conversation" not in obj:
        return _columns(obj, "input", "target")
    turns = [
        (role, _text(pair, key, path=f"conversation[{i}].{key}"), f"conversation[{i}].{key}")
        for i, pair in enumerate(_objects(obj, "conversation"))
        for role, key in (("user", "human"), ("assistant", "assistant"))
    ]
    return [_dialogue(_check_turns(turns, "conversation"))]


def _sharegpt_role(turn: dict, i: int) -> str:
    speaker = _text(turn, "from", path=f"conversations[{i}].from")
    if speaker not in SHAREGPT_ROLES:
        raise InvalidRecord(
            "unknown_role:conversations",
            f"field 'conversations[{i}].from' is {speaker!r}, expected one of {', '.join(SHAREGPT_ROLES)}",
        )
    return SHAREGPT_ROLES[speaker]


def sharegpt(obj: dict) -> list[dict]:
    turns = [
        (_sharegpt_role(t, i), _text(t, "value", path=f"conversations[{i}].value"), f"conversations[{i}]")
        for i, t in enumerate(_objects(obj, "conversations"))
    ]
    return [_dialogue(_check_turns(turns, "conversations"))]


def oig(obj: dict) -> list[dict]:
    return [_dialogue(_check_turns(_split_turns(_text(obj, "text"), OIG_SPEAKERS, "text"), "text"))]


def _hh_turns(obj: dict, key: str) -> list[Turn]:
    """One hh-rlhf transcript's turns.

    An Assistant tag right after an Assistant turn starts no new turn: the sampled reply itself went on with a blank
    line and ``Assistant:`` (22 transcripts of helpful-base test do, some inside the shared prompt), so that text is
    joined to the reply. Tags need the blank line before them; ``Human:`` inside a line stays text.
    """
    turns: list[Turn] = []
    for role, content, label in _split_turns(_text(obj, key), HH_SPEAKERS, key):
        if turns and role == turns[-1][0] == "assistant":
            turns[-1] = (role, f"{turns[-1][1]}\n\n{content}".strip(), turns[-1][2])
        else:
            turns.append((role, content, label))
    return turns


def hh_rlhf(obj: dict) -> list[dict]:
    """A preference pair: the chosen transcript as the conversation, the two final replies as chosen/rejected.

    Both transcripts must share every turn but the last. Sampled replies may be empty (a few rejected replies, and
    earlier replies inside the shared prompt, are): only the chosen final reply and the first reply must have text.
    """
    chosen = _check_turns(_hh_turns(obj, "chosen"), "chosen", empty_replies=True)
    rejected = _check_turns(_hh_turns(obj, "rejected"), "rejected", empty_replies=True)
    if not chosen[-1][1]:
        raise InvalidRecord("empty:chosen", f"{chosen[-1][2]}, the chosen final reply, is empty")
    prompt, other = [t[:2] for t in chosen[:-1]], [t[:2] for t in rejected[:-1]]
    if prompt != other:
        differ = next(i for i, (a, b) in enumerate(zip_longest(prompt, other)) if a != b)
        raise InvalidRecord(
            "prompt_mismatch:rejected",
            f"field 'rejected' does not share the prompt of 'chosen' (they differ at turn "
            f"{differ + 1}); expected the two transcripts to differ only in the final Assistant reply",
        )
    rec = _dialogue(chosen)
    rec["chosen"], rec["rejected"] = chosen[-1][1], rejected[-1][1]
    return [rec]
