# The two commands of the README. Each creates .venv when missing and installs the pinned stack into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edge-sr-installed
PYTEST_WORKERS ?= 2

.PHONY: demo test lint lint-imports install clean

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
	$(VENV)/bin/mypy edge_sr/__init__.py edge_sr/errors.py edge_sr/io_utils.py edge_sr/metrics.py edge_sr/tiling.py \
		edge_sr/verify.py edge_sr/evaluate.py edge_sr/upscale.py \
		edge_sr/models edge_sr/reparam edge_sr/data edge_sr/train edge_sr/runtime edge_sr/weights
	$(MAKE) lint-imports

# import-linter finds a package's modules on disk, but convert/ and quantize/ install as edge_sr.convert and
# edge_sr.quantize through a package-dir mapping: lint a linked tree with that layout (build/ is ignored).
IMPORTS_TREE := build/importlinter
lint-imports: $(STAMP)
	rm -rf $(IMPORTS_TREE) && mkdir -p $(IMPORTS_TREE)/edge_sr
	ln -s $(CURDIR)/edge_sr/* $(CURDIR)/convert $(CURDIR)/quantize $(IMPORTS_TREE)/edge_sr/
	cd $(IMPORTS_TREE) && $(abspath $(VENV))/bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15

clean:
	rm -rf build dist *.egg-info
