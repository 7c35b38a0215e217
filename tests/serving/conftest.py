"""A small FFM model made from generated raw rows by prepare_data, saved as the MLflow model the
register step logs (no tracking server needed), and servers of it as real processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import ffm_ext
from ctrflow.components.data.prepare_data import prepare_data
from ctrflow.components.registry.serving_model import save_serving_model
from ctrflow.components.serving.predictor import Predictor
from tests.serving.rawgen import raw_rows, to_csv
from tests.testkit.servers import free_port


@dataclasses.dataclass(frozen=True)
class SavedModel:
    path: pathlib.Path  # the MLflow model directory
    rows: list[dict[str, Any]]  # the raw rows it was trained on (JSON values)
    predictor: Predictor


def make_model(base: pathlib.Path, *, rows: int = 3000, seed: int = 5, **save: Any) -> SavedModel:
    raw = raw_rows(rows, seed)
    base.mkdir(parents=True, exist_ok=True)
    (base / "log.csv").write_text(to_csv(raw), encoding="utf-8")
    prepared = base / "prepared"
    prepare_data(
        input_uri=str(base / "log.csv"), output_dir=str(prepared), split="ratio",
        rare_threshold=3, threads=1,
    )  # fmt: skip
    model = ffm_ext.FFM(k=4, eta=0.2, lam=2e-5, epochs=4, n_threads=1)
    model.fit(ffm_ext.Dataset.load(prepared / "train"))
    model.save(base / "model.ffm")
    path = save_serving_model(
        base / "mlflow-model", feature_spec_path=prepared / "feature_spec.json",
        model_path=base / "model.ffm", **save,
    )  # fmt: skip
    return SavedModel(path, raw, Predictor.from_model_dir(path))


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    return make_model(tmp_path_factory.mktemp("served-model"))


@contextlib.contextmanager
def running(
    command: list[str],
    log: pathlib.Path,
    port: int,
    *,
    wait: float = 180,
    cwd: pathlib.Path | None = None,
) -> Iterator[str]:
    """Start a server process (in `cwd`, default the log's folder), wait for GET /ping, yield
    its base URL, stop it."""
    bin_dir = pathlib.Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or log.parent
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lean_command(model: pathlib.Path, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "ctrflow.components.serving.server", "--model", str(model),
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def mlflow_command(model: pathlib.Path, port: int) -> list[str]:
    mlflow = pathlib.Path(sys.executable).parent / "mlflow"
    return [
        str(mlflow), "models", "serve", "-m", str(model), "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def lean_url(saved_model: SavedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("lean") / "serve.log"
    with running(lean_command(saved_model.path, port), log, port) as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_url(saved_model: SavedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    with running(mlflow_command(saved_model.path, port), log, port) as url:
        yield url
