import pytest

from llm4academic import config, templates
from llm4academic.templates import prompt_text, render

# stanford_alpaca train.py, PROMPT_DICT, copied verbatim.
STANFORD_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
STANFORD_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


def rec(instruction="Name a colour.", input_="", output="Blue.", conversation=()):
    return {
        "id": "x-0",
        "source": "x",
        "language": "en",
        "instruction": instruction,
        "input": input_,
        "output": output,
        "conversation": list(conversation),
        "chosen": "",
        "rejected": "",
    }


DIALOGUE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_templates_match_config():
    assert tuple(templates.TEMPLATES) == config.TEMPLATES
    assert all(t.description and "\n" not in t.description for t in templates.TEMPLATES.values())


@pytest.mark.parametrize("input_", ["", "some context {with braces}"])
def test_alpaca_is_byte_identical_to_stanford(input_):
    r = rec(instruction="Translate {this}: 你好", input_=input_)
    expected = (STANFORD_INPUT if input_ != "" else STANFORD_NO_INPUT).format_map(r)
    assert render(r, "alpaca") == [(expected, False), ("Blue.", True)]
    assert prompt_text(r, "alpaca") == expected


def test_alpaca_whitespace_input_uses_the_input_variant_like_stanford():
    # stanford tests `example.get("input", "") != ""`: a blank but non-empty input still takes the input variant
    assert render(rec(input_=" "), "alpaca")[0][0] == STANFORD_INPUT.format_map(rec(input_=" "))


def test_belle_and_plain():
    assert render(rec(), "belle") == [("Human: Name a colour.\n\nAssistant: ", False), ("Blue.", True)]
    assert prompt_text(rec(input_="ctx"), "belle") == "Human: Name a colour.\nctx\n\nAssistant: "
    assert render(rec(input_="ctx"), "plain") == [("Name a colour.\nctx", False), ("Blue.", True)]


def test_multi_turn_only_assistant_replies_are_trainable():
    r = rec(conversation=DIALOGUE)
    belle = render(r, "belle")
    assert belle == [
        ("Be brief.\n\nHuman: Hi\n\nAssistant: ", False),
        ("Hello!", True),
        ("Human: 2+2?\n\nAssistant: ", False),
        ("4", True),
    ]
    assert [t for t, trainable in belle if trainable] == ["Hello!", "4"]
    alpaca = render(r, "alpaca")
    assert alpaca[0] == ("Be brief.\n\n### Instruction:\nHi\n\n### Response:", False)
    assert alpaca[2] == ("\n\n### Instruction:\n2+2?\n\n### Response:", False)
    for name in templates.TEMPLATES:
        trainable = [t for t, flag in render(r, name) if flag]
        assert trainable == ["Hello!", "4"], name
        assert prompt_text(r, name) == "".join(t for t, _ in render(r, name)[:-1])


def test_one_turn_dialogue_renders_like_a_single_turn_record():
    turns = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    for name in templates.TEMPLATES:
        assert render(rec(conversation=turns), name) == render(rec(), name)


def test_dialogue_ending_with_a_user_turn_is_a_whole_prompt():
    r = rec(conversation=DIALOGUE[:4])
    assert prompt_text(r, "belle").endswith("Human: 2+2?\n\nAssistant: ")


def test_unknown_template_names_the_known_ones():
    with pytest.raises(ValueError, match="alpaca, belle, plain"):
        render(rec(), "vicuna")


def test_fixed_starts_are_what_every_prompt_of_a_shape_begins_with():
    no_input, with_input = (STANFORD_NO_INPUT.split("{instruction}")[0], STANFORD_INPUT.split("{instruction}")[0])
    assert templates.fixed_starts("alpaca") == [with_input, no_input]  # longest first
    dialogue = render(rec(conversation=DIALOGUE[1:]), "alpaca")[0][0]
    assert dialogue.startswith(no_input) and render(rec(input_="x"), "alpaca")[0][0].startswith(with_input)
    assert templates.fixed_starts("belle") == ["Human: "] and templates.fixed_starts("plain") == []
