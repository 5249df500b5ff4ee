# The kit's two commands: `make study` and `make test` (see README.md). Both create or refresh .venv first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.llm4academic-installed
KERNEL := llm4academic

# Keep all state inside the project: nothing is written to ~.
CACHE := $(CURDIR)/.cache
export LLM4A_CACHE_DIR      := $(CACHE)
export HF_HOME              := $(CACHE)/huggingface
export MPLCONFIGDIR         := $(CACHE)/matplotlib
export JUPYTER_CONFIG_DIR   := $(CACHE)/jupyter/config
export JUPYTER_DATA_DIR     := $(CACHE)/jupyter/data
export JUPYTER_RUNTIME_DIR  := $(CACHE)/jupyter/runtime
export IPYTHONDIR           := $(CACHE)/ipython
export TMPDIR               := $(CACHE)/tmp
export PIP_CACHE_DIR        := $(CACHE)/pip
export OMP_NUM_THREADS      ?= 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: study test test-fast lint lab venv sysdeps clean-reports

venv: $(STAMP)

# torch first, from its exact pin (a CPU build on these machines); then the kit and its pinned dependencies.
$(STAMP): pyproject.toml constraints.txt
	@mkdir -p $(TMPDIR) $(MPLCONFIGDIR)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (llm4academic)" >/dev/null
	@touch $(STAMP)

# Debian packages: headless chromium + chromedriver (the report's browser check) and a CJK font for the figures;
# installed only when missing (apt-get, as root or with sudo).
sysdeps:
	@scripts/install-system-deps

study: $(STAMP)
	@mkdir -p $(TMPDIR)
	@scripts/install-system-deps || echo "make study: going on without them (figures draw Chinese tags as boxes)"
	$(PY) -m llm4academic run params/smoke.yaml

# Every test (the end-to-end ones are marked slow). Both tiers print the 15 slowest tests (pyproject's addopts).
test: $(STAMP) sysdeps
	@mkdir -p $(TMPDIR)
	$(PY) -m pytest -q

# The fast tier while developing: everything but the tests marked slow (studies, FSDP launches, notebook runs).
test-fast: $(STAMP) sysdeps
	@mkdir -p $(TMPDIR)
	$(PY) -m pytest -q -m "not slow"

# ruff's lint rules and formatting (pyproject [tool.ruff]); fix with `ruff check --fix .` and `ruff format .`.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lab: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(VENV)/bin/jupyter lab --notebook-dir=$(CURDIR) --no-browser

clean-reports:
	find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
