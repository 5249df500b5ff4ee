"""The judge behind an OpenAI-compatible chat-completions endpoint (``transformers serve``, a vLLM server, a hosted
API), with the local judge's rubrics and outputs: ``EndpointJudge.grade`` a 1–10 ``Grade``, ``compare`` a ``Verdict``
asked in both orders. The reply is read strictly — a bare score, a bare ``A`` or ``B`` (``replies``) — and, when the
server returns ``top_logprobs``, the probabilities come from them.

Requests run on ``concurrency`` threads over ``endpoint_http`` (per-request timeout, retries with exponential backoff
on connection errors, timeouts, 429 and 5xx; the API key read from the environment, never written). A request that
does not end in a parsed reply — malformed, refused, rejected, or still failing after its retries — is recorded per
item with its reason and never becomes a grade: ``endpoint_judge_scores`` / ``endpoint_pairwise_scores`` leave its
row out and list it in ``attrs["failures"]``.

Replies go to a ``VerdictCache`` (``verdict_cache``) keyed by the endpoint model and the whole message sent (rubric,
prompt, answer, reference, order), so a killed run resumes with only what is missing. Either judge's biases are
``judge_bias.judge_report``. Imports no torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..zbench import PROVENANCE
from .endpoint_http import EndpointClient, JudgeFailure
from .replies import read_reply, row_grade
from .tables import FALLBACK_MODEL, SCORE_COLUMNS, answer_items
from .text import cell_text
from .verdict_cache import VerdictCache
from .verdicts import (
    PAIRWISE_COLUMNS,
    Grade,
    Verdict,
    combine_orders,
    grading_prompt,
    pairwise_label,
    pairwise_prompt,
    pairwise_row,
    pairwise_tasks,
    rubric_language,
)

CACHE_VERSION = 1  # bump when what a key stands for changes (message layout, request settings, parsing)
REPLY_TOKENS = 16  # the judge answers a score or a letter
TOP_LOGPROBS = 10
_FORMAT = {  # appended to the rubric: the reply is parsed strictly
    "zh": (
        "只回复评分本身：一个 1 到 10 之间的整数，不要输出任何其他文字。",
        "只回复一个字母：A 或 B，不要输出任何其他文字。",
    ),
    "en": (
        "Reply with the rating only: one integer from 1 to 10, and nothing else.",
        "Reply with one letter only: A or B, and nothing else.",
    ),
}


class EndpointJudge(EndpointClient):
    """A judge behind an OpenAI-compatible ``POST {endpoint}/chat/completions``.

    ``endpoint``: the base URL (``http://127.0.0.1:8000/v1``); ``model``: the name the server expects;
    ``api_key_env``: the name of the environment variable holding the key (read at each request; none for a local
    server). ``cache``: the ``VerdictCache`` file (none: nothing is kept). ``max_retries`` retries per request after
    connection errors, timeouts, 429 and 5xx, waiting ``backoff_s`` · 2^n (jittered, at least ``Retry-After``).
    Temperature 0; ``logprobs`` asks for ``top_logprobs`` (servers that ignore it are read from the text). The HTTP
    side (``post``, ``redact``) is ``EndpointClient``'s."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key_env: str | None = None,
        language: str = "zh",
        max_chars: int = 2000,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        logprobs: bool = True,
        cache: str | os.PathLike | None = None,
    ):
        super().__init__(
            endpoint, model, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s
        )
        self.name = f"{model} @ {self.endpoint}"
        self.language, self.max_chars = rubric_language(language), max_chars
        self.concurrency, self.logprobs = max(1, int(concurrency)), logprobs
        self.cache = Path(cache) if cache is not None else None

    # ----------------------------------------------------------------------------------------- messages, keys
    def grade_message(self, question: str, answer: str, reference: str = "") -> str:
        instruction, lead = grading_prompt(
            question, answer, reference, language=self.language, max_chars=self.max_chars
        )
        return f"{instruction}{_FORMAT[self.language][0]}\n\n{lead.rstrip()}"

    def pairwise_message(self, question: str, answer_a: str, answer_b: str) -> str:
        instruction, lead = pairwise_prompt(
            question, answer_a, answer_b, language=self.language, max_chars=self.max_chars
        )
        return f"{instruction}{_FORMAT[self.language][1]}\n\n{lead.rstrip()}"

    def request_body(self, content: str) -> dict:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_completion_tokens": REPLY_TOKENS,
        }
        if self.logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        return body

    def cache_key(self, kind: str, content: str) -> str:
        """A request's key: the endpoint model, the whole message (rubric, prompt, answers, reference, order) and
        the request settings — not the URL, so a server moved to another port keeps its cache."""
        body = {"v": CACHE_VERSION, "kind": kind, **self.request_body(content)}
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    # ----------------------------------------------------------------------------------------- asking
    def _ask(self, key: str, kind: str, content: str, stats: Counter) -> dict:
        row = read_reply(kind, self.post(self.request_body(content), stats))
        if row["status"] != "ok":
            row["detail"] = self.redact(row["detail"])
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return {
            "key": key,
            "v": CACHE_VERSION,
            "model": self.model,
            **row,
            "reply": self.redact(row["reply"]),
            "created": created,
        }

    def ask_all(
        self, asks: dict[str, tuple[str, str]], *, progress: bool | None = None, stop_after: int | None = None, desc=""
    ) -> tuple[dict[str, dict], dict]:
        """Answer each request (key → ``(kind, message)``): from the cache, else from the endpoint on ``concurrency``
        threads, each reply appended to the cache as it arrives. Returns key → row (``status`` ``ok`` or a reason;
        keys without a row were not asked) and the counts. ``stop_after``: stop once that many new replies are
        written (what a killed run leaves; the next call asks the rest)."""
        stats: Counter = Counter()
        results: dict[str, dict] = {}
        self._stop.clear()
        cache = VerdictCache(self.cache) if self.cache else None
        try:
            todo = [k for k in asks if not (cache and k in cache.rows)]
            for k in asks:
                if cache and k in cache.rows:
                    results[k] = cache.rows[k]
            stats["cached"] = len(asks) - len(todo)
            with (
                ThreadPoolExecutor(self.concurrency, thread_name_prefix="judge") as pool,
                tqdm(
                    total=len(todo),
                    desc=desc or f"judge {self.model}",
                    disable=None if progress is None else not progress,
                    leave=False,
                ) as bar,
            ):
                futures = {pool.submit(self._ask, k, *asks[k], stats): k for k in todo}
                try:
                    for future in as_completed(futures):
                        k = futures[future]
                        bar.update(1)
                        try:
                            row = future.result()
                        except JudgeFailure as f:
                            results[k] = {"key": k, "kind": asks[k][0], "status": f.reason, "detail": f.detail}
                            stats["failed"] += 1
                            continue
                        if cache:
                            cache.append(row)
                        results[k] = row
                        stats["answered"] += 1
                        if stop_after is not None and stats["answered"] >= stop_after:
                            break
                finally:
                    self._stop.set()  # in-flight requests finish; their retries and rows are dropped
                    for future in futures:
                        future.cancel()
        finally:
            if cache:
                cache.close()
        report = {
            "requests": len(asks),
            "cached": stats["cached"],
            "answered": stats["answered"],
            "failed": stats["failed"],
            "missing": len(asks) - len(results),
            "retries": stats["retries"],
            "dropped_partial_line": bool(cache and cache.partial),
            "duplicate_lines": cache.duplicates if cache else 0,
        }
        return results, report

    # ----------------------------------------------------------------------------------------- one item
    def _one(self, kind: str, content: str) -> dict:
        key = self.cache_key(kind, content)
        row = self.ask_all({key: (kind, content)}, progress=False)[0][key]
        if row["status"] != "ok":
            raise JudgeFailure(row["status"], row.get("detail", ""))
        return row

    def grade(self, question: str, answer: str, reference: str = "") -> Grade:
        """Grade one answer 1–10 (``JudgeFailure`` when the reply is not a bare score or the request failed)."""
        return row_grade(self._one("grade", self.grade_message(question, answer, reference)))

    def prefer(self, question: str, answer_a: str, answer_b: str) -> tuple[str, float]:
        """One order: the label the judge chose (``A``/``B``) and its probability for A."""
        row = self._one("pairwise", self.pairwise_message(question, answer_a, answer_b))
        return row["label"], float(row["p_a"])

    def compare(self, question: str, answer: str, baseline: str) -> Verdict:
        """Judge ``answer`` against ``baseline`` in both orders; disagreement is a tie (as ``Judge.compare``)."""
        first, p_a1 = self.prefer(question, answer, baseline)
        second, p_a2 = self.prefer(question, baseline, answer)
        return combine_orders(first, second, p_a1, 1 - p_a2)


