"""register step: one MLflow run per pipeline run, the servable model, a new version, promotion.

In the experiment named after the model, the run records:
- params: the best hyperparameters, the fixed training settings, data sizes, the model type, and
  the week's data as data-window filled it (``data_uri`` template, ``data_date``,
  ``data_window_start``/``_end``, ``data_uri_count``; the URIs in artifact ``data/window.json``);
- metrics: ``default_trial_logloss``/``_auc`` and ``best_trial_logloss``/``_auc`` of the study,
  ``test_logloss``, ``test_auc`` and the calibration numbers, the final model's validation numbers;
- tags: ``ctrflow.search_space_version`` and ``ctrflow.study_name`` (what next week's warm start
  reads), data fingerprint, code version, pipeline run id, warm-start source;
- artifacts: ``optuna/study.db`` (next week's warm-start source), the HPO plots, the calibration
  plot and evaluation.json, the feature spec, train_result.json;
- the pyfunc model (``serving_model``), registered as a new version with alias ``challenger``.
Then the promotion gate (``promotion``) decides about alias ``champion``; the decision can also be
written as Markdown (``decision_report``; the KFP UI shows the pipeline step's copy). Any failure
leaves the champion where it was: the alias moves last, under a lock, and is put back if anything
after it fails; a version created before a failure is tagged ``ctrflow.promotion.decision=failed``.

A step killed outright cannot clean up, so the record is written to be true at every point and
completed by the next register run: the version is created ``pending``, the gate writes the
intent ``promoting`` before moving the alias and ``promoted`` after the history; the run renews a
heartbeat tag (``run_heartbeat``). The next run marks RUNNING runs without a heartbeat KILLED,
and under the lock completes or fails what a killed step left (``promotion.repair_interrupted``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import ctrflow
from ctrflow.components.data.feature_spec import FittedFeatureSpec
from ctrflow.components.data.fingerprint import spec_fingerprint
from ctrflow.components.data.raw_rows import load_raw_rows
from ctrflow.components.names import (
    CHALLENGER_ALIAS,
    DECISION_KEPT,
    DECISION_PENDING,
    DECISION_PROMOTED,
    STUDY_DB_ARTIFACT,
    TAG_CODE,
    TAG_DATA,
    TAG_HEARTBEAT,
    TAG_MODEL_TYPE,
    TAG_PIPELINE_RUN,
    TAG_PROMOTION_DECISION,
    TAG_PROMOTION_REASON,
    TAG_SPACE_VERSION,
    TAG_SPEC,
    TAG_STUDY_NAME,
    TAG_WARM_START,
)
from ctrflow.components.registry._test_kill import with_test_kill
from ctrflow.components.registry.decision_report import decision_markdown
from ctrflow.components.registry.model_names import check_model_name
from ctrflow.components.registry.promotion import promote, record_failure
from ctrflow.components.registry.run_heartbeat import (
    HEARTBEAT_EVERY,
    ORPHAN_AFTER,
    RunHeartbeat,
    beat_value,
    end_orphan_runs,
)
from ctrflow.components.registry.serving_model import CtrModel, log_serving_model
from ctrflow.components.training.evaluate import EvalResult
from ctrflow.components.training.models import load_dataset
from ctrflow.components.training.train_final import TrainResult
from ctrflow.components.training.trained_model import load_trained_model

__all__ = ["DATA_WINDOW_ARTIFACT", "RegisterResult", "register"]

DATA_WINDOW_ARTIFACT = "data/window.json"  # the data-window params and every URI read

_log = logging.getLogger(__name__)
Event = Callable[[str], None]


@dataclass(frozen=True)
class RegisterResult:
    run_id: str
    experiment_id: str
    model_name: str
    version: str
    model_uri: str  # models:/NAME/VERSION
    model_id: str
    promoted: bool
    champion: str | None  # champion version after this run
    reason: str
    decision: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _use_tracking_uri(uri: str) -> None:
    """Point mlflow's fluent API (which log_model needs) at ``uri``, for the rest of the process.

    Not restored afterwards: the setting is process-wide, so restoring it while another thread
    of the same process still logs would send that thread's calls elsewhere. Only the tracking
    URI is set: a registry URI set here would also pin every MlflowClient created later.
    """
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException as exc:  # another pipeline created it meanwhile
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            assert experiment is not None
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted: restore it or purge it before registering"
        )
    return str(experiment.experiment_id)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="ctrflow CTR model (pyfunc, raw rows)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _combined_fingerprint(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _metrics(
    study: Mapping[str, Any], train: TrainResult, evaluation: EvalResult
) -> dict[str, float]:
    out = {
        "best_trial_logloss": study.get("best_value"),
        "best_trial_auc": study.get("best_auc"),
        "default_trial_logloss": study.get("default_value"),
        "default_trial_auc": study.get("default_auc"),
        "n_trials": study.get("n_trials"),
        "final_valid_logloss": train.valid_logloss,
        "final_valid_auc": train.valid_auc,
        "final_best_iteration": train.best_iteration,
        **evaluation.metrics("test_"),
    }
    # A defaults trial that was pruned or failed has no value: leave the metric out.
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(float(v))}


def _params(train: TrainResult, evaluation: EvalResult) -> dict[str, Any]:
    return {
        **train.params,
        **{f"fixed.{k}": v for k, v in train.fixed.items()},
        "model_type": train.model_type,
        "train_rows": train.train_rows,
        "valid_rows": train.valid_rows,
        "test_rows": evaluation.rows,
        "n_features": train.n_features,
        "n_fields": train.n_fields,
        "seed": train.seed,
    }


def _window_params(
    data_window: Mapping[str, str] | None, params: Mapping[str, Any]
) -> dict[str, str]:
    """The data window's params, refused before anything is written if one would silently
    replace a model param or is not text."""
    window = dict(data_window or {})
    for key, value in window.items():
        if key in params:
            raise ValueError(f"data window param {key!r} would replace the model param {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"data window param {key!r} is {type(value).__name__}, not text")
    return window


def _log_artifacts(
    study_db: pathlib.Path,
    hpo_plots_dir: pathlib.Path | None,
    evaluation_dir: pathlib.Path,
    feature_spec_path: pathlib.Path,
    model_dir: pathlib.Path,
    study: Mapping[str, Any],
) -> None:
    folder, name = STUDY_DB_ARTIFACT.rsplit("/", 1)
    if study_db.name != name:
        raise ValueError(f"the study export must be named {name}, got {study_db}")
    mlflow.log_artifact(str(study_db), artifact_path=folder)  # next week's warm-start source
    mlflow.log_dict(dict(study), f"{folder}/summary.json")
    if hpo_plots_dir is not None:
        for plot in sorted([*hpo_plots_dir.glob("*.png"), *hpo_plots_dir.glob("*.html")]):
            mlflow.log_artifact(str(plot), artifact_path=f"{folder}/plots")
    for file in sorted(evaluation_dir.iterdir()):
        if file.suffix in (".json", ".png", ".html"):
            mlflow.log_artifact(str(file), artifact_path="evaluation")
    mlflow.log_artifact(str(feature_spec_path), artifact_path="feature_spec")
    train_json = model_dir / "train_result.json"
    if train_json.is_file():
        mlflow.log_artifact(str(train_json), artifact_path="training")


def _input_example(test_raw: pd.DataFrame | None, spec: FittedFeatureSpec) -> pd.DataFrame | None:
    if test_raw is None:
        return None
    return test_raw[list(spec.raw_columns)].head(2).reset_index(drop=True)


def register(
    *,
    tracking_uri: str,
    model_name: str,
    model_dir: str | pathlib.Path,
    evaluation_dir: str | pathlib.Path,
    feature_spec_path: str | pathlib.Path,
    study: Mapping[str, Any],
    study_db: str | pathlib.Path,
    test_dir: str | pathlib.Path,
    hpo_plots_dir: str | pathlib.Path | None = None,
    test_raw: pd.DataFrame | str | pathlib.Path | None = None,
    pipeline_run_id: str = "",
    margin: float = 0.0,
    mirror_stage: bool = False,
    decision_report: str | pathlib.Path | None = None,
    pip_requirements: Sequence[str] | None = None,
    lock_ttl: float = 300.0,
    lock_wait: float = 600.0,
    orphan_after: float = ORPHAN_AFTER,
    on_event: Event | None = None,
    data_window: Mapping[str, str] | None = None,
    data_uris: Sequence[str] | None = None,
) -> RegisterResult:
    """Log, register and gate one pipeline run's model; see the module docstring.

    model_dir: train_final's output; evaluation_dir: evaluate's output; study: finalize_study's
    summary (``FinalizeResult.to_dict()``); study_db: its SQLite export; test_raw: the raw test
    rows with labels (DataFrame or Parquet/CSV file), needed to compare with a champion that has
    another feature spec. on_event(name) is called at each stage (progress, fault injection).
    orphan_after: a RUNNING register run silent that long counts as killed (run_heartbeat).
    data_window: data-window's params of the data read (logged as params), data_uris the URIs.
    decision_report: a file to write the decision to as Markdown (``decision_report``).
    """
    event = with_test_kill(on_event)
    check_model_name(model_name)
    # Everything is read and checked before anything is written to MLflow.
    model_dir, evaluation_dir = pathlib.Path(model_dir), pathlib.Path(evaluation_dir)
    study_db, feature_spec_path = pathlib.Path(study_db), pathlib.Path(feature_spec_path)
    plots = pathlib.Path(hpo_plots_dir) if hpo_plots_dir is not None else None
    for label, path in (("study export", study_db), ("feature spec", feature_spec_path)):
        if not path.is_file():
            raise FileNotFoundError(f"{label} {path} does not exist")
    train = TrainResult.load(model_dir)
    evaluation = EvalResult.load(evaluation_dir)
    spec = FittedFeatureSpec.load(str(feature_spec_path))
    trained = load_trained_model(model_dir)
    if trained.model_type != train.model_type:
        raise ValueError(f"{model_dir}: model file is {trained.model_type}, not {train.model_type}")
    test = load_dataset(test_dir, "test")
    if isinstance(test_raw, str | pathlib.Path):
        test_raw = load_raw_rows(test_raw, spec)
    space_version = str(study.get("search_space_version") or "")
    if not space_version:
        raise ValueError("the study summary has no search_space_version (finalize_study output?)")
    study_name = str(study.get("study_name") or "")
    params = _params(train, evaluation)
    params |= _window_params(data_window, params)
    data_fp = _combined_fingerprint(train.data_fingerprint, evaluation.test_fingerprint)
    tags = {
        TAG_SPACE_VERSION: space_version,
        TAG_STUDY_NAME: study_name,
        TAG_DATA: data_fp,
        TAG_CODE: ctrflow.__version__,
        TAG_PIPELINE_RUN: pipeline_run_id,
        TAG_MODEL_TYPE: train.model_type,
        TAG_SPEC: spec_fingerprint(spec),
        TAG_WARM_START: json.dumps(study.get("warm_start", {}), sort_keys=True)[:4900],
        TAG_HEARTBEAT: beat_value(),
        "ctrflow.trained_with_best_params": str(train.params == study.get("best_params")).lower(),
    }

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, model_name)
    _use_tracking_uri(tracking_uri)
    with (
        mlflow.start_run(
            experiment_id=experiment_id, run_name=pipeline_run_id or study_name or None, tags=tags
        ) as run,
        RunHeartbeat(client, run.info.run_id, min(HEARTBEAT_EVERY, orphan_after / 4)),
    ):
        run_id = run.info.run_id
        mlflow.log_params(params)
        if data_window or data_uris:
            window = {**(data_window or {}), "data_uris": list(data_uris or ())}
            mlflow.log_dict(window, DATA_WINDOW_ARTIFACT)
        mlflow.log_metrics(_metrics(study, train, evaluation))
        _log_artifacts(study_db, plots, evaluation_dir, feature_spec_path, model_dir, study)
        event("run_logged")
        info = log_serving_model(
            feature_spec_path=feature_spec_path,
            model_path=model_dir,
            pip_requirements=pip_requirements,
            input_example=_input_example(test_raw, spec),
        )
        event("model_logged")
        _ensure_registered_model(client, model_name)
        version = str(
            client.create_model_version(
                name=model_name,
                source=info.model_uri,
                run_id=run_id,
                model_id=info.model_id,
                tags={
                    TAG_PIPELINE_RUN: pipeline_run_id,
                    TAG_MODEL_TYPE: train.model_type,
                    TAG_SPACE_VERSION: space_version,
                    TAG_SPEC: tags[TAG_SPEC],
                    "ctrflow.test_logloss": f"{evaluation.logloss:.8f}",
                    "ctrflow.test_auc": f"{evaluation.auc:.6f}",
                    TAG_PROMOTION_DECISION: DECISION_PENDING,  # until the gate decides
                },
            ).version
        )
        try:
            event("version_created")
            client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version)
            end_orphan_runs(
                client, experiment_id, found_by=run_id, pipeline_run_id=pipeline_run_id,
                orphan_after=orphan_after,
            )  # fmt: skip
            decision = promote(
                client=client,
                tracking_uri=tracking_uri,
                model_name=model_name,
                version=version,
                challenger=CtrModel.from_parts(spec, trained),
                challenger_logloss=evaluation.logloss,
                test=test,
                test_raw=test_raw,
                challenger_auc=evaluation.auc,
                margin=margin,
                mirror_stage=mirror_stage,
                lock_ttl=lock_ttl,
                lock_wait=lock_wait,
                orphan_after=orphan_after,
                on_event=event,
            )
            mlflow.set_tags(
                {
                    "ctrflow.model_version": version,
                    TAG_PROMOTION_DECISION: DECISION_PROMOTED
                    if decision.promoted
                    else DECISION_KEPT,
                    TAG_PROMOTION_REASON: decision.reason[:4900],
                }
            )
        except BaseException as exc:
            record_failure(client, model_name, version, exc)
            raise
    result = RegisterResult(
        run_id=run_id,
        experiment_id=experiment_id,
        model_name=model_name,
        version=version,
        model_uri=f"models:/{model_name}/{version}",
        model_id=str(info.model_id),
        promoted=decision.promoted,
        champion=decision.champion,
        reason=decision.reason,
        decision=decision.to_dict(),
    )
    if decision_report is not None:
        report = pathlib.Path(decision_report)
        report.parent.mkdir(parents=True, exist_ok=True)
        markdown = decision_markdown(
            model_name=model_name,
            version=version,
            run_id=run_id,
            experiment_id=experiment_id,
            model_uri=result.model_uri,
            decision=result.decision,
            challenger_test_logloss=evaluation.logloss,
            challenger_test_auc=evaluation.auc,
            tracking_uri=tracking_uri,
            pipeline_run_id=pipeline_run_id,
        )
        report.write_text(markdown, encoding="utf-8")
    return result
