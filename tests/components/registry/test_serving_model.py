"""The served model: registered by the register step against a real `mlflow server`, loaded
through ``models:/NAME@champion`` in a fresh Python process, for FFM and XGBoost alike; raw rows
in, the in-memory model's probabilities out. And `mlflow models serve` answering HTTP requests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import ctrflow
from ctrflow.components.registry.promotion import download_version
from ctrflow.components.registry.register import RegisterResult, register
from ctrflow.components.registry.serving_model import CtrModel
from ctrflow.components.training.evaluate import evaluate
from ctrflow.components.training.train_final import train_final
from ctrflow.components.training.trained_model import load_trained_model
from tests.testkit.ctr_data import Week, make_week, run_study
from tests.testkit.http import post_json as _post
from tests.testkit.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL_TYPES = ("ffm", "xgboost")


@dataclasses.dataclass(frozen=True)
class Served:
    name: str
    model_type: str
    model_dir: pathlib.Path
    registered: RegisterResult


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Week:
    return make_week(tmp_path_factory.mktemp("serve-week"), rows=4000, seed=3)


@pytest.fixture(scope="module")
def served(week: Week, mlflow_server: str) -> dict[str, Served]:
    """One registered model per model type, each version 1 and champion."""
    out = {}
    for model_type in MODEL_TYPES:
        study = run_study(week, model_type=model_type, name=f"serve-{model_type}", budget=3)
        base = week.base / model_type
        train_final(
            model_type=model_type, params=study.best_params, train_dir=week.train,
            valid_dir=week.valid, output_dir=base / "model",
        )  # fmt: skip
        evaluate(model_path=base / "model", test_dir=week.test, output_dir=base / "eval")
        name = f"serve-{model_type}-{uuid.uuid4().hex[:6]}"
        registered = register(
            tracking_uri=mlflow_server, model_name=name, model_dir=base / "model",
            evaluation_dir=base / "eval", feature_spec_path=week.spec_path,
            study=study.to_dict(), study_db=study.study_db, test_dir=week.test,
            test_raw=week.test_raw,
        )  # fmt: skip
        assert registered.promoted and registered.champion == "1"
        out[model_type] = Served(name, model_type, base / "model", registered)
    return out


def features(week: Week) -> pd.DataFrame:
    return week.test_raw[list(week.spec.raw_columns)]


def in_memory(week: Week, served: Served, frame: pd.DataFrame) -> np.ndarray:
    """What the trained model gives for raw rows, without MLflow in between."""
    model = load_trained_model(served.model_dir)
    return model.predict(week.spec.transform(frame, with_labels=False))


_LOADER = """
import json, sys
import numpy as np, pandas as pd, mlflow
raw = pd.read_parquet(sys.argv[1])
found = {}
for name, out in zip(sys.argv[2::2], sys.argv[3::2]):
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    np.save(out, model.predict(raw))
    found[name] = type(model.unwrap_python_model()).__module__
