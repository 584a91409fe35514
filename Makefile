# hpo: two commands on a fresh clone.
#   make demo   - create .venv, install, run the quickstart sweep on the embedded default, export the best config
#   make test   - create/update .venv, make sure PostgreSQL is up, run the test suite (the slow end-to-end
#                 tests apart: `make test-slow` runs those; CI runs both)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hpo-installed
# The folder examples/quickstart.yaml's train.weights names. hpo expands ~ in paths but not $$VARS, so this is
# ~/.cache/hpo whatever XDG_CACHE_HOME says (to keep it elsewhere, edit train.weights and PRETRAINED together).
CACHE := $(HOME)/.cache/hpo
PRETRAINED := $(CACHE)/pretrained/resnet18-digits04/model.pt
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
PYTEST_ARGS ?=
# pytest-xdist workers: tests are independent (a database, a Ray and temp folders of their own). No test
# asserts a timing: benchmarks judge their goals in `make bench`, the suite checks that they run.
PYTEST_WORKERS ?= 2

.PHONY: install demo pretrain test test-slow test-all pg bench bench-quick lint clean compose-test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# A backbone pretrained on digits 0-4 (cached): the quickstart fine-tunes it on digits 5-9 with a new head.
$(PRETRAINED): | $(STAMP)
	$(BIN)/hpo train examples/pretrain_digits04.yaml --output $(dir $(PRETRAINED))

pretrain: $(PRETRAINED)

demo: install pretrain
	$(BIN)/hpo sweep examples/quickstart.yaml
	$(BIN)/hpo export --study quickstart -o best.yaml --print

# Start the machine's PostgreSQL cluster if it is installed and not answering.
pg:
	@if command -v pg_isready >/dev/null && pg_isready -q -h $(PG_HOST) -p $(PG_PORT); then \
	  echo "PostgreSQL is up on $(PG_HOST):$(PG_PORT)"; \
	elif command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start || true; \
	  for i in $$(seq 1 30); do pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; sleep 1; done; \
	  pg_isready -h $(PG_HOST) -p $(PG_PORT) || echo "PostgreSQL did not come up: its tests will skip (fail under CI=true)"; \
	else \
	  echo "no local PostgreSQL found: its tests will skip (fail under CI=true); set HPO_TEST_PG to use another server"; \
	fi

# pretrain: the learning-curve benchmark's tests fine-tune the quickstart's backbone (benchmarks/curves)
test: install pg pretrain
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# The slow end-to-end tests (real CLI sweeps killed, interrupted, restarted; benchmarks' quick passes; docker).
test-slow: install pg pretrain
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m slow $(PYTEST_ARGS)

test-all: test test-slow

# The benchmarks compare against Ray Tune too: install the bench extra first.
bench: install pg pretrain
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python -m benchmarks

bench-quick: install pg
	$(BIN)/python -m benchmarks --quick

# docker-compose.yml started for real (a Docker engine and Compose v2.24+ needed; docker/compose_test.sh says
# what it does): build, up, a sweep on the Ray cluster with its worker killed mid-sweep, export, down -v.
# It prints the path of its log (HPO_COMPOSE_TEST_LOG to choose it).
compose-test:
	bash docker/compose_test.sh

lint: install
	$(BIN)/ruff check hpo trials storage tests benchmarks
	$(BIN)/mypy hpo trials storage

# Removes the demo's study (hpo.db), best.yaml and the tools' caches. Never runs/: models that hpo train wrote
# live there (and a sweep's checkpoints); delete it yourself with `rm -rf runs` when you mean to.
clean:
	rm -rf hpo.db hpo.db-journal hpo.db-wal hpo.db-shm best.yaml .pytest_cache .mypy_cache .ruff_cache
