# Everything a fresh machine needs: `make train` and `make test` create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup train test test-fast lint format benchmarks clean

$(INSTALLED): requirements.txt pyproject.toml setup.py src/posesuite/data/_jpeg_region.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(INSTALLED)

setup: $(INSTALLED)

## Train the default model on the embedded synthetic dataset, then evaluate it (ARGS=overrides).
train: $(INSTALLED)
	$(PY) run.py $(ARGS)

## Lint, format check, and the whole test suite (slow tests included).
test: $(INSTALLED) lint
	$(PY) -m pytest $(ARGS)

## The suite without the slow marker.
test-fast: $(INSTALLED) lint
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

benchmarks: $(INSTALLED)
	$(PY) experiments/benchmarks/dataloader.py
	$(PY) experiments/benchmarks/train_step.py

clean:
	rm -rf logs .pytest_cache .ruff_cache
