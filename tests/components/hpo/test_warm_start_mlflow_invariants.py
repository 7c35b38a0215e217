"""The champion lookup of the warm start, step by step, on an MLflow registry in a SQLite file
(MLflow's own SQL store, no server): champion -> its run -> the run's search-space version tag ->
the study artifact. Every miss starts cold with its reason. (The registry is the
`registry_db` fixture of tests/components/conftest.py.)

Checks that `make mutation` runs against every mutant of `_warm_start.py` (after the file
tests); the whole weekly flow against real servers is test_warm_start.py."""

from __future__ import annotations

import logging
import pathlib
import sqlite3
import uuid

import optuna
import pytest
from mlflow import MlflowClient

from ctrflow.components.hpo import _warm_start
from ctrflow.components.hpo._warm_start import find_warm_start
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.names import CHAMPION_ALIAS, TAG_SPACE_VERSION, TAG_STUDY_NAME
from tests.components.hpo.test_warm_start_invariants import _source

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
SPACE = get_space("ffm")
VERSION = SPACE.version()


def _champion(uri: str, tmp_path: pathlib.Path, tags: dict[str, str], *, run: bool = True) -> str:
    client = MlflowClient(uri, uri)
    name = f"ctr-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    run_id = None
    if run:
        experiment = client.create_experiment(name, artifact_location=str(tmp_path / name))
        run_id = client.create_run(experiment, tags=tags).info.run_id
        (tmp_path / f"{name}-study").mkdir()
        study_db = tmp_path / f"{name}-study" / "study.db"
        _source(study_db, 12, name="last-week")
        _source(study_db, 12, name="another")
        client.log_artifact(run_id, str(study_db), artifact_path="optuna")
    version = client.create_model_version(name, source=str(tmp_path), run_id=run_id)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return name


def _find(uri: str, name: str, tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    workdir = tmp_path / f"work-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    return find_warm_start(
        tracking_uri=uri, model_name=name, space=SPACE, space_version=VERSION, workdir=workdir
    )


def test_the_champions_study_of_the_same_space_warm_starts(
    registry_db: str, tmp_path: pathlib.Path
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = _champion(
        registry_db, tmp_path, {TAG_SPACE_VERSION: VERSION, TAG_STUDY_NAME: "last-week"}
    )
    warm = _find(registry_db, name, tmp_path)
    assert warm.warm, warm.reason
    assert (warm.model_name, warm.model_version, warm.found_via) == (name, "1", "alias:champion")
    assert warm.source_study_name == "last-week" and warm.source_space_version == VERSION
    assert len(warm.trials) == 12 and warm.run_id


def test_another_space_version_or_none_starts_cold(
    registry_db: str, tmp_path: pathlib.Path
) -> None:
    changed = _champion(registry_db, tmp_path, {TAG_SPACE_VERSION: "ffm-0123456789ab"})
    cold = _find(registry_db, changed, tmp_path)
    assert not cold.warm
    assert cold.reason == (
        f"search space changed: champion run {cold.run_id} used ffm-0123456789ab, this study "
        f"uses {VERSION}"
    )
    untagged = _champion(registry_db, tmp_path, {})
    cold = _find(registry_db, untagged, tmp_path)
    assert cold.reason == f"run {cold.run_id} has no tag {TAG_SPACE_VERSION}"
    assert cold.source_space_version is None


def test_a_champion_without_a_run_starts_cold(registry_db: str, tmp_path: pathlib.Path) -> None:
    name = _champion(registry_db, tmp_path, {}, run=False)
    cold = _find(registry_db, name, tmp_path)
    assert cold.reason == "model version 1 has no run" and not cold.warm


def test_a_registry_that_fails_mid_lookup_starts_cold_with_the_errors_first_line(
    registry_db: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The registry's database answers the champion run's read with an SQL error (a column
    gone, as after a half-applied migration): MLflow raises it as a multi-line MlflowException
    (the error, the SQL, its parameters). The run starts cold; the reason keeps the first line,
    the log the whole message."""
    name = _champion(registry_db, tmp_path, {TAG_SPACE_VERSION: VERSION, TAG_STUDY_NAME: "x"})
    db = sqlite3.connect(registry_db.removeprefix("sqlite:///"))
    with db:
        db.execute("ALTER TABLE tags RENAME COLUMN value TO value_gone")
    db.close()
    with caplog.at_level(logging.WARNING, logger=_warm_start.__name__):
        cold = _find(registry_db, name, tmp_path)
    assert not cold.warm
    assert (
        cold.reason == "MLflow lookup failed: (sqlite3.OperationalError) no such column: tags.value"
    )
    # what was found before the failure stays in the record
    assert (cold.model_name, cold.model_version, cold.found_via) == (name, "1", "alias:champion")
    assert cold.run_id and cold.source_space_version is None
    (warning,) = [r.getMessage() for r in caplog.records if r.name == _warm_start.__name__]
    assert warning.startswith("warm-start lookup failed, starting cold: (sqlite3.OperationalError)")
    assert "\n[SQL: SELECT " in warning
