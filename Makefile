# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo lint test test-fast test-kaggle-image bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kseg run --config configs/demo.yaml

# Errors (undefined names, unused imports) and import order everywhere; types on the numeric core (pyproject.toml).
lint: $(STAMP)
	$(BIN)/python -m ruff check
	$(BIN)/python -m mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -q tests -m "not kaggle_image"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow and not kaggle_image"

# The demo kernel on the Kaggle-image stand-in (kernels/kaggle-image-requirements.txt on Python 3.12), installing
# the real bundled wheels offline. The first run builds the 2.7 GB venv (about 2 min); it skips, saying why,
# without a Python 3.12 or the package index.
test-kaggle-image: $(STAMP)
	$(BIN)/python -m pytest -q tests -m kaggle_image

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --out BENCHMARKS.md

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info .pytest_cache .hypothesis
