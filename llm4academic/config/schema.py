"""The study params' schema: every key a params file may hold, its type, default and description (pydantic).
The lists of names it validates against live in ``names.py``. Imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..base import KitError, resolve_data_path
from .align import AlignParams
from .judge import JudgeParams
from .names import (
    BACKENDS,
    FORMAT_NAMES,
    MODEL_CARDS,
    SCORERS,
    STEPS,
    TEMPLATES,
    TINY_ARCHS,
    TINY_PREFIX,
    Backend,
    FormatName,
    ModelCardName,
    ScorerName,
    SplitName,
    Step,
    TemplateName,
    TinyArch,
)
from .strict import _HUB_ID, _SLUG, _base_dir, _check_unique, _Strict

__all__ = [
    "Step",
    "STEPS",
    "FormatName",
    "FORMAT_NAMES",
    "ModelCardName",
    "MODEL_CARDS",
    "TemplateName",
    "TEMPLATES",
    "TinyArch",
    "TINY_ARCHS",
    "TINY_PREFIX",
    "ScorerName",
    "SCORERS",
    "SplitName",
    "Backend",
    "BACKENDS",
    "ConfigError",
    "SourceParams",
    "NearDedupParams",
    "CleanParams",
    "ContaminationParams",
    "MixParams",
    "DataParams",
    "ModelParams",
    "FsdpParams",
    "LoraParams",
    "TrainParams",
    "AlignParams",
    "ExploreParams",
    "JudgeParams",
    "EvaluateParams",
    "CompareParams",
    "ReportParams",
    "StudyParams",
]


class ConfigError(KitError):
    """Bad params: the message names the file, line and key path."""


# --------------------------------------------------------------------------------------------- schema


class SourceParams(_Strict):
    """One instruction dataset file."""

    name: str = Field(pattern=_SLUG, description="short label, unique in the study")
    path: str = Field(description="file (.json array, .jsonl, or gzip of either); pkg:… = shipped sample")
    format: Literal[("auto", *FORMAT_NAMES)] = "auto"  # type: ignore[valid-type]
    language: str | None = Field(default=None, description="ISO code for every record; None = detect per record")
    max_records: PositiveInt | None = Field(default=None, description="read only the first N valid records")
    weight: PositiveFloat | None = Field(default=None, description="share of the mix, relative to other weights")
    count: PositiveInt | None = Field(default=None, description="exactly this many records in the mix")
    replace: bool = Field(default=False, description="sample with replacement (to go past what the file holds)")

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str, info: ValidationInfo) -> str:
        p = resolve_data_path(v, _base_dir(info))
        if not p.is_file():
            raise ValueError(f"data file not found: {p}")
        return str(p)

    @model_validator(mode="after")
    def _weight_or_count(self) -> SourceParams:
        if self.weight is not None and self.count is not None:
            raise ValueError("give weight (a share of the mix) or count (a number of records), not both")
        return self


class NearDedupParams(_Strict):
    enabled: bool = True
    threshold: float = Field(default=0.85, gt=0, le=1, description="estimated Jaccard similarity of shingles")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations")
    shingle: int = Field(default=5, ge=1, le=32, description="character n-gram size on normalised text")


class CleanParams(_Strict):
    exact_dedup: bool = Field(default=True, description="drop records whose normalised text repeats an earlier one")
    near_dedup: NearDedupParams = Field(default_factory=NearDedupParams)
    languages: list[str] | None = Field(default=None, description="keep only records in these languages")
    tokenizer: str | None = Field(
        default=None, description="model whose tokens the length filters count (default: the study's first model)"
    )
    min_output_tokens: PositiveInt | None = None
    max_total_tokens: PositiveInt | None = Field(default=None, description="instruction + input + output")


class ContaminationParams(_Strict):
    enabled: bool = True
    n_en: int = Field(default=13, ge=3, le=50, description="word n-grams for English text")
    n_zh: int = Field(default=13, ge=3, le=50, description="character n-grams for Chinese text")
    min_en: int = Field(
        default=5,
        ge=1,
        description="Z-Bench texts shorter than n_en words are matched whole "
        "when they have at least this many words (else reported as too short to check)",
    )
    min_zh: int = Field(default=8, ge=1, description="the same, in Chinese characters")
    fields: list[Literal["prompt", "reference"]] = Field(default_factory=lambda: ["prompt", "reference"], min_length=1)


class MixParams(_Strict):
    total: PositiveInt | None = Field(
        default=None,
        description="records drawn by the weighted sources (default: as many as their files allow without replacement)",
    )
    shuffle: bool = Field(default=True, description="shuffle the mix (seeded)")


class DataParams(_Strict):
    sources: list[SourceParams] = Field(min_length=1)
    on_invalid: Literal["error", "skip"] = Field(
        default="error", description="error: stop at the first bad record (file:line); skip: count and go on"
    )
    clean: CleanParams = Field(default_factory=CleanParams)
    contamination: ContaminationParams = Field(default_factory=ContaminationParams)
    decontaminate: bool = Field(default=False, description="drop training records that overlap Z-Bench")
    mix: MixParams = Field(default_factory=MixParams)
    cache: bool = Field(
        default=True,
        description="reuse loaded sources (Arrow) and step results from the kit's cache (.cache/data), keyed by "
        "file sha256, loader version and params",
    )
    num_proc: PositiveInt | None = Field(
        default=None, description="worker processes for large corpora (≥ 50,000 records); None = every usable CPU"
    )

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[SourceParams]) -> list[SourceParams]:
        _check_unique([s.name for s in v], "source name")
        return v


class ModelParams(_Strict):
    """A foundation model under study: ``tiny:<arch>`` (built offline), a hub id or a local directory."""

    name: str = Field(pattern=_SLUG, description="short label, unique in the study")
    path: str
    trust_remote_code: bool = Field(default=False, description="run the checkpoint's own Python code")
    revision: str | None = None
    card: ModelCardName | None = Field(
        default=None, description="model family card (catalog); default: from the checkpoint's model_type"
    )
    template: TemplateName | None = Field(default=None, description="prompt template; default: the card's")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None
    allow_pickle_weights: bool = Field(
        default=False,
        description="load PyTorch .bin weights when the checkpoint has no safetensors: a risk, since unpickling a "
        "file runs any code its author put in it; only for checkpoints from a source you trust",
    )

    @field_validator("path")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        if v.startswith(TINY_PREFIX):
            arch = v[len(TINY_PREFIX) :]
            if arch not in TINY_ARCHS:
                raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")
            return v
        local = Path(v).expanduser()
        local = local if local.is_absolute() else _base_dir(info) / local
        if local.is_dir():
            return str(local.resolve())
        if v.startswith((".", "/", "~")) or not _HUB_ID.match(v):
            raise ValueError(f"model directory not found: {local.resolve()} (or give a hub id like org/name)")
        return v  # a hub id


class FsdpParams(_Strict):
    enabled: bool = Field(
        default=True,
        description="shard with FSDP (full shard, auto-wrap on the card's layer class); false = DDP across processes",
    )
    version: Literal[1, 2] = 2
    activation_checkpointing: bool = False
    cpu_offload: bool = False


class LoraParams(_Strict):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    save: Literal["merged", "adapter"] = Field(default="merged", description="merged weights or the adapter only")


class TrainParams(_Strict):
    """The stanford_alpaca recipe, per model; ``notebook_launcher`` starts ``num_processes`` workers."""

    method: Literal["full", "lora"] = "full"
    lora: LoraParams = Field(default_factory=LoraParams)
    max_length: PositiveInt = 512
    packing: bool = Field(default=True, description="pack examples into rows (no attention across examples)")
    group_by_length: bool = Field(default=False, description="padding mode only: batches of similar length")
    num_proc: PositiveInt | None = Field(
        default=None,
        description="processes that tokenise the mix (forked datasets.map workers, at least 5,000 records each); "
        "None = every usable CPU",
    )
    per_device_batch_size: PositiveInt = 4
    gradient_accumulation_steps: PositiveInt = 8
    learning_rate: PositiveFloat = 2e-5
    weight_decay: float = Field(default=0.0, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    num_epochs: PositiveFloat = 3
    max_steps: PositiveInt | None = Field(default=None, description="stop after this many optimizer steps")
    max_grad_norm: PositiveFloat | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    tf32: bool = Field(default=True, description="allow TF32 matmuls on GPU")
    fsdp: FsdpParams = Field(default_factory=FsdpParams)
    num_processes: PositiveInt = 2
    cpu: bool | None = Field(default=None, description="train on CPU (gloo); default: when no GPU is visible")
    main_process_port: int = Field(default=29500, ge=1024, le=65535)
    save_steps: PositiveInt = 2000
    save_total_limit: PositiveInt = 1
    logging_steps: PositiveInt = 1
    resume: bool = Field(default=True, description="resume from the latest checkpoint in the output dir")
    models: list[str] | None = Field(default=None, description="names of the models to train (default: all)")


class ExploreParams(_Strict):
    sample_records: int = Field(default=6, ge=0, le=200, description="records shown per source")


class EvaluateParams(_Strict):
    splits: list[SplitName] = Field(default_factory=lambda: list(get_args(SplitName)), min_length=1)
    limit: PositiveInt | None = Field(default=None, description="the first N prompts of each split")
    items: list[str] | None = Field(
        default=None,
        min_length=1,
        description="exactly these Z-Bench item ids (e.g. advanced-193), instead of the first `limit` of each split",
    )
    base: bool = Field(default=True, description="evaluate the base models")
    tuned: bool = Field(default=True, description="evaluate the models the train step tuned")
    aligned: bool = Field(default=True, description="evaluate the models the align step tuned")
    max_new_tokens: PositiveInt = 256
    batch_size: PositiveInt = 16
    backend: Backend = Field(
        default="transformers",
        description="transformers (batched HF generate) or vllm "
        "(GPU; needs the vllm package, which the kit does not install)",
    )
    do_sample: bool = False
    temperature: PositiveFloat = 1.0
    top_p: float = Field(default=1.0, gt=0, le=1)
    scorers: list[ScorerName] = Field(default_factory=lambda: list(SCORERS), min_length=1)
    judge: JudgeParams = Field(default_factory=JudgeParams)

    @model_validator(mode="after")
    def _items_or_limit(self) -> EvaluateParams:
        if self.items is not None:
            if self.limit is not None:
                raise ValueError("evaluate.items and evaluate.limit both choose the items: set one of them")
            _check_unique(self.items, "Z-Bench item")
            outside = [i for i in self.items if i.split("-")[0] not in self.splits]
            if outside:
                raise ValueError(
                    f"evaluate.items: {', '.join(outside)} not in evaluate.splits "
                    f"({', '.join(self.splits)}); item ids look like basic-000, advanced-193, domain-012"
                )
        return self


class CompareParams(_Strict):
    n_boot: int = Field(default=1000, ge=100, le=100_000, description="bootstrap resamples for every interval")
    min_tag_items: PositiveInt = Field(default=3, description="findings per task tag need this many items")
    examples: list[str] | None = Field(
        default=None,
        description="Z-Bench item ids shown side by side; default: the items on which the studied models differ most",
    )
    reference_models: list[str] | None = Field(
        default=None,
        description="Z-Bench reference models shown next to the studied models' answers; default: the three best",
    )


class ReportParams(_Strict):
    show_inputs: bool = Field(default=False, description="show code cells in the HTML reports")
    notebook_timeout_s: PositiveInt = Field(default=3600, description="a notebook running longer is stopped")


class StudyParams(_Strict):
    name: str = Field(pattern=_SLUG, description="the study's name; its report goes to reports/<name>/")
    description: str = ""
    seed: int = 0
    data: DataParams
    models: list[ModelParams] = Field(min_length=1)
    steps: list[Step] = Field(default_factory=lambda: list(STEPS))
    explore: ExploreParams = Field(default_factory=ExploreParams)
    train: TrainParams = Field(default_factory=TrainParams)
    align: AlignParams = Field(default_factory=AlignParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    compare: CompareParams = Field(default_factory=CompareParams)
    report: ReportParams = Field(default_factory=ReportParams)

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelParams]) -> list[ModelParams]:
        _check_unique([m.name for m in v], "model name")
        return v

    @model_validator(mode="after")
    def _steps_in_order(self) -> StudyParams:
        _check_unique(self.steps, "step")
        self.steps = sorted(self.steps, key=STEPS.index)
        return self

    @model_validator(mode="after")
    def _tokenizer_is_a_model(self) -> StudyParams:
        names = [m.name for m in self.models]
        if self.data.clean.tokenizer is not None and self.data.clean.tokenizer not in names:
            raise ValueError(
                f"data.clean.tokenizer: {self.data.clean.tokenizer!r} is not one of the study's "
                f"models ({', '.join(names)})"
            )
        return self

    @model_validator(mode="after")
    def _lora_without_fsdp(self) -> StudyParams:
        if self.train.method == "lora" and self.train.fsdp.enabled:
            raise ValueError(
                "train.method: lora trains the adapters under DDP (every rank holds the frozen base "
                "model); set train.fsdp.enabled: false"
            )
        return self

    @model_validator(mode="after")
    def _trained_models_exist(self) -> StudyParams:
        names = [m.name for m in self.models]
        unknown = [n for n in self.train.models or [] if n not in names]
        if unknown:
            raise ValueError(
                f"train.models: {', '.join(map(repr, unknown))} not among the study's models ({', '.join(names)})"
            )
        return self

    @model_validator(mode="after")
    def _aligned_models_exist(self) -> StudyParams:
        names = [m.name for m in self.models]
        unknown = [n for n in self.align.models or [] if n not in names]
        if unknown:
            raise ValueError(
                f"align.models: {', '.join(map(repr, unknown))} not among the study's models ({', '.join(names)})"
            )
        return self

    def model(self, name: str) -> ModelParams:
        for m in self.models:
            if m.name == name:
                return m
        raise KitError(f"no model named {name!r} in the study (models: {', '.join(m.name for m in self.models)})")

    @property
    def trained_models(self) -> list[ModelParams]:
        return [m for m in self.models if self.train.models is None or m.name in self.train.models]

    @property
    def aligned_models(self) -> list[ModelParams]:
        """The models the align step tunes: ``align.models``, else the ones the train step tunes (when it runs),
        else all."""
        if self.align.models is not None:
            return [m for m in self.models if m.name in self.align.models]
        return self.trained_models if "train" in self.steps else list(self.models)

    @property
    def length_tokenizer(self) -> ModelParams:
        """The model whose tokenizer the data length filters count in."""
        return self.model(self.data.clean.tokenizer or self.models[0].name)
