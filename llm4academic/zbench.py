"""Z-Bench 1.0 (ZhenFund, CC BY 4.0): 311 Chinese prompts with tags, references and 14 reference models' answers.

The three upstream CSVs ship byte-identical in ``resources/zbench/`` (see ``SOURCE.md`` there); nothing is read
from outside the package. Loading renames the upstream columns (``Prompt`` → ``prompt``, ``任务类型`` → ``tags``,
``参考回答`` → ``reference``), maps each model header to its name in ``REFERENCE_MODELS`` (the files disagree on
``SenseChat``/``sensechat`` and on column order) and keeps every cell verbatim: newlines, HTML, ``<script>`` text.
This module imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from .base import RESOURCES_DIR, KitError

ZBENCH_DIR = RESOURCES_DIR / "zbench"
SPLITS: dict[str, str] = {
    "basic": "common.samples.csv",
    "advanced": "emergent.samples.csv",
    "domain": "specialized.samples.csv",
}
SPLIT_ROWS: dict[str, int] = {"basic": 63, "advanced": 209, "domain": 39}  # Z-Bench 1.0; 311 in all
REFERENCE_MODELS: tuple[str, ...] = (
    "GPT3.5",
    "GPT4",
    "SenseChat",
    "minimax",
    "moss",
    "商量",
    "天工",
    "文心",
    "文心0427",
    "新版智谱",
    "智谱",
    "讯飞",
    "通义千问",
    "面壁",
)
PROVENANCE = {
    "dataset": "Z-Bench 1.0",
    "by": "ZhenFund (真格基金)",
    "license": "CC BY 4.0",
    "upstream": "https://github.com/zhenbench/z-bench",
    "commit": "1f1195b4b11d65ebd729f6eced0ead144f57bd85",
}
# Latin-script labels for figures (fonts without CJK glyphs draw the Chinese names as boxes).
MODEL_LABELS: dict[str, str] = {
    "商量": "SenseTime-Shangliang",
    "天工": "Tiangong",
    "文心": "Wenxin",
    "文心0427": "Wenxin-0427",
    "新版智谱": "Zhipu-new",
    "智谱": "Zhipu",
    "讯飞": "iFlytek-Spark",
    "通义千问": "Tongyi-Qianwen",
    "面壁": "Mianbi",
}


def model_label(name: str) -> str:
    """A model's name in Latin script for plots (Z-Bench's Chinese names romanised; other names unchanged)."""
    return MODEL_LABELS.get(name, name)


COLUMNS: tuple[str, ...] = ("item_id", "split", "prompt", "tags", "reference", *REFERENCE_MODELS)
_FIXED_COLUMNS = {"Prompt": "prompt", "任务类型": "tags", "参考回答": "reference"}
_MODEL_KEYS = {m.casefold(): m for m in REFERENCE_MODELS}
_TAG = re.compile(r"`([^`]*)`")


class ZBenchError(KitError):
    """Z-Bench asked for something it does not have, or its files are not what the kit expects."""


def model_name(name: str) -> str:
    """The canonical ``REFERENCE_MODELS`` spelling of a model name (case-insensitive), else ``ZBenchError``."""
    canonical = _MODEL_KEYS.get(str(name).strip().casefold())
    if canonical is None:
        raise ZBenchError(f"unknown Z-Bench reference model {name!r}; the models are: {', '.join(REFERENCE_MODELS)}")
    return canonical


def _split_names(splits: str | Iterable[str] | None) -> list[str]:
    names = list(SPLITS) if splits is None else [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in names if s not in SPLITS]
    if unknown:
        raise ZBenchError(
            f"unknown Z-Bench split {', '.join(map(repr, unknown))}; the splits are: "
            + ", ".join(f"{k} ({v})" for k, v in SPLITS.items())
        )
    return names


def parse_tags(cell: str) -> list[str]:
    """The backtick-wrapped labels of a ``任务类型`` cell: ``"`逻辑推理` `数学`"`` → ``["逻辑推理", "数学"]``.

    A non-empty cell without backticks counts as one label.
    """
    tags = [t.strip() for t in _TAG.findall(cell) if t.strip()]
    return tags or ([cell.strip()] if cell.strip() else [])


def _canonical_columns(columns: Sequence[str], path: Path) -> dict[str, str]:
    """Upstream header → kit column name; a missing, unknown or repeated column is an error naming the file."""
    mapping, extra = {}, []
    for col in columns:
        try:
            mapping[col] = _FIXED_COLUMNS.get(col) or model_name(col)
        except ZBenchError:
            extra.append(col)
    seen = list(mapping.values())
    missing = [c for c in (*_FIXED_COLUMNS, *REFERENCE_MODELS) if _FIXED_COLUMNS.get(c, c) not in seen]
    repeated = sorted({c for c in seen if seen.count(c) > 1})
    problems = [
        f"{what}: {', '.join(cols)}"
        for what, cols in (("missing", missing), ("unexpected", extra), ("repeated", repeated))
        if cols
    ]
    if problems:
        raise ZBenchError(
            f"{path}: not a Z-Bench file ({'; '.join(problems)}); expected the columns "
            f"{', '.join((*_FIXED_COLUMNS, *REFERENCE_MODELS))} (model names in any case/order)"
        )
    return mapping


def read_split(split: str, directory: str | Path = ZBENCH_DIR) -> pd.DataFrame:
    """One split's CSV as a checked, normalised table (all of ``COLUMNS`` but no model selection)."""
    path = Path(directory) / SPLITS[_split_names(split)[0]]
    if not path.is_file():
        raise ZBenchError(f"{path}: Z-Bench file not found")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if len(raw) != SPLIT_ROWS[split]:
        raise ZBenchError(f"{path}: {len(raw)} rows, but Z-Bench 1.0's {split} split has {SPLIT_ROWS[split]}")
    df = raw.rename(columns=_canonical_columns(list(raw.columns), path))
    empty = df.index[df["prompt"].str.strip() == ""]
    if len(empty):
        raise ZBenchError(f"{path}: empty Prompt on data row(s) {', '.join(str(i + 1) for i in empty)}")
    df.insert(0, "item_id", [f"{split}-{i:03d}" for i in range(len(df))])
    df.insert(1, "split", split)
    df["tags"] = df["tags"].map(parse_tags)
    return df[list(COLUMNS)]


