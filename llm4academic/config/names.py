"""The kit's lists of names — steps, data formats, model cards, templates, tiny architectures, scorers, splits,
generation backends — each written once, as a ``Literal`` (what the params schema validates against); the tuples the
rest of the kit iterates over are derived from it."""

from __future__ import annotations

from typing import Literal, get_args

# The study's steps, in the order they run; pipeline.py maps each to its notebook.
Step = Literal["explore", "train", "align", "evaluate", "compare"]
STEPS: tuple[str, ...] = get_args(Step)

# On-disk formats data/formats.py reads (``format: auto`` detects them from the fields).
FormatName = Literal["alpaca", "seed_tasks", "firefly", "sharegpt", "oig", "hh_rlhf", "dolly", "gpt4all"]
FORMAT_NAMES: tuple[str, ...] = get_args(FormatName)

# Model family cards (catalog.py, resources/catalog/models.yaml) and prompt templates (templates.py).
ModelCardName = Literal["llama", "bloom", "opt", "t5", "glm", "chatglm"]
MODEL_CARDS: tuple[str, ...] = get_args(ModelCardName)
TemplateName = Literal["alpaca", "belle", "plain"]
TEMPLATES: tuple[str, ...] = get_args(TemplateName)

# Architectures the kit can build offline at tiny size (models.py builds them; `tiny:<arch>` in params).
TinyArch = Literal["llama", "bloom", "opt", "t5", "glm"]
TINY_ARCHS: tuple[str, ...] = get_args(TinyArch)
TINY_PREFIX = "tiny:"

# Reference scorers (scoring/) and generation backends (generate.py).
ScorerName = Literal["keyed", "option", "number", "contains", "rouge_l"]
SCORERS: tuple[str, ...] = get_args(ScorerName)
SplitName = Literal["basic", "advanced", "domain"]
Backend = Literal["transformers", "vllm"]
BACKENDS: tuple[str, ...] = get_args(Backend)
