"""The HTTP side of the endpoint judge: ``EndpointClient.post`` sends one request to an OpenAI-compatible
``POST {endpoint}/chat/completions`` (``transformers serve``, a vLLM server, a hosted API) and returns the response
JSON.

Each request has a timeout and is retried with exponential backoff (jittered, at least ``Retry-After``) on connection
errors, timeouts, 429 and 5xx; a redirect is an error, so the key is never re-sent to wherever a server points. A
request that stays failed raises ``JudgeFailure`` with one of ``FAILURE_REASONS``; an endpoint that cannot judge at all
(unreachable, key refused, unknown model) raises ``EndpointError`` and the run stops. The API key is read at each
request from the environment variable that ``api_key_env`` names; it is never stored, logged or written, and text the
server sends back is recorded with the key blanked out (``redact``). Imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.client import HTTPException

from .tables import ScoringError

log = logging.getLogger(__name__)

RETRY_WAIT_MAX_S = 60.0
# Why a request left its item out: a reply that is not a bare score / letter, a refusal, a 4xx other than
# 401/403/404 (those stop the run), still 429 / 5xx / timing out / unreachable after the retries, a 200 that is not a
# chat completion, or not asked because the run stopped early.
FAILURE_REASONS = (
    "malformed",
    "refused",
    "rejected",
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "bad_response",
    "missing",
)


class EndpointError(ScoringError):
    """The endpoint cannot judge at all (unreachable, key refused, unknown model): the run stops."""


class JudgeFailure(ScoringError):
    """One request did not end in a parsed reply; ``reason`` is one of ``FAILURE_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error (HTTPError 3xx): the key is never re-sent to wherever a server points."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _retry_after(headers) -> float:
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


class EndpointClient:
    """One OpenAI-compatible chat-completions endpoint: ``endpoint`` the base URL (``http://127.0.0.1:8000/v1``),
    ``model`` the name the server expects, ``api_key_env`` the name of the environment variable holding the key (read
    at each request; none for a local server). ``max_retries`` retries per request after connection errors, timeouts,
    429 and 5xx, waiting ``backoff_s`` · 2^n (jittered, at least ``Retry-After``), each try within ``timeout_s``."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
    ):
        self.endpoint, self.model = endpoint.rstrip("/"), model
        self.url = f"{self.endpoint}/chat/completions"
        self.api_key_env, self.timeout_s = api_key_env, timeout_s
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self._lock = threading.Lock()
        self._reached = False  # any HTTP answer so far: later connection errors are per item, not fatal
        self._stop = threading.Event()  # set when ask_all stops (stop_after, an error): retries give up at once

    # ----------------------------------------------------------------------------------------- the key
    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            shown = self.api_key_env if re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", self.api_key_env) else "it names"
            raise EndpointError(
                f"evaluate.judge.api_key_env: the environment variable {shown} is not set (or empty); "
                "export the API key there (params hold only the variable's name)"
            )
        return key

    def redact(self, text: str) -> str:
        """``text`` with the API key (if any is set) blanked out: what the server sent back, safe to record."""
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return text.replace(key, "[api key]") if key else text

    # ----------------------------------------------------------------------------------------- HTTP
    def post(self, body: dict, stats: Counter) -> dict:
        """The response JSON of one request, retried; ``JudgeFailure`` when it stays failed, ``EndpointError`` when
        the endpoint cannot judge at all."""
        data = json.dumps(body, ensure_ascii=False).encode()
        retries = 0
        while True:
            if self._stop.is_set():
                raise JudgeFailure("missing", "not asked: the run stopped first")
            wait = 0.0
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            key = self._key()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with _OPENER.open(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                self._reached = True
                try:
                    return json.loads(raw)
                except ValueError:
                    snippet = self.redact(raw[:200].decode(errors="replace"))
                    raise JudgeFailure("bad_response", f"not JSON: {snippet}") from None
            except urllib.error.HTTPError as e:
                self._reached = True
                try:
                    text = self.redact(e.read()[:300].decode(errors="replace"))
                except (OSError, HTTPException):
                    text = ""
                if e.code in (401, 403):
                    raise EndpointError(
                        f"the judge endpoint refused the API key (HTTP {e.code}): check the variable "
                        "evaluate.judge.api_key_env names"
                    ) from None
                if 300 <= e.code < 400:
                    raise EndpointError(
                        f"HTTP {e.code} from {self.url}: the server redirects to {e.headers.get('Location')!r}; "
                        "set evaluate.judge.endpoint to the final base URL"
                    ) from None
                if e.code == 404:
                    raise EndpointError(
                        f"HTTP 404 from {self.url}: check evaluate.judge.endpoint (the base URL, e.g. "
                        f"http://127.0.0.1:8000/v1) and evaluate.judge.endpoint_model ({self.model!r}): {text}"
                    ) from None
                if e.code != 429 and e.code < 500:
                    reason = "refused" if re.search(r"content[_ ]?(filter|policy)", text, re.I) else "rejected"
                    raise JudgeFailure(reason, f"HTTP {e.code}: {text}") from None
                reason, detail = ("rate_limited" if e.code == 429 else "server_error"), f"HTTP {e.code}: {text}"
                wait = _retry_after(e.headers)
            except (TimeoutError, urllib.error.URLError, ConnectionError, HTTPException, OSError) as e:
                cause = getattr(e, "reason", e)
                timed_out = isinstance(e, TimeoutError) or isinstance(cause, TimeoutError)
                reason = "timeout" if timed_out else "connection"
                detail = f"no reply within {self.timeout_s:g} s" if timed_out else self.redact(str(cause))
            if retries >= self.max_retries:
                if reason == "connection" and not self._reached:
                    raise EndpointError(
                        f"cannot reach the judge at {self.url} (evaluate.judge.endpoint): {detail}"
                    ) from None
                raise JudgeFailure(reason, f"{detail} (after {retries} retries)")
            delay = min(RETRY_WAIT_MAX_S, max(wait, self.backoff_s * 2**retries * (0.5 + random.random() / 2)))
            retries += 1
            with self._lock:
                stats["retries"] += 1
            log.info("judge endpoint: %s; retry %d of %d in %.2f s", reason, retries, self.max_retries, delay)
            self._stop.wait(delay)
