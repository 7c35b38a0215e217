"""Warm start end to end: real MLflow server (registry, run tags, artifacts) and real PostgreSQL.

Week 1: a cold study runs, is finalized and registered (run tag with the space version, run
artifact optuna/study.db, alias champion). Week 2: create_study finds it and the workers run
Warm Starting CMA-ES on its completed trials. A changed range starts cold, saying why.
"""

from __future__ import annotations

import dataclasses
import pathlib
import uuid
import warnings
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.samplers import CmaEsSampler, TPESampler
from optuna.trial import TrialState

from ctrflow.components.hpo._study_config import StudyConfig, build_sampler
from ctrflow.components.hpo.create_study import StudyInfo, create_study, source_study_name
from ctrflow.components.hpo.finalize_study import finalize_study
from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.hpo.storage import StorageSettings
from tests.testkit.hpo_data import tiny_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = StorageSettings(heartbeat_interval=1, grace_period=2)


def _register(
    client: MlflowClient, model_name: str, study_db: pathlib.Path, tags: dict[str, str]
) -> Any:
    """What the register step does, reduced to what the warm start reads."""
    experiment = client.get_experiment_by_name(model_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(model_name)
    run = client.create_run(experiment_id, tags=tags)
    client.log_artifact(run.info.run_id, str(study_db), artifact_path="optuna")
    client.set_terminated(run.info.run_id)
    try:
        client.get_registered_model(model_name)
    except Exception:
        client.create_registered_model(model_name)
    return client.create_model_version(
        model_name, source=f"{run.info.artifact_uri}/optuna", run_id=run.info.run_id
    )


@pytest.fixture(scope="module")
def week1(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, mlflow_server: str
) -> dict[str, Any]:
    """A finished, finalized and registered first study; alias champion on its version."""
    base = tmp_path_factory.mktemp("week1")
    train = tiny_dataset(base / "train", 300, seed=1)
    valid = tiny_dataset(base / "valid", 150, seed=2)
    model_name = f"ctr-{uuid.uuid4().hex[:6]}"
    name = f"{model_name}-run1"
    info = _create_ffm_study(postgres_url, mlflow_server, name, model_name, budget=24)
    run_worker(
        storage_url=postgres_url,
        study_name=name,
        train_dir=train,
        valid_dir=valid,
        settings=FAST,
        seed=0,
        progress=False,
    )
    final = finalize_study(storage_url=postgres_url, study_name=name, out_dir=base / "final")
    client = MlflowClient(tracking_uri=mlflow_server)
    version = _register(
        client,
        model_name,
        pathlib.Path(final.study_db),
        {"ctrflow.search_space_version": final.search_space_version, "ctrflow.study_name": name},
    )
    client.set_registered_model_alias(model_name, "champion", version.version)
    return {
        "info": info,
        "model_name": model_name,
        "version": version,
        "study": optuna.load_study(study_name=name, storage=postgres_url),
        "train": train,
        "valid": valid,
    }


def _create_ffm_study(
    storage_url: str, mlflow_uri: str, study_name: str, model_name: str, **kwargs: Any
) -> StudyInfo:
    """create_study for an FFM study that looks for its warm start in the MLflow registry."""
    return create_study(
        storage_url=storage_url,
        study_name=study_name,
        model_type="ffm",
        mlflow_tracking_uri=mlflow_uri,
        model_name=model_name,
        **kwargs,
    )


def test_first_week_starts_cold_because_there_is_no_champion(week1: dict[str, Any]) -> None:
    info = week1["info"]
    assert info.sampler == "tpe"
    assert not info.warm_start["warm"]
    assert info.warm_start["reason"] == f"registered model {week1['model_name']!r} does not exist"


def test_second_week_warm_starts_cmaes_from_the_champion_study(
    week1: dict[str, Any], postgres_url: str, mlflow_server: str
) -> None:
    model_name, version = week1["model_name"], week1["version"]
    name = f"{model_name}-run2"
    info = _create_ffm_study(postgres_url, mlflow_server, name, model_name, budget=6)
    source = week1["study"].get_trials(states=(TrialState.COMPLETE,))
    assert info.sampler == "cmaes"
    assert info.warm_start["warm"] and info.warm_start["reason"] == ""
    assert info.warm_start["found_via"] == "alias:champion"
    assert info.warm_start["model_version"] == str(version.version)
    assert info.warm_start["run_id"] == version.run_id
    assert info.warm_start["source_study_name"] == week1["study"].study_name
    assert info.warm_start["n_source_trials"] == len(source) >= 10

    # What every worker rebuilds from the study alone (no MLflow access needed on workers).
    study = optuna.load_study(study_name=name, storage=postgres_url)
    config = StudyConfig.from_study(study)
    assert config.sampler["source_study"] == source_study_name(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = build_sampler(config.sampler, postgres_url, seed=0)
    assert isinstance(sampler, CmaEsSampler)
    copied = optuna.load_study(study_name=source_study_name(name), storage=postgres_url)
    assert sorted((t.value, tuple(t.params.items())) for t in copied.trials) == sorted(
        (t.value, tuple(t.params.items())) for t in source
    )

    run_worker(
        storage_url=postgres_url,
        study_name=name,
        train_dir=week1["train"],
        valid_dir=week1["valid"],
        settings=FAST,
        seed=1,
        progress=False,
    )
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 6
    # After the enqueued defaults, the points come from CMA-ES (its state rides in system attrs).
    assert all(any(k.startswith("cma:") for k in t.system_attrs) for t in trials[1:])


def test_changed_range_same_names_changes_the_version_and_starts_cold(
    week1: dict[str, Any], postgres_url: str, mlflow_server: str
) -> None:
    space = get_space("ffm")
    wider = dataclasses.replace(
        space,
        params=tuple(
            dataclasses.replace(p, high=2.0) if p.name == "eta" else p for p in space.params
        ),
    )
    name = f"{week1['model_name']}-run3"
    info = _create_ffm_study(
        postgres_url, mlflow_server, name, week1["model_name"], space=wider, budget=4
    )
    assert info.search_space_version == wider.version() != space.version()
    assert info.sampler == "tpe" and not info.warm_start["warm"]
    assert info.warm_start["reason"] == (
        f"search space changed: champion run {week1['version'].run_id} used {space.version()}, "
        f"this study uses {wider.version()}"
    )
    assert info.warm_start["run_id"] == week1["version"].run_id  # it did find the champion
    study = optuna.load_study(study_name=name, storage=postgres_url)
    sampler = build_sampler(StudyConfig.from_study(study).sampler, postgres_url, seed=0)
    assert isinstance(sampler, TPESampler)


def test_legacy_production_stage_is_the_fallback_without_an_alias(
    week1: dict[str, Any], postgres_url: str, mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server)
    legacy_name = f"legacy-{uuid.uuid4().hex[:6]}"
    study_db = tmp_path / "study.db"
    optuna.copy_study(
        from_study_name=week1["study"].study_name,
        from_storage=postgres_url,
        to_storage=f"sqlite:///{study_db}",
    )
    tags = {"ctrflow.search_space_version": get_space("ffm").version()}
    older = _register(client, legacy_name, study_db, tags)
    newer = _register(client, legacy_name, study_db, tags)
    _register(client, legacy_name, study_db, {})  # newest, but not in Production
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for v in (older, newer):
            client.transition_model_version_stage(legacy_name, v.version, "Production")
    info = _create_ffm_study(
        postgres_url, mlflow_server, f"{legacy_name}-run", legacy_name, budget=3
    )
    assert info.sampler == "cmaes"
    assert info.warm_start["found_via"] == "stage:Production"
    assert info.warm_start["model_version"] == str(newer.version)


def test_champion_without_version_tag_or_with_too_few_trials_starts_cold(
    week1: dict[str, Any], postgres_url: str, mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server)
    name = f"untagged-{uuid.uuid4().hex[:6]}"
    untagged_db = tmp_path / "study.db"
    optuna.create_study(storage=f"sqlite:///{untagged_db}", study_name="nothing-ran")
    untagged = _register(client, name, untagged_db, {})
    client.set_registered_model_alias(name, "champion", untagged.version)
    info = _create_ffm_study(postgres_url, mlflow_server, f"{name}-a", name, budget=3)
    assert info.warm_start["reason"] == (
        f"run {untagged.run_id} has no tag ctrflow.search_space_version"
    )
    # Tagged, but too few completed trials: Warm Starting CMA-ES estimates from the top 10%.
    few_db = tmp_path / "few" / "study.db"
    few_db.parent.mkdir()
    few = optuna.create_study(storage=f"sqlite:///{few_db}", study_name="few-ran")
    dists = get_space("ffm").distributions()
    few.add_trials(
        [
            optuna.trial.create_trial(
                params={"k": 4, "eta": eta, "lam": 1e-5}, distributions=dists, value=0.5 + eta
            )
            for eta in (0.05, 0.1, 0.2)
        ]
    )
    tagged = _register(
        client, name, few_db, {"ctrflow.search_space_version": get_space("ffm").version()}
    )
    client.set_registered_model_alias(name, "champion", tagged.version)
    info = _create_ffm_study(postgres_url, mlflow_server, f"{name}-b", name, budget=3)
    assert info.sampler == "tpe"
    assert info.warm_start["reason"] == (
        "source study 'few-ran' has 3 completed trials in this search space (3 completed in "
        "all); Warm Starting CMA-ES needs at least 10"
    )
