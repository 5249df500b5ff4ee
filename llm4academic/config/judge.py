"""``evaluate.judge``: a local Hugging Face causal LM (``model``) or a model behind an OpenAI-compatible endpoint
(``endpoint``) that grades answers 1-10 and compares them with a baseline in both orders."""

from __future__ import annotations

import re

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from .strict import _Strict


class JudgeParams(_Strict):
    model: str | None = Field(
        default=None,
        description="a study model's name, or a local path / hub id of an "
        "HF causal model that grades answers 1-10; unset = no judge",
    )
    baseline: str | None = Field(
        default=None,
        description="pairwise: compare each model with this one "
        "(a study model or a Z-Bench reference model), judged in both orders",
    )
    endpoint: str | None = Field(
        default=None,
        description="instead of `model`: the base URL of an OpenAI-compatible chat-completions API "
        "(e.g. http://127.0.0.1:8000/v1 for `transformers serve` or vLLM) whose model is the judge",
    )
    endpoint_model: str | None = Field(
        default=None, description="with `endpoint`: the model name the server expects in each request"
    )
    api_key_env: str | None = Field(
        default=None,
        description="with `endpoint`: the NAME of the environment variable holding the API key "
        "(read at each request, never stored); unset = no key (a local server)",
    )
    concurrency: PositiveInt = Field(default=4, le=64, description="with `endpoint`: requests in flight at once")
    timeout_s: PositiveFloat = Field(default=60.0, description="with `endpoint`: seconds one request may take")
    max_retries: int = Field(
        default=4, ge=0, le=10, description="with `endpoint`: retries after connection errors, timeouts, 429 and 5xx"
    )
    logprobs: bool = Field(
        default=True,
        description="with `endpoint`: ask for top_logprobs (expected grades from them when the server returns "
        "them; otherwise the reply's text alone)",
    )

    @model_validator(mode="after")
    def _model_or_endpoint(self) -> JudgeParams:
        if self.model and self.endpoint:
            raise ValueError(
                "evaluate.judge.model and evaluate.judge.endpoint both choose the judge: set one of them "
                "(model: a local HF causal LM; endpoint: an OpenAI-compatible server)"
            )
        if self.endpoint is None:
            extra = [k for k in ("endpoint_model", "api_key_env") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"evaluate.judge.{extra[0]} needs evaluate.judge.endpoint (the server's base URL)")
            return self
        url = self.endpoint.strip()
        if not re.fullmatch(r"https?://[^\s/@]+(/\S*)?", url) or re.search(r"[?&][\w-]*(key|token|secret)=", url, re.I):
            raise ValueError(
                "evaluate.judge.endpoint: expected an http(s) base URL such as http://127.0.0.1:8000/v1, without "
                "credentials in it (the key goes in the variable evaluate.judge.api_key_env names)"
            )
        if url.rstrip("/").endswith("/chat/completions"):
            raise ValueError(
                "evaluate.judge.endpoint: give the base URL (…/v1); the judge adds /chat/completions itself"
            )
        if not self.endpoint_model:
            raise ValueError(
                "evaluate.judge.endpoint_model: required with evaluate.judge.endpoint (the model name the server "
                "expects, e.g. the path or hub id `transformers serve` / vLLM was started with)"
            )
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise ValueError(  # the value is not repeated: it might be the key itself
                "evaluate.judge.api_key_env: expected the NAME of an environment variable (letters, digits, _), "
                "e.g. OPENAI_API_KEY — never the key itself"
            )
        return self
