# Everything bootstraps its own environment: .venv/ from requirements.lock (exact pins).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test lint typecheck lock clean bench bench-render

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

## The main job on the embedded stack: sample covers processed, then keeps running (Ctrl-C).
run: install
	$(BIN)/covers dev

## The same, exiting 0 once every sample is processed (non-zero with the reason otherwise).
demo: install
	$(BIN)/covers dev --exit-when-done

test: install lint
	$(BIN)/python -m pytest -q

## The whole pipeline (real broker, Redis, moto S3, HTTP origin) at 1 and 2 workers vs the core.
bench: install
	$(BIN)/python -m benchmarks.bench_e2e

## The processing core against Pillow and sharp, one core (sharp comes from npm, cached).
bench-render: install
	$(BIN)/python -m benchmarks.bench_render

lint: install
	$(BIN)/ruff check streams processors tests benchmarks
	$(BIN)/mypy

## Re-resolve the pins from pyproject.toml (needs the registry).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev,embedded]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^book-covers' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) data .pytest_cache
