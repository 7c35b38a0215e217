# Everything runs from a project-local virtual environment created on first use, so both
# `make run` and `make test` work on a fresh machine with only python3 (>= 3.11) and a C compiler.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ctrflow-installed
# Pinned versions: the same file the image installs from (images/Dockerfile).
CONSTRAINTS := constraints.txt

.PHONY: install run test lint typecheck unit bench compile clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS) meson.build
	$(BIN)/pip install -q -c $(CONSTRAINTS) meson-python meson cython numpy ninja
	$(BIN)/pip install -q -c $(CONSTRAINTS) --no-build-isolation -e ".[dev]"
	touch $@

install: $(STAMP)

## The main job on this machine: the whole weekly pipeline, locally, with embedded defaults.
run: $(STAMP)
	$(BIN)/ctrflow run

## Lint, type-check and run the whole test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the installed package layout (ctrflow.components, ctrflow.pipelines) through a
# folder of links, since the editable install maps those folders at import time only.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/ctrflow
	ln -s ../../../components build/typecheck/ctrflow/components
	ln -s ../../../pipelines build/typecheck/ctrflow/pipelines
	sed 's/@VERSION@/0/' pipelines/_package_init.py.in > build/typecheck/ctrflow/__init__.py
	ln -s ../../ffm_ext build/typecheck/ffm_ext
	cd build/typecheck && MYPYPATH=. ../../$(BIN)/mypy --config-file ../../pyproject.toml -p ctrflow -p ffm_ext

unit: $(STAMP)
	$(BIN)/pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/ffm_bench.py

clean:
	rm -rf build $(VENV)
