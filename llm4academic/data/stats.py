"""Exploration numbers for a set of unified records: counts, language mix, lengths in chars and tokens.

Everything returns pandas tables (long format, ready for seaborn) or plain dicts for the JSON artifacts.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..base import atomic_write
from ..rundir import RunDir

TEXT_FIELDS = ("instruction", "input", "output")


def detect_language(text: str) -> str:
    """Script-based language guess, offline: ``zh``, ``ja``, ``ko``, ``en`` (Latin script) or ``und``.

    Kana → ``ja``; Hangul → ``ko``; CJK ideographs making up ≥ 20 % of the letters → ``zh``; mostly Latin
    letters → ``en``. Good enough to tell the shipped English and Chinese sources apart; not a full detector.
    """
    han = kana = hangul = latin = other = 0
    for ch in text:
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF:
            han += 1
        elif 0x3040 <= o <= 0x30FF:
            kana += 1
        elif 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
            hangul += 1
        elif ch.isascii():
            latin += ch.isalpha()
        elif ch.isalpha():
            latin += unicodedata.name(ch, "").startswith("LATIN")
            other += not unicodedata.name(ch, "").startswith("LATIN")
    letters = han + kana + hangul + latin + other
    if not letters:
        return "und"
    if kana and kana >= 0.05 * letters:
        return "ja"
    if hangul >= 0.2 * letters:
        return "ko"
    if han >= 0.2 * letters:
        return "zh"
    if latin >= 0.5 * letters:
        return "en"
    return "und"


def records_frame(ds) -> pd.DataFrame:
    """The single-turn text columns of a records dataset as a DataFrame."""
    return ds.select_columns(["id", "source", "language", *TEXT_FIELDS]).to_pandas()


def records_per_source(df: pd.DataFrame) -> pd.DataFrame:
    out = df.groupby("source", sort=False).size().rename("records").reset_index()
    out["share"] = out["records"] / out["records"].sum()
    return out


def language_mix(df: pd.DataFrame) -> pd.DataFrame:
    """Records per (source, language), with each language's share within its source."""
    out = df.groupby(["source", "language"], sort=False).size().rename("records").reset_index()
    out["share"] = out["records"] / out.groupby("source", sort=False)["records"].transform("sum")
    return out


def empty_input_share(df: pd.DataFrame) -> pd.DataFrame:
    empty = df["input"].str.strip().eq("")
    out = empty.groupby(df["source"], sort=False).agg(["sum", "size"]).reset_index()
    out.columns = ["source", "empty_inputs", "records"]
    out["share"] = out["empty_inputs"] / out["records"]
    return out


