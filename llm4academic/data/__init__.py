"""The data layer: load → clean (dedup, filters) → contamination check → mix, each step reported.

``prepare(params)`` runs the steps a study's ``data`` params ask for; ``save(prepared, run_dir)`` writes the
training mix and every report into the run directory (``RunDir.data_dir``) for the later notebooks and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from ..base import write_json
from ..config import StudyParams
from ..rundir import RunDir
from . import clean, formats, mix
from .contamination import find_contamination


@dataclass
class Prepared:
    pool: datasets.Dataset  # everything loaded
    load_reports: list  # formats.LoadReport per source
    cleaned: datasets.Dataset  # after cleaning (and decontamination, when asked)
    clean_reports: list  # clean.StepReport per step
    contamination: object | None  # contamination.ContaminationReport
    mix: datasets.Dataset
    draws: list  # mix.SourceDraw per source


def prepare(params: StudyParams, tokenizer=None, zbench=None) -> Prepared:
    """Run the study's data steps. ``tokenizer`` is needed only for the token length filters."""
    d = params.data
    pool, load_reports = formats.load_sources(params)
    cleaned, clean_reports = clean.clean(pool, d.clean, tokenizer, params.length_tokenizer.name, seed=params.seed)
    report = None
    if d.contamination.enabled:
        c = d.contamination
        report = find_contamination(
            cleaned.to_pandas(), zbench, n_en=c.n_en, n_zh=c.n_zh, min_en=c.min_en, min_zh=c.min_zh, fields=c.fields
        )
        if d.decontaminate:
            cleaned, rep = clean.drop_ids(cleaned, report.contaminated_ids(), "decontaminate")
            clean_reports.append(rep)
    mixed, draws = mix.mix(cleaned, d.sources, d.mix.total, params.seed, shuffle=d.mix.shuffle)
    return Prepared(pool, load_reports, cleaned, clean_reports, report, mixed, draws)


def save(prepared: Prepared, run_dir: str | Path | RunDir, seed: int) -> dict:
    """Write the mix, its summary, the load, clean and contamination reports and the data summary into the run
    directory; returns the summary the manifest keeps."""
    rd = RunDir(run_dir)
    mix_summary = mix.save_mix(prepared.mix, rd, prepared.draws, seed)
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
        in_mix = sum(1 for rid in clean.column(prepared.mix, "id") if rid.split("~")[0] in flagged)
        summary["contamination"] = {**prepared.contamination.counts, "records_in_mix": in_mix}
    write_json(rd.data_summary, summary, default=None)
    return summary
