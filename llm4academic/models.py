"""Models and tokenizers: tiny offline models for tests and the default study, and loading what a study names.

``tiny:<arch>`` builds a randomly initialised model of that architecture (LLaMA; BLOOM; OPT, Galactica's
architecture; T5; GLM) with a byte-level BPE tokenizer trained on the shipped English + Chinese samples, saves it
with ``save_pretrained`` (safetensors) under the project cache and loads it back with the Auto classes — no hub.
Real studies name a hub id or a local directory. ``trust_remote_code`` is passed only as the params say.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .config import RESOURCES_DIR, TINY_ARCHS, TINY_PREFIX, ModelParams, cache_dir

TINY_VERSION = 1  # bump when the recipe below changes: cached tiny models are keyed by it
TINY_VOCAB = 1000
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0, 1, 2, 3
PAD, BOS, EOS, UNK = range(4)
TINY_SIZE = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "max_positions": 512}

# How each architecture's real tokenizer frames a text, reproduced on the tiny tokenizer:
# LLaMA/GLM prepend BOS; OPT/Galactica prepend </s>-style BOS; BLOOM adds nothing; T5 appends EOS.
_FRAMING = {"llama": ("<s> $A", "<s> $A <s> $B"), "glm": ("<s> $A", "<s> $A <s> $B"),
            "opt": ("<s> $A", "<s> $A <s> $B"), "bloom": ("$A", "$A $B"), "t5": ("$A </s>", "$A </s> $B </s>")}
_CORPUS_FILES = (  # (file, records used) — English and Chinese, so both tokenise sensibly
    ("instruct/alpaca/alpaca_data.first1825.json", 400),
    ("instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json", 400),
    ("instruct/belle/dev1K.json", 200),
)


def tokenizer_corpus() -> list[str]:
    """Training text for the tiny tokenizer: instructions and outputs of the shipped samples."""
    from .data.formats import load_file

    lines = []
    for rel, n in _CORPUS_FILES:
        ds, _ = load_file(RESOURCES_DIR / rel, source="corpus", language="und", on_invalid="skip", max_records=n)
        for r in ds:
            lines.extend(x for x in (r["instruction"], r["input"], r["output"]) if x)
    return lines


def train_tiny_tokenizer(arch: str):
    """A byte-level BPE tokenizer (vocab 1000, ``<pad> <s> </s> <unk>``) framed like ``arch``'s real one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    single, pair = _FRAMING[arch]
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[("<s>", BOS), ("</s>", EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=TINY_SIZE["max_positions"])


def tiny_config(arch: str, vocab_size: int = TINY_VOCAB):
    """The transformers config of a tiny ``arch`` model (hidden 64, 2 layers, 4 heads)."""
    import transformers as tf

    h, n, heads, ffn, pos = (TINY_SIZE[k] for k in ("hidden", "layers", "heads", "ffn", "max_positions"))
    ids = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS}
    if arch == "llama":
        return tf.LlamaConfig(vocab_size=vocab_size, hidden_size=h, intermediate_size=ffn, num_hidden_layers=n,
                              num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=pos,
                              tie_word_embeddings=False, **ids)
    if arch == "bloom":
        return tf.BloomConfig(vocab_size=vocab_size, hidden_size=h, n_layer=n, n_head=heads, **ids)
    if arch == "opt":
        return tf.OPTConfig(vocab_size=vocab_size, hidden_size=h, num_hidden_layers=n, ffn_dim=ffn,
                            num_attention_heads=heads, max_position_embeddings=pos, word_embed_proj_dim=h, **ids)
    if arch == "t5":
        return tf.T5Config(vocab_size=vocab_size, d_model=h, d_kv=h // heads, d_ff=ffn, num_layers=n,
                           num_decoder_layers=n, num_heads=heads, initializer_factor=0.05,
                           decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS)
    if arch == "glm":
        return tf.GlmConfig(vocab_size=vocab_size, hidden_size=h, intermediate_size=ffn, num_hidden_layers=n,
                            num_attention_heads=heads, num_key_value_heads=heads, head_dim=h // heads,
                            max_position_embeddings=pos, **ids)
    raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")


def is_seq2seq(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def build_tiny(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build, save (safetensors) and return a tiny ``arch`` model + tokenizer in ``out_dir``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

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
        (tmp / "llm4academic.json").write_text(json.dumps(
            {"tiny_arch": arch, "tiny_version": TINY_VERSION, "seed": seed, "size": TINY_SIZE,
             "parameters": sum(p.numel() for p in model.parameters())}, indent=2))
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
    arch = path[len(TINY_PREFIX):]
    target = tiny_cache_path(arch, seed)
    if not (target / "llm4academic.json").is_file():
        build_tiny(arch, target, seed=seed)
    return str(target)


def _load_kwargs(mp: ModelParams) -> dict:
    kw = {"trust_remote_code": mp.trust_remote_code}
    if mp.revision:
        kw["revision"] = mp.revision
    return kw


def load_tokenizer(mp: ModelParams):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(mp.path), **_load_kwargs(mp))


def load_model(mp: ModelParams, dtype=None):
    """The model a study names, through the Auto class its config calls for (causal or seq2seq), safetensors only."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path, kw = resolve_model_path(mp.path), _load_kwargs(mp)
    config = AutoConfig.from_pretrained(path, **kw)
    auto = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    return auto.from_pretrained(path, config=config, use_safetensors=True, dtype=dtype, **kw)

