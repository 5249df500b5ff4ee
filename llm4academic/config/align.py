"""``align:`` — the align step's params: Direct Preference Optimisation (TRL's ``DPOTrainer``) of every studied
model, starting from its SFT checkpoint (or from the base model when the study trains none), on preference pairs
(hh-rlhf by default). Imports no torch.

Defaults follow alignment-handbook's Zephyr-7B-β full DPO recipe where it has one (beta 0.01 there; lr 5e-7,
1 epoch, cosine, warmup ratio 0.1, max length 1024 with max prompt 512); ``beta`` keeps DPO's customary 0.1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator, model_validator

from ..base import resolve_data_path
from .strict import _SLUG, _base_dir, _check_unique, _Strict

# TRL's pairwise DPO losses offered here: sigmoid = DPO (Rafailov et al.), ipo = IPO (Azar et al.; beta is its τ),
# hinge = SLiC, robust = robust DPO (label_smoothing = the flip rate). TRL computes each; the kit chooses.
AlignLoss = Literal["sigmoid", "ipo", "hinge", "robust"]
HH_RLHF_SAMPLE = "pkg:instruct/hh_rlhf/helpful-base-test.jsonl.gz"


class PreferenceSource(_Strict):
    """A file of preference pairs: every record must carry a chosen and a rejected reply (hh-rlhf's format)."""

    name: str = Field(pattern=_SLUG, description="short label, unique among align.sources")
    path: str = Field(description="file (.jsonl, .json, or gzip of either); pkg:… = shipped sample")
    format: Literal["auto", "hh_rlhf"] = Field(
        default="auto", description="the on-disk format; it must yield chosen/rejected pairs"
    )
    max_records: PositiveInt | None = Field(default=None, description="read only the first N valid records")

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str, info: ValidationInfo) -> str:
        p = resolve_data_path(v, _base_dir(info))
        if not p.is_file():
            raise ValueError(f"data file not found: {p}")
        return str(p)


def _hh_rlhf() -> list[PreferenceSource]:
    return [PreferenceSource(name="hh_rlhf", path=HH_RLHF_SAMPLE, format="hh_rlhf")]


class AlignFsdpParams(_Strict):
    enabled: bool = Field(
        default=True,
        description="on GPUs: FSDP2 full shard, auto-wrap on the card's layer class (policy and reference); "
        "on CPU the trainer runs DDP on gloo (or one process), and the report says which ran",
    )
    activation_checkpointing: bool = False
    cpu_offload: bool = False


class AlignLoraParams(_Strict):
    enabled: bool = Field(
        default=False, description="train LoRA adapters; the reference is the adapter-free model (no second copy)"
    )
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class AlignParams(_Strict):
    """DPO after SFT; ``notebook_launcher`` (or ``accelerate launch … llm4academic align``) starts the workers."""

    sources: list[PreferenceSource] = Field(default_factory=_hh_rlhf, min_length=1)
    models: list[str] | None = Field(
        default=None, description="names of the studied models to align (default: the ones the train step tunes)"
    )
    start: Literal["auto", "sft", "base"] = Field(
        default="auto",
        description="auto: the SFT checkpoint when the study's train step tuned the model, else the base model",
    )
    held_out: float = Field(
        default=0.1, gt=0, lt=1, description="share of the pairs held out (never trained on) to measure accuracy"
    )
    max_held_out: PositiveInt = Field(default=500, description="at most this many held-out pairs")
    max_pairs: PositiveInt | None = Field(default=None, description="train on at most this many pairs (seeded)")
    beta: PositiveFloat = Field(default=0.1, description="KL strength (IPO: τ)")
    loss_type: AlignLoss = "sigmoid"
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="robust loss: the assumed flip rate")
    max_length: PositiveInt = Field(default=1024, description="prompt + reply tokens; longer replies are cut")
    max_prompt_length: PositiveInt = Field(
        default=512, description="pairs whose prompt has more tokens are skipped (counted per model)"
    )
    per_device_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 2
    learning_rate: PositiveFloat = 5e-7
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    num_epochs: PositiveFloat = 1
    max_steps: PositiveInt | None = Field(default=None, description="stop after this many optimizer steps")
    max_grad_norm: PositiveFloat | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    lora: AlignLoraParams = Field(default_factory=AlignLoraParams)
    fsdp: AlignFsdpParams = Field(default_factory=AlignFsdpParams)
    num_processes: PositiveInt = 2
    cpu: bool | None = Field(default=None, description="run on CPU (gloo); default: when no GPU is visible")
    main_process_port: int = Field(default=29700, ge=1024, le=65535)
    save_steps: PositiveInt = 500
    save_total_limit: PositiveInt = 1
    logging_steps: PositiveInt = 1
    resume: bool = Field(default=True, description="resume from the latest checkpoint of the same run")
    eval_batch_size: PositiveInt = Field(default=8, description="held-out log-probabilities, pairs per batch")
    examples: int = Field(default=4, ge=0, le=50, description="held-out prompts answered by start and DPO model")
    example_max_new_tokens: PositiveInt = 64

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[PreferenceSource]) -> list[PreferenceSource]:
        _check_unique([s.name for s in v], "align source name")
        return v

    @model_validator(mode="after")
    def _prompt_fits(self) -> AlignParams:
        if self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"align.max_prompt_length ({self.max_prompt_length}) must be below align.max_length "
                f"({self.max_length}): the reply needs room"
            )
        if self.lora.enabled and self.fsdp.enabled:
            raise ValueError(
                "align.lora.enabled trains the adapters under DDP (every rank holds the frozen model); "
                "set align.fsdp.enabled: false"
            )
        return self
