# Two entry points (see README): `make run` sets everything up and runs the main job; `make test` runs the checks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench setup setup-ops

setup: $(STAMP)

# (Re)install when pyproject.toml changes. pip resolves torch==2.13.0 to the local CPU wheel on our machines.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,cpu,dev]'
	touch $@

run: $(STAMP)
	$(BIN)/s2d model run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The Prometheus server and promtool (Debian package `prometheus`) for tests/test_prometheus.py. Best effort: it needs
# root and apt-get; without them it says how to install, and those tests skip with the same reason.
setup-ops:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	    >/dev/null) || echo "setup-ops: could not install prometheus; tests/test_prometheus.py will skip"; \
	else echo "setup-ops: run 'apt-get install -y prometheus' as root to run tests/test_prometheus.py"; fi

test: lint setup-ops
	$(BIN)/python -m pytest

# Everything but the few tests marked slow (full-size ViT-B); CI runs `make test`.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_model.py
