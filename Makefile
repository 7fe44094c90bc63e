# Two commands for a fresh machine:  `make run`  (platform on embedded defaults)  and  `make test`.
SHELL := /bin/bash
# Unset DJANGO_ENV means production (emsp/settings.py): what these targets run is a development machine's.
export DJANGO_ENV ?= development
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Test processes (pytest-xdist): each takes a database and a Redis database of its own (tests/conftest.py) and
# the end-to-end tests take turns at RabbitMQ (tests/e2e/platform.py); `worksteal`: an idle process takes tests
# queued for a busy one (the slow end-to-end tests would otherwise end the run on one process); 1 runs the suite
# in this process.
TEST_PROCESSES ?= 2
PYTEST_PROCESSES := $(if $(filter 1,$(TEST_PROCESSES)),-p no:xdist,-n $(TEST_PROCESSES) --dist worksteal)

.PHONY: smoke-run install interop-venv run demo test smoke lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

# Debian's Noto faces for receipts in the Indian scripts (billing/documents/layout.py); where apt can't install
# them, such names print as boxes and the tests that need the faces skip.
$(VENV)/.fonts: $(VENV)/.installed
	@if test -f /usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-core fonts-dejavu-core >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-core fonts-dejavu-core)); \
	then touch $@; else echo "fonts-noto-core could not be installed: receipts print Indian scripts as boxes."; fi

install: $(VENV)/.installed $(VENV)/.fonts

# Debian's Chromium for the real-browser tests (tests/browser); where apt can't install it they skip.
$(VENV)/.chromium: $(VENV)/.installed
	@if test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium); \
	then touch $@; else echo "Chromium could not be installed: the browser tests (tests/browser) will be skipped."; fi

# The independent OCPI peer's own virtualenv (var/interop-venv, from tests/interop/requirements.txt), built
# once and kept while the requirements are unchanged; where the package index can't be reached, tests/interop
# skip and say why.
interop-venv: install
	@$(PY) -m tests.interop.peer || true

## Run the platform: SQLite and a file-based Celery queue unless DATABASE_URL / REDIS_URL are set.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py run_platform

## A driver's charge, search to settlement, then a booked window, a refused reservation, a route search and a
## no-show, against the platform `make run` started (other terminal).
demo: install
	$(PY) manage.py demo

## The whole test suite against DATABASE_URL (SQLite when unset) and REDIS_URL (end-to-end tests).
test: install $(VENV)/.chromium interop-venv
	$(VENV)/bin/pytest -q $(PYTEST_PROCESSES)

## The embedded default must not rot: a fresh SQLite database, migrations, demo data, unit tests.
smoke: install
	rm -f var/smoke.sqlite3
	DATABASE_URL=sqlite:///var/smoke.sqlite3 REDIS_URL= $(PY) manage.py migrate --noinput -v0
	DATABASE_URL=sqlite:///var/smoke.sqlite3 REDIS_URL= $(PY) manage.py demo_setup
	DATABASE_URL= REDIS_URL= $(VENV)/bin/pytest -q -m "not e2e" -p no:cacheprovider $(PYTEST_PROCESSES)

## `make run` then `make demo` on embedded SQLite, as a newcomer would: the whole platform and the demo's journeys.
SMOKE_RUN_ENV = DATABASE_URL=sqlite:///var/smoke-run.sqlite3 REDIS_URL=
smoke-run: install
	rm -f var/smoke-run.sqlite3 var/smoke-run.log
	$(SMOKE_RUN_ENV) $(PY) manage.py migrate --noinput -v0
	@$(SMOKE_RUN_ENV) $(PY) manage.py run_platform --port 8600 > var/smoke-run.log 2>&1 & pid=$$!; \
	trap 'kill -TERM $$pid; wait $$pid' EXIT; \
	for i in $$(seq 180); do grep -q "The platform is running" var/smoke-run.log && break; sleep 1; done; \
	$(SMOKE_RUN_ENV) $(PY) manage.py demo --bpp http://127.0.0.1:8600/beckn --charge-seconds 4 \
	  || { echo "--- var/smoke-run.log"; cat var/smoke-run.log; exit 1; }

## Style, and the direction of dependencies (import-linter contracts in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var/ .pytest_cache .ruff_cache
