"""Study retention: keep the newest ``keep`` studies of a model in the Optuna storage, delete
the older ones, each exported to MLflow first, so the database and the dashboard stay small.

Which studies are the model's: those ``create_study`` marked with ``ctrflow.model_name`` (older
ones: whose recorded warm start names the model). Studies of other models, other tools or
without these marks are never looked at. A study goes with its ``<study>.warm-source`` copy.

Never deleted, whatever ``keep`` says:
- ``current_study`` (the run's own) and any study with a RUNNING or WAITING trial, or not READY
  (another pipeline creating it or searching in it);
- a study not yet finalized (``ctrflow.finalized_at``, set by ``finalize_study``) unless it has
  been idle for ``abandoned_after`` seconds: another pipeline may be between its last trial and
  its finalize step, which reads the study;
- the study of the current champion's run: the one next week's warm start starts from (the warm
  start itself reads the run's ``optuna/study.db`` artifact, but this is the study people look
  at for the model that serves). If the champion cannot be looked up, nothing is deleted.

Before a study is deleted it must exist in MLflow: the register run that logged it as
``optuna/study.db`` (tag ``ctrflow.study_name``), or else a run this step logs for it in the
model's experiment (``retired study NAME``, the same artifact and tag). A study whose export
fails is kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import pathlib
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ctrflow.components.hpo.create_study import source_study_name
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage
from ctrflow.components.names import (
    ATTR_FINALIZED,
    ATTR_MODEL_NAME,
    ATTR_READY,
    ATTR_WARM_START,
    STUDY_ABANDONED_AFTER_S,
    STUDY_DB_ARTIFACT,
    TAG_STUDY_NAME,
)

__all__ = ["ABANDONED_AFTER", "RetentionResult", "retire_studies"]

_log = logging.getLogger(__name__)
ABANDONED_AFTER = STUDY_ABANDONED_AFTER_S
TAG_RETIRED: str = "ctrflow.retired_study"


@dataclass(frozen=True)
class RetentionResult:
    model_name: str
    keep: int
    kept: list[str] = field(default_factory=list)  # the model's studies left in the storage
    deleted: dict[str, str] = field(default_factory=dict)  # study -> MLflow run holding it
    protected: dict[str, str] = field(default_factory=dict)  # study -> why it stays
    would_delete: list[str] = field(default_factory=list)  # a dry run's deletions, not done
    note: str = ""  # why nothing was done, if so

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Study:
    name: str
    study_id: int
    attrs: dict[str, Any]


def _is_ours(attrs: dict[str, Any], model_name: str) -> bool:
    if ATTR_MODEL_NAME in attrs:
        return bool(attrs[ATTR_MODEL_NAME] == model_name)
    warm = attrs.get(ATTR_WARM_START)  # studies created before ctrflow.model_name existed
    return isinstance(warm, dict) and warm.get("model_name") == model_name


def _ours(storage: BaseStorage, model_name: str) -> list[_Study]:
    studies = [
        _Study(s.study_name, s._study_id, dict(s.user_attrs))
        for s in storage.get_all_studies()
        if _is_ours(s.user_attrs, model_name)
    ]
    return sorted(studies, key=lambda s: s.study_id, reverse=True)  # newest first


def _busy(storage: BaseStorage, study: _Study, now: dt.datetime, abandoned_after: float) -> str:
    """Why another pipeline may still need the study, or ""."""
    if not study.attrs.get(ATTR_READY):
        return "not set up completely (create-study may be running)"
    trials = storage.get_all_trials(study.study_id, deepcopy=False)
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return "has running or waiting trials"
    if study.attrs.get(ATTR_FINALIZED):
        return ""
    moments = [m for t in trials for m in (t.datetime_start, t.datetime_complete) if m]
    last = max(moments, default=None)
    if last is None:
        return ""
    last = last if last.tzinfo else last.astimezone()  # Optuna stores local naive times
    idle = (now - last).total_seconds()
    if idle < abandoned_after:
        return f"not finalized and active {idle / 3600:.1f} h ago (finalize-study may follow)"
    return ""


def _champion_study(client: Any, model_name: str) -> str | None:
    """The champion run's study name (None: no champion). MLflow errors propagate."""
    from ctrflow.components.hpo._warm_start import _champion

    found = _champion(client, model_name)
    if isinstance(found, str) or not found[0].run_id:
        return None
    name = client.get_run(found[0].run_id).data.tags.get(TAG_STUDY_NAME)
    return str(name) if name else None


