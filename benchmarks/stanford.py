"""stanford_alpaca's reference preprocessing, the baseline the kit's ``sft.tokenize_records`` is measured and checked
against (benchmark P1, tests/test_sft.py).

``stanford_alpaca_preprocess`` is stanford_alpaca's ``preprocess`` (tokenise source+target, then source, one by one;
mask the first ``len(source)`` positions). Given that the tokenizer reads ``"</s>"`` as the EOS id, the kit's labels
differ from it only where tokenising ``source + output`` as one text differs from the segments apart
(``stanford_boundary_differs``): with byte-level BPE, when the pre-tokenizer joins the prompt's last characters and
the reply's first ones into one pre-token and a merge crosses the join. Alpaca's prompt ends in ``":"``, so the reply
must start with punctuation or a symbol (``"``, ``-``, ``（``…) and the vocabulary must hold a merge of ``:`` with it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

from llm4academic.sft import IGNORE_INDEX, encode_segments, framing
from llm4academic.templates import PROMPT_DICT


def stanford_sources_targets(records: Iterable[dict], tokenizer) -> tuple[list[str], list[str]]:
    """stanford_alpaca's ``SupervisedDataset`` strings: PROMPT_DICT sources, ``output + eos_token`` (as text)."""
    sources, targets = [], []
    for ex in records:
        key = "prompt_input" if ex.get("input", "") != "" else "prompt_no_input"
        sources.append(PROMPT_DICT[key].format_map(ex))
        targets.append(f"{ex['output']}{tokenizer.eos_token}")
    return sources, targets


def _stanford_tokenize(strings: Sequence[str], tokenizer, max_length: int) -> tuple[list[list[int]], list[int]]:
    tokenized = [
        tokenizer(text, return_tensors="pt", padding="longest", max_length=max_length, truncation=True)
        for text in strings
    ]
    ids = [t.input_ids[0] for t in tokenized]
    lens = [int(t.input_ids.ne(tokenizer.pad_token_id).sum()) for t in tokenized]
    return [i.tolist() for i in ids], lens


def stanford_alpaca_preprocess(sources: Sequence[str], targets: Sequence[str], tokenizer, max_length: int) -> dict:
    """stanford_alpaca ``preprocess``: ``{"input_ids": [[int]], "labels": [[int]]}`` (lists, not tensors)."""
    examples = [s + t for s, t in zip(sources, targets, strict=True)]
    input_ids, _ = _stanford_tokenize(examples, tokenizer, max_length)
    _, source_lens = _stanford_tokenize(sources, tokenizer, max_length)
    labels = copy.deepcopy(input_ids)
    for label, source_len in zip(labels, source_lens, strict=True):
        label[:source_len] = [IGNORE_INDEX] * len(label[:source_len])
    return {"input_ids": input_ids, "labels": labels}


def stanford_boundary_differs(source: str, output: str, tokenizer) -> bool:
    """Whether tokenising ``source + output`` as one text differs from the kit's segment-wise tokens (the only way
    the kit's labels can differ from stanford's, given that ``"</s>"`` as text becomes the EOS id)."""
    apart = encode_segments(tokenizer, [[source, output]], framing(tokenizer))[0]
    return tokenizer(source + output, add_special_tokens=False, verbose=False)["input_ids"] != apart[0] + apart[1]
