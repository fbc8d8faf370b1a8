# The two commands of the README. Each creates .venv when missing and installs the pinned stack into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edge-sr-installed
PYTEST_WORKERS ?= 2

.PHONY: demo test lint lint-imports package-tree install clean zoo-stats

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) demos/main.py

lint: $(STAMP) package-tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd $(PACKAGE_TREE) && $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/pyproject.toml -p edge_sr
	cd $(PACKAGE_TREE) && $(abspath $(VENV))/bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

# mypy and import-linter find a package's modules on disk, but convert/ and quantize/ install as
# edge_sr.convert and edge_sr.quantize through a package-dir mapping: check a linked tree with the installed
# layout (build/ is ignored by git).
PACKAGE_TREE := build/package-tree
package-tree:
	rm -rf $(PACKAGE_TREE) && mkdir -p $(PACKAGE_TREE)/edge_sr
	ln -s $(CURDIR)/edge_sr/* $(CURDIR)/convert $(CURDIR)/quantize $(PACKAGE_TREE)/edge_sr/

lint-imports: $(STAMP) package-tree
	cd $(PACKAGE_TREE) && $(abspath $(VENV))/bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -rs --durations=15

# the figures `edge-sr models` lists, rewritten after a change to edge_sr/models or edge_sr/reparam (a test checks)
zoo-stats: $(STAMP)
	$(PY) -m edge_sr.models.stats

clean:
	rm -rf build dist *.egg-info
