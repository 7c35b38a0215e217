"""The champion serves with stock `mlflow models serve -m models:/NAME@champion` and MLflow's
default env manager (virtualenv): a fresh virtualenv, packages from PyPI only (no private index,
no find-links, no pip config), and ctrflow from the wheel the model carries.

Slow (it installs the model's requirements from PyPI: several minutes) and needs the network.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

import ctrflow
from ctrflow.components.names import CHAMPION_ALIAS
from ctrflow.components.registry.serving_model import log_serving_model
from tests.serving.conftest import make_model, running
from tests.testkit.http import post_bytes
from tests.testkit.paths import REPO_ROOT
from tests.testkit.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def build_wheel(out: pathlib.Path) -> pathlib.Path:
    """This checkout's ctrflow wheel, built as the image builds it."""
    bin_dir = pathlib.Path(sys.executable).parent  # meson and ninja live beside pip
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out),
         str(REPO_ROOT)],
        env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob(f"ctrflow-{ctrflow.__version__}-*.whl")
    return wheel


@pytest.mark.minutes
def test_champion_serves_with_stock_mlflow_models_serve_from_its_own_wheel(
    tmp_path: pathlib.Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = build_wheel(tmp_path / "wheel")
    saved = make_model(tmp_path / "model")
    name = f"stock-serve-{uuid.uuid4().hex[:6]}"
    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run():
        info = log_serving_model(
            feature_spec_path=saved.path / "artifacts" / "feature_spec.json",
            model_path=saved.path / "artifacts" / "model.ffm", wheel=wheel,
        )  # fmt: skip
    client = MlflowClient(mlflow_server)
    client.create_registered_model(name)
    version = client.create_model_version(name, info.model_uri, model_id=info.model_id).version
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)

    # The model names its own copy of the wheel, not a package no index has.
    local = pathlib.Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{CHAMPION_ALIAS}"))
    requirements = (local / "requirements.txt").read_text().split()
    assert f"./artifacts/{wheel.name}" in requirements
    assert not [r for r in requirements if r.startswith("ctrflow")]
    assert (local / "artifacts" / wheel.name).read_bytes() == wheel.read_bytes()
    assert yaml.safe_load((local / "python_env.yaml").read_text())["python"].startswith("3.11")

    port = free_port()
    env_root = tmp_path / "mlflow-envs"  # a fresh virtualenv, not one cached by another run
    for key, value in {
        "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_ENV_ROOT": str(env_root),
        "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "https://pypi.org/simple",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    for key in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(key, raising=False)
    mlflow_cli = str(pathlib.Path(sys.executable).parent / "mlflow")
    command = [mlflow_cli, "models", "serve", "-m", f"models:/{name}@{CHAMPION_ALIAS}",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    # Started in the checkout, as a user following the README does: uvicorn puts that folder
    # first on sys.path, where ffm_ext/ is the uncompiled source (it once shadowed the wheel's).
    with running(command, tmp_path / "serve.log", port, wait=1500, cwd=REPO_ROOT) as url:
        rows = [{c: row[c] for c in saved.predictor.columns} for row in saved.rows[:5]]
        body = json.dumps({"dataframe_records": rows}).encode()
        status, text = post_bytes(f"{url}/invocations", body, "application/json")
    assert status == 200, text
    columns = {c: [r[c] for r in rows] for c in saved.predictor.columns}
    assert json.loads(text)["predictions"] == saved.predictor.predict(columns, 5).tolist()
    # It ran in the virtualenv MLflow made, with ctrflow installed from the model's wheel.
    (python,) = env_root.glob("*/bin/python")
    shown = subprocess.run(
        [str(python), "-m", "pip", "show", "-f", "ctrflow"], capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    assert f"Version: {ctrflow.__version__}" in shown and str(python.parent.parent) in shown