# --------------------------------------------------------------------------------------------- whole tables


def _failure(rec, task: str, order: str, row: dict | None) -> dict:
    reason, detail = (row["status"], row.get("detail", "")) if row else ("missing", "not asked: the run stopped early")
    return {
        "item_id": rec.item_id,
        "split": rec.split,
        "model": rec.model,
        "task": task,
        "order": order,
        "reason": reason,
        "detail": str(detail)[:300],
        "reply": str((row or {}).get("reply", ""))[:200],
    }


def _attrs(out: pd.DataFrame, scorer: str, judge: EndpointJudge, failures, report, **extra) -> pd.DataFrame:
    out.attrs["scoring"] = {
        "scorers": [scorer],
        "judge": judge.name,
        "language": judge.language,
        **extra,
        "zbench": dict(PROVENANCE),
    }
    out.attrs["failures"], out.attrs["requests"] = failures, report
    return out


def endpoint_judge_scores(
    answers: pd.DataFrame,
    judge: EndpointJudge,
    zbench: pd.DataFrame | None = None,
    *,
    use_reference: bool = True,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> pd.DataFrame:
    """``judge_scores`` through the endpoint: the same columns (``scorer`` = ``judge``, ``score`` = (expected − 1) / 9,
    ``judge_expected``, ``judge_greedy``) for the answers whose reply parsed. The others are left out and listed in
    ``attrs["failures"]`` (``item_id, split, model, task, order, reason, detail, reply``); ``attrs["requests"]``
    counts the requests (cached, answered, failed, missing, retries)."""
    items = answer_items(answers, zbench)
    plan, asks = [], {}
    for rec in answers.itertuples(index=False):
        item = items.loc[rec.item_id]
        reference = cell_text(item["reference"]) if use_reference else ""
        content = judge.grade_message(cell_text(item["prompt"]), cell_text(rec.answer), reference)
        key = judge.cache_key("grade", content)
        asks[key] = ("grade", content)
        plan.append((rec, reference, key))
    results, report = judge.ask_all(asks, progress=progress, stop_after=stop_after, desc=f"judge {judge.model}")
    rows, failures = [], []
    for rec, reference, key in plan:
        row = results.get(key)
        if not row or row["status"] != "ok":
            failures.append(_failure(rec, "grade", "", row))
            continue
        grade = row_grade(row)
        against = "reference" if reference.strip() else "rubric"
        rows.append((rec.item_id, rec.split, rec.model, "judge", grade.score, against, grade.expected, grade.greedy))
    out = pd.DataFrame(rows, columns=[*SCORE_COLUMNS, "judge_expected", "judge_greedy"])
    return _attrs(out, "judge", judge, failures, report)


def endpoint_pairwise_scores(
    answers: pd.DataFrame,
    judge: EndpointJudge,
    baseline: str | None = FALLBACK_MODEL,
    zbench: pd.DataFrame | None = None,
    *,
    starts: Mapping[str, str] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> pd.DataFrame:
    """``pairwise_scores`` through the endpoint: each answer against the baseline's (and each DPO model of ``starts``
    against its start model's), in both orders (candidate as A, then as B); an item counts only when both orders
    parsed, else each failed order is listed in ``attrs["failures"]`` (``order`` ``AB`` / ``BA``). Columns as
    ``pairwise_scores``."""
    items = answer_items(answers, zbench)
    plan, asks = [], {}
    for t in pairwise_tasks(answers, items, baseline, starts):
        keys = []
        for a, b in ((t.answer, t.baseline_answer), (t.baseline_answer, t.answer)):
            content = judge.pairwise_message(t.question, a, b)
            keys.append(judge.cache_key("pairwise", content))
            asks[keys[-1]] = ("pairwise", content)
        plan.append((t, keys))
    desc = pairwise_label(baseline, starts)
    results, report = judge.ask_all(asks, progress=progress, stop_after=stop_after, desc=desc)
    rows, failures = [], []
    for t, (k1, k2) in plan:
        r1, r2 = results.get(k1), results.get(k2)
        bad = [(order, r) for order, r in (("AB", r1), ("BA", r2)) if not r or r["status"] != "ok"]
        if bad:
            failures.extend(_failure(t.rec, t.scorer, order, r) for order, r in bad)
            continue
        v = combine_orders(r1["label"], r2["label"], float(r1["p_a"]), 1 - float(r2["p_a"]))
        rows.append(pairwise_row(t.rec, t.against, v, t.scorer))
    out = pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
    return _attrs(out, "pairwise", judge, failures, report, baseline=baseline, starts=dict(starts or {}))
