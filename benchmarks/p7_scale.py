"""P7: the data step at the seed's full alpaca_mix scale (≥ 1 M records): load → exact dedup → near dedup →
contamination → mix, first run (nothing cached) and cached run, each in a child process so that its peak RSS is its
own; the planted exact duplicates, near duplicates and Z-Bench contamination must be found at the recall of the
datasketch implementation the kit used before (``reference_near_dedup``, kept here as the reference).

The corpus is alpaca_mix-shaped (Alpaca 52 k, Chinese Alpaca 52 k, BELLE 0.5 M as JSON Lines, Guanaco 534 k, in
their on-disk layouts) and recombined from the shipped samples: every record's instruction, input and output are
tokens (English words, Chinese characters) drawn at random from a window of the samples' text around a sample
record, as long as that record's fields, so no two records are exact or near duplicates unless planted. Planted:
``EXACT`` of the records repeat an earlier one with case, spacing and punctuation changed (within and across
sources), ``NEAR`` repeat an earlier one with one or two tokens of the output replaced (5-shingle Jaccard ≥ 0.86,
stored), ``CONTAMINATED`` carry a Z-Bench prompt or reference, and a few are invalid (counted by reason).
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from operator import itemgetter
from pathlib import Path

import numpy as np

from llm4academic.base import RESOURCES_DIR, cache_dir, project_root

from .common import Case, Context, Goal, Sizes, fmt_n, fmt_pct, rnd, verdict, yes

CASE = Case(
    "P7",
    "data_scale",
    "the data step (load → dedup → contamination → mix) on an alpaca_mix-shaped corpus of ≥ 1 M records",
    (
        Goal("first_run_s", "<=", 180.0, "s", "first run (nothing cached)"),
        Goal("cached_run_s", "<=", 20.0, "s", "cached run"),
        Goal("peak_rss_gb", "<=", 6.0, " GB", "peak RSS"),
    ),
)
GENERATOR_VERSION = 1
SEED = 15
# alpaca_mix: Alpaca 52,002 · Chinese Alpaca 52,002 · BELLE 0.5 M · Guanaco 534,530 records
SHAPE = (
    ("alpaca", "en", 52_002, "json-array"),
    ("chinese_alpaca", "zh", 52_002, "json-array"),
    ("belle", "zh", 500_000, "jsonl"),
    ("guanaco", "mixed", 534_530, "json-array"),
)
QUICK_SCALE = 1 / 20  # --quick: 56,926 records; its figures are not comparable with the full run's
EXACT, NEAR, CONTAMINATED, INVALID = 0.02, 0.01, 0.0005, 0.0001
REFERENCE_RECORDS = 40_000  # the datasketch reference runs on this many records (the corpus's first ones)
SAMPLES = {
    "en": ("instruct/alpaca/alpaca_data.first1825.json",),
    "zh": ("instruct/chinese_alpaca/alpaca_data-0-3252-zh.first2000.json", "instruct/belle/dev1K.json"),
}
_CJK = re.compile(r"[\u3400-\u9fff]")
MIN_TOKENS = {"instruction": (6, 10), "input": (0, 0), "output": (30, 60)}  # (en words, zh characters)
WINDOW = 400  # tokens a record draws from


# --------------------------------------------------------------------------------------------- the corpus


class _Pool:
    """One language's sample text as token lists per field: each field's tokens, concatenated, with the start and
    length of every sample record's field."""

    def __init__(self, lang: str):
        from llm4academic.data.formats import load_file

        self.lang, self.sep = lang, " " if lang == "en" else ""
        self.tokens: dict[str, list[str]] = {f: [] for f in MIN_TOKENS}
        self.spans: dict[str, list[tuple[int, int]]] = {f: [] for f in MIN_TOKENS}
        for rel in SAMPLES[lang]:
            ds, _ = load_file(RESOURCES_DIR / rel, source="s", language=lang, on_invalid="skip")
            for rec in ds.select_columns(list(MIN_TOKENS)).to_list():
                for f, text in rec.items():
                    toks = text.split() if lang == "en" else [c for c in text if not c.isspace()]
                    self.spans[f].append((len(self.tokens[f]), len(toks)))
                    self.tokens[f] += toks
        self.size = len(self.spans["output"])

    def texts(self, base: np.ndarray, field: str, rng: np.random.Generator) -> list[str]:
        """One text per base record: its field's length (at least the minimum) in tokens drawn from a window."""
        starts, lens = np.array(self.spans[field]).T
        lo = MIN_TOKENS[field][self.lang == "zh"]
        n = np.where(lens[base] > 0, np.maximum(lens[base], lo), 0) if field == "input" else np.maximum(lens[base], lo)
        pool = self.tokens[field]
        idx = (np.repeat(starts[base], n) + (rng.random(int(n.sum())) * WINDOW).astype(np.int64)) % len(pool)
        toks = itemgetter(*idx.tolist())(pool) if len(idx) > 1 else tuple(pool[i] for i in idx)
        ends = np.cumsum(n).tolist()
        return [self.sep.join(toks[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _shingles(text: str, k: int = 5) -> set[str]:
    from llm4academic.data.clean import normalise

    norm = normalise(text)
    return {norm} if len(norm) <= k else {norm[i : i + k] for i in range(len(norm) - k + 1)}


def _record_text(r: dict) -> str:
    return "\n".join([r["instruction"], r["input"], r["output"]])


def _exact_copy(r: dict, rng: np.random.Generator) -> dict:
    """The same normalised text: case, spacing and punctuation changed."""
    out = r["output"] + ("!" if rng.random() < 0.5 else " .")
    ins = r["instruction"].upper() if rng.random() < 0.5 else "  " + r["instruction"]
    return {"instruction": ins, "input": r["input"], "output": out}


def _near_copy(r: dict, lang: str, rng: np.random.Generator) -> tuple[dict, float] | None:
    """One or two output tokens replaced; None unless the 5-shingle Jaccard stays ≥ 0.86 (and below 1)."""
    toks = r["output"].split(" ") if lang == "en" else list(r["output"])
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(0, len(toks)))
        toks[i] = "zebra" if lang == "en" else "斑"
    new = {**r, "output": (" " if lang == "en" else "").join(toks)}
    a, b = _shingles(_record_text(r)), _shingles(_record_text(new))
    j = len(a & b) / len(a | b)
    return (new, j) if 0.86 <= j < 1 else None


def _zbench_texts() -> list[tuple[str, str, str]]:
    """(item_id, field, text) of every Z-Bench prompt and reference the contamination check can judge."""
    from llm4academic.data.contamination import Settings, item_grams
    from llm4academic.zbench import load_zbench

    z, s = load_zbench(), Settings()
    return [
        (iid, f, t)
        for iid, p, ref in z[["item_id", "prompt", "reference"]].itertuples(index=False)
        for f, t in (("prompt", p), ("reference", ref))
        if isinstance(t, str) and item_grams(t, s)[0] in ("ngrams", "whole")
    ]


def build_corpus(out: Path, scale: float = 1.0, seed: int = SEED) -> dict:
    """Write the corpus's four files into ``out`` and return its manifest: files, records, planted ids."""
    rng = np.random.default_rng(seed)
    pools = {lang: _Pool(lang) for lang in ("en", "zh")}
    zb = _zbench_texts()
    out.mkdir(parents=True, exist_ok=True)
    kept_so_far: list[tuple[str, str, dict]] = []  # (id, lang, record) of original records, for copies
    planted = {"exact": {}, "near": {}, "near_similarity": {}, "contaminated": {}, "invalid": 0}
    files = []
    for name, lang, full, layout in SHAPE:
        n = max(100, round(full * scale))
        langs = np.where(rng.random(n) < 0.5, "en", "zh") if lang == "mixed" else np.full(n, lang)
        recs: list[dict] = [{} for _ in range(n)]
        for lg in ("en", "zh"):
            rows = np.flatnonzero(langs == lg)
            if not len(rows):
                continue
            base = rng.integers(0, pools[lg].size, size=len(rows))
            cols = {f: pools[lg].texts(base, f, rng) for f in MIN_TOKENS}
            for k, i in enumerate(rows.tolist()):
                recs[i] = {f: cols[f][k] for f in MIN_TOKENS}
        kind = rng.random(n)
        kept = 0
        lines = []
        for i, rec in enumerate(recs):
            rid = f"{name}-{kept:06d}"
            k = kind[i]
            if k < INVALID:
                rec = {**rec, "output": ""}  # counted as empty:output and skipped
                planted["invalid"] += 1
            elif k < INVALID + EXACT and kept_so_far:
                j = int(rng.integers(0, len(kept_so_far)))
                planted["exact"][rid] = kept_so_far[j][0]
                rec = _exact_copy(kept_so_far[j][2], rng)
            elif k < INVALID + EXACT + NEAR and kept_so_far:
                j = int(rng.integers(0, len(kept_so_far)))
                near = _near_copy(kept_so_far[j][2], kept_so_far[j][1], rng)
                if near is not None:
                    planted["near"][rid] = kept_so_far[j][0]
                    planted["near_similarity"][rid] = round(near[1], 4)
                    rec = near[0]
            elif k < INVALID + EXACT + NEAR + CONTAMINATED:
                iid, fld, text = zb[int(rng.integers(0, len(zb)))]
                planted["contaminated"][rid] = iid
                rec = {**rec, "input": text} if rng.random() < 0.5 else {**rec, "output": rec["output"] + "\n" + text}
            elif i % 16 == 0:  # a sample of the original records, to copy from
                kept_so_far.append((rid, str(langs[i]), rec))
            if rec["output"]:
                kept += 1
            lines.append(json.dumps(rec, ensure_ascii=False))
        path = out / f"{name}.json"  # BELLE ships JSON Lines named .json
        body = "\n".join(lines) + "\n" if layout == "jsonl" else "[\n" + ",\n".join(lines) + "\n]\n"
        path.write_text(body, encoding="utf-8")
        files.append({"name": name, "path": str(path), "records": n, "layout": layout, "bytes": path.stat().st_size})
    manifest = {"version": GENERATOR_VERSION, "seed": seed, "scale": scale, "files": files, "planted": planted}
    manifest["records"] = sum(f["records"] for f in files)
    return manifest


def corpus_dir(scale: float) -> Path:
    """Where the corpus of this scale is kept, with its ``manifest.json``: under the kit's cache."""
    return cache_dir() / "bench" / f"p7-v{GENERATOR_VERSION}-{scale:g}-{SEED}"


def corpus(scale: float, progress=print) -> dict:
    """The corpus of this scale, built once and kept in ``corpus_dir(scale)``; its manifest, written last."""
    out = corpus_dir(scale)
    if (out / "manifest.json").is_file():
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    progress(f"  P7: building the corpus (scale {scale:g}) in {out} …")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = build_corpus(tmp, scale)
    for f in manifest["files"]:
        f["path"] = str(out / Path(f["path"]).name)
    (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


# --------------------------------------------------------------------------------------------- the data step


def write_params(man: dict, out: Path) -> Path:
    """A study like params/smoke.yaml whose data section is the corpus: every record (no weights), on_invalid skip,
    exact + near dedup, contamination with decontamination, no token length filter (it needs a tokenizer pass)."""
    import yaml

    raw = yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text(encoding="utf-8"))
    raw["data"] = {
        "on_invalid": "skip",
        "sources": [{"name": f["name"], "path": f["path"]} for f in man["files"]],
        "clean": {"exact_dedup": True, "near_dedup": {"enabled": True, "threshold": 0.85}},
        "contamination": {"enabled": True},
        "decontaminate": True,
    }
    path = out / "p7.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def child(params_path: str, cache_root: str, manifest_path: str, out_json: str) -> None:
    """One run of the data step (``data.prepare`` + ``data.save``) in this process; numbers into ``out_json``."""
    from llm4academic import data
    from llm4academic.config import load_params
    from llm4academic.data.clean import column

    t0 = time.perf_counter()
    params = load_params(params_path)
    prepared = data.prepare(params, cache_root=cache_root)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=cache_root) as run_dir:
        summary = data.save(prepared, run_dir, params.seed)
    t2 = time.perf_counter()
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss_workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    planted = json.loads(Path(manifest_path).read_text(encoding="utf-8"))["planted"]
    pool_ids, kept = set(column(prepared.pool, "id")), set(column(prepared.cleaned, "id"))
    removed = pool_ids - kept
    flagged = dict(zip(prepared.contamination.records["id"], prepared.contamination.records["item_ids"], strict=True))
    exact, near, cont = planted["exact"], planted["near"], planted["contaminated"]
    found = {
        "exact": sum(rid in removed for rid in exact),
        "near": sum(rid in removed for rid in near),
        "contaminated": sum(iid in flagged.get(rid, ()) for rid, iid in cont.items()),
        # flagged, or removed before the check as a duplicate of another planted record: not in the mix either way
        "contaminated_kept_out": sum(rid in removed for rid in cont),
    }
    steps = {r.step: r.removed for r in prepared.clean_reports}
    result = {
        "seconds": {k: round(v, 2) for k, v in prepared.timings.items()},
        "prepare_s": round(t1 - t0, 2),
        "save_s": round(t2 - t1, 2),
        "total_s": round(t2 - t0, 2),
        "peak_rss_bytes": {"process": rss_self, "largest_worker": rss_workers},
        "records": {"loaded": len(prepared.pool), "cleaned": len(prepared.cleaned), "mix": len(prepared.mix)},
        "skipped": {r.source: dict(r.skipped) for r in prepared.load_reports},
        "removed_by_step": steps,
        "planted": {k: len(v) for k, v in (("exact", exact), ("near", near), ("contaminated", cont))},
        "found": found,
        "unplanted_removed": len(removed - set(exact) - set(near) - set(cont)),
        "unplanted_flagged": len(set(flagged) - set(cont)),
        "mix_sha256": summary["mix_sha256"],
    }
    Path(out_json).write_text(json.dumps(result), encoding="utf-8")


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (shared pages counted in each: an upper bound)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parent.items() if pp == p and c not in tree]
    total = 0
    for p in tree:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_child(params_path: Path, cache_root: Path, manifest: Path, timeout: float = 1800) -> dict:
    out = cache_root.parent / f"result-{time.time_ns()}.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "benchmarks.p7_scale", "--child", str(params_path), str(cache_root), str(manifest)]
    t0, peak = time.perf_counter(), 0
    proc = subprocess.Popen([*cmd, str(out)], cwd=project_root(), env=env, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid) if Path("/proc").is_dir() else 0)
        if time.perf_counter() - t0 > timeout:
            proc.kill()
        time.sleep(0.25)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"the P7 child failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(out.read_text(encoding="utf-8"))
    out.unlink()
    result["peak_rss_bytes"]["tree_sampled"] = peak
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    return result