def char_lengths(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (record, field) with its length in characters."""
    long = df.melt(id_vars=["id", "source"], value_vars=list(TEXT_FIELDS), var_name="field", value_name="text")
    long["chars"] = long["text"].str.len()
    return long.drop(columns="text")


def token_lengths(df: pd.DataFrame, tokenizers: Mapping[str, object]) -> pd.DataFrame:
    """Long table: one row per (model, record, field) with its length in that model's tokens.

    One batched fast-tokenizer call per (model, field); special tokens are not counted.
    """
    frames = []
    for model, tok in tokenizers.items():
        for fld in TEXT_FIELDS:
            ids = tok(df[fld].tolist(), add_special_tokens=False, verbose=False)["input_ids"]
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "id": df["id"].values,
                        "source": df["source"].values,
                        "field": fld,
                        "tokens": [len(x) for x in ids],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def length_summary(long: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """Mean and percentiles of ``value`` per group (empty inputs included as length 0)."""
    g = long.groupby(by, sort=False)[value]
    out = g.describe(percentiles=[0.5, 0.9, 0.99])[["count", "mean", "min", "50%", "90%", "99%", "max"]]
    return out.rename(columns={"50%": "p50", "90%": "p90", "99%": "p99"}).reset_index()


def chars_per_token(chars: pd.DataFrame, tokens: pd.DataFrame) -> pd.DataFrame:
    """Characters per token for each model and source (higher = the tokenizer compresses that text better)."""
    c = chars.groupby(["source"], sort=False)["chars"].sum()
    t = tokens.groupby(["model", "source"], sort=False)["tokens"].sum().reset_index()
    t["chars"] = t["source"].map(c)
    t["chars_per_token"] = t["chars"] / t["tokens"].clip(lower=1)
    return t


def explore_summary(df: pd.DataFrame, chars: pd.DataFrame, tokens: pd.DataFrame | None, reports) -> dict:
    """The explore notebook's numbers as one JSON-ready dict (written to ``artifacts/explore/summary.json``)."""
    summary = {
        "records": int(len(df)),
        "per_source": records_per_source(df).to_dict(orient="records"),
        "languages": language_mix(df).to_dict(orient="records"),
        "empty_inputs": empty_input_share(df).to_dict(orient="records"),
        "char_lengths": length_summary(chars, "chars", ["source", "field"]).to_dict(orient="records"),
        "load": [r.to_dict() for r in reports],
    }
    if tokens is not None and len(tokens):
        summary["token_lengths"] = length_summary(tokens, "tokens", ["model", "source", "field"]).to_dict(
            orient="records"
        )
    return summary


def load_table(reports) -> pd.DataFrame:
    """One row per loaded file: format, layout, records read / kept / skipped, and skip reasons."""
    rows = []
    for r in reports:
        d = r.to_dict()
        rows.append(
            {
                "source": d["source"],
                "file": Path(d["path"]).name,
                "format": d["format"],
                "layout": d["layout"],
                "read": d["read"],
                "kept": d["kept"],
                "skipped": d["skipped_total"],
                "skip reasons": "; ".join(f"{k}: {v}" for k, v in sorted(d["skipped"].items())),
                "first skipped": d["examples"][0] if d["examples"] else "",
            }
        )
    return pd.DataFrame(rows)


def write_explore_artifacts(
    run_dir: str | Path | RunDir, summary: dict, chars: pd.DataFrame, tokens: pd.DataFrame | None
) -> list[Path]:
    """The explore summary plus the length summaries as CSV, each written atomically. Returns the paths."""
    rd = RunDir(run_dir)
    files = {
        rd.explore_summary: json.dumps(summary, indent=2, ensure_ascii=False, default=_json_default),
        rd.char_lengths: length_summary(chars, "chars", ["source", "field"]).to_csv(index=False),
    }
    if tokens is not None and len(tokens):
        files[rd.token_lengths] = length_summary(tokens, "tokens", ["model", "source", "field"]).to_csv(index=False)
    for path, text in files.items():
        atomic_write(path, text)
    return list(files)


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_SKIP_WORDS = frozenset(
    """a an the this that these those following given some any each every your my our their its me
us you it them him her one two three four five several all short brief new few simple creative detailed unique
good""".split()
)


def leading_verbs(df: pd.DataFrame, top: int = 20, objects: int = 4) -> pd.DataFrame:
    """The most common first words of English instructions and, for each, its most common object word.

    A parser-free stand-in for Alpaca's verb–noun analysis: the first word of an instruction that starts with a
    letter (``Generate``, ``Write``, ``Describe``…) and the first word after it that is not a determiner or
    pronoun (``list``, ``story``…). Imperatives dominate instruction data, so the first word is nearly always the
    verb; questions show up as ``what``/``how``.
    """
    pairs = []
    for text in df.loc[df["language"] == "en", "instruction"]:
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", text.lower())
        if not words:
            continue
        obj = next((w for w in words[1:] if w not in _SKIP_WORDS), "")
        pairs.append((words[0], obj))
    if not pairs:
        return pd.DataFrame(columns=["verb", "object", "records"])
    pf = pd.DataFrame(pairs, columns=["verb", "object"])
    verbs = pf["verb"].value_counts().head(top).index
    out = pf[pf["verb"].isin(verbs)].value_counts().rename("records").reset_index()
    out = out.groupby("verb", sort=False).head(objects)
    order = {v: i for i, v in enumerate(verbs)}
    return out.sort_values(
        ["verb", "records"], key=lambda c: c.map(order) if c.name == "verb" else -c, ignore_index=True
    )


def turns_per_conversation(ds) -> pd.DataFrame:
    """Turns per record (single-turn records count as 2: instruction and output), per source."""
    cols = ds.select_columns(["source", "conversation"]).to_dict()
    turns = [len(c) if c else 2 for c in cols["conversation"]]
    return pd.DataFrame(
        {"source": cols["source"], "turns": turns, "multi_turn": [bool(c) for c in cols["conversation"]]}
    )


def clean_table(reports) -> pd.DataFrame:
    """One row per cleaning step: records before, removed (by source), after, and the step's details."""
    rows = []
    for r in reports:
        d = r.to_dict()
        rows.append(
            {
                "step": d["step"],
                "before": d["before"],
                "removed": d["removed"],
                "after": d["after"],
                "removed by source": ", ".join(f"{k}: {v}" for k, v in d["by_source"].items()),
                "details": ", ".join(f"{k}={v}" for k, v in d["detail"].items()),
            }
        )
    return pd.DataFrame(rows, columns=["step", "before", "removed", "after", "removed by source", "details"])


def flat_counts(d: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: nested counts as one readable column."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flat_counts(v, key + ".") if isinstance(v, Mapping) else {key: v})
    return out