def load_zbench(
    splits: str | Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    *,
    directory: str | Path = ZBENCH_DIR,
) -> pd.DataFrame:
    """Z-Bench as one row per prompt: ``item_id, split, prompt, tags, reference`` + one column per model.

    ``splits``: ``basic`` (common), ``advanced`` (emergent), ``domain`` (specialized); default all three, in that
    order. ``models``: which reference models' answer columns to keep (default all 14). Empty cells are ``""``.
    ``df.attrs["zbench"]`` carries the provenance and the rows read per split.
    """
    names = _split_names(splits)
    keep = REFERENCE_MODELS if models is None else tuple(dict.fromkeys(model_name(m) for m in models))
    parts = [read_split(s, directory) for s in names]
    df = pd.concat(parts, ignore_index=True)[["item_id", "split", "prompt", "tags", "reference", *keep]]
    df.attrs["zbench"] = {**PROVENANCE, "rows": {s: len(p) for s, p in zip(names, parts, strict=False)}}
    return df


def answers_long(df: pd.DataFrame, models: Iterable[str] | None = None) -> pd.DataFrame:
    """Long table ``item_id, split, model, answer``: one row per (prompt, reference model), empty answers kept.

    ``models`` defaults to every reference-model column ``df`` holds.
    """
    held = [c for c in df.columns if c in REFERENCE_MODELS]
    wanted = held if models is None else [model_name(m) for m in models]
    absent = [m for m in wanted if m not in held]
    if absent:
        raise ZBenchError(
            f"model column(s) {', '.join(absent)} not in this table; it holds: {', '.join(held) or 'none'}"
        )
    long = df.reset_index(drop=True).melt(
        id_vars=["item_id", "split"], value_vars=wanted, var_name="model", value_name="answer", ignore_index=False
    )
    return long.sort_index(kind="stable").reset_index(drop=True)  # item by item, models in the order asked