# --------------------------------------------------------------------------------------------- the reference


def reference_near_dedup(texts: list[str], threshold=0.85, num_perm=128, shingle=5, seed=1) -> dict[int, int]:
    """The kit's near dedup before rensa (datasketch ``MinHash.bulk`` + ``MinHashLSH``), kept as the reference:
    ``{removed row: the earliest kept row it matched}``."""
    from datasketch import MinHash, MinHashLSH

    from llm4academic.data.clean import normalise

    def shingles(text: str) -> list[bytes]:
        norm = normalise(text)
        if len(norm) <= shingle:
            return [norm.encode("utf-8")]
        return list({norm[i : i + shingle].encode("utf-8") for i in range(len(norm) - shingle + 1)})

    lsh = MinHashLSH(threshold=max(0.1, threshold - 0.15), num_perm=num_perm)
    hashes = MinHash.bulk((shingles(t) for t in texts), num_perm=num_perm, seed=seed)
    removed: dict[int, int] = {}
    for i, mh in enumerate(hashes):
        match = [int(j) for j in lsh.query(mh) if hashes[int(j)].jaccard(mh) >= threshold]
        if match:
            removed[i] = min(match)
        else:
            lsh.insert(str(i), mh)
    return removed


def compare_with_reference(man: dict, per_source: int, seed: int) -> dict:
    """The kit's near dedup and the reference on the same records (the first ``per_source`` of each file, exact
    duplicates removed): recall on the planted near duplicates whose original is among them, and agreement."""
    import datasets

    from llm4academic.data.clean import column, exact_dedup, near_dedup, record_texts
    from llm4academic.data.formats import load_file

    parts = [load_file(f["path"], source=f["name"], on_invalid="skip", max_records=per_source)[0] for f in man["files"]]
    ds, _ = exact_dedup(datasets.concatenate_datasets(parts))
    ids = column(ds, "id")
    present = set(ids)
    planted = {r: b for r, b in man["planted"]["near"].items() if r in present and b in present}
    t0 = time.perf_counter()
    ref = {ids[i] for i in reference_near_dedup(record_texts(ds), seed=seed)}
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept, _ = near_dedup(ds, seed=seed, num_proc=1)
    t_kit = time.perf_counter() - t0
    kit = present - set(column(kept, "id"))
    n = max(1, len(planted))
    p = sum(r in ref for r in planted) / n
    return {
        "tolerance": round(2 * math.sqrt(max(2 * p * (1 - p), 1 / n) / n), 4),
        "records": len(ds),
        "planted_near": len(planted),
        "recall_reference": sum(r in ref for r in planted) / n,
        "recall_kit": sum(r in kit for r in planted) / n,
        "removed_reference": len(ref),
        "removed_kit": len(kit),
        "removed_by_both": len(ref & kit),
        "seconds": {"reference": round(t_ref, 2), "kit_one_process": round(t_kit, 2)},
    }


