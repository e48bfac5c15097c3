# QontoHub — the newcomer's commands. `make run` and `make test` build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: venv run test test-postgres test-browser bench lint migrate seed clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

migrate: venv
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

## Serve the hub, its workers and the provider sandboxes on http://127.0.0.1:8000 (Ctrl-C stops).
run: seed
	$(PY) manage.py runhub 127.0.0.1:8000

## The whole suite on the embedded default (SQLite, ORM broker).
test: venv
	$(PY) -m pytest

## The suite against PostgreSQL and Redis (see .ci/run for the variables it sets).
test-postgres: venv
	QONTOHUB_REQUIRE_POSTGRES=1 DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/qontohub} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(PY) -m pytest

## Browser tests in Debian's Chromium (apt-get install chromium).
test-browser: venv
	QONTOHUB_BROWSER_TESTS=1 $(PY) -m pytest -m browser

bench: venv
	$(PY) bench/run.py

lint: venv
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
