# patient-drip: `make run` starts the service, `make test` runs the whole suite.
# Both create .venv and install what they need; nothing else is required but Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TEST_WORKERS ?= 2

.PHONY: run test install install-test sandbox demo bench clean messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

install: $(STAMP)
install-test: $(TEST_STAMP)

run: $(STAMP)
	$(BIN)/drip init
	$(BIN)/drip serve

# Two pytest workers (this is a 2-core machine's whole CPU; most tests wait on I/O), then the tests
# marked `exclusive` (they restart PostgreSQL) alone. Exit 5 = that selection was empty (-k …).
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not exclusive" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -p no:xdist -m exclusive $(PYTEST_ARGS) || [ $$? -eq 5 ]
	@cat test-artifacts/browser-skipped.txt 2>/dev/null || true

sandbox: $(STAMP)
	$(BIN)/drip sandbox

# The public pages' texts into the Spanish catalog (web/i18n.py): new ones arrive with an empty
# msgstr for a translator; changed ones are marked fuzzy (shown in English until reviewed).
messages: $(STAMP)
	$(BIN)/pybabel extract -F web/locale/babel.cfg -o web/locale/messages.pot --no-location --omit-header .
	$(BIN)/pybabel update -i web/locale/messages.pot -d web/locale -l es --no-fuzzy-matching
	rm web/locale/messages.pot

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) drip.db drip.db-wal drip.db-shm .pytest_cache
