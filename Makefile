# Everything runs from a project-local virtual environment created on first use, so both
# `make run` and `make test` work on a fresh machine with only python3 (>= 3.11) and a C compiler.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ctrflow-installed
# Pinned versions: the same file the image installs from (images/Dockerfile).
CONSTRAINTS := constraints.txt
# meson-python runs meson and ninja from PATH, also when the editable install rebuilds on import.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint typecheck unit bench compile clean image image-ref

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Third-party packages install the normal way (some, such as kfp-server-api, are sdists built in
# pip's isolated build environment). Only ctrflow itself is built without isolation: its editable
# install rebuilds on import with the meson, ninja and Cython of this venv, so they must stay here.
$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS) meson.build
	$(BIN)/python -c "$$REQUIREMENTS_PY" > $(VENV)/requirements.txt
	$(BIN)/pip install -q -c $(CONSTRAINTS) -r $(VENV)/requirements.txt
	$(BIN)/pip install -q -c $(CONSTRAINTS) --no-build-isolation --no-deps -e .
	touch $@

# The build requirements plus the dependencies of ctrflow[dev], read from pyproject.toml (one
# list to keep), with the self-references (ctrflow[test]) expanded.
define REQUIREMENTS_PY
import re, tomllib
meta = tomllib.load(open("pyproject.toml", "rb"))
extras = meta["project"]["optional-dependencies"]
def expand(reqs):
    for req in reqs:
        own = re.fullmatch(r"ctrflow\[(.+)\]", req)
        yield from (r for e in own.group(1).split(",") for r in expand(extras[e])) if own else [req]
print(*meta["build-system"]["requires"], *meta["project"]["dependencies"], *expand(extras["dev"]), sep="\n")
endef
export REQUIREMENTS_PY

install: $(STAMP)

## The main job on this machine: the whole weekly pipeline, locally, with embedded defaults.
run: $(STAMP)
	$(BIN)/ctrflow run

## Lint, type-check and run the whole test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Why a folder of links: the top-level folders (components/, pipelines/) install as
# ctrflow.components and ctrflow.pipelines, a mapping meson-python's editable install makes only
# at import time, in an import hook mypy does not run; the links give mypy the installed layout.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/ctrflow
	ln -s ../../../components build/typecheck/ctrflow/components
	ln -s ../../../pipelines build/typecheck/ctrflow/pipelines
	sed 's/@VERSION@/0/' pipelines/_package_init.py.in > build/typecheck/ctrflow/__init__.py
	ln -s ../../ffm_ext build/typecheck/ffm_ext
	cd build/typecheck && MYPYPATH=. ../../$(BIN)/mypy --config-file ../../pyproject.toml -p ctrflow -p ffm_ext

unit: $(STAMP)
	$(BIN)/pytest -q tests

## The committed pipeline spec; tests/pipelines/test_pipeline_spec.py fails when it is stale.
compile: $(STAMP)
	$(BIN)/ctrflow compile -o pipelines/ctr_pipeline.yaml

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ffm_bench

clean:
	rm -rf build $(VENV)

## The project image, tagged <registry>/ctrflow:<version>: the reference `ctrflow compile` writes by
## default (pipelines/_image.py). Version from meson.build, the one source ctrflow.__version__ has.
CTRFLOW_IMAGE_REGISTRY ?= ghcr.io/ctrflow
REGISTRY ?= $(CTRFLOW_IMAGE_REGISTRY)
VERSION := $(shell sed -n "s/^ *version: *'\([^']*\)'.*/\1/p" meson.build | head -n 1)
IMAGE ?= $(REGISTRY)/ctrflow:$(VERSION)
DOCKER ?= docker

image:
	$(DOCKER) build -f images/Dockerfile --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) -t $(IMAGE) .

image-ref:
	@echo $(IMAGE)
