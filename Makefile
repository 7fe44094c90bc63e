# Two commands for a fresh machine:  `make run`  (platform on embedded defaults)  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install run demo test smoke lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the real-browser tests (tests/browser); where apt can't install it they skip.
$(VENV)/.chromium: $(VENV)/.installed
	@if test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium); \
	then touch $@; else echo "Chromium could not be installed: the browser tests (tests/browser) will be skipped."; fi

## Run the platform: SQLite and a file-based Celery queue unless DATABASE_URL / REDIS_URL are set.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py run_platform

## One driver's charge, search to settlement, against the platform `make run` started (other terminal).
demo: install
	$(PY) manage.py demo

## The whole test suite against DATABASE_URL (SQLite when unset) and REDIS_URL (end-to-end tests).
test: install $(VENV)/.chromium
	$(VENV)/bin/pytest -q

## The embedded default must not rot: a fresh SQLite database, migrations, demo data, unit tests.
smoke: install
	rm -f var/smoke.sqlite3
	DATABASE_URL=sqlite:///var/smoke.sqlite3 REDIS_URL= $(PY) manage.py migrate --noinput -v0
	DATABASE_URL=sqlite:///var/smoke.sqlite3 REDIS_URL= $(PY) manage.py demo_setup
	DATABASE_URL= REDIS_URL= $(VENV)/bin/pytest -q -m "not e2e" -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var/ .pytest_cache .ruff_cache
