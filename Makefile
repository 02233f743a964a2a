# The README's two commands: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= .cache

.PHONY: setup demo test test-slow fetch

$(BIN)/xfer: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the CPU wheel in the `test` extra; any other spec downloads GBs of CUDA.
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/xfer

setup: $(BIN)/xfer

fetch: setup
	XFER_CACHE=$(CACHE) $(BIN)/xfer data fetch --tokenizer

demo: fetch
	$(BIN)/xfer demo --cache $(CACHE)

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow
