"""`make run` logs models that carry this checkout's wheel (so stock `mlflow models serve` can
install them) and rebuilds that wheel whenever a source changes.

Checked with GNU make's dry run (`make -n`, `-W FILE` = "as if FILE had just changed") on the real
Makefile: building the wheel takes a minute, and tests/serving/test_stock_mlflow_serve.py already
serves a model carrying one.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.testkit.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

WHEEL_STAMP = ".venv/wheel/.built"


def dry_run(*arguments: str) -> str:
    return subprocess.run(
        ["make", "-n", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        timeout=60,
    ).stdout  # fmt: skip


def test_make_run_builds_the_wheel_and_hands_it_to_the_run() -> None:
    lines = dry_run("-W", "components/serving/predictor.py", "run").splitlines()
    (build,) = [i for i, line in enumerate(lines) if "pip wheel" in line]
    (run,) = [i for i, line in enumerate(lines) if line.endswith("ctrflow run")]
    assert build < run and lines[run].startswith("CTRFLOW_WHEEL=.venv/wheel ")


@pytest.mark.parametrize(
    "source",
    ["components/serving/predictor.py", "ffm_ext/ffm_kernels.c", "pipelines/cli/__init__.py",
     "meson.build", "pyproject.toml"],
)  # fmt: skip
def test_the_wheel_is_rebuilt_when_a_source_changes(source: str) -> None:
    assert (REPO_ROOT / source).is_file()
    commands = dry_run("-W", source, WHEEL_STAMP)
    assert "pip wheel" in commands and "-w .venv/wheel ." in commands


def test_the_wheel_depends_on_the_sources_only() -> None:
    database = subprocess.run(
        ["make", "-p", "-q", WHEEL_STAMP], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60, check=False,  # -q exits 1 for "not up to date"; the database is printed
    ).stdout  # fmt: skip
    (rule,) = [line for line in database.splitlines() if line.startswith(f"{WHEEL_STAMP}:")]
    prerequisites = set(rule.split(":", 1)[1].split())
    assert {"pyproject.toml", "meson.build", "ffm_ext/_core.pyx"} <= prerequisites
    assert "components/registry/serving_model.py" in prerequisites
    assert not [p for p in prerequisites if p.startswith(("tests/", "docs/")) or "__pycache__" in p]
