# Two commands do everything on a fresh machine: `make run` (the app) and `make test` (lint + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: setup setup-app sysdeps run worker test test-dates lint replay bench soak clean

APP_STAMP := $(VENV)/.installed-app

# `make run` installs what the app needs (requirements.txt); the test tools come with `make test`
$(APP_STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $(APP_STAMP)

$(STAMP): $(APP_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

setup-app: $(APP_STAMP)

setup: $(STAMP)

# System packages the tests use: Debian's Chromium for the browser tests (never `playwright install`).
sysdeps:
	@missing=""; [ -x /usr/bin/chromium ] || missing="chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: $$missing missing and apt-get unavailable: those tests will skip (fail under CI)"; fi; \
	fi

lint: setup
	$(BIN)/ruff check .

test: sysdeps lint
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

# The whole suite with the system date moved to a weekend, an early close, DST, a holiday, New Year's Eve
# and a normal day (libfaketime): no test may depend on the day it runs. Not part of `make test` (6 runs).
test-dates: sysdeps setup
	$(BIN)/python tests/run_on_dates.py

run: setup-app
	$(BIN)/streamlit run app.py --server.port $(PORT)

worker: setup-app
	$(BIN)/python -m core.worker

replay: setup-app
	$(BIN)/python -m core.research --days 5 --seed 7

bench: setup
	$(BIN)/python bench/replay_bench.py
	$(BIN)/python bench/sweep_bench.py
	$(BIN)/python bench/live_tick_bench.py
	$(BIN)/python bench/live_feed_bench.py
	$(BIN)/python bench/session_replay_bench.py

soak: sysdeps setup
	$(BIN)/python bench/app_soak.py --minutes 10

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
