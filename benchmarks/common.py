"""What every benchmark case shares: its goals, the run's sizes, the shared set-up, numbers and table cells.

A ``Goal`` holds its target once: the JSON's goal text (``"≥ 6× stanford's per-example preprocess"``) and the
table's goal cell (``"≥ 6×"``) are both rendered from it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm4academic import data, models, packing, sft
from llm4academic.base import project_root
from llm4academic.config import ModelParams, load_params

MODEL = "tiny:llama"
SEED = 42
_OPS = {">=": "≥", "<=": "≤"}


@dataclass(frozen=True)
class Goal:
    metric: str  # key in the case's "metrics"
    op: str  # ">=" or "<="
    target: float
    unit: str  # "×" (a ratio), "%" (target is a fraction) or "s" (seconds)
    what: str = ""  # the rest of the sentence: "≥ 6×" + " stanford's per-example preprocess"

    def amount(self, spoken: bool = False) -> str:
        """The target with its unit: ``6×``, ``70%``, ``300 s`` (``spoken``: whole minutes as ``5 minutes``)."""
        if self.unit == "%":
            return f"{round(self.target * 100, 6):g}%"
        if self.unit == "s":
            if spoken and self.target >= 60 and self.target % 60 == 0:
                return f"{self.target / 60:g} minutes"
            return f"{self.target:g} s"
        return f"{self.target:g}{self.unit}"

    @property
    def short(self) -> str:
        """The table's goal cell: ``≥ 6×``, ``≥ 97%``, ``≤ 300 s``."""
        return f"{_OPS[self.op]} {self.amount()}"

    @property
    def text(self) -> str:
        """The goal in words (the JSON's ``goal`` and ``goals[].text``)."""
        return " ".join(x for x in (f"{_OPS[self.op]} {self.amount(spoken=True)}", self.what) if x)

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.target if self.op == ">=" else value <= self.target

    def to_dict(self) -> dict:
        return {"metric": self.metric, "op": self.op, "target": self.target, "text": self.text}


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    title: str
    goals: tuple[Goal, ...]

    @property
    def goal_cell(self) -> str:
        """The table's goal column: every goal's target, ``≥ 6× · ≥ 70%``."""
        return " · ".join(g.short for g in self.goals)


@dataclass(frozen=True)
class Sizes:
    p1_records: int
    p1_repeats: int
    profile: bool  # P1 cProfile, P3/P4 torch.profiler runs (full mode): where the time goes
    p2_seeds: int
    p3_repeats: int
    p3_steps: int
    p3_loss_examples: int
    p4_prompts: int
    p4_repeats: int
    p5_args: tuple[str, ...]  # gpu.py arguments when CUDA is available
    p6_run: bool


FULL = Sizes(
    p1_records=40_000,
    p1_repeats=4,
    profile=True,
    p2_seeds=5,
    p3_repeats=3,
    p3_steps=10,
    p3_loss_examples=32,
    p4_prompts=311,  # all of Z-Bench, as evaluate answers it
    p4_repeats=5,
    p5_args=(),
    p6_run=True,
)
QUICK = Sizes(
    p1_records=1_500,
    p1_repeats=3,
    profile=False,
    p2_seeds=3,
    p3_repeats=3,
    p3_steps=2,
    p3_loss_examples=12,
    p4_prompts=16,
    p4_repeats=3,
    p5_args=("--steps", "10", "--warmup", "3"),
    p6_run=False,
)


class Skip(Exception):
    """A case that cannot run here: ``Skip(reason[, raw])``; the reason goes into the result, ``passed`` stays null."""


