# Two commands matter on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test services venv system-deps smoke clean-state bench

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c 'import dagster, ionbeam_dagster' 
	touch $(STAMP)

venv: $(STAMP)

# The benchmark's extra clients (influxdb-client for the reference serialiser, xarray for
# the raw NetCDF codec), installed on top of the test set the first time `make bench` runs.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]' 2>&1 | grep -v '^WARNING: Location' || true
	touch $(BENCH_STAMP)

## Start, or confirm, InfluxDB, Redis and RabbitMQ on loopback, then exit.
services:
	bash scripts/services.sh

## Local services + Dagster webserver (127.0.0.1:3000) and daemon; sensors and the demo source run.
run: services venv
	bash scripts/run.sh

## Local services + the whole test suite.
test: services venv
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Throughput, latency and memory against the raw limits, on the local services; prints a table
## and writes benchmarks/results/latest.json. Options: BENCH_ROWS (1000000), BENCH_REPEAT (3).
bench: services venv $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

## The smoke job against the configured services, as an operator's CI would run it.
smoke: services venv
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.ionbeam/dagster} bash -c 'mkdir -p $$DAGSTER_HOME && $(BIN)/dagster job execute -m ionbeam_dagster.definitions -j smoke'

## Forget local state (Dagster runs, objects, InfluxDB data). Services must be stopped first.
clean-state:
	rm -rf .ionbeam
