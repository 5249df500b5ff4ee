"""torch's CPU threads: every usable core while the kit runs a model for inference on CPU (generation, the local
judge's forward passes, scoring preference pairs), one thread everywhere else.

Why one elsewhere. torch's CPU build runs its intra-op pool on GNU OpenMP, which is not fork-safe: a process forked
after the pool ran with two or more threads hangs at its first parallel op unless it runs on one thread (measured
here: the child of a parent that multiplied 1500×1500 matrices on two threads hangs on two, finishes at once on one;
``tests/test_threads.py`` keeps that check). The kit forks — ``datasets.map(num_proc=…)`` workers, accelerate's
``notebook_launcher`` — so ``base.setup_environment`` sets ``OMP_NUM_THREADS=1``, inference raises the count only
for its own calls (``cpu_threads``) and puts it back, and a process forked inside that scope, or after a pool that
may have run on several threads (a scope's, or a count above one that the user set), runs on one thread and never
raises it (an ``os.register_at_fork`` hook).

How many: ``LLM4A_CPU_THREADS`` when set (a positive integer), else every CPU this process may run on
(``base.usable_cpus``). The tests set 1: two pytest workers on two cores would otherwise oversubscribe them.
Outputs do not depend on the count (``tests/test_threads.py``: the same answers and judge grades on one thread and
on two). On an accelerator nothing changes. The count is the process's: open scopes from one Python thread at a time
(the kit does; the endpoint judge's request threads never enter one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .base import KitError, usable_cpus

ENV = "LLM4A_CPU_THREADS"
_pool_ran = torch.get_num_threads() > 1  # whether this process's OpenMP pool may have run on more than one thread
_pinned = False  # a child forked after that: it stays on its one thread (more would hang it)


def inference_threads() -> int:
    """torch threads for inference on CPU: ``LLM4A_CPU_THREADS`` when set, else every usable CPU."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return usable_cpus()
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise KitError(
            f"environment variable {ENV}={raw!r}: expected a positive integer, the torch threads for inference on "
            "CPU (unset = every usable CPU)"
        )
    return n


def on_cpu(device) -> bool:
    return torch.device(device).type == "cpu"


@contextmanager
def cpu_threads(device) -> Iterator[int]:
    """Run the block on ``inference_threads()`` torch threads when ``device`` is the CPU, then restore the count it
    found (also on an error); elsewhere a no-op. Nests. In a process forked after its parent's pool ran on several
    threads, the block stays on the threads it has (one). Yields the thread count the block runs on."""
    global _pool_ran
    before = torch.get_num_threads()
    if not on_cpu(device) or _pinned:
        yield before
        return
    want, pid = inference_threads(), os.getpid()
    if want != before:
        torch.set_num_threads(want)
    _pool_ran = _pool_ran or want > 1  # before the block: a fork inside it already pins its child
    try:
        yield want
    finally:
        # a child forked inside the block leaves it on its one thread (the hook's)
        if os.getpid() == pid and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _after_fork_in_child() -> None:
    """A child forked inside a ``cpu_threads`` scope, or after its parent's OpenMP pool may have run on several
    threads: that pool did not survive the fork, so the child runs on one thread and never raises it."""
    global _pinned
    if _pool_ran:  # a scope that raised the count set it
        _pinned = True
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)


os.register_at_fork(after_in_child=_after_fork_in_child)