# --------------------------------------------------------------------------------------------- the case


def run(ctx: Context, sz: Sizes) -> dict:
    from .common import QUICK

    quick = sz == QUICK
    scale = QUICK_SCALE if quick else 1.0
    man = corpus(scale, ctx.progress)
    manifest = corpus_dir(scale) / "manifest.json"
    work = Path(tempfile.mkdtemp(prefix="p7-", dir=cache_dir() / "tmp" if (cache_dir() / "tmp").is_dir() else None))
    try:
        params = write_params(man, work)
        runs = {}
        for name in ("first", "cached"):
            ctx.progress(f"  P7: the data step on {man['records']:,} records, {name} run (child process) …")
            runs[name] = run_child(params, work / "cache", manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.progress("  P7: near dedup against the datasketch reference on a slice …")
    per_source = REFERENCE_RECORDS // len(SHAPE) // (4 if quick else 1)
    ref = compare_with_reference(man, per_source, seed=42)
    first, cached = runs["first"], runs["cached"]
    peak = max(max(r["peak_rss_bytes"]["tree_sampled"], r["peak_rss_bytes"]["process"]) for r in runs.values())
    recall = {k: first["found"][k] / max(1, first["planted"][k.replace("_kept_out", "")]) for k in first["found"]}
    checks = {
        "exact_and_contamination_found": recall["exact"] == 1.0 and recall["contaminated_kept_out"] == 1.0,
        # the same recall within the estimators' error: two standard errors of a difference of two recalls
        "near_recall_as_reference": ref["recall_kit"] >= ref["recall_reference"] - ref["tolerance"],
        "cached_run_identical": first["mix_sha256"] == cached["mix_sha256"]
        and first["removed_by_step"] == cached["removed_by_step"],
    }
    metrics = {"first_run_s": first["total_s"], "cached_run_s": cached["total_s"], "peak_rss_gb": peak / 1e9}
    return {
        "value": first["total_s"],
        "metrics": metrics,
        "checks": checks,
        "repeats": 1,
        "raw": {
            "quick": quick,
            "comparable": not quick,
            "note": "--quick: a 1/20 corpus; its times are not comparable with the full run's" if quick else None,
            "corpus": {k: man[k] for k in ("records", "scale", "seed", "version", "files")},
            "planted_fractions": {"exact": EXACT, "near": NEAR, "contaminated": CONTAMINATED, "invalid": INVALID},
            "recall": {k: rnd(v, 4) for k, v in recall.items()},
            "first": first,
            "cached": cached,
            "reference": ref,
            "records_per_s_first": rnd(first["records"]["loaded"] / first["total_s"], 0),
        },
    }


def row(c: dict) -> list[str] | None:
    if c["status"] != "ok":
        return None
    raw, m = c["raw"], c["metrics"]
    s = raw["first"]["seconds"]
    steps = " · ".join(f"{k} {v:.0f}" for k, v in s.items())
    rec = raw["recall"]
    return [
        c["id"],
        f"data step on {raw['corpus']['records']:,} alpaca_mix-shaped records: seconds (first run: {steps}), "
        "peak RSS" + (" — quick, not comparable" if raw["quick"] else ""),
        f"{fmt_n(m['first_run_s'])} s first · {fmt_n(m['cached_run_s'], 1)} s cached · {m['peak_rss_gb']:.1f} GB",
        f"near recall {fmt_pct(raw['reference']['recall_reference'])} datasketch",
        f"recall: exact {fmt_pct(rec['exact'])}, near {fmt_pct(rec['near'])}, contamination "
        f"{fmt_pct(rec['contaminated'])}",
        CASE.goal_cell,
        f"planted found: {yes(all(c['checks'].values()))}",
        verdict(c),
    ]


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--child":
    from llm4academic.base import setup_environment

    setup_environment()
    import datasets

    datasets.disable_progress_bars()
    child(*sys.argv[2:])