import ffm_ext
found["ffm_ext"] = ffm_ext.__file__
print(json.dumps(found))
"""


def test_champion_loads_in_a_fresh_process_and_predicts_like_the_in_memory_model(
    week: Week, served: dict[str, Served], mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    frame = features(week)
    raw_file = tmp_path / "raw.parquet"
    frame.to_parquet(raw_file)
    args = []
    for model_type in MODEL_TYPES:
        args += [served[model_type].name, str(tmp_path / f"{model_type}.npy")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(raw_file), *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for model_type in MODEL_TYPES:
        item = served[model_type]
        loaded = np.load(tmp_path / f"{model_type}.npy")
        expected = in_memory(week, item, frame)
        assert loaded.shape == (len(frame),) and loaded.dtype == np.float64
        np.testing.assert_array_equal(loaded, expected)
        assert loaded.min() > 0.0 and loaded.max() < 1.0 and np.unique(loaded).size > 50
        assert found[item.name] == "ctrflow.components.registry.serving_model"
    # The compiled engine comes from the installed ctrflow, not from the model's files.
    assert "ffm_ext" in found["ffm_ext"] and "/artifacts/" not in found["ffm_ext"]


def test_logged_model_ships_no_compiled_code_and_requires_the_ctrflow_package(
    served: dict[str, Served], mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    expected_files = {"ffm": "model.ffm", "xgboost": "model.json"}
    for model_type, item in served.items():
        client = MlflowClient(mlflow_server)
        local = pathlib.Path(
            download_version(client, mlflow_server, item.name, "1", str(tmp_path / model_type))
        )
        files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
        assert not [f for f in files if f.endswith((".so", ".pyd", ".pyx", ".c"))], files
        assert {
            "MLmodel", "_serving_entry.py", "requirements.txt",
            f"artifacts/{expected_files[model_type]}", "artifacts/feature_spec.json",
        } <= files  # fmt: skip
        requirements = (local / "requirements.txt").read_text().split()
        assert f"ctrflow=={ctrflow.__version__}" in requirements
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
        assert flavor.get("code") is None  # no code_paths
        inputs = json.loads(mlmodel["signature"]["inputs"])
        assert [c["name"] for c in inputs] == [f"I{i}" for i in range(1, 14)] + [
            f"C{i}" for i in range(1, 27)
        ]


def test_raw_rows_with_missing_values_and_other_dtypes_predict_the_same(
    week: Week, served: dict[str, Served], mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    """What a JSON client sends: ints as Python ints, missing as None, numbers as text."""
    item = served["ffm"]
    local = download_version(
        MlflowClient(mlflow_server), mlflow_server, item.name, "1", str(tmp_path)
    )
    model = mlflow.pyfunc.load_model(local)
    frame = features(week).head(50).reset_index(drop=True)
    records = json.loads(frame.to_json(orient="records"))  # NaN -> None, floats stay floats
    as_json = pd.DataFrame.from_records(records, columns=list(frame.columns))
    np.testing.assert_array_equal(model.predict(as_json), in_memory(week, item, frame))
    all_missing = pd.DataFrame([dict.fromkeys(frame.columns)] * 2)
    probabilities = model.predict(all_missing)
    assert probabilities[0] == probabilities[1] and 0 < probabilities[0] < 1


def test_bad_raw_rows_are_rejected_naming_the_row_and_column(
    week: Week, served: dict[str, Served]
) -> None:
    model = CtrModel.from_parts(week.spec, load_trained_model(served["ffm"].model_dir))
    frame = features(week).head(3).copy()
    frame["I5"] = frame["I5"].astype(object)
    frame.loc[frame.index[1], "I5"] = "twelve"
    with pytest.raises(MlflowException, match=r"^row 1, column I5: cannot parse 'twelve'"):
        model.predict(None, frame)
    with pytest.raises(MlflowException, match="column\\(s\\) C7 missing from the request"):
        model.predict(None, features(week).drop(columns=["C7"]))


# ---- `mlflow models serve` ----------------------------------------------------------------------


def test_mlflow_models_serve_answers_raw_rows_with_probabilities(
    week: Week, served: dict[str, Served], mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    item = served["xgboost"]
    port = free_port()
    bin_dir = pathlib.Path(sys.executable).parent  # uvicorn lives beside mlflow in the venv
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path / "serve.log"
    command = [
        str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{item.name}@champion",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        frame = features(week).head(5).reset_index(drop=True)
        split = json.loads(frame.to_json(orient="split", index=False))
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": split})
        assert status == 200, body
        expected = in_memory(week, item, frame)
        assert len(body["predictions"]) == 5
        for got, want in zip(body["predictions"], expected, strict=True):
            assert math.isclose(got, want, rel_tol=1e-12)
        bad = {**split, "data": [["oops", *split["data"][0][1:]]]}
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": bad})
        assert status == 400
        assert "row 0, column I1: cannot parse 'oops' as a finite number" in body["message"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
