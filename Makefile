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

.PHONY: install run test lint typecheck unit bench compile clean image image-ref mutation mutation-c

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

# The wheel that models from `make run` carry, so that stock `mlflow models serve` (its own
# virtualenv, PyPI only) can install them. Rebuilt whenever a source changes: the version alone
# cannot tell a stale wheel from a current one.
WHEEL_DIR := $(VENV)/wheel
WHEEL_STAMP := $(WHEEL_DIR)/.built
WHEEL_SOURCES := pyproject.toml meson.build \
	$(shell find ffm_ext components pipelines -type f ! -path '*/__pycache__/*' 2>/dev/null)
$(WHEEL_STAMP): $(STAMP) $(WHEEL_SOURCES)
	rm -rf $(WHEEL_DIR)
	$(BIN)/pip wheel -q --no-build-isolation --no-deps -w $(WHEEL_DIR) .
	touch $@

## The main job on this machine: the whole weekly pipeline, locally, with embedded defaults.
run: $(STAMP) $(WHEEL_STAMP)
	CTRFLOW_WHEEL=$(WHEEL_DIR) $(BIN)/ctrflow run

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
	ln -s ../../benchmarks build/typecheck/benchmarks
	ln -s ../../tests build/typecheck/tests
	cd build/typecheck && MYPYPATH=. ../../$(BIN)/mypy --config-file ../../pyproject.toml -p ctrflow -p ffm_ext -p benchmarks -p tests

# Two processes (one per core here): most tests wait on servers and subprocesses, so the suite
# takes about two thirds of its serial time, which keeps CI within its budget.
unit: $(STAMP)
	$(BIN)/pytest -q -n auto --durations=15 tests

## Mutation spot-check of the C kernels (AdaGrad update, normalisation, label parsing, replica
## fold): each mutation applied in place in turn, rebuilt, and a test must fail. Refuses to start
## on uncommitted changes to those files; puts them back when done. About a minute a mutation.
mutation-c: $(STAMP)
	$(BIN)/python -m tests.mutation.c_kernels

## The committed pipeline spec; tests/pipelines/test_pipeline_spec.py fails when it is stale.
compile: $(STAMP)
	$(BIN)/ctrflow compile -o pipelines/ctr_pipeline.yaml

## Mutation testing (cosmic-ray) of the modules that hold the product's invariants, each against
## the fast tests that guard it: tests/mutation/targets.toml; fails under 90% killed (of the
## non-equivalent mutants, tests/mutation/equivalent.toml). Not in CI: about an hour on 2 cores.
## Mutates the work tree in place while it runs: do not edit sources meanwhile.
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation.run

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
# The engine: docker when its daemon is there (a docker CLI alone cannot build), else podman or
# buildah (all three take these `build` flags), else docker for its error message.
ifeq ($(origin DOCKER),undefined)
DOCKER := $(shell if command -v docker >/dev/null 2>&1 && \
	  { [ -n "$$DOCKER_HOST" ] || [ -S /var/run/docker.sock ]; }; then echo docker; \
	elif command -v podman >/dev/null 2>&1; then echo podman; \
	elif command -v buildah >/dev/null 2>&1; then echo buildah; else echo docker; fi)
endif
# podman/buildah do not read images/Dockerfile.dockerignore by themselves (BuildKit does).
ENGINE_BUILD_FLAGS := $(if $(filter docker,$(notdir $(DOCKER))),,--ignorefile images/Dockerfile.dockerignore)
# Extra flags for this build only (mounts, network); empty for a normal build.
IMAGE_BUILD_FLAGS ?=
# Another base than the Dockerfile's python:3.11-slim-bookworm (a digest, or the local base below).
PYTHON_IMAGE ?=

image:
	$(DOCKER) build $(ENGINE_BUILD_FLAGS) $(IMAGE_BUILD_FLAGS) -f images/Dockerfile \
	  $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) -t $(IMAGE) .

image-ref:
	@echo $(IMAGE)

## Without a registry (air-gapped, CI here): a Debian-built stand-in for the base image
## (images/build-local-base.sh), then `make image` from it with podman or buildah. The host's CA
## bundle is mounted read-only over the base's own for the build steps only (Debian's pip reads
## that file), never into a layer: some machines reach PyPI only through their own CA.
.PHONY: image-local image-local-base
LOCAL_BASE ?= localhost/ctrflow-python:3.11-bookworm
LOCAL_ENGINE ?= $(firstword $(foreach e,podman buildah,$(if $(shell command -v $(e) 2>/dev/null),$(e))) podman)
HOST_CA ?= /etc/ssl/certs/ca-certificates.crt

image-local-base:
	images/build-local-base.sh $(LOCAL_BASE)

image-local: image-local-base
	BUILDAH_ISOLATION=$${BUILDAH_ISOLATION:-chroot} $(MAKE) image DOCKER=$(LOCAL_ENGINE) \
	  PYTHON_IMAGE=$(LOCAL_BASE) \
	  IMAGE_BUILD_FLAGS="--network host --volume $(HOST_CA):/etc/ssl/certs/ca-certificates.crt:ro"
