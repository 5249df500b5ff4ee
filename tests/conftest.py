"""Shared test set-up: state under the project cache, no network, tiny models built once per session."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM4A_CACHE_DIR", str(ROOT / ".cache"))
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from llm4academic.base import setup_environment  # noqa: E402

setup_environment()

SMOKE = ROOT / "params" / "smoke.yaml"
SAMPLES = ROOT / "llm4academic" / "resources" / "instruct"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Build each tiny architecture once per test session into a fresh folder: {arch: path}."""
    from llm4academic.config import TINY_ARCHS
    from llm4academic.models import build_tiny

    base = tmp_path_factory.mktemp("tiny")
    cache = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            assert arch in TINY_ARCHS
            cache[arch] = build_tiny(arch, base / arch)
        return cache[arch]

    return get


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
