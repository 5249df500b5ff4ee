"""A study's run directory (``reports/<study>/``): the contract between the notebooks.

Every step writes its artifacts here and later steps (and the runner, and ``llm4academic compare``) read them back.
This module is the only place that spells a path inside a run directory; everything else asks a ``RunDir``::

    reports/<study>/
      manifest.json · index.html · NN_<step>.ipynb · NN_<step>.html      the runner (pipeline.py)
      artifacts/data/      mix.jsonl · mix_summary.json · load_report.json · clean_report.json ·
                           contamination.json · data_summary.json           explore (data.save)
      artifacts/explore/   summary.json · char_lengths.csv · token_lengths.csv
      artifacts/train/     checkpoints.json (the index the evaluate step reads)
        <model>/           dataset/ · data_stats.json · fsdp.json · metrics.jsonl · tensorboard/ ·
                           checkpoint-<step>/ · final/ · summary.json         train (train.py)
      artifacts/align/     pairs/ (train · held_out) · pairs_report.json · checkpoints.json (the index the evaluate
                           step reads) · held_out.csv (reward accuracy, SFT vs DPO) · examples.json
        <model>/           the align run of one DPO model (e.g. tiny-llama-tuned-dpo): distributed.json ·
                           metrics.jsonl · tensorboard/ · checkpoint-<step>/ · final/ · summary.json   align (align.py)
      artifacts/generations/  <model>-<hash>.jsonl (the answer cache)      evaluate (generate.py)
      artifacts/judge_cache.jsonl  the endpoint judge's replies            evaluate (scoring/endpoint.py)
      artifacts/evaluate/  evaluate.json · scores|answers|judge|pairwise.parquet · summary.csv · by_tag.csv ·
                           zbench_<split>.csv                                evaluate (evaluate.py)
      artifacts/compare/   headline.json · leaderboard.png · <table>.csv     compare (compare/)

It imports no torch: analysis code reads training results without importing training code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .base import atomic_write, read_json, write_json

# The step notebooks, in the order they run (the source files under notebooks/ carry the same names).
NOTEBOOKS: dict[str, str] = {
    "explore": "01_explore_data.ipynb",
    "train": "02_train_fsdp.ipynb",
    "align": "03_align_dpo.ipynb",
    "evaluate": "04_evaluate_zbench.ipynb",
    "compare": "05_compare_models.ipynb",
}
EVALUATE_TABLES: tuple[str, ...] = ("scores", "answers", "judge", "pairwise")  # parquet, under artifacts/evaluate/
COMPARE_TABLES: tuple[str, ...] = (
    "leaderboard",
    "leaderboard_unflagged",
    "by_tag",
    "deltas",
    "findings",
    "length_bias",
    "primary_scores",
    "judge_agreement",
    "truncation",
    "stages",
    "dpo_vs_start",
)  # CSV, under artifacts/compare/


# How the evaluate step names the models a study produces: ``<base>-tuned`` (the train step's SFT model of
# ``<base>``), ``<start>-dpo`` (the align step's DPO model started from ``<start>``: ``<base>-tuned-dpo`` after SFT,
# ``<base>-dpo`` straight from the base model).
FINGERPRINT_FILE = "run_fingerprint.json"  # written last into an align checkpoint: the run that wrote it
TUNED_SUFFIX = "-tuned"
DPO_SUFFIX = "-dpo"
STAGES: tuple[str, ...] = ("base", "sft", "dpo", "sft+dpo")


def lineage(model: str) -> tuple[str, str]:
    """``(base, stage)`` of a studied model's name: ``x`` → (x, base), ``x-tuned`` → (x, sft), ``x-dpo`` →
    (x, dpo), ``x-tuned-dpo`` → (x, sft+dpo)."""
    dpo = model.endswith(DPO_SUFFIX)
    rest = model.removesuffix(DPO_SUFFIX) if dpo else model
    sft = rest.endswith(TUNED_SUFFIX)
    base = rest.removesuffix(TUNED_SUFFIX) if sft else rest
    return base, {(False, False): "base", (True, False): "sft", (False, True): "dpo", (True, True): "sft+dpo"}[
        (sft, dpo)
    ]


class RunDir:
    """Paths and typed readers/writers of one study's run directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # ----------------------------------------------------------------------------------------- the report
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def index(self) -> Path:
        return self.root / "index.html"

    def notebook(self, step: str) -> Path:
        """The executed notebook of ``step``."""
        return self.root / NOTEBOOKS[step]

    def html(self, step: str) -> Path:
        return self.notebook(step).with_suffix(".html")

    @property
    def lock(self) -> Path:
        """Held (``fcntl.flock``) by the run writing this directory: a second concurrent run is refused."""
        return self.root / ".run.lock"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run directory (how pages inside it link to an artifact)."""
        return Path(os.path.relpath(Path(path).resolve(), self.root)).as_posix()

    # ----------------------------------------------------------------------------------------- explore: the data
    @property
    def data_dir(self) -> Path:
        return self.artifacts / "data"

    @property
    def mix(self) -> Path:
        """The training mix, one unified record per line (the train step's input)."""
        return self.data_dir / "mix.jsonl"

    @property
    def mix_summary(self) -> Path:
        return self.data_dir / "mix_summary.json"

    @property
    def load_report(self) -> Path:
        return self.data_dir / "load_report.json"

    @property
    def clean_report(self) -> Path:
        return self.data_dir / "clean_report.json"

    @property
    def contamination(self) -> Path:
        return self.data_dir / "contamination.json"

    @property
    def data_summary(self) -> Path:
        return self.data_dir / "data_summary.json"

    @property
    def explore_dir(self) -> Path:
        return self.artifacts / "explore"

    @property
    def explore_summary(self) -> Path:
        return self.explore_dir / "summary.json"

    @property
    def char_lengths(self) -> Path:
        return self.explore_dir / "char_lengths.csv"

    @property
    def token_lengths(self) -> Path:
        return self.explore_dir / "token_lengths.csv"

    # ----------------------------------------------------------------------------------------- train
    @property
    def train_dir(self) -> Path:
        return self.artifacts / "train"

    @property
    def checkpoint_index(self) -> Path:
        """Each trained model's final checkpoint: what the evaluate step loads."""
        return self.train_dir / "checkpoints.json"

    def model_dir(self, model: str) -> Path:
        """One trained model's folder (its training output directory)."""
        return self.train_dir / model

    def dataset(self, model: str) -> Path:
        """The tokenised (and packed) mix for ``model``, as ``datasets.save_to_disk`` wrote it."""
        return self.model_dir(model) / "dataset"

    def data_stats(self, model: str) -> Path:
        return self.model_dir(model) / "data_stats.json"

    def fsdp(self, model: str) -> Path:
        """What engaged in the workers: distributed type, world size, sharded parameters."""
        return self.model_dir(model) / "fsdp.json"

    def metrics(self, model: str) -> Path:
        return self.model_dir(model) / "metrics.jsonl"

    def tensorboard(self, model: str) -> Path:
        return self.model_dir(model) / "tensorboard"

    def train_summary(self, model: str) -> Path:
        return self.model_dir(model) / "summary.json"

    def final(self, model: str) -> Path:
        """The consolidated Hugging Face checkpoint (safetensors) of a finished training."""
        return self.model_dir(model) / "final"

    def checkpoint(self, model: str, step: int) -> Path:
        """A sharded resumable checkpoint (complete once its ``trainer_state.json`` exists)."""
        return self.model_dir(model) / f"checkpoint-{step}"

    def checkpoints(self, model: str) -> list[Path]:
        """Completed checkpoints of ``model``, oldest first."""
        found = [p for p in self.model_dir(model).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    # ----------------------------------------------------------------------------------------- align (DPO)
    @property
    def align_dir(self) -> Path:
        return self.artifacts / "align"

    @property
    def align_pairs(self) -> Path:
        """The preference pairs as ``datasets.DatasetDict.save_to_disk`` wrote them: ``train`` and ``held_out``
        (pairs the DPO run never trains on)."""
        return self.align_dir / "pairs"

    @property
    def align_pairs_report(self) -> Path:
        """Pairs read, kept, and skipped by reason (no pair, identical, empty, prompt too long), per source."""
        return self.align_dir / "pairs_report.json"

    @property
    def align_index(self) -> Path:
        """Each DPO model's final checkpoint: what the evaluate step loads (``<start>-dpo``)."""
        return self.align_dir / "checkpoints.json"

    @property
    def align_held_out(self) -> Path:
        """Held-out preference accuracy of every start (SFT or base) and DPO model, with intervals."""
        return self.align_dir / "held_out.csv"

    @property
    def align_examples(self) -> Path:
        """A few held-out prompts answered by the start model and the DPO model (plain text)."""
        return self.align_dir / "examples.json"

    def align_model_dir(self, model: str) -> Path:
        """One DPO run's folder, named by the model it produces (``<start>-dpo``)."""
        return self.align_dir / model

    def align_dataset(self, model: str) -> Path:
        """The pairs tokenised for the DPO run (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), as trained."""
        return self.align_model_dir(model) / "dataset"

    def align_data_stats(self, model: str) -> Path:
        """Pairs tokenised, skipped (prompt too long) and cut (reply past ``align.max_length``) for the run."""
        return self.align_model_dir(model) / "data_stats.json"

    def align_distributed(self, model: str) -> Path:
        """What engaged in the align workers: distributed type, processes, FSDP version."""
        return self.align_model_dir(model) / "distributed.json"

    def align_metrics(self, model: str) -> Path:
        return self.align_model_dir(model) / "metrics.jsonl"

    def align_tensorboard(self, model: str) -> Path:
        return self.align_model_dir(model) / "tensorboard"

    def align_summary(self, model: str) -> Path:
        return self.align_model_dir(model) / "summary.json"

    def align_final(self, model: str) -> Path:
        """The DPO model's consolidated checkpoint (safetensors)."""
        return self.align_model_dir(model) / "final"

    def align_checkpoint(self, model: str, step: int) -> Path:
        """The trainer's resumable checkpoint of ``model`` after ``step`` optimizer steps."""
        return self.align_model_dir(model) / f"checkpoint-{step}"

    def align_checkpoints(self, model: str) -> list[Path]:
        """Completed align checkpoints (the trainer's ``checkpoint-<step>``, complete once the kit has written its
        ``run_fingerprint.json`` into it), oldest first."""
        found = [p for p in self.align_model_dir(model).glob("checkpoint-*") if (p / FINGERPRINT_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    # ----------------------------------------------------------------------------------------- evaluate
    @property
    def generations(self) -> Path:
        """The answer cache: one JSONL file per model identity (generate.py)."""
        return self.artifacts / "generations"

    @property
    def judge_cache(self) -> Path:
        """The endpoint judge's replies: one JSONL row per request (scoring/verdict_cache.py's ``VerdictCache``)."""
        return self.artifacts / "judge_cache.jsonl"

    @property
    def evaluate_dir(self) -> Path:
        return self.artifacts / "evaluate"

    @property
    def evaluate_info(self) -> Path:
        """What the evaluate step ran: models, items, scorers, decoding, cache reports."""
        return self.evaluate_dir / "evaluate.json"

    def evaluate_table(self, name: str) -> Path:
        if name not in EVALUATE_TABLES:
            raise ValueError(f"unknown evaluate table {name!r}; expected one of {', '.join(EVALUATE_TABLES)}")
        return self.evaluate_dir / f"{name}.parquet"

    @property
    def evaluate_summary(self) -> Path:
        return self.evaluate_dir / "summary.csv"

    @property
    def evaluate_by_tag(self) -> Path:
        return self.evaluate_dir / "by_tag.csv"

    def zbench_csv(self, split: str) -> Path:
        """The seed's side-by-side layout for one Z-Bench split."""
        return self.evaluate_dir / f"zbench_{split}.csv"

    # ----------------------------------------------------------------------------------------- compare
    @property
    def compare_dir(self) -> Path:
        return self.artifacts / "compare"

    @property
    def headline(self) -> Path:
        """What the index page shows: the leaderboard with intervals and the findings."""
        return self.compare_dir / "headline.json"

    @property
    def leaderboard_png(self) -> Path:
        return self.compare_dir / "leaderboard.png"

    def compare_table(self, name: str) -> Path:
        if name not in COMPARE_TABLES:
            raise ValueError(f"unknown compare table {name!r}; expected one of {', '.join(COMPARE_TABLES)}")
        return self.compare_dir / f"{name}.csv"

    # ----------------------------------------------------------------------------------------- typed readers, writers
    def read_manifest(self) -> dict[str, Any] | None:
        return read_json(self.manifest)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest, manifest, default=None)

    def read_checkpoint_index(self) -> list[dict[str, Any]]:
        """``[{model, final, steps, last_loss}, …]``; empty when no train step ran."""
        return (read_json(self.checkpoint_index) or {}).get("models", [])

    def write_checkpoint_index(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        index = {"models": entries}
        atomic_write(self.checkpoint_index, json.dumps(index, indent=2))
        return index

    def read_align_index(self) -> list[dict[str, Any]]:
        """``[{model, base, start, final, steps, last_loss}, …]`` — ``model`` is the DPO model's name
        (``<start>-dpo``), ``start`` the model it started from (``<base>-tuned`` or ``<base>``); empty when no
        align step ran."""
        return (read_json(self.align_index) or {}).get("models", [])

    def write_align_index(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        index = {"models": entries}
        atomic_write(self.align_index, json.dumps(index, indent=2))
        return index

    def read_align_summary(self, model: str) -> dict[str, Any] | None:
        return read_json(self.align_summary(model))

    def read_align_metrics(self, model: str) -> pd.DataFrame:
        """One row per logged DPO step (``step, epoch, loss, lr, grad_norm, rewards/accuracies, rewards/margins,
        rewards/chosen, rewards/rejected, logps/chosen, logps/rejected, kl/implicit, …``)."""
        path = self.align_metrics(model)
        return pd.read_json(path, lines=True) if path.is_file() and path.stat().st_size else pd.DataFrame()

    def read_align_held_out(self) -> pd.DataFrame | None:
        return pd.read_csv(self.align_held_out) if self.align_held_out.is_file() else None

    def read_train_summary(self, model: str) -> dict[str, Any] | None:
        return read_json(self.train_summary(model))

    def read_data_stats(self, model: str) -> dict[str, Any] | None:
        return read_json(self.data_stats(model))

    def read_fsdp(self, model: str) -> dict[str, Any] | None:
        return read_json(self.fsdp(model))

    def read_metrics(self, model: str) -> pd.DataFrame:
        """One row per logged optimizer step (``step, epoch, loss, lr, grad_norm, tokens, tokens_per_s, mfu``)."""
        path = self.metrics(model)
        return pd.read_json(path, lines=True) if path.is_file() and path.stat().st_size else pd.DataFrame()

    def read_data_summary(self) -> dict[str, Any] | None:
        return read_json(self.data_summary)

    def read_explore_summary(self) -> dict[str, Any] | None:
        return read_json(self.explore_summary)

    def read_evaluate_info(self) -> dict[str, Any] | None:
        return read_json(self.evaluate_info)

    def read_evaluate_table(self, name: str) -> pd.DataFrame | None:
        path = self.evaluate_table(name)
        return pd.read_parquet(path) if path.is_file() else None

    def write_evaluate_table(self, name: str, frame: pd.DataFrame) -> Path:
        """Object columns as text (answers may mix types), written to a temporary name, then renamed."""
        path = self.evaluate_table(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.partial.parquet")
        frame.astype({c: str for c in frame.columns if frame[c].dtype == object}).to_parquet(tmp, index=False)
        tmp.replace(path)
        return path

    def read_headline(self) -> dict[str, Any] | None:
        """The compare step's headline; its ``figure`` is ``None`` when the figure file is missing."""
        headline = read_json(self.headline)
        if headline and not (headline.get("figure") and (self.root / headline["figure"]).is_file()):
            headline["figure"] = None
        return headline
