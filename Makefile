# The two commands of the README:
#   make run    set everything up and run the app (Redis, daphne, two workers)
#   make test   install the test dependencies and run the whole suite
# Both create .venv with the first Python >= 3.12 found, unless PYTHON is given.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: run test lint clean

run: $(VENV)/.installed
	$(PY) -m project.devrun

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(PY) -m pip install -q -e '.[lint]'
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy retrying_consumers realtime project

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "error: Python 3.12 or newer is needed (set PYTHON=/path/to/python3.12)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) data