# --------------------------------------------------------------------------------------------- numbers


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rnd(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def limit(
    value: float | None, name: str, what: str, *, of: str = "ratio", unit: str = "×", shares: list[float] | None = None
) -> dict | None:
    """A case's limit (what its ``of`` — ``"ratio"`` or ``"value"`` — could reach at best, e.g. the token-efficiency
    bound), returned by ``run`` as ``"limit"``. The harness adds ``share`` (measured / limit, unless the case gives
    per-repeat ``shares``, kit and limit timed in the same repeat: then their median, the shares kept as
    ``per_repeat``) to the entry, the metric ``share_of_limit`` (a goal may target it) and the table's "vs limit"
    cell. ``unit``: "×" or "%"."""
    if value is None:
        return None
    out = {"value": float(value), "name": name, "what": what, "of": of, "unit": unit}
    if shares:
        out |= {"share": float(median(shares)), "per_repeat": [round(float(x), 4) for x in shares]}
    return out


def fmt_limit(lim: dict | None) -> str:
    """The table's "vs limit" cell: ``97% of 1.58× (token-efficiency bound)``."""
    if not lim or lim.get("share") is None:
        return ""
    amount = fmt_pct(lim["value"]) if lim.get("unit") == "%" else fmt_x(lim["value"])
    return f"{fmt_pct(lim['share'], 0)} of {amount} ({lim['name']})"


# --------------------------------------------------------------------------------------------- shared set-up


class Context:
    """What several cases share, built once per run: the tiny LLaMA's tokenizer, the default study's mix."""

    def __init__(self, progress: Callable[[str], Any]):
        self.progress = progress
        self._tok = None
        self._mix = None

    @staticmethod
    def model_params() -> ModelParams:
        return ModelParams(name="tiny-llama", path=MODEL)

    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = models.load_tokenizer(self.model_params())
        return self._tok

    @staticmethod
    def smoke_params():
        root = project_root()
        path = root / "params" / "smoke.yaml" if root else None
        if path is None or not path.is_file():
            raise Skip("params/smoke.yaml not found: run the bench from the kit's checkout")
        return path, load_params(path)

    def mix(self) -> dict:
        """The default study's mix, tokenised for tiny-llama as training does it, and packed."""
        if self._mix is None:
            path, params = self.smoke_params()
            self.progress("  default mix: load, clean, decontaminate, mix (params/smoke.yaml) …")
            t0 = time.perf_counter()
            length_tok = models.load_tokenizer(params.length_tokenizer)
            prepared = data.prepare(params, tokenizer=length_tok)
            mp = (
                params.model("tiny-llama")
                if any(m.name == "tiny-llama" for m in params.models)
                else self.model_params()
            )
            tok = models.load_tokenizer(mp)
            template = mp.template or models.model_card(mp).template
            tp = params.train
            tokenized, report = sft.tokenize_records(prepared.mix, tok, template, tp.max_length)
            _, untruncated = sft.tokenize_records(prepared.mix, tok, template, 10**9)
            packed, pack_report = packing.pack(tokenized, tp.max_length)
            cols = tokenized.select_columns(["input_ids", "labels"]).to_dict()
            self._mix = {
                "params_path": str(path),
                "params": params,
                "model": mp,
                "tokenizer": tok,
                "template": template,
                "records": len(prepared.mix),
                "tokenize": report,
                "untruncated_tokens": untruncated.tokens,
                "features": [
                    {"input_ids": a, "labels": b} for a, b in zip(cols["input_ids"], cols["labels"], strict=True)
                ],
                "packed_rows": packed.to_list(),
                "pack": pack_report,
                "max_length": tp.max_length,
                "batch_size": tp.per_device_batch_size,
                "seconds": time.perf_counter() - t0,
            }
        return self._mix


def matched_batch_size(lengths: list[int], budget: int, seed: int) -> tuple[int, dict[int, float]]:
    """stanford's random padded batches: the batch size whose mean processed tokens per step (batch size × longest
    member) is closest to ``budget`` (the packed step's rows × max_length)."""
    processed = {}
    for b in range(1, len(lengths) + 1):
        batches = packing.random_batches(len(lengths), b, seed)
        processed[b] = statistics.mean(len(x) * max(lengths[i] for i in x) for x in batches)
        if processed[b] > budget * 1.5:
            break
    best = min(processed, key=lambda b: (abs(processed[b] - budget), b))
    return best, processed


# --------------------------------------------------------------------------------------------- table cells


def fmt_x(v: float | None, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}×"


def fmt_pct(v: float | None, nd: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{nd}f}%"


def fmt_n(v: float | None, nd: int = 0) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def yes(v) -> str:
    return {True: "yes", False: "NO", None: "–"}.get(v, str(v))


def verdict(c: dict) -> str:
    """A case entry's outcome in a word or two: met, missed, not judged (skipped), error: …"""
    if c["status"] == "error":
        return f"error: {c['reason']}"
    if c["passed"] is None:
        return "not judged" + (f" ({c['status']})" if c["status"] != "ok" else "")
    return "met" if c["passed"] else "missed"
