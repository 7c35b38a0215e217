"""The register step SIGKILLed at each checkpoint, as a real child process against a real
`mlflow server` (SQLite and PostgreSQL backend stores); then the registry is read as a person
would (aliases, version tags, run status, `ctrflow registry history`), and the next week's
register run is checked to set the record right and to promote.

The kill comes from the test-only fault hook: $CTRFLOW_TEST_KILL_AT names the checkpoint (an
``on_event`` name) where the step SIGKILLs itself, so no cleanup of ours runs, as after an OOM
kill or a lost node. Each test starts from its own registered model whose champion is version 1.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from mlflow import MlflowClient

from ctrflow.components.hpo.finalize_study import FinalizeResult
from ctrflow.components.names import TEST_KILL_AT_ENV
from ctrflow.components.registry.register import RegisterResult, register
from ctrflow.pipelines.cli import main as cli_main
from tests.components.registry.conftest import Candidate
from tests.testkit.ctr_data import Week

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORPHAN_AFTER = 2.0  # a killed run's heartbeat is this old before the next run looks (see _kill)

_DRIVER = """
import json, sys
from ctrflow.components.registry.register import register
print(json.dumps(register(**json.load(open(sys.argv[1]))).to_dict()), flush=True)
"""


def _options(week: Week, study: FinalizeResult, model: Candidate) -> dict[str, Any]:
    return dict(
        model_dir=str(model.model_dir), evaluation_dir=str(model.eval_dir),
        feature_spec_path=str(week.spec_path), study=study.to_dict(),
        study_db=str(study.study_db), test_dir=str(week.test),
        pipeline_run_id=f"run-{uuid.uuid4().hex[:8]}", orphan_after=ORPHAN_AFTER,
    )  # fmt: skip


def _kill(
    uri: str, name: str, week: Week, study: FinalizeResult, model: Candidate, at: str,
    tmp_path: pathlib.Path, **extra: Any,
) -> None:  # fmt: skip
    """Run the register step in a child process that SIGKILLs itself at checkpoint ``at``."""
    raw = tmp_path / f"test_raw-{at}.parquet"
    week.test_raw.to_parquet(raw)
    args = tmp_path / f"args-{at}.json"
    options = {**_options(week, study, model), "tracking_uri": uri, "model_name": name, **extra}
    args.write_text(json.dumps({**options, "test_raw": str(raw)}))
    env = {**os.environ, TEST_KILL_AT_ENV: at}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(args)], env=env, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-3000:])
    if "orphan_after" not in extra:
        time.sleep(ORPHAN_AFTER + 0.5)  # the killed run's heartbeat is now older than orphan_after


def _register(
    uri: str, name: str, week: Week, study: FinalizeResult, model: Candidate, **extra: Any
) -> RegisterResult:
    return register(
        tracking_uri=uri, model_name=name, test_raw=week.test_raw,
        **{**_options(week, study, model), **extra},
    )  # fmt: skip


def _version(client: MlflowClient, name: str, version: str) -> tuple[dict[str, str], str]:
    """The version's tags and its run's status."""
    v = client.get_model_version(name, version)
    assert v.run_id is not None
    return dict(v.tags), client.get_run(v.run_id).info.status


def _champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def _history(uri: str, name: str, capsys: pytest.CaptureFixture[str]) -> list[tuple[Any, ...]]:
    capsys.readouterr()
    assert (
        cli_main(["registry", "history", "--model-name", name, "--mlflow-uri", uri, "--json"]) == 0
    )
    entries = json.loads(capsys.readouterr().out)
    return [(h["version"], h["until"] is None, h["replaced_by"]) for h in entries]


@pytest.fixture(scope="module", params=["mlflow_server", "mlflow_server_postgres"])
def registry(request: pytest.FixtureRequest) -> str:
    uri: str = request.getfixturevalue(request.param)
    return uri


@pytest.fixture
def name(registry: str, week: Week, study: FinalizeResult, models: dict[str, Candidate]) -> str:
    """A registered model whose champion is version 1 (the mediocre model)."""
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    first = _register(registry, name, week, study, models["mediocre"])
    assert (first.version, first.champion) == ("1", "1")
    return name


def _assert_killed_run_was_ended(client: MlflowClient, name: str, version: str) -> None:
    run_id = client.get_model_version(name, version).run_id
    assert run_id is not None
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert (
        "the register step stopped without ending its run"
        in run.data.tags["ctrflow.register.stopped"]
    )


@pytest.mark.parametrize("at", ["version_created", "champion_scored"])
def test_killed_before_the_decision_leaves_a_pending_version_that_the_next_run_fails(
    at: str, registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    client = MlflowClient(registry)
    _kill(registry, name, week, study, models["better"], at, tmp_path)
    tags, status = _version(client, name, "2")
    assert (tags["ctrflow.promotion.decision"], status) == ("pending", "RUNNING")
    assert _champion(client, name) == "1"
    assert _history(registry, name, capsys) == [("1", True, None)]

    nxt = _register(registry, name, week, study, models["better"])
    assert (nxt.version, nxt.promoted, nxt.champion) == ("3", True, "3")
    tags, _ = _version(client, name, "2")
    assert tags["ctrflow.promotion.decision"] == "failed"
    assert (
        tags["ctrflow.promotion.reason"]
        == "register step stopped before the promotion gate decided"
    )
    _assert_killed_run_was_ended(client, name, "2")
    assert _history(registry, name, capsys) == [("1", False, "3"), ("3", True, None)]


def test_killed_after_deciding_before_the_alias_moved_is_recorded_as_failed(
    registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    client = MlflowClient(registry)
    _kill(registry, name, week, study, models["better"], "decided", tmp_path)
    tags, status = _version(client, name, "2")
    # The intent, not "promoted": the alias has not moved.
    assert (tags["ctrflow.promotion.decision"], status) == ("promoting", "RUNNING")
    assert _champion(client, name) == "1"
    assert _history(registry, name, capsys) == [("1", True, None)]

    nxt = _register(registry, name, week, study, models["better"])
    assert (nxt.version, nxt.promoted, nxt.decision["previous_champion"]) == ("3", True, "1")
    tags, _ = _version(client, name, "2")
    assert tags["ctrflow.promotion.decision"] == "failed"
    assert (
        "before alias 'champion' moved; champion stayed version 1"
        in tags["ctrflow.promotion.reason"]
    )
    assert "ctrflow.champion.since" not in tags
    _assert_killed_run_was_ended(client, name, "2")
    assert _history(registry, name, capsys) == [("1", False, "3"), ("3", True, None)]


@pytest.mark.parametrize("at", ["champion_set", "history_written"])
def test_killed_after_the_alias_moved_the_promotion_is_completed(
    at: str, registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The alias move is the commit point: the gate decided under the lock and version 2 was
    serving from then on, so the record says so (read at once, and written by the next run)."""
    client = MlflowClient(registry)
    _kill(registry, name, week, study, models["better"], at, tmp_path)
    assert _champion(client, name) == "2"
    tags, status = _version(client, name, "2")
    assert (tags["ctrflow.promotion.decision"], status) == ("promoting", "RUNNING")
    # What serves is what the history reports, before any repair.
    assert _history(registry, name, capsys) == [("1", False, "2"), ("2", True, None)]

    nxt = _register(registry, name, week, study, models["xgboost"])
    assert (nxt.version, nxt.promoted, nxt.decision["previous_champion"]) == ("3", True, "2")
    v1, _ = _version(client, name, "1")
    v2, _ = _version(client, name, "2")
    assert v2["ctrflow.promotion.decision"] == "promoted"
    assert (
        v2["ctrflow.champion.since"]
        == v2["ctrflow.promotion.decided_at"]
        == v1["ctrflow.champion.until"]
    )
    assert (v2["ctrflow.champion.previous_version"], v1["ctrflow.champion.replaced_by"]) == (
        "1",
        "2",
    )
    assert v2["ctrflow.champion.replaced_by"] == "3"
    run_id = client.get_model_version(name, "2").run_id
    assert run_id is not None
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["ctrflow.promotion.decision"] == "promoted"
    assert _history(registry, name, capsys) == [
        ("1", False, "2"), ("2", False, "3"), ("3", True, None)
    ]  # fmt: skip


