"""Models and tokenizers: tiny offline models for tests and the default study, and loading what a study names.

``tiny:<arch>`` builds a randomly initialised model of that architecture (LLaMA; BLOOM; OPT, Galactica's
architecture; T5; GLM) with a byte-level BPE tokenizer trained on the shipped English + Chinese samples, saves it
with ``save_pretrained`` (safetensors) under the project cache and loads it back with the Auto classes — no hub.
Real studies name a hub id or a local directory. Each model has a family card (catalog.py): named in the params
(``card``) or found from the checkpoint's ``model_type``; it says whether the model loads as causal or seq2seq and
whether its code ships with the checkpoint. ``trust_remote_code`` is passed only as the params say, and a model that
needs it fails early, before any weights are fetched, with the params key to set. ``add_special_tokens`` is
stanford_alpaca's ``smart_tokenizer_and_embedding_resize``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers import models as tokenizer_models
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .base import RESOURCES_DIR, KitError, cache_dir
from .catalog import ModelCard, card_for_config, find_card_for_config, get_model_card, model_type_of
from .config import TINY_ARCHS, TINY_PREFIX, ModelParams
from .data.formats import load_file

TINY_VERSION = 1  # bump when the recipe below changes: cached tiny models are keyed by it
TINY_VOCAB = 1000
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0, 1, 2, 3
PAD, BOS, EOS, UNK = range(4)
TINY_SIZE = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "max_positions": 512}

# How each architecture's real tokenizer frames a text, reproduced on the tiny tokenizer:
# LLaMA/GLM prepend BOS; OPT/Galactica prepend </s>-style BOS; BLOOM adds nothing; T5 appends EOS.
_FRAMING = {
    "llama": ("<s> $A", "<s> $A <s> $B"),
    "glm": ("<s> $A", "<s> $A <s> $B"),
    "opt": ("<s> $A", "<s> $A <s> $B"),
    "bloom": ("$A", "$A $B"),
    "t5": ("$A </s>", "$A </s> $B </s>"),
}
_CORPUS_FILES = (  # (file, records used) — English and Chinese, so both tokenise sensibly
    ("instruct/alpaca/alpaca_data.first1825.json", 400),
    ("instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json", 400),
    ("instruct/belle/dev1K.json", 200),
)


def tokenizer_corpus() -> list[str]:
    """Training text for the tiny tokenizer: instructions and outputs of the shipped samples."""
    lines = []
    for rel, n in _CORPUS_FILES:
        ds, _ = load_file(RESOURCES_DIR / rel, source="corpus", language="und", on_invalid="skip", max_records=n)
        for r in ds:
            lines.extend(x for x in (r["instruction"], r["input"], r["output"]) if x)
    return lines


def train_tiny_tokenizer(arch: str):
    """A byte-level BPE tokenizer (vocab 1000, ``<pad> <s> </s> <unk>``) framed like ``arch``'s real one."""
    tok = Tokenizer(tokenizer_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    single, pair = _FRAMING[arch]
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[("<s>", BOS), ("</s>", EOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=TINY_SIZE["max_positions"],
    )


def tiny_config(arch: str, vocab_size: int = TINY_VOCAB):
    """The transformers config of a tiny ``arch`` model (hidden 64, 2 layers, 4 heads)."""
    h, n, heads, ffn, pos = (TINY_SIZE[k] for k in ("hidden", "layers", "heads", "ffn", "max_positions"))
    ids = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS}
    if arch == "llama":
        return transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=h,
            intermediate_size=ffn,
            num_hidden_layers=n,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=pos,
            tie_word_embeddings=False,
            **ids,
        )
    if arch == "bloom":
        return transformers.BloomConfig(vocab_size=vocab_size, hidden_size=h, n_layer=n, n_head=heads, **ids)
    if arch == "opt":
        return transformers.OPTConfig(
            vocab_size=vocab_size,
            hidden_size=h,
            num_hidden_layers=n,
            ffn_dim=ffn,
            num_attention_heads=heads,
            max_position_embeddings=pos,
            word_embed_proj_dim=h,
            **ids,
        )
    if arch == "t5":
        return transformers.T5Config(
            vocab_size=vocab_size,
            d_model=h,
            d_kv=h // heads,
            d_ff=ffn,
            num_layers=n,
            num_decoder_layers=n,
            num_heads=heads,
            initializer_factor=0.05,
            decoder_start_token_id=PAD,
            pad_token_id=PAD,
            eos_token_id=EOS,
        )
    if arch == "glm":
        return transformers.GlmConfig(
            vocab_size=vocab_size,
            hidden_size=h,
            intermediate_size=ffn,
            num_hidden_layers=n,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=h // heads,
            max_position_embeddings=pos,
            **ids,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")


def is_seq2seq(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def build_tiny(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build, save (safetensors) and return a tiny ``arch`` model + tokenizer in ``out_dir``, atomically."""
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")
    out_dir = Path(out_dir)
    tokenizer = train_tiny_tokenizer(arch)
    config = tiny_config(arch, vocab_size=len(tokenizer))
    auto = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "llm4academic.json").write_text(
            json.dumps(
                {
                    "tiny_arch": arch,
                    "tiny_version": TINY_VERSION,
                    "seed": seed,
                    "size": TINY_SIZE,
                    "parameters": sum(p.numel() for p in model.parameters()),
                },
                indent=2,
            )
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def tiny_cache_path(arch: str, seed: int = 0) -> Path:
    return cache_dir() / "models" / f"tiny-{arch}-v{TINY_VERSION}-seed{seed}"


def resolve_model_path(path: str, seed: int = 0) -> str:
    """``tiny:<arch>`` → its cached directory (built on first use); anything else is returned as is."""
    if not path.startswith(TINY_PREFIX):
        return path
    arch = path[len(TINY_PREFIX) :]
    target = tiny_cache_path(arch, seed)
    if not (target / "llm4academic.json").is_file():
        build_tiny(arch, target, seed=seed)
    return str(target)


def _load_kwargs(mp: ModelParams) -> dict:
    kw = {"trust_remote_code": mp.trust_remote_code}
    if mp.revision:
        kw["revision"] = mp.revision
    return kw


def _describe(mp: ModelParams) -> str:
    return f"model {mp.name!r} ({mp.path})"


def read_config(mp: ModelParams) -> dict:
    """The checkpoint's ``config.json`` as a dict, read without running any of the checkpoint's code."""
    path = resolve_model_path(mp.path)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise KitError(f"{_describe(mp)}: no config.json in {path}")
    try:
        raw, _ = PretrainedConfig.get_config_dict(path, revision=mp.revision)
    except OSError as e:
        raise KitError(f"{_describe(mp)}: cannot read its config.json: {e}") from None
    return raw


def _check_remote_code(mp: ModelParams, config: Any) -> None:
    """A model whose code is not part of transformers loads only with ``trust_remote_code: true`` in the params."""
    model_type, card = model_type_of(config), find_card_for_config(config)
    needs_code = card.needs_remote_code if card else model_type not in CONFIG_MAPPING
    if not needs_code or mp.trust_remote_code:
        return
    allow = (
        f"set `models[i].trust_remote_code: true` on the entry named {mp.name!r} in the params "
        f"(or --set models[i].trust_remote_code=true)"
    )
    if card:
        raise KitError(
            f"{_describe(mp)} is {card.model}'s family (card {card.name!r}, model_type {model_type!r}): "
            f"its model code ships with the checkpoint and is not part of transformers. To run that code, "
            f"{allow}; or choose a model transformers implements, e.g. card glm (zai-org/glm-4-9b-hf)."
        )
    has_code = bool(config.get("auto_map") if isinstance(config, dict) else getattr(config, "auto_map", None))
    then = (
        f"Its config.json points to model code shipped with the checkpoint (auto_map): to run it, {allow}."
        if has_code
        else "Its config.json names no model code (auto_map) either: check the path."
    )
    raise KitError(
        f"{_describe(mp)} has model_type {model_type!r}, which transformers {transformers.__version__} does "
        f"not implement and no model card covers. {then}"
    )


def resolve_card(mp: ModelParams, config: Any) -> ModelCard:
    """The model's family card: ``mp.card`` if the params name one (checked against the checkpoint's model_type),
    else the card covering ``config``'s model_type (a transformers config or a config.json dict)."""
    model_type = model_type_of(config)
    if mp.card is None:
        try:
            return card_for_config(config)
        except KitError as e:
            raise KitError(f"{_describe(mp)}: {e}") from None
    card = get_model_card(mp.card)
    if model_type not in card.model_types:
        raise KitError(
            f"{_describe(mp)}: the params name card {card.name!r} (`models[i].card`), which covers "
            f"model_type {', '.join(card.model_types)}, but the checkpoint's model_type is {model_type!r}; "
            f"drop `card` to detect the card from the checkpoint"
        )
    return card


def model_card(mp: ModelParams) -> ModelCard:
    """The card of the model a study names, from its config.json (no weights, no remote code run)."""
    config = read_config(mp)
    _check_remote_code(mp, config)
    return resolve_card(mp, config)


def load_tokenizer(mp: ModelParams):
    _check_remote_code(mp, read_config(mp))
    return AutoTokenizer.from_pretrained(resolve_model_path(mp.path), **_load_kwargs(mp))


def load_tokenizers(mps: list[ModelParams]) -> dict:
    """Each study model's tokenizer, by model name."""
    return {mp.name: load_tokenizer(mp) for mp in mps}


def resolve_dtype(dtype):
    """``"auto"`` stays ``"auto"`` (the checkpoint's own dtype); ``"bfloat16"`` etc. become torch dtypes."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in ("float32", "bfloat16", "float16"):
        raise KitError(f"unknown dtype {dtype!r}; expected auto, float32, bfloat16 or float16")
    return getattr(torch, dtype)


def load_model(mp: ModelParams, dtype=None, attn_implementation=None):
    """The model a study names, through its card's Auto class (causal or seq2seq), safetensors only.

    ``dtype`` and ``attn_implementation`` override the params' ``dtype`` (``auto`` = the checkpoint's) and
    ``attn_implementation`` (unset = transformers' default). A model whose code ships with the checkpoint fails
    here, before any weights are fetched, unless the params set ``trust_remote_code: true``. A checkpoint without
    safetensors weights (only pickled ``.bin``) is refused unless the params set ``allow_pickle_weights: true``.
    """
    path, kw = resolve_model_path(mp.path), _load_kwargs(mp)
    _check_remote_code(mp, read_config(mp))
    config = AutoConfig.from_pretrained(path, **kw)
    card = resolve_card(mp, config)
    auto = getattr(transformers, card.auto_class)
    attn = attn_implementation or mp.attn_implementation
    if attn:
        kw["attn_implementation"] = attn
    if not mp.allow_pickle_weights and Path(path).is_dir() and not any(Path(path).glob("*.safetensors")):
        raise KitError(_pickle_weights_refused(mp, f"no *.safetensors file in {path}"))
    try:
        return auto.from_pretrained(
            path,
            config=config,
            use_safetensors=None if mp.allow_pickle_weights else True,  # None: safetensors if there, else .bin
            dtype=resolve_dtype(dtype if dtype is not None else mp.dtype),
            **kw,
        )
    except OSError as e:  # a hub id whose files are known only when fetched
        if mp.allow_pickle_weights or "safetensors" not in str(e):
            raise
        raise KitError(_pickle_weights_refused(mp, str(e).strip().splitlines()[0])) from e


def _pickle_weights_refused(mp: ModelParams, why: str) -> str:
    return (
        f"{_describe(mp)}: the kit loads safetensors weights only, and this checkpoint has none ({why}); its "
        f"PyTorch .bin weights are pickles, and unpickling a file can run any code its author put in it. Use a "
        f"checkpoint (or revision) that publishes *.safetensors, convert the weights to safetensors where you "
        f"trust them, or, if you trust its source, set `models[i].allow_pickle_weights: true` in the params"
    )


def load_causal_lm(path_or_tiny: str, *, dtype="auto", trust_remote_code: bool = False, tokenizer=None):
    """A causal LM and its tokenizer from a directory, hub id or ``tiny:<arch>`` — not a study's model (no params,
    no card), e.g. the judge — as ``(model, tokenizer)``: the Auto classes, safetensors only, ``dtype`` as
    ``resolve_dtype`` reads it (``auto`` = the checkpoint's). A ``tokenizer`` given is returned instead of loading
    the checkpoint's."""
    path = resolve_model_path(str(path_or_tiny))
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
    )
    return model, tokenizer


# stanford_alpaca's train.py
DEFAULT_PAD_TOKEN = "[PAD]"
DEFAULT_EOS_TOKEN = "</s>"
DEFAULT_BOS_TOKEN = "<s>"
DEFAULT_UNK_TOKEN = "<unk>"


def add_special_tokens(tokenizer, model=None) -> int:
    """Give the tokenizer the pad/eos/bos/unk tokens it lacks, as stanford_alpaca does; returns how many are new.

    stanford_alpaca's ``smart_tokenizer_and_embedding_resize``: missing special tokens are added (``[PAD]``,
    ``</s>``, ``<s>``, ``<unk>``), the embeddings grow to the new vocabulary and each new row of the input and the
    output embeddings is set to the mean of the rows of the tokens that were there before. Two departures, both
    no-ops for LLaMA: the matrix only grows (T5 and GLM-4 carry spare rows past their vocabulary, where the new
    tokens' rows are set instead of shrinking the matrix), and when a pad token is added the model's (and its
    generation config's) ``pad_token_id`` follows it. Nothing changes when the tokenizer has all four.

    Without ``model`` only the tokenizer changes: the dataset is tokenised with the very tokens (and ids) that the
    worker's tokenizer gets again with the model, since the same tokens are added to the same vocabulary.
    """
    wanted = {
        "pad_token": DEFAULT_PAD_TOKEN,
        "eos_token": DEFAULT_EOS_TOKEN,
        "bos_token": DEFAULT_BOS_TOKEN,
        "unk_token": DEFAULT_UNK_TOKEN,
    }
    missing = {k: v for k, v in wanted.items() if getattr(tokenizer, k) is None}
    if not missing:
        return 0
    old_vocab = len(tokenizer)
    added = tokenizer.add_special_tokens(missing)
    if model is None:
        return added
    if "pad_token" in missing:
        for cfg in (model.config, getattr(model, "generation_config", None)):
            if cfg is not None:
                cfg.pad_token_id = tokenizer.pad_token_id
    if added == 0:  # the tokens were in the vocabulary already, only undeclared
        return 0
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = torch.arange(old_vocab, len(tokenizer))
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    matrices = [inp.weight] + ([out.weight] if out is not None and out.weight is not inp.weight else [])
    with torch.no_grad():
        for weight in matrices:
            weight[new_ids] = weight[:old_vocab].mean(dim=0, keepdim=True)
    return added
