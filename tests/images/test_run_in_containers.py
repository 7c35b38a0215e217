"""`ctrflow run --runner container`: the whole compiled pipeline, every step in the image, run by
KFP's own local executor (kfp.local.DockerRunner) through podman's Docker API, with PostgreSQL and
an MLflow server on this machine's loopback. Run twice: the second run warm-starts from the first
one's champion, as the subprocess runner does (tests/pipelines/runs/test_local.py)."""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from ctrflow.components.hpo._study_config import StudyConfig
from tests.testkit.cli import run_ctrflow
from tests.testkit.podman import Podman

pytestmark = [
    pytest.mark.container,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]
MODEL = "ctr-containers"
FIRST_BUDGET = 30


def _run(podman: Podman, *args: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    # podman.env carries this machine's podman defaults (CONTAINERS_CONF); no DOCKER_HOST, so
    # the runner serves podman's Docker API itself, as it does for a user without Docker.
    env = {k: v for k, v in podman.env.items() if k != "DOCKER_HOST"}
    proc = run_ctrflow("run", "--runner", "container", "--image", podman.image, *args, "--json",
                       env=env, timeout=1500)  # fmt: skip
    assert proc.returncode == 0, f"ctrflow run --runner container failed:\n{proc.stderr[-5000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result, time.monotonic() - started


def _finished(hpo: dict[str, Any]) -> int:
    return int(hpo["counts"].get("COMPLETE", 0)) + int(hpo["counts"].get("PRUNED", 0))


def test_two_container_runs_warm_start_and_promotion(
    podman: Podman, postgres_url: str, mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    workdir = tmp_path / "work"
    common = (
        "--workdir", str(workdir), "--rows", "15000", "--model-name", MODEL,
        "--storage", postgres_url, "--mlflow-uri", mlflow_server, "--workers", "2",
    )  # fmt: skip

    # A budget that leaves >= 10 COMPLETE trials (not PRUNED) for the warm start, whichever of
    # the two workers' trials the pruner stops (12 once left 9, and 18 did too in CI).
    first, first_seconds = _run(podman, *common, "--budget", str(FIRST_BUDGET))
    out, hpo = first["outputs"], first["outputs"]["hpo"]
    print(f"first run's trials: {hpo['counts']}")
    assert _finished(hpo) == FIRST_BUDGET
    assert int(hpo["counts"].get("COMPLETE", 0)) >= 10, hpo["counts"]
    assert hpo["warm_start"]["warm"] is False
    assert out["model_version"] == "1" and out["promoted"] is True
    assert out["test_auc"] > 0.6  # the generated log has a planted signal
    run_dir = pathlib.Path(first["run_dir"])
    # Written inside the containers, as the image's user: the steps did not run here.
    train = run_dir / "prepare-data" / "train"
    assert {p.stat().st_uid for p in train.rglob("*")} == {10001}
    assert "***" in first["storage_url"]
    password = postgres_url.split(":")[2].split("@", maxsplit=1)[0]
    assert password not in json.dumps(first)
    assert password not in pathlib.Path(first["log_file"]).read_text()

    second, second_seconds = _run(podman, *common, "--budget", "4")
    out2, hpo2 = second["outputs"], second["outputs"]["hpo"]
    warm = hpo2["warm_start"]
    assert warm["warm"] is True, warm.get("reason")
    assert warm["model_version"] == "1"
    assert warm["source_study_name"] == hpo["study_name"]
    assert _finished(hpo2) == 4
    study = optuna.load_study(study_name=hpo2["study_name"], storage=postgres_url)
    assert StudyConfig.from_study(study).sampler["name"] == "cmaes"
    assert out2["model_version"] == "2"
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    decision = client.get_model_version(MODEL, "2").tags["ctrflow.promotion.decision"]
    assert decision == ("promoted" if out2["promoted"] else "kept_champion")
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    assert str(champion) == ("2" if out2["promoted"] else "1")
    print(
        f"container runs: {first_seconds:.0f} s (budget {FIRST_BUDGET}), "
        f"{second_seconds:.0f} s (budget 4)"
    )
