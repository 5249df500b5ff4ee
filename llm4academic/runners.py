"""The generation backends: HF generate or the runner's own length-bucketed decoding loop, with per-prompt seeded
sampling, and vLLM.

A runner holds one loaded model and answers one batch at a time: ``run(list of prompt ids, seeds)`` →
``[(new ids, finish)]``, where ``finish`` is ``"eos"`` (the tokenizer's EOS id ends the new ids) or ``"length"``
(``max_new_tokens`` reached). Both runners also say what they ran on (``backend``, ``dtype``, ``device``,
``versions``) and how many tokens the model reads (``context``). ``generate.py`` builds the prompt ids, batches them
and caches the answers; ``RUNNERS`` maps ``evaluate.backend`` to a runner class.

``TransformersRunner``, decoder-only models whose forward takes ``cache``, ``position_ids`` and ``logits_to_keep`` and
whose cache is plain ``DynamicLayer`` layers (LLaMA, OPT, Qwen, Mistral…): the runner's own decoding loop
(``_Decoder``). The batch's prompts are **bucketed by length** for the prefill (``prefill_groups``: runs of
near-equal length, each padded on the right to its own longest prompt, without an attention mask — causal attention
never lets a real token see the padding after it — and each row's first new token read at its own last position),
their keys/values written into one preallocated buffer (``_BufferLayer``: the new position is written in place, no
copy of the whole cache at every step as ``DynamicLayer``'s concatenation does), then the whole batch decodes
together with explicit position ids and a mask that hides each row's padding. Other models (T5, BLOOM's ALiBi,
sliding-window caches): transformers' ``generate`` with the prompts padded on the **left** (position ids derived from
the attention mask), encoder inputs on the right. Either way a padded row decodes as it would alone
(``tests/test_generate.py`` checks batched == one at a time). Greedy by default; with ``do_sample`` each row draws from
its own generator seeded per prompt after temperature and top-p (``_seeded_sampler``), so a sample does not depend on
the batch it falls in. The model's own ``generation_config.json`` is replaced: every model decodes with the same
recorded settings (``GenParams``).

``VllmRunner``: the same prompt ids through vLLM (decoder-only, GPU machines). vllm is imported only when this
backend is asked for (``_import_vllm``), with a ``KitError`` that says what to do where it is not installed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from .base import KitError, length_runs
from .config import ModelParams
from .models import load_model, resolve_model_path
from .threads import cpu_threads, on_cpu

_SANE_CONTEXT = 1_000_000  # tokenizers without a limit say model_max_length = 1e30
PREFILL_CALL_TOKENS = 128
"""What one more prefill forward call costs, in padded prompt tokens (``prefill_groups``): measured ≈ 110 for the tiny
LLaMA on one CPU core; larger for a big model on a GPU, where a call is dearer than a token."""


@dataclass(frozen=True)
class GenParams:
    """Decoding settings. ``temperature``, ``top_p`` and ``seed`` matter only with ``do_sample``."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        problems = [
            msg
            for bad, msg in (
                (self.max_new_tokens < 1, f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}"),
                (self.batch_size < 1, f"batch_size must be ≥ 1, got {self.batch_size}"),
                (not self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
                (not 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            )
            if bad
        ]
        if problems:
            raise KitError("generation: " + "; ".join(problems))

    def decoding(self) -> dict:
        """The settings that decide the answers (the cache key's part): sampling knobs only when sampling."""
        out: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            out.update(temperature=float(self.temperature), top_p=float(self.top_p), seed=self.seed)
        return out


def _versions(*packages: str) -> dict[str, str]:
    return {p: metadata.version(p) for p in packages}


def _context_limit(model, tokenizer, seq2seq: bool) -> int | None:
    """How many tokens the model reads: its position table (decoder-only), else the tokenizer's limit if it has one."""
    config = model.config
    limits = (
        [] if seq2seq else [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions", "seq_length")]
    )
    limits.append(getattr(tokenizer, "model_max_length", None))
    limits = [int(x) for x in limits if isinstance(x, int | float) and 0 < x < _SANE_CONTEXT]
    return min(limits) if limits else None


def _finish(new: list[int], eos: int) -> tuple[list[int], str]:
    """New ids up to and including the first EOS (padding after it dropped), and why generation stopped: ``eos``
    whenever the new ids hold the EOS id — also when it is exactly the ``max_new_tokens``-th id (the answer ended on its
    own, it was not cut) — else ``length`` (cut at ``max_new_tokens``: ``truncated`` downstream)."""
    if eos in new:
        return new[: new.index(eos) + 1], "eos"
    return new, "length"


# --------------------------------------------------------------------------------------------- transformers backend


def _seeded_sampler(seeds: list[int], gen: GenParams, device):
    """A logits processor that samples each row with its own generator (temperature, then top-p) and leaves only the
    drawn token: ``generate`` then runs greedy and picks it. Makes a row's sample independent of its batch."""
    warpers = [TemperatureLogitsWarper(gen.temperature)] + ([TopPLogitsWarper(gen.top_p)] if gen.top_p < 1 else [])
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class SeededSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            for w in warpers:
                scores = w(input_ids, scores)
            probs = torch.softmax(scores.float(), dim=-1)
            picked = torch.stack([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, picked, 0.0)

    return SeededSampler()


class TransformersRunner:
    """One loaded model + tokenizer: ``run(list of prompt ids, seeds)`` → ``[(new ids, finish)]`` for one batch."""

    backend = "transformers"

    def __init__(self, mp: ModelParams, tokenizer, seq2seq: bool, gen: GenParams, device: str | None = None):

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(mp).to(self.device).eval()
        self.seq2seq, self.gen = seq2seq, gen
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        own = self.model.generation_config
        ids = {"eos_token_id": self.eos, "pad_token_id": self.pad, "bos_token_id": tokenizer.bos_token_id}
        if seq2seq:
            ids["decoder_start_token_id"] = (
                own.decoder_start_token_id
                if own.decoder_start_token_id is not None
                else self.model.config.decoder_start_token_id
            )
        # The model's own generation_config.json fills every field we leave unset (transformers 5): replace it
        # so that only these settings and transformers' neutral defaults apply.
        self.model.generation_config = GenerationConfig(**ids)
        self.config = GenerationConfig(max_new_tokens=gen.max_new_tokens, do_sample=False, num_beams=1, **ids)
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.context = _context_limit(self.model, tokenizer, seq2seq)
        self.versions = _versions("torch", "transformers")
        # _Decoder serves it on CPU, where it was measured (P4) and checked against generate; on accelerators
        # transformers' generate (its well-kept path) runs the same length-bucketed batches
        self.direct = not seq2seq and on_cpu(self.device) and _direct_decoding(self.model)
        self.cpu_threads: int | None = None  # torch threads of the last batch on CPU (None on an accelerator)

    def run(self, batch: list[list[int]], seeds: list[int]) -> list[tuple[list[int], str]]:
        """One batch's ``(new ids, finish)``, in the batch's order: the runner's own loop where it serves the model;
        on CPU on every usable core (``threads.cpu_threads``; the count is kept in ``cpu_threads``)."""
        with cpu_threads(self.device) as threads:
            self.cpu_threads = threads if on_cpu(self.device) else None
            if self.direct and min(map(len, batch)) > 0:
                return _Decoder(self, seeds).run(batch)
            return self.run_generate(batch, seeds)

    def sampler(self, seeds: list[int]) -> LogitsProcessorList:
        return LogitsProcessorList([_seeded_sampler(seeds, self.gen, self.device)] if self.gen.do_sample else [])

    def run_generate(self, batch: list[list[int]], seeds: list[int]) -> list[tuple[list[int], str]]:
        """The batch through transformers' ``generate``, left-padded (the path of models ``_Decoder`` does not
        serve)."""
        width = max(map(len, batch))
        pad = [[self.pad] * (width - len(ids)) for ids in batch]
        mask = [[0] * len(p) + [1] * len(ids) for p, ids in zip(pad, batch, strict=True)]
        if self.seq2seq:  # encoder input: padded on the right
            rows, mask = [ids + p for p, ids in zip(pad, batch, strict=True)], [m[::-1] for m in mask]
        else:  # decoder-only: padded on the left, so every row's next token follows its prompt
            rows = [p + ids for p, ids in zip(pad, batch, strict=True)]
        input_ids = torch.tensor(rows, device=self.device)
        attention_mask = torch.tensor(mask, device=self.device)
        processors = self.sampler(seeds)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self.config,
                logits_processor=processors,
            )
        start = 1 if self.seq2seq else width  # seq2seq output starts with the decoder start token
        return [_finish(row[start:].tolist(), self.eos) for row in out]


# --------------------------------------------------------------------------------------------- the runner's decoding


def prefill_groups(lengths: Sequence[int], call_tokens: int = PREFILL_CALL_TOKENS) -> list[list[int]]:
    """The rows of one batch (indices into ``lengths``) split into prefill groups of near-equal length, longest first:
    runs of the length order, each padded to its first (longest) row, chosen to minimise padded tokens +
    ``call_tokens`` per forward call (an exact-length run pads nothing; a prompt far from its neighbours gets its own
    call). Dynamic programming over the runs."""
    return length_runs(lengths, run_cost=call_tokens)


def _direct_decoding(model) -> bool:
    """Whether ``_Decoder`` can run ``model``: its forward takes the cache, position ids and per-row logit positions,
    and its cache is plain ``DynamicLayer`` layers (no sliding window, no state-space layers)."""
    params = inspect.signature(model.forward).parameters
    if not {"cache", "position_ids", "logits_to_keep", "attention_mask"} <= params.keys():
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 — a config the cache cannot read: generate's path
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class _BufferLayer(DynamicLayer):
    """A cache layer over a preallocated ``[rows, heads, prompt width + max_new_tokens, head dim]`` buffer whose first
    ``n`` positions are filled: ``update`` writes the new positions in place and returns views, where
    ``DynamicLayer`` copies the whole cache into a new tensor at every step."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, n: int):
        super().__init__()
        self.buffers, self.n = (keys, values), n
        self.device, self.is_initialized = keys.device, True
        self.keys, self.values = keys[:, :, :n], values[:, :, :n]

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = self.buffers
        end = self.n + key_states.shape[-2]
        keys[:, :, self.n : end] = key_states
        values[:, :, self.n : end] = value_states
        self.n = end
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n


class _Decoder:
    """One batch through the runner's own loop: length-bucketed prefill (``prefill_groups``, each group right-padded,
    no mask), the groups' keys/values copied into one buffer, then every row decoded together: position ids = the
    row's own positions, a mask that hides each row's padding, the next token = argmax of the (sampler's) scores, a row
    finished at EOS fed padding until all rows finish or ``max_new_tokens`` — what ``generate`` does, without its
    per-step bookkeeping."""

    def __init__(self, runner: TransformersRunner, seeds: list[int]):
        self.r, self.processors = runner, runner.sampler(seeds)

    def pick(self, scores: torch.Tensor) -> torch.Tensor:
        return self.processors(None, scores.float()).argmax(-1)

    @torch.inference_mode()
    def prefill(self, batch: list[list[int]]) -> tuple[DynamicCache, torch.Tensor]:
        """The cache of the whole batch (positions ≥ a row's length: zeros, masked) and each row's next-token logits."""
        r, n, width = self.r, len(batch), max(map(len, batch))
        buffers, logits = [], None
        for group in prefill_groups([len(ids) for ids in batch]):
            g = len(batch[group[0]])
            ids = torch.tensor([batch[i] + [r.pad] * (g - len(batch[i])) for i in group], device=r.device)
            last = torch.tensor([[len(batch[i]) - 1] for i in group], device=r.device)
            part = DynamicCache(config=r.model.config)
            out = r.model(
                input_ids=ids,
                position_ids=torch.arange(g, device=r.device).expand(len(group), g),
                cache=part,
                use_cache=True,
                logits_to_keep=last,
            )
            if logits is None:
                logits = out.logits.new_zeros(n, out.logits.shape[-1], dtype=torch.float32)
                for layer in part.layers:
                    shape = (n, layer.keys.shape[1], width + r.gen.max_new_tokens)
                    buffers.append(
                        (
                            layer.keys.new_zeros(*shape, layer.keys.shape[-1]),
                            layer.values.new_zeros(*shape, layer.values.shape[-1]),
                        )
                    )
            rows = torch.tensor(group, device=r.device)
            logits[rows] = out.logits[:, -1].float()
            for (keys, values), layer in zip(buffers, part.layers, strict=True):
                keys[rows, :, :g] = layer.keys
                values[rows, :, :g] = layer.values
        cache = DynamicCache(config=r.model.config)
        cache.layers = [_BufferLayer(keys, values, width) for keys, values in buffers]
        return cache, logits

    @torch.inference_mode()
    def run(self, batch: list[list[int]]) -> list[tuple[list[int], str]]:
        r, n, width, steps = self.r, len(batch), max(map(len, batch)), self.r.gen.max_new_tokens
        cache, logits = self.prefill(batch)
        lengths = torch.tensor([len(ids) for ids in batch], device=r.device)
        mask = torch.zeros(n, width + steps, dtype=torch.long, device=r.device)
        mask[:, :width] = torch.arange(width, device=r.device) < lengths[:, None]
        if r.model.config._attn_implementation == "sdpa":  # SDPA's own boolean mask: not rebuilt at every step
            mask = mask.bool()[:, None, None, :]
        token = self.pick(logits)
        done, new = token == r.eos, [token]
        for step in range(1, steps):
            if bool(done.all()):
                break
            mask[..., width + step - 1] = 1  # the token fed now
            out = r.model(
                input_ids=token[:, None],
                attention_mask=mask[..., : width + step],
                position_ids=(lengths + step - 1)[:, None],
                cache=cache,
                use_cache=True,
            )
            token = torch.where(done, r.pad, self.pick(out.logits[:, -1]))
            done |= token == r.eos
            new.append(token)
        return [_finish(row, r.eos) for row in torch.stack(new, 1).tolist()]


# --------------------------------------------------------------------------------------------- vLLM backend


class VllmRunner:
    """The same prompt ids through vLLM (decoder-only; GPU machines). Greedy = temperature 0; sampling seeds each
    request like the transformers backend (its draws differ from transformers', hence ``backend`` in the key)."""

    backend = "vllm"

    def __init__(self, mp: ModelParams, tokenizer, seq2seq: bool, gen: GenParams, device: str | None = None):
        vllm = _import_vllm()
        if seq2seq:
            raise KitError(
                f"model {mp.name!r} is encoder-decoder: the vllm backend serves decoder-only models; set "
                "evaluate.backend: transformers"
            )
        self.vllm, self.gen, self.eos = vllm, gen, tokenizer.eos_token_id
        self.llm = vllm.LLM(
            model=resolve_model_path(mp.path),
            revision=mp.revision,
            dtype=mp.dtype,
            trust_remote_code=mp.trust_remote_code,
            seed=gen.seed,
        )
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.device, self.cpu_threads = "cuda", None
        self.context = self.llm.llm_engine.model_config.max_model_len
        self.versions = _versions("torch", "vllm")

    def run(self, batch: list[list[int]], seeds: list[int]) -> list[tuple[list[int], str]]:
        g = self.gen
        # ignore_eos: stop at the tokenizer's EOS id only, as the transformers backend does (not at other ids the
        # model's generation_config.json may list)
        params = [
            self.vllm.SamplingParams(
                max_tokens=g.max_new_tokens,
                temperature=g.temperature if g.do_sample else 0.0,
                top_p=g.top_p if g.do_sample else 1.0,
                seed=s if g.do_sample else None,
                ignore_eos=True,
                stop_token_ids=[self.eos],
            )
            for s in seeds
        ]
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in batch], params, use_tqdm=False)
        results = []
        for o in outs:
            # read from the ids first: an EOS that is the max_tokens-th id may finish as "length" in vLLM (its
            # length check can come before its stop check); it ended on its own all the same
            new, finish = _finish(list(o.outputs[0].token_ids), self.eos)
            if finish == "length" and o.outputs[0].finish_reason == "stop":  # the stop id left out of token_ids
                new, finish = new + [self.eos], "eos"
            results.append((new, finish))
        return results


def _import_vllm():
    try:
        import vllm  # optional: GPU machines only
    except ImportError:
        raise KitError(
            "backend 'vllm' (evaluate.backend) needs the vllm package, which is not installed here: "
            "install vllm on a GPU machine (pip install vllm), or set evaluate.backend: transformers"
        ) from None
    return vllm


RUNNERS: dict[str, Callable] = {"transformers": TransformersRunner, "vllm": VllmRunner}
