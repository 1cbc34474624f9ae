# optarena — one command each: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch on machines without an NVIDIA GPU; pip resolves torch to a CUDA
# build otherwise (several GB). Override with `make setup TORCH_CONSTRAINTS=` to skip.
TORCH_CONSTRAINTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,constraints/cpu.txt)
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test test-fast lint format bench bench-gpu clean

setup: $(STAMP)

# Re-installs only when the dependency list changes, so `make test` stays fast.
$(STAMP): pyproject.toml constraints/cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_CONSTRAINTS),-c $(TORCH_CONSTRAINTS)) -e '.[dev]'
	@touch $@

# Headless Chromium renders the report and the dashboard in their tests (Debian's package).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the tests need Chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

# A real study on the embedded default: local Ray, records under .optarena/, data made here.
demo: setup
	$(VENV)/bin/optarena run studies/quickstart.yaml
	@echo "Browse every run: $(VENV)/bin/optarena dashboard"

test: setup browser
	$(PY) -m pytest -q

test-fast: setup browser
	$(PY) -m pytest -q -m 'not slow'

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m benchmarks.optimizer_step
	$(PY) -m benchmarks.trainer_overhead
	$(PY) -m benchmarks.study_overhead
	$(PY) -m benchmarks.report_scale

# On a machine with a CUDA GPU: trials sharing it (gpus_per_trial 1, 0.25, 0.0625).
bench-gpu: setup
	$(PY) -m benchmarks.gpu_sharing

clean:
	rm -rf $(VENV) .optarena .pytest_cache .ruff_cache *.egg-info
