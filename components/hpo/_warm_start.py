"""Find last week's search in the MLflow registry: the source trials for Warm Starting CMA-ES.

Path: registered model ``model_name`` -> alias ``champion`` (or, for registries written by the
seed system, the latest version in the deprecated ``Production`` stage) -> its run -> run tag
``ctrflow.search_space_version`` (must equal this study's version: Optuna itself compares only
parameter names) -> run artifact ``optuna/study.db`` -> the study inside -> its COMPLETE trials
whose distributions equal this space's. Any miss gives a cold start with the reason recorded.
"""

from __future__ import annotations

import logging
import pathlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo.search_space import SearchSpace
from ctrflow.components.names import (
    CHAMPION_ALIAS,
    LEGACY_STAGE,
    STUDY_DB_ARTIFACT,
    TAG_SPACE_VERSION,
    TAG_STUDY_NAME,
)

__all__ = [
    "MIN_SOURCE_TRIALS",
    "WarmStart",
    "find_warm_start",
    "warm_start_from_file",
]

_log = logging.getLogger(__name__)

# Warm Starting CMA-ES estimates its start distribution from the best 10% of the source trials
# (cmaes.get_warm_start_mgd, gamma=0.1): fewer than 10 leave it nothing to estimate from.
MIN_SOURCE_TRIALS = 10


@dataclass(frozen=True)
class WarmStart:
    """Where the warm start came from, or why the search starts cold (``trials`` empty)."""

    trials: list[FrozenTrial] = field(default_factory=list)
    reason: str = ""
    model_name: str | None = None
    model_version: str | None = None
    found_via: str | None = None
    run_id: str | None = None
    source_study_name: str | None = None
    source_space_version: str | None = None

    @property
    def warm(self) -> bool:
        return bool(self.trials)

    def to_attrs(self) -> dict[str, Any]:
        """JSON for the study's user attrs: the source, or the reason for a cold start."""
        return {
            "warm": self.warm,
            "reason": self.reason,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "found_via": self.found_via,
            "run_id": self.run_id,
            "source_study_name": self.source_study_name,
            "source_space_version": self.source_space_version,
            "n_source_trials": len(self.trials),
        }


def _champion(client: Any, model_name: str) -> tuple[Any, str] | str:
    """(model version, how it was found) or the reason none was found."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS), "alias:champion"
    except MlflowException as exc:
        # A missing model is RESOURCE_DOES_NOT_EXIST; a missing alias on an existing model is
        # INVALID_PARAMETER_VALUE "Registered model alias champion not found." (MLflow 3).
        missing_alias = f"alias {CHAMPION_ALIAS} not found" in str(exc)
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and not missing_alias:
            raise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated in MLflow 3
            versions = client.get_latest_versions(model_name, stages=[LEGACY_STAGE])
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"registered model {model_name!r} does not exist"
        raise
    if not versions:
        return (
            f"registered model {model_name!r} has no alias {CHAMPION_ALIAS!r} and no version "
            f"in stage {LEGACY_STAGE!r}"
        )
    return max(versions, key=lambda v: int(v.version)), f"stage:{LEGACY_STAGE}"


def _load_source_study(path: pathlib.Path, preferred_name: str | None) -> optuna.Study | str:
    storage = RDBStorage(f"sqlite:///{path}", skip_table_creation=True)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
        if preferred_name in names:
            name = preferred_name
        elif len(names) == 1:
            name = names[0]
        else:
            return f"{STUDY_DB_ARTIFACT} holds {len(names)} studies {names}, none named by the run"
        study = optuna.load_study(study_name=name, storage=storage)
        # Materialise the trials before the storage's engine goes away.
        study.get_trials(deepcopy=False)
        return study
    finally:
        storage.engine.dispose()


def find_warm_start(
    *,
    tracking_uri: str | None,
    model_name: str | None,
    space: SearchSpace,
    space_version: str,
    workdir: str | pathlib.Path,
) -> WarmStart:
    """Look up the champion's study; never raises for a missing or mismatching source."""
    if not tracking_uri or not model_name:
        return WarmStart(reason="no MLflow tracking URI or model name given")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    info: dict[str, Any] = {"model_name": model_name}
    try:
        found = _champion(client, model_name)
        if isinstance(found, str):
            return WarmStart(reason=found, **info)
        version, via = found
        info.update(model_version=str(version.version), found_via=via, run_id=version.run_id)
        if not version.run_id:
            return WarmStart(reason=f"model version {version.version} has no run", **info)
        tags = client.get_run(version.run_id).data.tags
        source_version = tags.get(TAG_SPACE_VERSION)
        info["source_space_version"] = source_version
        if source_version is None:
            return WarmStart(reason=f"run {version.run_id} has no tag {TAG_SPACE_VERSION}", **info)
        if source_version != space_version:
            return WarmStart(
                reason=(
                    f"search space changed: champion run {version.run_id} used "
                    f"{source_version}, this study uses {space_version}"
                ),
                **info,
            )
        local = client.download_artifacts(version.run_id, STUDY_DB_ARTIFACT, str(workdir))
    except MlflowException as exc:
        _log.warning("warm-start lookup failed, starting cold: %s", exc)
        return WarmStart(reason=f"MLflow lookup failed: {str(exc).splitlines()[0]}", **info)

    return _from_file(
        pathlib.Path(local), space, space_version, tags.get(TAG_STUDY_NAME), info, None
    )


def warm_start_from_file(
    path: str | pathlib.Path, *, space: SearchSpace, space_version: str
) -> WarmStart:
    """Warm start from an exported study file (``finalize_study``'s study.db) without MLflow.

    The version is read from the study's own user attrs (``create_study`` records it there).
    """
    path = pathlib.Path(path)
    info: dict[str, Any] = {"found_via": f"file:{path}"}
    if not path.is_file():
        return WarmStart(reason=f"warm-start file {path} does not exist", **info)
    return _from_file(path, space, space_version, None, info, TAG_SPACE_VERSION)


def _from_file(
    path: pathlib.Path,
    space: SearchSpace,
    space_version: str,
    study_name: str | None,
    info: dict[str, Any],
    version_attr: str | None,
) -> WarmStart:
    try:
        study = _load_source_study(path, study_name)
    except Exception as exc:  # a corrupt or foreign file must not stop the weekly run
        _log.warning("cannot read warm-start study %s: %s", path, exc)
        return WarmStart(reason=f"cannot read {STUDY_DB_ARTIFACT}: {exc}", **info)
    if isinstance(study, str):
        return WarmStart(reason=study, **info)
    info["source_study_name"] = study.study_name
    if version_attr is not None:
        source_version = study.user_attrs.get(version_attr)
        info["source_space_version"] = source_version
        if source_version != space_version:
            return WarmStart(
                reason=(
                    f"search space changed: study {study.study_name!r} in {path} used "
                    f"{source_version}, this study uses {space_version}"
                ),
                **info,
            )
    wanted = space.distributions()
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials = [t for t in completed if t.distributions == wanted]
    if len(trials) < MIN_SOURCE_TRIALS:
        return WarmStart(
            reason=(
                f"source study {study.study_name!r} has {len(trials)} completed trials in this "
                f"search space ({len(completed)} completed in all); Warm Starting CMA-ES needs "
                f"at least {MIN_SOURCE_TRIALS}"
            ),
            **info,
        )
    return WarmStart(trials=trials, **info)
