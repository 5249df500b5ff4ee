"""Shards of a corpus over worker processes: the data steps' ``num_proc``.

``map_shards(fn, n, state, num_proc)`` cuts ``range(n)`` into contiguous shards and returns ``[fn(state, start,
stop), …]`` in shard order. With more than one process (and at least ``MIN_PARALLEL`` items) the shards run in a
pool of *forked* workers that inherit ``state`` (an Arrow-backed dataset, an index) instead of receiving it pickled;
only the shards' results travel back. The workers run pure Python, NumPy and Arrow code — no tokenizer, no torch — so
forking is safe even after the parent used them. Where ``fork`` is not available the shards run in this process.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

from ..base import resolve_num_proc

MIN_PARALLEL = 50_000  # fewer items than this run in the calling process: a pool costs more than it saves
SHARD = 25_000  # items per shard (bounds a worker's memory and the size of a result in transit)
_STATE: dict[str, Any] = {}


def shards(n: int, size: int = SHARD) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)] or [(0, 0)]


def _call(bounds: tuple[int, int]):
    fn, state = _STATE["job"]
    return fn(state, *bounds)


def map_shards(
    fn: Callable[[Any, int, int], Any], n: int, state: Any, num_proc: int | None = None, size: int = SHARD
) -> list:
    """``fn(state, start, stop)`` for each shard of ``range(n)``, in order; in forked workers when it pays."""
    procs = min(resolve_num_proc(num_proc), max(1, -(-n // size)))
    if procs <= 1 or n < MIN_PARALLEL or "fork" not in mp.get_all_start_methods() or _STATE:
        return [fn(state, a, b) for a, b in shards(n, size)]
    _STATE["job"] = (fn, state)
    try:
        with mp.get_context("fork").Pool(procs) as pool:
            return pool.map(_call, shards(n, size), chunksize=1)
    finally:
        _STATE.clear()


def map_items(fn: Callable[[Any, Any], Any], items: list, state: Any, num_proc: int | None = None) -> list:
    """``fn(state, item)`` for each item, in order; in forked workers when there are several items and processes."""
    procs = min(resolve_num_proc(num_proc), len(items))
    if procs <= 1 or "fork" not in mp.get_all_start_methods() or _STATE:
        return [fn(state, it) for it in items]
    _STATE["job"] = (fn, state)
    try:
        with mp.get_context("fork").Pool(procs) as pool:
            return pool.map(_call_item, items, chunksize=1)
    finally:
        _STATE.clear()


def _call_item(item):
    fn, state = _STATE["job"]
    return fn(state, item)
