"""torch's CPU threads for inference (``threads.cpu_threads``): every usable core inside the scope, the count found
restored after it; a fork inside the scope (or after the pool ran on several threads) leaves a child that runs on one
thread instead of hanging in GNU OpenMP; the answers, judge grades and pair log-probabilities do not depend on the
count."""

import os
import select
import time

import numpy as np
import pytest
import torch

from llm4academic import generate as G
from llm4academic import preference, scoring, threads
from llm4academic.base import KitError
from llm4academic.config import ModelParams
from llm4academic.generate import GenParams, generate_answers
from llm4academic.models import load_model
from llm4academic.zbench import load_zbench


@pytest.fixture
def one_thread():
    """The tests' state (one torch thread, conftest's ``LLM4A_CPU_THREADS=1``), put back after the test; the module's
    fork state left true: this process's pool has run on two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    threads._pinned, threads._pool_ran = False, True


def _gnu_openmp() -> bool:
    try:
        return "libgomp" in open("/proc/self/maps").read()  # noqa: SIM115
    except OSError:
        return False


def test_scope_raises_to_the_setting_and_restores(monkeypatch, one_thread):
    monkeypatch.setenv(threads.ENV, "2")
    with threads.cpu_threads("cpu") as n:
        assert n == 2 and torch.get_num_threads() == 2
        with threads.cpu_threads(torch.device("cpu")) as inner:  # nested: unchanged, still restored once
            assert inner == 2
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError, match="boom"), threads.cpu_threads("cpu"):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 1  # also after an error
    with threads.cpu_threads("cuda") as n:  # an accelerator: nothing changes
        assert n == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv(threads.ENV)
    assert threads.inference_threads() == len(os.sched_getaffinity(0))  # unset: every usable CPU


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_setting_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv(threads.ENV, bad)
    with pytest.raises(KitError, match=rf"{threads.ENV}={bad!r}: expected a positive integer"):
        threads.inference_threads()


def _forked_matmul(timeout: float = 60.0) -> tuple[str, float]:
    """Fork; the child multiplies two 1500×1500 matrices and writes ``threads-before threads-in-scope`` to a pipe.
    Returns what it wrote (``HUNG`` when it did not finish in ``timeout`` s: killed) and the seconds it took."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no exceptions out of here
        try:
            os.close(r)
            seen = torch.get_num_threads()
            with threads.cpu_threads("cpu") as inner:
                a = torch.ones(1500, 1500)
                (a @ a).sum()
            os.write(w, f"{seen} {inner}".encode())
        finally:
            os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], timeout)
    out = os.read(r, 64).decode() if ready else "HUNG"
    os.close(r)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    return out, time.perf_counter() - t0


def test_a_fork_after_the_pool_ran_on_two_threads_runs_on_one(monkeypatch, one_thread):
    """GNU OpenMP's pool does not survive a fork: a child that runs torch ops on two threads after its parent did
    hangs. Forked inside the scope, the child starts on one thread; forked after it, it stays on one; forked while the
    user's own count is two, it runs on one — and each finishes."""
    monkeypatch.setenv(threads.ENV, "2")
    threads._pool_ran = False
    with threads.cpu_threads("cpu"):
        a = torch.ones(1500, 1500)
        (a @ a).sum()  # the pool runs on two threads
        inside, _ = _forked_matmul()
    after, _ = _forked_matmul()
    torch.set_num_threads(2)  # a count the user chose, outside any scope
    (a @ a).sum()
    users, _ = _forked_matmul()
    assert (inside, after, users) == ("1 1", "1 1", "1 1")  # one thread when it started; the scope did not raise it


