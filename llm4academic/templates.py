"""Prompt templates: a unified record → ordered text segments, each flagged trainable or not.

``render(record, template)`` returns ``[(text, trainable), ...]``. Only assistant replies are trainable; the EOS
token is not text: ``sft`` appends the tokenizer's EOS **id** after every trainable segment. ``prompt_text`` is the
text a model is given at evaluation time (everything before the last assistant reply).

Templates:

- ``alpaca`` — stanford_alpaca's ``PROMPT_DICT``, byte for byte; the no-input variant when ``input == ""``.
  Multi-turn (the kit's extension, stanford has none): the header line once, then per turn
  ``### Instruction:\\n{user}\\n\\n### Response:{reply}`` with ``\\n\\n`` between turns; a system turn replaces the
  header line (it plays the same role). A one-turn conversation renders exactly like a no-input record.
- ``belle`` — BELLE's ``Human: {instruction}\\n\\nAssistant: {reply}``, input appended to the instruction after a
  newline; turns follow each other with nothing but the EOS id between them (as BELLE's ``sft_sample_to_ids``); a
  system turn is a preamble followed by a blank line. BELLE's later train code (after its issue 337) writes
  ``Human: \\n{value}\\n\\nAssistant: \\n``; the kit keeps the model-card form above.
- ``plain`` — instruction (``\\n`` input) then the reply directly, no wrapper (the encoder text for T5); a system
  turn is a preamble followed by a blank line, later user turns start on a new line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Segment = tuple[str, bool]  # (text, trainable)

# stanford_alpaca train.py, PROMPT_DICT: identical text.
PROMPT_DICT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:"
    ),
}
ALPACA_HEADER = PROMPT_DICT["prompt_no_input"].split("\n\n", 1)[0]


@dataclass(frozen=True)
class Template:
    """How one template writes a single-turn prompt, a system preamble and a user turn of a dialogue."""

    name: str
    description: str
    single: Callable[[str, str], str]  # (instruction, input) → prompt text
    preamble: Callable[[str], str]  # system text ("" when none) → text before the first user turn
    user: Callable[[str, bool], str]  # (user text, is first turn) → text before the assistant reply


def _join(instruction: str, input_: str) -> str:
    return f"{instruction}\n{input_}" if input_ else instruction


def _alpaca_single(instruction: str, input_: str) -> str:
    key = "prompt_input" if input_ != "" else "prompt_no_input"
    return PROMPT_DICT[key].format_map({"instruction": instruction, "input": input_})


def _blank_line_after(system: str) -> str:
    return f"{system}\n\n" if system else ""


def _alpaca_turn(text: str, first: bool) -> str:
    return ("" if first else "\n\n") + f"### Instruction:\n{text}\n\n### Response:"


def _belle_turn(text: str, first: bool) -> str:
    return f"Human: {text}\n\nAssistant: "


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "alpaca",
            "stanford_alpaca's PROMPT_DICT (### Instruction / ### Input / ### Response:)",
            _alpaca_single,
            lambda system: f"{system or ALPACA_HEADER}\n\n",
            _alpaca_turn,
        ),
        Template(
            "belle",
            "BELLE's 'Human: {instruction}\\n\\nAssistant: ' turns",
            lambda instruction, input_: f"Human: {_join(instruction, input_)}\n\nAssistant: ",
            _blank_line_after,
            _belle_turn,
        ),
        Template(
            "plain",
            "instruction (newline input), then the reply directly (T5's encoder text)",
            _join,
            _blank_line_after,
            lambda text, first: text if first else f"\n{text}",
        ),
    )
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known templates: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def _dialogue(turns: list[dict], tpl: Template) -> list[Segment]:
    """Segments of a conversation: adjacent non-trainable text merged, every assistant reply its own segment."""
    has_system = bool(turns) and turns[0]["role"] == "system"
    pending, first, out = tpl.preamble(turns[0]["content"] if has_system else ""), True, []
    for turn in turns[int(has_system) :]:
        if turn["role"] == "assistant":
            out += [(pending, False), (turn["content"], True)]
            pending = ""
        else:
            pending += tpl.user(turn["content"], first)
            first = False
    if pending:
        out.append((pending, False))
    return [seg for seg in out if seg[0] or seg[1]]


def render(record: dict, template: str) -> list[Segment]:
    """Ordered ``(text, trainable)`` segments of a record; only assistant replies are trainable."""
    tpl = get_template(template)
    if record.get("conversation"):
        return _dialogue(list(record["conversation"]), tpl)
    return [(tpl.single(record["instruction"], record.get("input") or ""), False), (record["output"], True)]


def prompt_text(record: dict, template: str) -> str:
    """The text before the reply a model should generate: the prompt, or for a dialogue everything before the
    last assistant reply (a dialogue that ends with a user turn is returned whole). Earlier replies come without
    the EOS id that training puts after each: ``sft.encode_prompt`` gives the ids exactly as trained."""
    segments = render(record, template)
    if segments and segments[-1][1]:
        segments = segments[:-1]
    return "".join(text for text, _ in segments)


def fixed_starts(template: str) -> list[str]:
    """The fixed texts a record's first segment can start with, whatever its fields (one per prompt shape: with
    and without input, a dialogue without a system turn), longest first; empty starts are left out.
    ``sft`` tokenises them once (``sft.heads``)."""
    field, reply = "\x00", {"role": "assistant", "content": "-"}
    shapes = (
        {"instruction": field, "input": "", "output": "-"},
        {"instruction": field, "input": field, "output": "-"},
        {"conversation": [{"role": "user", "content": field}, reply]},
    )
    starts = {render(record, template)[0][0].split(field, 1)[0] for record in shapes}
    return sorted((s for s in starts if s), key=len, reverse=True)