def _experiment_id(client: Any, model_name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(model_name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(model_name))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        found = client.get_experiment_by_name(model_name)
        assert found is not None
        return str(found.experiment_id)


def _archived(client: Any, experiment_id: str) -> dict[str, str]:
    """Study name -> a run of the experiment that logged it as optuna/study.db."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            name = run.data.tags.get(TAG_STUDY_NAME)
            if name and name not in found:
                folder = STUDY_DB_ARTIFACT.rsplit("/", 1)[0]
                paths = {a.path for a in client.list_artifacts(run.info.run_id, folder)}
                if STUDY_DB_ARTIFACT in paths:
                    found[name] = run.info.run_id
        token = page.token
        if not token:
            return found


def _export(client: Any, experiment_id: str, storage: BaseStorage, study: _Study) -> str:
    """Log the study as optuna/study.db of a new run; returns the run id."""
    with tempfile.TemporaryDirectory(prefix="ctrflow-retire-") as tmp:
        db = pathlib.Path(tmp) / STUDY_DB_ARTIFACT.rsplit("/", 1)[1]
        optuna.copy_study(
            from_study_name=study.name, from_storage=storage, to_storage=f"sqlite:///{db}"
        )
        run = client.create_run(
            experiment_id,
            run_name=f"retired study {study.name}"[:250],
            tags={TAG_STUDY_NAME: study.name, TAG_RETIRED: "true"},
        )
        try:
            client.log_artifact(run.info.run_id, str(db), STUDY_DB_ARTIFACT.rsplit("/", 1)[0])
        except BaseException:
            client.set_terminated(run.info.run_id, "FAILED")
            raise
        client.set_terminated(run.info.run_id)
        return str(run.info.run_id)


def _delete(storage: BaseStorage, name: str) -> None:
    for doomed in (source_study_name(name), name):
        # KeyError: no warm-source copy (a cold start), or deleted by a concurrent retention.
        with contextlib.suppress(KeyError):
            storage.delete_study(storage.get_study_id_from_name(doomed))


def retire_studies(
    *,
    storage_url: str,
    model_name: str,
    keep: int,
    current_study: str,
    tracking_uri: str | None,
    settings: StorageSettings | None = None,
    abandoned_after: float = ABANDONED_AFTER,
    dry_run: bool = False,
) -> RetentionResult:
    """Apply the rule in the module docstring; ``keep`` = 0 keeps every study. A dry run
    writes nothing (no export, no deletion) and lists what would go in ``would_delete``."""
    if keep < 0:
        raise ValueError(f"keep_studies must be >= 0 (0 keeps every study), got {keep}")
    if keep == 0:
        return RetentionResult(model_name, keep, note="keep_studies is 0: every study is kept")
    if not tracking_uri:
        return RetentionResult(
            model_name, keep, note="no MLflow tracking URI: the champion's study is unknown, "
            "and nothing could be exported; no study deleted",
        )  # fmt: skip
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    storage = make_storage(
        storage_url, settings or StorageSettings(heartbeat_interval=None, grace_period=None)
    )
    try:
        return _retire(
            client, storage, model_name, keep, current_study, abandoned_after, dry_run=dry_run
        )
    finally:
        dispose(storage)


def _retire(
    client: Any,
    storage: BaseStorage,
    model_name: str,
    keep: int,
    current: str,
    idle: float,
    *,
    dry_run: bool,
) -> RetentionResult:
    studies = _ours(storage, model_name)
    champion_study = _champion_study(client, model_name)
    now = dt.datetime.now(dt.UTC)
    result = RetentionResult(model_name, keep)
    archived: dict[str, str] | None = None
    experiment_id = ""
    for rank, study in enumerate(studies):
        why = ""
        if rank < keep:
            why = f"one of the {keep} newest"
        elif study.name == current:
            why = "this run's study"
        elif study.name == champion_study:
            why = "the champion's study (next warm start)"
        else:
            why = _busy(storage, study, now, idle)
        if why:
            result.kept.append(study.name)
            if rank >= keep:
                result.protected[study.name] = why
            continue
        if dry_run:
            result.would_delete.append(study.name)
            continue
        if archived is None:
            experiment_id = _experiment_id(client, model_name)
            archived = _archived(client, experiment_id)
        try:
            run_id = archived.get(study.name) or _export(client, experiment_id, storage, study)
        except Exception as exc:  # MLflow refused or failed: the study stays, the run goes on
            _log.warning("study %s kept: its export to MLflow failed: %s", study.name, exc)
            result.kept.append(study.name)
            result.protected[study.name] = f"export to MLflow failed: {str(exc).splitlines()[0]}"
            continue
        _delete(storage, study.name)
        result.deleted[study.name] = run_id
        _log.info("deleted study %s (kept in MLflow run %s)", study.name, run_id)
    return result