def test_a_killed_lock_holder_is_taken_over_in_seconds_and_its_version_failed(
    registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    client = MlflowClient(registry)
    _kill(registry, name, week, study, models["better"], "lock_acquired", tmp_path)
    lock = f"{name}.ctrflow-promotion-lock"
    assert lock in {m.name for m in client.search_registered_models()}  # left by the dead holder
    seen: dict[str, float] = {}
    # lock_wait is the hang guard: the dead holder's lock used to stand for its 300 s ttl.
    nxt = _register(
        registry, name, week, study, models["better"], lock_wait=120,
        on_event=lambda event: seen.setdefault(event, time.monotonic()),
    )  # fmt: skip
    assert (nxt.version, nxt.promoted) == ("3", True)
    assert _version(client, name, "2")[0]["ctrflow.promotion.decision"] == "failed"
    _assert_killed_run_was_ended(client, name, "2")
    with capsys.disabled():
        waited = seen["lock_acquired"] - seen["champion_scored"]
        print(f"\n[register killed holding the lock] next run waited {waited:.1f} s for it")


def test_a_retry_of_the_killed_step_repairs_at_once(
    registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate], tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    """KFP retries a step only after its attempt ended: a run of the same pipeline run id is an
    earlier attempt, dead even while its heartbeat is fresh (orphan_after is 10 minutes here)."""
    client = MlflowClient(registry)
    same = {"pipeline_run_id": f"kfp-{uuid.uuid4().hex[:8]}", "orphan_after": 600.0}
    _kill(registry, name, week, study, models["better"], "version_created", tmp_path, **same)
    retry = _register(registry, name, week, study, models["better"], **same)
    assert (retry.version, retry.promoted) == ("3", True)
    assert _version(client, name, "2")[0]["ctrflow.promotion.decision"] == "failed"
    _assert_killed_run_was_ended(client, name, "2")
