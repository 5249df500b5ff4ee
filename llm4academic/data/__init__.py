"""The data layer: load → clean (dedup, filters) → contamination check → mix, each step reported.

``prepare(params)`` runs the steps a study's ``data`` params ask for; ``save(prepared, run_dir)`` writes the
training mix and every report into the run directory (``RunDir.data_dir``) for the later notebooks and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pandas as pd

from ..base import write_json
from ..config import StudyParams
from ..rundir import RunDir
from ..zbench import load_zbench
from . import clean, formats, mix
from .cache import STEP_VERSION, DataCache
from .cache import key as cache_key
from .contamination import MATCH_COLUMNS, find_contamination


@dataclass
class Prepared:
    pool: datasets.Dataset  # everything loaded
    load_reports: list  # formats.LoadReport per source
    cleaned: datasets.Dataset  # after cleaning (and decontamination, when asked)
    clean_reports: list  # clean.StepReport per step
    contamination: object | None  # contamination.ContaminationReport
    mix: datasets.Dataset
    draws: list  # mix.SourceDraw per source
    timings: dict = field(default_factory=dict)  # seconds per step (not reproducible: kept out of the artifacts)
    cache: DataCache | None = None  # where save() finds an identical earlier mix file
    mix_key: str | None = None
    num_proc: int | None = 1


def _zbench_key(zbench, fields) -> str:
    cols = zbench[["item_id", "split", *fields]].astype(str)
    return hashlib.sha256(pd.util.hash_pandas_object(cols, index=False).values.tobytes()).hexdigest()


def prepare(params: StudyParams, tokenizer=None, zbench=None, *, cache_root: str | Path | None = None) -> Prepared:
    """Run the study's data steps. ``tokenizer`` is needed only for the token length filters.

    Loaded sources and step results come from the data cache (``cache.py``; ``cache_root`` defaults to
    ``<cache>/data``) when ``data.cache`` is on; large corpora use ``data.num_proc`` forked workers.
    """
    d = params.data
    store = DataCache(cache_root, enabled=d.cache)
    timings: dict = {}
    t0 = time.perf_counter()
    pool, load_reports = formats.load_sources(params, store, d.num_proc)
    timings["load"] = time.perf_counter() - t0
    key = cache_key("pool", [formats.source_key(s, d.on_invalid, store) for s in d.sources]) if d.cache else None
    cleaned, clean_reports = clean.clean(
        pool,
        d.clean,
        tokenizer,
        params.length_tokenizer.name,
        seed=params.seed,
        num_proc=d.num_proc,
        cache=store,
        key=key,
        timings=timings,
    )
    key = timings.pop("key")
    report = None
    if d.contamination.enabled:
        t0 = time.perf_counter()
        c = d.contamination
        zbench = load_zbench() if zbench is None else zbench
        settings = {"n_en": c.n_en, "n_zh": c.n_zh, "min_en": c.min_en, "min_zh": c.min_zh, "fields": list(c.fields)}
        k = cache_key(key, "contamination", settings, _zbench_key(zbench, c.fields), STEP_VERSION) if key else None
        hit = store.get_step(k) if k else None
        matches = pd.DataFrame(hit[1], columns=MATCH_COLUMNS) if hit else None
        report = find_contamination(cleaned, zbench, **settings, progress=False, num_proc=d.num_proc, matches=matches)
        if k and hit is None:
            store.put_step(k, None, json.loads(report.matches.to_json(orient="records", force_ascii=False)))
        if d.decontaminate:
            cleaned, rep = clean.drop_ids(cleaned, report.contaminated_ids(), "decontaminate")
            clean_reports.append(rep)
        key = k
        timings["contamination"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mixed, draws = mix.mix(cleaned, d.sources, d.mix.total, params.seed, shuffle=d.mix.shuffle)
    timings["mix"] = time.perf_counter() - t0
    how = [[s.name, s.weight, s.count, s.replace] for s in d.sources]
    mix_key = (
        cache_key(key, "mix", how, d.mix.total, d.mix.shuffle, d.decontaminate, params.seed, STEP_VERSION)
        if key
        else None
    )
    return Prepared(
        pool, load_reports, cleaned, clean_reports, report, mixed, draws, timings, store, mix_key, d.num_proc
    )


def save(prepared: Prepared, run_dir: str | Path | RunDir, seed: int) -> dict:
    """Write the mix, its summary, the load, clean and contamination reports and the data summary into the run
    directory; returns the summary the manifest keeps."""
    rd = RunDir(run_dir)
    mix_summary = mix.save_mix(
        prepared.mix, rd, prepared.draws, seed, num_proc=prepared.num_proc, cache=prepared.cache, key=prepared.mix_key
    )
    loads = [r.to_dict() for r in prepared.load_reports]
    steps = [r.to_dict() for r in prepared.clean_reports]
    write_json(rd.load_report, loads, default=None)
    write_json(rd.clean_report, steps, default=None)
    summary = {
        "records_loaded": len(prepared.pool),
        "records_after_cleaning": len(prepared.cleaned),
        "records_in_mix": len(prepared.mix),
        "mix_sha256": mix_summary["sha256"],
        "skipped": {r["source"]: r["skipped"] for r in loads},
        "removed": {s["step"]: s["removed"] for s in steps},
        "mix": mix_summary["sources"],
    }
    if prepared.contamination is not None:
        write_json(rd.contamination, prepared.contamination.to_dict(), default=None)
        flagged = prepared.contamination.contaminated_ids()
        in_mix = sum(1 for rid in clean.column(prepared.mix, "id") if rid.split("~")[0] in flagged) if flagged else 0
        summary["contamination"] = {**prepared.contamination.counts, "records_in_mix": in_mix}
    write_json(rd.data_summary, summary, default=None)
    return summary
