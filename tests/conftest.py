"""Shared test set-up: state under the project cache, no network, tiny models built once per session; the tests
marked ``browser`` skip, saying why and how to install Chromium, where it is missing and cannot be installed here
(not root, no password-less sudo) — except under ``CI=true``, where they fail."""

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM4A_CACHE_DIR", str(ROOT / ".cache"))
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("LLM4A_CPU_THREADS", "1")  # two pytest workers on two cores: one torch thread each

from llm4academic.base import setup_environment  # noqa: E402

setup_environment()

SMOKE = ROOT / "params" / "smoke.yaml"
SAMPLES = ROOT / "llm4academic" / "resources" / "instruct"
# The shipped instruction samples of the default study: source name → file under SAMPLES.
SHIPPED = {
    "alpaca": "alpaca/alpaca_data.first1825.json",
    "chinese_alpaca": "chinese_alpaca/alpaca_data-0-3252-zh.first2000.json",
    "belle": "belle/dev1K.json",
}


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


# What scripts/install-system-deps runs when it can (Debian/Ubuntu package names).
SYSDEPS_INSTALL = "sudo apt-get install -y --no-install-recommends chromium chromium-driver fonts-wqy-microhei"


def cannot_install_system_packages() -> str | None:
    """None when scripts/install-system-deps could install Debian packages here; otherwise why not."""
    if shutil.which("apt-get") is None:
        return "apt-get not found (not a Debian-based system)"
    if os.geteuid() == 0:
        return None
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=10).returncode == 0:
        return None
    return "not root, and sudo is not available without a password"


def browser_gate() -> tuple[str, str] | None:
    """Decided before the tests marked ``browser``: None when Chromium can run; otherwise ``("skip", reason)`` —
    saying why and the install command — where it cannot be installed here, or ``("fail", reason)`` where it should
    have been (``CI=true``; root or password-less sudo, where `make test` installs it)."""
    import browser

    why = browser.chromium_available()
    if why is None:
        return None
    if os.environ.get("CI", "").lower() == "true":
        return "fail", f"the browser tests must run under CI=true, but the browser check cannot run: {why}"
    binaries = (browser.CHROMIUM, browser.CHROMEDRIVER)
    if not all(p.is_file() and os.access(p, os.X_OK) for p in binaries):
        cannot = cannot_install_system_packages()
        if cannot:
            return "skip", (
                f"headless Chromium is missing and cannot be installed here ({cannot}): {why}. "
                f"Install it with: {SYSDEPS_INSTALL} (as root), then rerun; CI=true makes this a failure"
            )
    return "fail", f"the browser check cannot run: {why}"


@functools.cache
def _browser_gate_once() -> tuple[str, str] | None:
    return browser_gate()


def pytest_runtest_setup(item):
    if item.get_closest_marker("browser") is not None:
        gate = _browser_gate_once()
        if gate is not None:
            kind, reason = gate
            if kind == "skip":
                pytest.skip(reason)
            pytest.fail(reason, pytrace=False)