def test_a_child_leaving_the_scope_it_was_forked_in_stays_on_one_thread(monkeypatch, one_thread):
    """Forked inside an inner scope (one thread inside two: P4's one-thread path), the child leaves that scope without
    restoring the two threads it found — the parent's count, which would hang it — and runs."""
    monkeypatch.setenv(threads.ENV, "2")
    r, w = os.pipe()
    with threads.cpu_threads("cpu"):
        a = torch.ones(1500, 1500)
        (a @ a).sum()
        monkeypatch.setenv(threads.ENV, "1")
        with threads.cpu_threads("cpu"):
            pid = os.fork()
        if pid == 0:  # the child, between the inner scope's end and the outer one's
            try:
                (a @ a).sum()
                os.write(w, str(torch.get_num_threads()).encode())
            finally:
                os._exit(0)
        assert torch.get_num_threads() == 2  # the parent: back to the outer scope's count
    os.close(w)
    ready, _, _ = select.select([r], [], [], 60)
    out = os.read(r, 64).decode() if ready else "HUNG"
    os.close(r)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert out == "1"


@pytest.mark.skipif(not _gnu_openmp(), reason="the hang is GNU OpenMP's (libgomp); this torch does not use it")
def test_without_the_hook_the_child_hangs(monkeypatch, one_thread):
    """The hazard is real here: with the module's fork state cleared (as if no scope were open and the pool had never
    run on several threads) the child keeps the two threads it inherits, and its first matmul hangs."""
    monkeypatch.setenv(threads.ENV, "2")
    torch.set_num_threads(2)
    a = torch.ones(1500, 1500)
    (a @ a).sum()  # the pool runs on two threads, outside any scope
    threads._pinned, threads._pool_ran = False, False
    out, _ = _forked_matmul(timeout=5)
    assert out == "HUNG"


# --------------------------------------------------------------------------------------------- outputs vs count


@pytest.fixture(scope="module")
def items():
    zb = load_zbench()
    return zb.iloc[[0, 3, 70, 101, 150, 250, 300]][["item_id", "prompt"]].reset_index(drop=True)


@pytest.mark.parametrize("arch", ["llama", "bloom"])  # the runner's own loop, and transformers' generate
def test_answers_do_not_depend_on_the_thread_count(arch, tiny_models, items, tmp_path, monkeypatch, one_thread):
    mp = ModelParams(name="m", path=str(tiny_models(arch)))
    gen = GenParams(max_new_tokens=12, batch_size=4)
    out = {}
    for n in ("1", "2"):
        monkeypatch.setenv(threads.ENV, n)
        df, rep = generate_answers(mp, items, tmp_path / n, gen, progress=False)
        assert rep.generated == len(items) and torch.get_num_threads() == 1
        assert set(df["cpu_threads"]) == {int(n)}  # the provenance says what it ran on
        out[n] = df
    for col in ("answer", "new_tokens", "finish_reason", "key"):
        assert list(out["1"][col]) == list(out["2"][col]), col
    assert G.ROW_COLUMNS.index("cpu_threads") == G.ROW_COLUMNS.index("device") + 1


def test_judge_and_pair_scores_do_not_depend_on_the_thread_count(tiny_models, monkeypatch, one_thread):
    judge = scoring.Judge(tiny_models("llama"), device="cpu", batch_size=2)
    asks = [("1+1等于几？", "等于2。", "2"), ("介绍一下长城。", "长城是中国古代的军事防御工程，" * 6, "")]
    model = load_model(ModelParams(name="m", path=str(tiny_models("llama"))))
    rows = [
        {"id": i, "prompt_ids": list(range(5, 5 + 3 * i + 4)), "chosen_ids": [7, 8, 9], "rejected_ids": [10, 11]}
        for i in range(5)
    ]
    seen = {}
    for n in ("1", "2"):
        monkeypatch.setenv(threads.ENV, n)
        calls = []
        forward = judge._forward
        monkeypatch.setattr(judge, "_forward", lambda b, f=forward, c=calls: c.append(torch.get_num_threads()) or f(b))
        seen[n] = (judge.grade_many(asks), preference.reply_logps(model, rows, 64, 0, batch_size=2, ref=model))
        assert set(calls) == {int(n)} and torch.get_num_threads() == 1
        monkeypatch.undo()
    for a, b in zip(seen["1"][0], seen["2"][0], strict=True):
        assert np.allclose(a.probs, b.probs, atol=1e-6, rtol=0) and a.greedy == b.greedy
    one, two = seen["1"][1], seen["2"][1]
    assert np.allclose(one.drop(columns="id").to_numpy(), two.drop(columns="id").to_numpy(), atol=1e-4, rtol=0)
