"""The judge behind an OpenAI-compatible endpoint (scoring/endpoint.py): strict parsing, retries and failures against a
canned HTTP server on 127.0.0.1, the resumable verdict cache, the params, the bias report — and, marked slow, the whole
evaluate step against a real ``transformers serve`` of a tiny offline model, with the API key never written."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE

from llm4academic import evaluate, scoring
from llm4academic.config import ConfigError, load_params, resolved_dict
from llm4academic.rundir import RunDir
from llm4academic.scoring.replies import grade_probs, read_reply
from llm4academic.zbench import load_zbench

KEY_ENV = "LLM4A_TEST_JUDGE_KEY"
FAKE_KEY = "sk-llm4a-TESTKEY-4f2b9c1e7d"  # recognisable: it must never appear in anything written


# --------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("7", 7),
        (" 10\n", 10),
        ("8/10", 8),
        ("9分", 9),
        ("[[3]]", 3),
        ("评分（1-10）：6", 6),
        ("Rating (1-10): 5.", 5),
        ("８", 8),  # full width
        ("0", None),
        ("11", None),
        ("7 because it is clear", None),
        ("I would give it 8", None),
        ("", None),
        ("7, 8", None),
    ],
)
def test_grades_are_read_strictly(reply, grade):
    assert scoring.parse_grade(reply) == grade


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("A", "A"),
        ("B.", "B"),
        ("[[B]]", "B"),
        ("助手 A", "A"),
        ("更好的回答是助手 B", "B"),
        ("The better answer is assistant A", "A"),
        ("a", None),
        ("A or B", None),
        ("Both", None),
        ("A, because", None),
    ],
)
def test_labels_are_read_strictly(reply, label):
    assert scoring.parse_label(reply) == label


def _choice(content, entries=None, finish="stop", refusal=None):
    choice = {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}
    if refusal:
        choice["message"]["refusal"] = refusal
    if entries is not None:
        choice["logprobs"] = {"content": entries}
    return {"choices": [choice]}


def _entry(token, top):
    import math

    return {"token": token, "logprob": math.log(top[token]), "top_logprobs": [
        {"token": t, "logprob": math.log(p)} for t, p in top.items()
    ]}  # fmt: skip


def test_logprobs_give_the_distribution_and_ten_spans_two_tokens():
    row = read_reply("grade", _choice("7", [_entry("7", {"7": 0.6, "8": 0.3, "x": 0.1})]))
    assert row["status"] == "ok" and row["greedy"] == 7 and row["logprobs"]
    assert row["probs"][6] == pytest.approx(2 / 3) and row["probs"][7] == pytest.approx(1 / 3)
    # "10" as "1" then "0": p(10) = p(1)·p(0 | 1), p(1) = p(1)·(1 − p(0 | 1))
    probs = grade_probs([_entry("1", {"1": 0.8, "9": 0.2}), _entry("0", {"0": 0.75, "<eos>": 0.25})], 10)
    assert probs[9] == pytest.approx(0.6) and probs[0] == pytest.approx(0.2) and probs[8] == pytest.approx(0.2)
    assert grade_probs([], 4) == tuple(1.0 if i == 3 else 0.0 for i in range(10))  # no logprobs: one-hot
    row = read_reply("pairwise", _choice("B", [_entry("B", {"B": 0.7, "A": 0.2, "C": 0.1})]))
    assert row["label"] == "B" and row["p_a"] == pytest.approx(2 / 9)
    assert read_reply("pairwise", _choice("A"))["p_a"] == 1.0


def test_replies_that_are_no_grade_are_never_scored():
    assert read_reply("grade", _choice("maybe 7"))["status"] == "malformed"
    cut = read_reply("grade", _choice("The answer is good and", finish="length"))
    assert cut["status"] == "malformed" and "token limit" in cut["detail"]
    assert read_reply("grade", _choice(None, refusal="I can't help with that"))["status"] == "refused"
    assert read_reply("pairwise", _choice("A", finish="content_filter"))["status"] == "refused"
    for bad in ({}, {"choices": []}, {"choices": [{"message": None}]}, [1, 2]):
        with pytest.raises(scoring.JudgeFailure) as e:
            read_reply("grade", bad)
        assert e.value.reason == "bad_response"


# --------------------------------------------------------------------------------------------- a canned server


class Canned(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 answering chat completions by the ``CASE:<name>`` marker in the message:
    ``ok<N>`` (the grade N), ``flaky`` (429 twice, then 8), ``busy`` (500), ``limited`` (429), ``junk``
    (prose), ``refuse``, ``notjson``, ``slow`` (sleeps past the timeout), ``echo400`` (a 400 that echoes the
    request's headers), ``filter`` (a content-filter 400), ``auth`` (401), ``pair`` (the letter of the answer that
    says GOOD), ``first`` (always A), ``moved`` (a 307). It counts attempts per case and keeps each request's
    headers and body."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.attempts: Counter = Counter()
        self.seen: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):  # a client that timed out and left: expected here
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class CannedHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def send(self, status: int, payload, headers=()):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 — http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"]
        case = re.search(r"CASE:(\w+)", text).group(1)
        srv: Canned = self.server
        with srv.lock:
            srv.attempts[case] += 1
            n = srv.attempts[case]
            srv.seen.append((dict(self.headers), body))
        assert self.path == "/v1/chat/completions"
        if case.startswith("ok"):
            return self.send(200, _choice(case[2:]))
        if case == "flaky":
            return (
                self.send(429, {"error": "slow down"}, [("Retry-After", "0")])
                if n <= 2
                else self.send(200, _choice("8"))
            )
        if case == "busy":
            return self.send(500, {"error": "overloaded"})
        if case == "limited":
            return self.send(429, {"error": "rate limited"})
        if case == "junk":
            return self.send(200, _choice("The answer is quite good, I would say 7 or so."))
        if case == "refuse":
            return self.send(200, _choice(None, refusal="I cannot evaluate this."))
        if case == "notjson":
            return self.send(200, b"<html>proxy error</html>")
        if case == "slow":
            time.sleep(0.6)
            return self.send(200, _choice("5"))
        if case == "echo400":
            return self.send(400, {"error": f"bad request; you sent {dict(self.headers)}"})
        if case == "filter":
            return self.send(400, {"error": {"code": "content_filter", "message": "filtered"}})
        if case == "auth":
            return self.send(401, {"error": "invalid key"})
        if case == "moved":
            return self.send(307, {}, [("Location", "http://127.0.0.1:9/v1/chat/completions")])
        if case in ("pair", "first"):
            good_first = text.index("GOOD") < text.index("BAD")
            return self.send(200, _choice("A" if case == "first" or good_first else "B"))
        return self.send(404, {"error": f"unknown case {case}"})


@pytest.fixture
def canned():
    server = Canned()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def zb():
    return load_zbench(["basic"])


def answers_table(zb, texts, model="m"):
    """One answer per Z-Bench item (the first len(texts) basic items)."""
    ids = list(zb["item_id"][: len(texts)])
    return pd.DataFrame({"item_id": ids, "split": "basic", "model": model, "answer": texts})


def judge_for(server, tmp_path=None, **kw):
    kw = {"api_key_env": KEY_ENV, "concurrency": 3, "timeout_s": 0.3, "max_retries": 2, "backoff_s": 0.01, **kw}
    return scoring.EndpointJudge(server.url, "canned-judge", cache=tmp_path and tmp_path / "cache.jsonl", **kw)


def test_retries_failures_and_the_key_stay_where_they_belong(canned, zb, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    cases = ["ok7", "flaky", "busy", "limited", "junk", "refuse", "notjson", "slow", "echo400", "filter"]
    answers = answers_table(zb, [f"answer CASE:{c}" for c in cases])
    judged = scoring.endpoint_judge_scores(answers, judge_for(canned, tmp_path), zb, progress=False)

    graded = dict(zip(judged["item_id"], judged["judge_greedy"], strict=True))
    ids = dict(zip(cases, answers["item_id"], strict=True))
    assert graded == {ids["ok7"]: 7, ids["flaky"]: 8}
    assert judged["judge_expected"].tolist() == [7.0, 8.0] and judged["score"].tolist() == [6 / 9, 7 / 9]
    reasons = {f["item_id"]: f["reason"] for f in judged.attrs["failures"]}
    assert reasons == {
        ids["busy"]: "server_error",
        ids["limited"]: "rate_limited",
        ids["junk"]: "malformed",
        ids["refuse"]: "refused",
        ids["notjson"]: "bad_response",
        ids["slow"]: "timeout",
        ids["echo400"]: "rejected",
        ids["filter"]: "refused",
    }
    # bounded retries: 429 twice then a grade; 5xx / 429 / timeouts: 1 + max_retries attempts; 4xx and replies: one
    assert canned.attempts["flaky"] == 3 and canned.attempts["busy"] == canned.attempts["limited"] == 3
    assert canned.attempts["slow"] == 3
    assert all(canned.attempts[c] == 1 for c in ("ok7", "junk", "refuse", "notjson", "echo400", "filter"))
    req = judged.attrs["requests"]
    assert req["requests"] == 10 and req["answered"] == 4 and req["failed"] == 6 and req["retries"] == 2 + 2 + 2 + 2
    # the key went to the server, as a bearer token, and nowhere else
    assert {h["Authorization"] for h, _ in canned.seen} == {f"Bearer {FAKE_KEY}"}
    body = canned.seen[0][1]
    assert body["temperature"] == 0 and body["max_completion_tokens"] == 16 and body["logprobs"] is True
    echoed = next(f for f in judged.attrs["failures"] if f["reason"] == "rejected")
    assert "[api key]" in echoed["detail"] and FAKE_KEY not in json.dumps(judged.attrs["failures"])
    assert FAKE_KEY not in (tmp_path / "cache.jsonl").read_text() and FAKE_KEY not in caplog.text
    # replies are cached (the malformed and refused ones too); transport failures are asked again next time
    cached = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in cached) == ["malformed", "ok", "ok", "refused"]
    before = sum(canned.attempts.values())
    again = scoring.endpoint_judge_scores(answers, judge_for(canned, tmp_path), zb, progress=False)
    assert again.attrs["requests"]["cached"] == 4 and again.attrs["requests"]["answered"] == 0
    assert sum(canned.attempts.values()) - before == 3 + 3 + 3 + 1 + 1 + 1  # busy, limited, slow, notjson, 400s
    pd.testing.assert_frame_equal(again, judged)


def test_single_calls_raise_the_reason_and_fatal_errors_name_the_params_key(canned, zb, monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    judge = judge_for(canned)
    assert judge.grade("q", "a CASE:ok9").greedy == 9
    with pytest.raises(scoring.JudgeFailure) as e:
        judge.grade("q", "a CASE:junk")
    assert e.value.reason == "malformed"
    with pytest.raises(scoring.EndpointError, match="evaluate.judge.api_key_env") as e:
        judge.grade("q", "a CASE:auth")
    assert FAKE_KEY not in str(e.value)
    with pytest.raises(scoring.EndpointError, match="redirects to .* set evaluate.judge.endpoint"):
        judge.grade("q", "a CASE:moved")  # never followed: the key is not re-sent elsewhere
    assert canned.attempts["moved"] == 1
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(scoring.EndpointError, match=f"evaluate.judge.api_key_env: the environment variable {KEY_ENV}"):
        judge.grade("q", "a CASE:ok9")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nobody = scoring.EndpointJudge(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(scoring.EndpointError, match="cannot reach the judge .* \\(evaluate.judge.endpoint\\)"):
        nobody.grade("q", "a")


def test_pairwise_asks_both_orders(canned, zb):
    judge = judge_for(canned, api_key_env=None)
    answers = pd.concat(
        [
            answers_table(zb, ["GOOD CASE:pair", "BAD CASE:pair", "GOOD CASE:first"], model="cand"),
            answers_table(zb, ["BAD", "GOOD", "BAD"], model="base"),
        ],
        ignore_index=True,
    )
    pw = scoring.endpoint_pairwise_scores(answers, judge, "base", zb, progress=False)
    assert pw["verdict"].tolist() == ["win", "loss", "tie"]
    assert pw["consistent"].tolist() == [True, True, False] and pw["first"].tolist() == ["A", "B", "A"]
    assert canned.attempts["pair"] == 4 and canned.attempts["first"] == 2 and not pw.attrs["failures"]
    assert "Authorization" not in canned.seen[0][0]  # no api_key_env: no key sent
    v = judge.compare("q CASE:pair", "GOOD", "BAD")
    assert (v.outcome, v.consistent, v.p_first, v.p_second) == ("win", True, 1.0, 1.0)
    report = scoring.judge_report(answers, None, pw)
    assert report["position_bias"] == [{"model": "cand", "n": 3, "inconsistent": 1, "position_bias": 1 / 3}]


def test_dpo_models_are_asked_against_their_start_in_both_orders(canned, zb):
    """The endpoint judge asks what the local one asks (``verdicts.pairwise_tasks``): each DPO model against the model
    its run started from, both orders, scorer ``pairwise_start``; a start that is also the baseline is asked once."""
    judge = judge_for(canned, api_key_env=None)
    answers = pd.concat(
        [
            answers_table(zb, ["GOOD CASE:pair", "BAD CASE:pair", "GOOD CASE:first"], model="x-tuned-dpo"),
            answers_table(zb, ["BAD", "GOOD", "BAD"], model="x-tuned"),
        ],
        ignore_index=True,
    )
    starts = {"x-tuned-dpo": "x-tuned"}
    pw = scoring.endpoint_pairwise_scores(answers, judge, None, zb, starts=starts, progress=False)
    assert pw["verdict"].tolist() == ["win", "loss", "tie"] and set(pw["scorer"]) == {"pairwise_start"}
    assert set(pw["model"]) == {"x-tuned-dpo"} and set(pw["against"]) == {"x-tuned"}
    assert pw["consistent"].tolist() == [True, True, False] and pw["second"].tolist() == ["B", "A", "A"]
    assert pw.attrs["requests"]["requests"] == 6 and pw.attrs["scoring"]["starts"] == starts
    same = scoring.endpoint_pairwise_scores(answers, judge, "x-tuned", zb, starts=starts, progress=False)
    assert same["verdict"].tolist() == ["win", "loss", "tie"] and set(same["scorer"]) == {"pairwise"}
    assert same.attrs["requests"]["requests"] == 6  # not asked twice


def test_a_stopped_run_resumes_with_nothing_lost_or_duplicated(canned, zb, tmp_path, recwarn):
    texts = [f"answer {i} CASE:ok{1 + i % 9}" for i in range(7)] + ["answer CASE:junk"]
    answers = answers_table(zb, texts)
    cache = tmp_path / "cache.jsonl"

    first = scoring.endpoint_judge_scores(
        answers, judge_for(canned, tmp_path, api_key_env=None), zb, progress=False, stop_after=3
    )
    assert first.attrs["requests"]["answered"] == 3 and len(cache.read_text().splitlines()) == 3
    assert first.attrs["requests"]["missing"] == 5  # never asked, or asked but not written (in flight at the stop)
    assert len(first) + len(first.attrs["failures"]) == 8
    assert {f["reason"] for f in first.attrs["failures"]} <= {"missing", "malformed"}
    # a kill mid-write: the last line is torn
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"key": "abc", "status": "o')
    second = scoring.endpoint_judge_scores(answers, judge_for(canned, tmp_path, api_key_env=None), zb, progress=False)
    req = second.attrs["requests"]
    assert req["cached"] == 3 and req["answered"] == 5 and req["missing"] == 0 and req["dropped_partial_line"]
    assert any("half-written" in str(w.message) for w in recwarn)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]  # every line whole
    assert len(rows) == len({r["key"] for r in rows}) == 8
    assert len(second) == 7 and [f["reason"] for f in second.attrs["failures"]] == ["malformed"]
    assert second["judge_greedy"].tolist() == [1 + i % 9 for i in range(7)]
    asked = sum(canned.attempts.values())
    third = scoring.endpoint_judge_scores(answers, judge_for(canned, tmp_path, api_key_env=None), zb, progress=False)
    assert sum(canned.attempts.values()) == asked and third.attrs["requests"]["cached"] == 8
    pd.testing.assert_frame_equal(third, second)


# --------------------------------------------------------------------------------------------- the report, params


def test_judge_report_length_bias_and_self_preference():
    answers = pd.DataFrame(
        {
            "item_id": [f"basic-00{i}" for i in range(4)] * 2,
            "split": "basic",
            "model": ["me"] * 4 + ["other"] * 4,
            "answer": ["a", "bb", "ccc", "dddd", "x", "y", "z", "w"],
        }
    )
    judged = answers[["item_id", "split", "model"]].assign(judge_expected=[2.0, 4.0, 6.0, 8.0, 5.0, 5.0, 3.0, 5.0])
    report = scoring.judge_report(answers, judged, self_models=["me"])
    by_model = {r["model"]: r for r in report["length_bias"]}
    assert by_model["me"]["spearman"] == pytest.approx(1.0) and by_model["me"]["median_chars"] == 2.5
    assert by_model["other"]["spearman"] is None  # every answer has the same length: undefined
    assert report["self_preference"] == {
        "flagged": True,
        "models": ["me"],
        "mean_grade_self": 5.0,
        "mean_grade_others": 4.5,
    }
    assert report["position_bias"] is None and not scoring.judge_report(answers, judged)["self_preference"]["flagged"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["evaluate.judge.endpoint=http://127.0.0.1:8000/v1"], "evaluate.judge.model and evaluate.judge.endpoint"),
        (["evaluate.judge.model=null", "evaluate.judge.endpoint=http://127.0.0.1:8000/v1"], "endpoint_model: required"),
        (
            ["evaluate.judge.model=null", "evaluate.judge.endpoint_model=x"],
            "endpoint_model needs evaluate.judge.endpoint",
        ),
        (["evaluate.judge.model=null", "evaluate.judge.endpoint=127.0.0.1:8000"], "evaluate.judge.endpoint: expected"),
        (
            [
                "evaluate.judge.model=null",
                "evaluate.judge.endpoint=https://user:pw@api.example/v1",
                "evaluate.judge.endpoint_model=m",
            ],
            "without credentials",
        ),
        (
            [
                "evaluate.judge.model=null",
                "evaluate.judge.endpoint=https://h/v1?api_key=abc",
                "evaluate.judge.endpoint_model=m",
            ],
            "without credentials",
        ),
        (
            [
                "evaluate.judge.model=null",
                "evaluate.judge.endpoint=http://h/v1/chat/completions",
                "evaluate.judge.endpoint_model=m",
            ],
            "give the base URL",
        ),
        (["evaluate.judge.concurrency=0"], "evaluate.judge.concurrency"),
        (["evaluate.judge.max_retries=11"], "evaluate.judge.max_retries"),
    ],
)
def test_params_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(SMOKE, overrides)


def test_a_key_put_where_its_name_belongs_is_refused_without_repeating_it():
    with pytest.raises(ConfigError) as e:
        load_params(
            SMOKE,
            [
                "evaluate.judge.model=null",
                "evaluate.judge.endpoint=https://api.example/v1",
                "evaluate.judge.endpoint_model=gpt",
                f"evaluate.judge.api_key_env={FAKE_KEY}",
            ],
        )
    assert "NAME of an environment variable" in str(e.value)
    assert FAKE_KEY not in str(e.value).split("[from --set")[0]  # only the echo of the --set itself names it
    params = load_params(
        SMOKE,
        [
            "evaluate.judge.model=null",
            "evaluate.judge.endpoint=http://127.0.0.1:8000/v1",
            "evaluate.judge.endpoint_model=judge",
            f"evaluate.judge.api_key_env={KEY_ENV}",
        ],
    )
    assert params.evaluate.judge.api_key_env == KEY_ENV and params.evaluate.judge.concurrency == 4


# --------------------------------------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path, timeout_s: float = 180):
    """``transformers serve`` of ``model_dir`` on 127.0.0.1 (offline, CPU) in its own process group, until it
    answers /health; the group is stopped on the way out, whatever happened."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"transformers serve did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served_tiny(tmp_path_factory):
    """A tiny LLaMA judge with a chat template (``transformers serve`` needs one), built offline."""
    from transformers import AutoTokenizer

    from llm4academic.models import build_tiny

    path = build_tiny("llama", tmp_path_factory.mktemp("judge") / "tiny-judge")
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_evaluate_with_a_judge_behind_transformers_serve(served_tiny, tmp_path, monkeypatch, caplog, capfd, zb):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    log = tmp_path / "serve.log"
    with transformers_serve(served_tiny, log) as url:
        # 1. the judge over a few Z-Bench answers, stopped after 2 replies, then resumed
        answers = pd.concat([answers_table(zb, list(zb[m][:3]), model=m) for m in ("GPT4", "文心")], ignore_index=True)
        cache = tmp_path / "direct.jsonl"

        def judge():
            return scoring.EndpointJudge(url, str(served_tiny), api_key_env=KEY_ENV, concurrency=2, cache=cache)

        first = scoring.endpoint_judge_scores(answers, judge(), zb, progress=False, stop_after=2)
        assert first.attrs["requests"]["answered"] == 2 and len(cache.read_text().splitlines()) == 2
        second = scoring.endpoint_judge_scores(answers, judge(), zb, progress=False)
        req = second.attrs["requests"]
        assert (req["cached"], req["answered"], req["failed"], req["missing"]) == (2, 4, 0, 0)
        rows = [json.loads(line) for line in cache.read_text().splitlines()]
        assert len(rows) == len({r["key"] for r in rows}) == 6 and all(r["model"] == str(served_tiny) for r in rows)
        # the tiny model's replies are noise: each one is either parsed or reported, never both, never lost
        parsed = {r["key"] for r in rows if r["status"] == "ok"}
        assert len(second) == len(parsed) and len(second.attrs["failures"]) == 6 - len(parsed)
        assert all(f["reason"] == "malformed" and f["reply"] is not None for f in second.attrs["failures"])
        assert all(scoring.parse_grade(r["reply"]) == r.get("greedy") for r in rows)

        # 2. the evaluate step: the study's tiny-llama is the judge's own model (self-preference flagged)
        overrides = [
            "evaluate.limit=2",
            "evaluate.max_new_tokens=6",
            "evaluate.batch_size=4",
            "evaluate.splits=[basic]",
            f"models[0].path={served_tiny}",
            "evaluate.judge.model=null",
            f"evaluate.judge.endpoint={url}",
            f"evaluate.judge.endpoint_model={served_tiny}",
            f"evaluate.judge.api_key_env={KEY_ENV}",
            "evaluate.judge.baseline=GPT4",
            "evaluate.judge.concurrency=2",
        ]
        params = load_params(SMOKE, overrides)
        run_dir = tmp_path / "run"
        rd = RunDir(run_dir)
        rd.root.mkdir()
        rd.write_manifest({"params": resolved_dict(params)})  # the params part of the pipeline's manifest
        result = evaluate.run(params, run_dir, progress=False)
    served_log = log.read_text()

    info = json.loads(rd.evaluate_info.read_text())["judge"]
    requests = info["requests"]["judge"]["requests"] + info["requests"]["pairwise"]["requests"]
    assert served_log.count("POST /v1/chat/completions") >= 6 + requests  # the requests reached the server
    assert info["endpoint"] == url and info["api_key_env"] == KEY_ENV and info["model"] is None
    nonempty = int((result["answers"]["answer"].str.strip() != "").sum())  # pairwise skips empty answers
    assert info["requests"]["judge"]["requests"] == 4 and info["requests"]["pairwise"]["requests"] == 2 * nonempty
    scored = info["scored"]["judge"] + info["scored"]["pairwise"]
    assert info["scored"]["judge"] + sum(f["task"] == "grade" for f in info["failures"]) == 4
    assert sum(info["unscored"].values()) == len(info["failures"]) and set(info["unscored"]) <= {"malformed"}
    assert len(result["judge"]) == info["scored"]["judge"] and rd.judge_cache.is_file()
    assert info["self_preference"]["flagged"] and info["self_preference"]["models"] == ["tiny-llama"]
    assert {r["model"] for r in info["length_bias"]} == set(result["judge"]["model"])
    assert info["position_bias"] is not None or scored == 0
    assert len(result["scores"].query("scorer == 'judge'")) == info["scored"]["judge"]  # failures are not scores

    # the key is nowhere: run directory (manifest, caches, parquet, json, csv), logs, output
    for f in [*run_dir.rglob("*"), cache]:
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f
    assert json.loads(rd.manifest.read_text())["params"]["evaluate"]["judge"]["api_key_env"] == KEY_ENV
    out, err = capfd.readouterr()
    assert FAKE_KEY not in caplog.text + out + err + served_log
