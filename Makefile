# The commands of the README: `make demo`, `make test` (lint, types and the fast tests: about
# 5 minutes on 2 cores) and `make soak` (the long runs, marker soak, and the system tests, marker
# system: root, nspawn, the .deb, Ansible). CI runs both; check-selection makes sure that
# together they run every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
BENCH_ARGS ?=
FAST_TESTS := not soak and not system
SOAK_TESTS := soak or system
XDIST ?= -n 2

.PHONY: demo test soak check-selection lint typecheck unit bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dorch needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml emulator/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' -e ./emulator
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/dorch demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check dorch emulator tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: lint typecheck check-selection
	$(BIN)/pytest -ra $(XDIST) -m "$(FAST_TESTS)" $(PYTEST_ARGS)

soak: $(VENV)/.installed-test
	$(BIN)/pytest -ra -m "$(SOAK_TESTS)" $(PYTEST_ARGS)

check-selection: $(VENV)/.installed-test
	$(BIN)/python tests/support/check_selection.py "$(FAST_TESTS)" "$(SOAK_TESTS)"

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# --- packaging (packaging/README.md): dist/dorch_<version>_<arch>.deb; needs root ------------
.PHONY: deb
deb: $(VENV)/.installed-test
	PYTHON=$(BIN)/python packaging/build-deb
