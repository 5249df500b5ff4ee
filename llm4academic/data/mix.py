"""Weighted mixing of named sources into one training set, seeded and reproducible byte for byte.

Per source (``data.sources[i]``): ``count: N`` takes exactly N records; ``weight: w`` takes the share
``w / sum(weights)`` of ``data.mix.total`` (by default the largest total the weighted sources can give without
replacement); neither takes every record. ``replace: true`` samples with replacement, so a source can give more
records than it holds (repeats get ids ``<id>~2``, ``<id>~3``, …). Each source draws from its own random stream
(seeded by the study seed and the source name), so adding a source does not change what the others draw.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ..base import KitError, atomic_write
from ..rundir import RunDir
from .clean import arrow_column, column
from .parallel import map_shards


@dataclass
class SourceDraw:
    source: str
    mode: str  # "all" | "count" | "weight"
    available: int
    taken: int
    weight: float | None
    replace: bool
    repeated_draws: int  # draws of a record already drawn (with replacement)


def plan(available: dict[str, int], sources, total: int | None) -> dict[str, int]:
    """How many records each source gives, checked against what it holds (errors name the params key)."""
    want: dict[str, int] = {}
    weighted = [s for s in sources if s.weight is not None]
    for s in sources:
        if s.count is not None:
            want[s.name] = s.count
        elif s.weight is None:
            want[s.name] = available[s.name]
    if weighted:
        wsum = sum(s.weight for s in weighted)
        if total is None:
            limits = [available[s.name] * wsum / s.weight for s in weighted if not s.replace]
            if not limits:
                raise KitError("data.mix.total: needed when every weighted source samples with replacement")
            total = math.floor(min(limits) + 1e-9)
        want.update(_apportion(total, {s.name: s.weight / wsum for s in weighted}))
    for i, s in enumerate(sources):
        if want[s.name] > available[s.name] and not s.replace:
            key = f"data.sources[{i}].count" if s.count is not None else "data.mix.total"
            raise KitError(
                f"{key}: source {s.name!r} holds {available[s.name]} records after cleaning but "
                f"{want[s.name]} are asked for; lower it or set data.sources[{i}].replace: true"
            )
        if want[s.name] and not available[s.name]:
            raise KitError(f"data.sources[{i}]: source {s.name!r} has no records left after cleaning")
    return want


def _apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``total`` by ``shares`` (sums to exactly ``total``; ties by order)."""
    raw = {k: total * v for k, v in shares.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: -(raw[k] - out[k]))[: total - sum(out.values())]:
        out[k] += 1
    return out


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))]))


def _draw(n: int, k: int, replace: bool, rng: np.random.Generator) -> np.ndarray:
    if k == n and not replace:
        return np.arange(n)
    idx = rng.integers(0, n, size=k) if replace else rng.choice(n, size=k, replace=False)
    return np.sort(idx)


def mix(
    pool: datasets.Dataset, sources, total: int | None, seed: int, shuffle: bool = True
) -> tuple[datasets.Dataset, list[SourceDraw]]:
    """Draw the training mix from a cleaned pool of records (with a ``source`` column)."""
    names = arrow_column(pool, "source")
    by_source = {  # each source's rows, in pool order
        s.name: np.flatnonzero(pc.equal(names, s.name).to_numpy(zero_copy_only=False)) for s in sources
    }
    del names
    want = plan({k: len(v) for k, v in by_source.items()}, sources, total)
    parts: list[np.ndarray] = []
    draws = []
    for s in sources:
        rows = by_source[s.name]
        local = np.asarray(_draw(len(rows), want[s.name], s.replace, _rng(seed, s.name)), dtype=np.int64)
        parts.append(rows[local])
        mode = "count" if s.count is not None else "weight" if s.weight is not None else "all"
        repeats = len(local) - len(np.unique(local))
        draws.append(SourceDraw(s.name, mode, len(rows), len(local), s.weight, s.replace, repeats))
    picked = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if shuffle:
        picked = picked[_rng(seed, "\x00mix").permutation(len(picked))]
    out = pool.select(picked)
    if any(d.repeated_draws for d in draws):
        new_ids = unique_ids(column(out, "id"))
        out = out.map(lambda rec, i: {"id": new_ids[i]}, with_indices=True, desc="mix ids")
    return out, draws


def unique_ids(ids: list[str]) -> list[str]:
    """Repeated ids (draws with replacement) become ``<id>~2``, ``<id>~3``, … in order of appearance."""
    seen: dict[str, int] = {}
    out = []
    for rid in ids:
        seen[rid] = seen.get(rid, 0) + 1
        out.append(rid if seen[rid] == 1 else f"{rid}~{seen[rid]}")
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (no copy: the files are never modified in place), else a copy."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def draws_table(draws: list[SourceDraw]):
    df = pd.DataFrame([asdict(d) for d in draws])
    df["share"] = df["taken"] / max(1, df["taken"].sum())
    return df


def _serialize(ds: datasets.Dataset, start: int, stop: int) -> bytes:
    out = []
    for a in range(start, stop, 5_000):
        batch = ds[a : min(a + 5_000, stop)]
        keys = list(batch)
        out += [
            json.dumps(dict(zip(keys, row, strict=True)), ensure_ascii=False, sort_keys=True) + "\n"
            for row in zip(*batch.values(), strict=True)
        ]
    return "".join(out).encode("utf-8")


def save_mix(
    ds: datasets.Dataset,
    run_dir: str | Path | RunDir,
    draws: list[SourceDraw],
    seed: int,
    *,
    num_proc: int | None = 1,
    cache=None,
    key: str | None = None,
) -> dict:
    """Write the run directory's mix (one record per line, sorted keys: byte-identical for the same params and seed)
    and its summary (per-source counts, sha256 of the mix). Returns the summary. Lines are serialised in
    ``num_proc`` forked workers for a large mix and written to a temporary file, then renamed; with a ``cache``
    (``cache.DataCache``) and the mix's ``key``, an identical earlier mix file is linked or copied instead."""
    rd = RunDir(run_dir)
    rd.mix.parent.mkdir(parents=True, exist_ok=True)
    kept = cache.file_path(key, ".mix.jsonl") if cache is not None and cache.enabled and key else None
    hit = cache.get_step(key) if kept is not None and kept.is_file() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{rd.mix.name}.", suffix=".partial", dir=rd.mix.parent)
    try:
        if hit is not None:
            os.close(fd)
            os.unlink(tmp)
            _link_or_copy(kept, Path(tmp))
            sha = hit[1]
        else:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                for body in map_shards(_serialize, len(ds), ds, num_proc):
                    digest.update(body)
                    f.write(body)
            sha = digest.hexdigest()
            if kept is not None:
                _link_or_copy(Path(tmp), kept)
                cache.put_step(key, None, sha)
        os.chmod(tmp, 0o644)
        os.replace(tmp, rd.mix)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    summary = {
        "records": len(ds),
        "seed": seed,
        "sha256": sha,
        "file": rd.mix.name,
        "sources": [asdict(d) for d in draws],
    }
    atomic_write(rd.mix_summary, json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
