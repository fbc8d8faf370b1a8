# The two commands of the README. Each creates .venv when missing and installs the pinned stack into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edge-sr-installed
PYTEST_WORKERS ?= 2

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) demos/main.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy edge_sr/__init__.py edge_sr/errors.py edge_sr/models/__init__.py edge_sr/reparam/__init__.py edge_sr/metrics.py edge_sr/data/imresize.py

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15

clean:
	rm -rf build dist *.egg-info
