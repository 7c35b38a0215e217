"""The champion served from the image: `mlflow models serve --env-manager local`, then the image's
lean server (`ctrflow-serve`, the KServe example's entry), each in a hardened container (user
10001, read-only root, /tmp only), load `models:/NAME@champion` from a real MLflow server, answer
raw rows with the trained model's probabilities and bad rows with a 400 naming row and column.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from ctrflow.components.registry.register import register
from ctrflow.components.training.evaluate import evaluate
from ctrflow.components.training.train_final import train_final
from ctrflow.components.training.trained_model import load_trained_model
from tests.testkit.ctr_data import make_week, run_study
from tests.testkit.http import post_json as _post
from tests.testkit.podman import HARDENED, Podman, free_port

pytestmark = [
    pytest.mark.container,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]


@pytest.mark.parametrize("entry", ["mlflow", "ctrflow-serve"])
def test_champion_served_from_the_image_answers_raw_rows_and_rejects_bad_ones(
    podman: Podman, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory, entry: str
) -> None:
    week = make_week(tmp_path_factory.mktemp("serve-week"), rows=4000, seed=3)
    study = run_study(week, model_type="ffm", name="serve-ffm", budget=3)
    model_dir, eval_dir = week.base / "model", week.base / "eval"
    train_final(
        model_type="ffm", params=study.best_params, train_dir=week.train,
        valid_dir=week.valid, output_dir=model_dir,
    )  # fmt: skip
    evaluate(model_path=model_dir, test_dir=week.test, output_dir=eval_dir)
    name = f"serve-img-{uuid.uuid4().hex[:6]}"
    registered = register(
        tracking_uri=mlflow_server, model_name=name, model_dir=model_dir,
        evaluation_dir=eval_dir, feature_spec_path=week.spec_path, study=study.to_dict(),
        study_db=study.study_db, test_dir=week.test, test_raw=week.test_raw,
    )  # fmt: skip
    assert registered.promoted and registered.champion == "1"

    port = free_port()
    container = f"serve-{uuid.uuid4().hex[:8]}"
    serve = {
        "mlflow": ["models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", str(port)],
        "ctrflow-serve": ["--model", f"models:/{name}@champion", "--host", "127.0.0.1",
                          "--port", str(port), "--workers", "2"],
    }  # fmt: skip
    command = podman.command(
        "run", "--rm", "--name", container, "--network", "host", *HARDENED,
        "--env", f"MLFLOW_TRACKING_URI={mlflow_server}", "--entrypoint", entry, podman.image,
        *serve[entry],
    )  # fmt: skip
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=podman.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        ready = time.monotonic() - started
        frame = week.test_raw[list(week.spec.raw_columns)].head(5).reset_index(drop=True)
        split = json.loads(frame.to_json(orient="split", index=False))
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": split})
        assert status == 200, body
        expected = load_trained_model(model_dir).predict(
            week.spec.transform(frame, with_labels=False)
        )
        assert len(body["predictions"]) == 5
        for got, want in zip(body["predictions"], expected, strict=True):
            assert math.isclose(got, want, rel_tol=1e-6)
        bad = {**split, "data": [["oops", *split["data"][0][1:]]]}
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": bad})
        assert status == 400, body
        assert "row 0, column I1: cannot parse 'oops' as a finite number" in body["message"]
        print(f"serving container ({entry}) ready in {ready:.1f} s")
    finally:
        podman.run(["stop", "--time", "10", container], check=False)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
