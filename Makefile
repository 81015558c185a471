# Two commands matter: `make run` (set up, seed the demo store, serve it) and `make test` (set up, lint, type-check,
# test). Both need only python3 (3.11+), pip, git and make: uv is installed into .tools/ when it is not on PATH.

SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
# The suite runs in pytest-xdist worker processes (docs/testing.md), one per core of a 2-core machine: more
# oversubscribe a loaded machine until subprocess tests miss their deadlines. TEST_WORKERS=0 runs it in this one
# process, in order, for debugging (pdb, -s, a test's output as it happens): `make unit TEST_WORKERS=0`.
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist worksteal

.PHONY: run run-stripe setup test lint typecheck unit test-postgres test-interop test-browser screenshots policy-test bench docs clean

$(CURDIR)/.tools/bin/uv:
	@echo "first run: installing uv $(UV_VERSION) into .tools/ ..."
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The first install shows uv's progress (a minute or so); later runs are quiet.
setup: $(if $(findstring .tools,$(UV)),$(CURDIR)/.tools/bin/uv)
	@$(if $(wildcard $(CURDIR)/.venv/bin/python),,echo "first run: installing the locked dependencies into .venv/ ...")
	$(UV) sync --frozen $(if $(wildcard $(CURDIR)/.venv/bin/python),--quiet,)

## Set up, seed the demo store (SQLite under ./data) and serve MCP on http://127.0.0.1:8000/mcp with the dev issuer.
run: setup
	$(UV) run mandate dev

## The same, with refunds' payments at a local fake Stripe: starts localstripe on 127.0.0.1:8420, links the demo
## orders to payment intents there and configures the payments provider (README, "Payments provider").
run-stripe: setup
	$(UV) run mandate dev --localstripe

## Set up and run every check: lint, format, strict types, the test suite (SQLite), the default policy's test suite.
test: setup lint typecheck unit test-browser policy-test

lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .

typecheck:
	$(UV) run mypy

unit:
	$(UV) run pytest -q $(PARALLEL) -m "not interop and not browser" tests

## The web console in a real browser: Debian's chromium through chromium-driver (apt-get install -y chromium
## chromium-driver). Skipped, saying why, when they are not installed; MANDATE_REQUIRE_BROWSER=1 makes that a failure.
test-browser: setup
	$(UV) run pytest -q -m browser tests/console

## Retake the console screenshots in docs/console/ (needs chromium and chromium-driver).
screenshots: setup
	MANDATE_REQUIRE_BROWSER=1 MANDATE_SCREENSHOTS=$(CURDIR)/docs/console $(UV) run pytest -q -m browser tests/console -k follows_it

## The same suite on PostgreSQL (fails when PostgreSQL is not reachable at POSTGRES_URL): every test that uses a
## database, each in a schema of its own; the tests that use none ran in the SQLite pass (tests/conftest.py).
test-postgres: setup
	@pg_isready -q -d "$(POSTGRES_URL)" || { echo "PostgreSQL is not reachable at $(POSTGRES_URL)"; exit 1; }
	MANDATE_TEST_DATABASE_URL="$(POSTGRES_URL)" $(UV) run pytest -q $(PARALLEL) -m "not interop and not browser" tests

## Third-party peers from npm (MCP Inspector CLI, TypeScript SDK, oauth2-mock-server), pinned by package-lock.json.
test-interop: setup
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
	$(UV) run pytest -q -m interop tests/interop

policy-test: setup
	@if [ -d scopes/policy-tests ]; then for f in scopes/policy-tests/*.toml; do $(UV) run mandate policy test "$$f" || exit 1; done; fi

bench: setup
	$(UV) run python -m bench

## Regenerate docs/configuration.md from the settings models (tests/test_config_reference.py checks it is current).
docs: setup
	$(UV) run python -m server.config_reference --write

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache tests/interop/node_modules
