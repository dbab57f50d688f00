# Two commands do everything on a fresh machine: `make run` (the app) and `make test` (lint + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint replay bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

replay: setup
	$(BIN)/python -m core.replay --days 5 --seed 7

run: replay

bench: setup
	$(BIN)/python bench/replay_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
