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

.PHONY: study test test-fast lint lab venv sysdeps test-sysdeps clean-reports

venv: $(STAMP)

# torch first, from its exact pin (torch==2.13.0: PyPI's default build — CUDA on Linux — unless a local or chosen
# build is there: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu or …/cu126, see README); then the kit.
TORCH_INDEX_URL ?=
$(STAMP): pyproject.toml constraints.txt
	@mkdir -p $(TMPDIR) $(MPLCONFIGDIR)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (llm4academic)" >/dev/null
	@touch $(STAMP)

# Debian packages: headless chromium + chromedriver (the report's browser check) and a CJK font for the figures;
# installed only when missing (apt-get, as root or with sudo).
sysdeps:
	@scripts/install-system-deps

# For the tests: where they cannot be installed (not root, no sudo), `make test` goes on, saying why, and the browser
# tests skip with the install command; under CI=true a missing browser stops here (and would fail the tests).
test-sysdeps:
	@scripts/install-system-deps || { \
	  if [[ "$${CI:-}" == true ]]; then echo "make: CI=true: the browser tests need Chromium; stopping" >&2; exit 1; fi; \
	  echo "make: going on without Chromium/fonts: the browser tests will be skipped (see the reason above)" >&2; }

study: $(STAMP)
	@mkdir -p $(TMPDIR)
	@scripts/install-system-deps || echo "make study: going on without them (figures draw Chinese tags as boxes)"
	$(PY) -m llm4academic run params/smoke.yaml

# Every test (the end-to-end ones are marked slow). Both tiers print the 15 slowest tests (pyproject's addopts).
# TEST_WORKERS pytest-xdist processes, each taking whole test files (their module fixtures run once): 2 by default
# (this project's 2-core machines and CI: 6–7 minutes where one process takes 10–11); TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= 2
test: $(STAMP) test-sysdeps
	@mkdir -p $(TMPDIR)
	$(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The fast tier while developing: everything but the tests marked slow (studies, FSDP launches, notebook runs).
test-fast: $(STAMP) test-sysdeps
	@mkdir -p $(TMPDIR)
	$(PY) -m pytest -q -m "not slow" $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# ruff's lint rules and formatting (pyproject [tool.ruff]); fix with `ruff check --fix .` and `ruff format .`.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lab: $(STAMP)
	@mkdir -p $(TMPDIR)
	@scripts/lab  # adds --allow-root when run as root

clean-reports:
	find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
