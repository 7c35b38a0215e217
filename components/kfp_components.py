"""The thin KFP components: each runs one step function in the project image and maps its
result onto KFP artifacts and metrics. The step functions themselves import no kfp.

KFP embeds each function's source in the compiled spec and runs it in the image, so a body
imports what it needs inside itself; only the annotations are read here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kfp import dsl

__all__ = [
    "create_study_component",
    "evaluate_component",
    "finalize_study_component",
    "hpo_worker_component",
    "prepare_data_component",
    "register_component",
    "retire_studies_component",
    "train_final_component",
]


def prepare_data_component(
    *,
    data_uris: list[str],
    train: dsl.Output[dsl.Dataset],
    valid: dsl.Output[dsl.Dataset],
    test: dsl.Output[dsl.Dataset],
    feature_spec: dsl.Output[dsl.Artifact],
    test_raw: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    spec_uri: str = "",
    split: str = "auto",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    valid_days: int = 1,
    test_days: int = 1,
    seed: int = 0,
    max_bad_fraction: float = 0.001,
    rare_threshold: int = 0,
) -> None:
    """KFP step. Each split is its own Dataset artifact (the directory format of ffm_ext), so
    hpo_worker/train_final/evaluate take them as inputs directly; `feature_spec` is a directory
    with feature_spec.json (the fitted spec, shipped with the model) and stats.json; `test_raw`
    a directory with test_raw.parquet, the test split's raw rows (register's promotion gate
    scores a champion with another feature spec on them).
    data_uris: data-window's list, read in its order (each a file, directory or glob; every one
    must name data). spec_uri: feature spec JSON file or URI ("" = Criteo's schema);
    rare_threshold 0 = spec's.
    """
    import logging
    import pathlib

    from ctrflow.components.data.prepare_data import prepare_data
    from ctrflow.components.names import TEST_RAW_FILE

    logging.basicConfig(level=logging.INFO)
    result = prepare_data(
        input_uri=data_uris,
        output_dir=feature_spec.path,
        spec_path=spec_uri or None,
        split=split,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        valid_days=valid_days,
        test_days=test_days,
        seed=seed,
        max_bad_fraction=max_bad_fraction,
        rare_threshold=rare_threshold or None,
        split_dirs={"train": train.path, "valid": valid.path, "test": test.path},
        test_raw_path=str(pathlib.Path(test_raw.path) / TEST_RAW_FILE),
    )
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    for name, artifact in (("train", train), ("valid", valid), ("test", test)):
        artifact.metadata["rows"] = result.splits[name].rows
        artifact.metadata["n_features"] = result.n_features
        artifact.metadata["n_fields"] = result.n_fields
    feature_spec.metadata["split_method"] = result.split_method
    test_raw.metadata["rows"] = result.splits["test"].rows
    test_raw.metadata["file"] = TEST_RAW_FILE


def create_study_component(
    *,
    study_name: str,
    model_type: str,
    model_name: str,
    budget: int,
    space_tag: str,
    seed: int,
    study_info: dsl.Output[dsl.Artifact],
    mlflow_tracking_uri: str = "",
) -> NamedTuple("Outputs", [("study_name", str), ("search_space_version", str), ("sampler", str)]):  # type: ignore[valid-type]
    """KFP step. Storage URL from env CTRFLOW_STORAGE_URL (a Secret), never a parameter, so no
    password lands in the pipeline spec. MLflow: ``mlflow_tracking_uri`` (the pipeline's run
    parameter, a URL without credentials) or, when empty, env MLFLOW_TRACKING_URI; credentials
    from MLflow's own env vars (a Secret)."""
    import json
    import os
    import pathlib
    from collections import namedtuple

    from ctrflow.components.hpo.create_study import create_study
    from ctrflow.components.hpo.storage import storage_url_from_env
    from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV

    info = create_study(
        storage_url=storage_url_from_env(),
        study_name=study_name,
        model_type=model_type,
        mlflow_tracking_uri=mlflow_tracking_uri or os.environ.get(MLFLOW_TRACKING_URI_ENV) or None,
        model_name=model_name or None,
        space_tag=space_tag or None,
        seed=seed,
        budget=budget,
    )
    with pathlib.Path(study_info.path).open("w", encoding="utf-8") as fh:
        json.dump(info.to_dict(), fh, indent=2)
    outputs = namedtuple("outputs", ["study_name", "search_space_version", "sampler"])
    return outputs(info.study_name, info.search_space_version, info.sampler)


def hpo_worker_component(
    *,
    study_name: str,
    budget: int,
    worker_index: int,
    n_threads: int,
    train: dsl.Input[dsl.Dataset],
    valid: dsl.Input[dsl.Dataset],
) -> int:
    """KFP step (one per ParallelFor item); storage URL from env CTRFLOW_STORAGE_URL.

    Returns the number of trials this worker ran. The sampler seed differs per worker, so
    workers do not propose the same points.
    """
    import logging

    from ctrflow.components.hpo.hpo_worker import run_worker
    from ctrflow.components.hpo.storage import storage_url_from_env

    logging.basicConfig(level=logging.INFO)
    result = run_worker(
        storage_url=storage_url_from_env(),
        study_name=study_name,
        budget=budget,
        train_dir=train.path,
        valid_dir=valid.path,
        n_threads=n_threads,
        seed=1000 + worker_index,
        progress=False,
    )
    return result.trials_run


def finalize_study_component(
    *,
    study_name: str,
    study_db: dsl.Output[dsl.Artifact],
    plots: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    hpo_report: dsl.Output[dsl.HTML],
) -> NamedTuple(  # type: ignore[valid-type]
    "Outputs",
    [
        ("best_params", dict),
        ("best_value", float),
        ("search_space_version", str),
        ("summary", dict),
    ],
):
    """KFP step; storage URL from env CTRFLOW_STORAGE_URL. ``plots`` is a directory of PNGs and
    summary.json; ``study_db`` the SQLite export; ``hpo_report`` the page the KFP UI shows (best
    against defaults, optimization history, importances)."""
    import math
    import pathlib
    import shutil
    from collections import namedtuple

    from ctrflow.components.hpo.finalize_study import finalize_study
    from ctrflow.components.hpo.storage import storage_url_from_env

    out = pathlib.Path(plots.path)
    result = finalize_study(storage_url=storage_url_from_env(), study_name=study_name, out_dir=out)
    pathlib.Path(study_db.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(result.study_db, study_db.path)
    shutil.copyfile(result.report, hpo_report.path)
    metrics.log_metric("best_trial_logloss", result.best_value)
    if result.default_value is not None and math.isfinite(result.default_value):
        metrics.log_metric("default_trial_logloss", result.default_value)
    metrics.log_metric("n_trials", result.n_trials)
    summary = result.to_dict()
    summary["study_db"] = study_db.path

    def without_nulls(value: Any) -> Any:
        # KFP's local runner cannot pass a dict holding None to the next step ("Value must be
        # one of the following types"); a missing key reads the same through .get().
        if isinstance(value, dict):
            return {k: without_nulls(v) for k, v in value.items() if v is not None}
        return value

    summary = without_nulls(summary)
    outputs = namedtuple(
        "outputs", ["best_params", "best_value", "search_space_version", "summary"]
    )
    return outputs(result.best_params, result.best_value, result.search_space_version, summary)


def train_final_component(
    *,
    model_type: str,
    best_params: dict[str, Any],
    n_threads: int,
    seed: int,
    train: dsl.Input[dsl.Dataset],
    valid: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
) -> None:
    """KFP step; ``model`` is a directory holding the model file and train_result.json."""
    import logging

    from ctrflow.components.training.train_final import train_final

    logging.basicConfig(level=logging.INFO)
    result = train_final(
        model_type=model_type,
        params=best_params,
        train_dir=train.path,
        valid_dir=valid.path,
        output_dir=model.path,
        n_threads=n_threads,
        seed=seed,
    )
    model.metadata["model_type"] = result.model_type
    model.metadata["best_iteration"] = result.best_iteration
    metrics.log_metric("final_valid_logloss", result.valid_logloss)
    metrics.log_metric("final_valid_auc", result.valid_auc)
    metrics.log_metric("final_best_iteration", result.best_iteration)


def evaluate_component(
    *,
    test: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    evaluation_report: dsl.Output[dsl.HTML],
) -> NamedTuple("Outputs", [("test_logloss", float), ("test_auc", float)]):  # type: ignore[valid-type]
    """KFP step; ``evaluation`` is a directory with evaluation.json and the plots;
    ``evaluation_report`` the page the KFP UI shows (metrics, reliability curve, ROC)."""
    import shutil
    from collections import namedtuple

    from ctrflow.components.training.evaluate import evaluate

    result = evaluate(test_dir=test.path, model_path=model.path, output_dir=evaluation.path)
    shutil.copyfile(result.report, evaluation_report.path)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    outputs = namedtuple("outputs", ["test_logloss", "test_auc"])
    return outputs(result.logloss, result.auc)


def register_component(
    *,
    model_name: str,
    pipeline_run_id: str,
    study_summary: dict[str, Any],
    margin: float,
    mirror_stage: bool,
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    feature_spec: dsl.Input[dsl.Artifact],
    study_db: dsl.Input[dsl.Artifact],
    plots: dsl.Input[dsl.Artifact],
    test: dsl.Input[dsl.Dataset],
    data_window: dict[str, str],
    data_uris: list[str],
    promotion_report: dsl.Output[dsl.Markdown],
    test_raw: dsl.Input[dsl.Dataset] | None = None,
    mlflow_tracking_uri: str = "",
) -> NamedTuple("Outputs", [("model_version", str), ("promoted", bool), ("reason", str)]):  # type: ignore[valid-type]
    """KFP step; MLflow at ``mlflow_tracking_uri`` (the pipeline's run parameter, no credentials)
    or, when empty, env MLFLOW_TRACKING_URI; credentials from MLFLOW_TRACKING_USERNAME/PASSWORD.

    ``feature_spec`` is prepare_data's directory (feature_spec.json inside); ``plots`` is
    finalize_study's directory of PNGs; ``test_raw`` prepare_data's raw test rows (a directory
    with test_raw.parquet, or a Parquet/CSV file): without them a champion with another feature
    spec than this model's cannot be compared, and it stays. ``data_window``/``data_uris``:
    data-window's outputs, the week's data as MLflow params and the URIs read.
    ``promotion_report``: the decision as Markdown, which the KFP UI renders."""
    import logging
    import os
    import pathlib
    import shutil
    import tempfile
    from collections import namedtuple

    from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV, TEST_RAW_FILE
    from ctrflow.components.registry.register import register

    logging.basicConfig(level=logging.INFO)
    tracking_uri = mlflow_tracking_uri or os.environ.get(MLFLOW_TRACKING_URI_ENV)
    if not tracking_uri:
        raise RuntimeError(
            "MLFLOW_TRACKING_URI is not set and the run parameter mlflow_tracking_uri is empty "
            "(on a cluster the ConfigMap ctrflow-config sets the variable)"
        )
    spec_path = pathlib.Path(feature_spec.path)
    if spec_path.is_dir():
        spec_path = spec_path / "feature_spec.json"
    raw_path = pathlib.Path(test_raw.path) if test_raw is not None else None
    if raw_path is not None and raw_path.is_dir():
        raw_path = raw_path / TEST_RAW_FILE
    with tempfile.TemporaryDirectory() as tmp:
        # The warm start reads the artifact by its file name: optuna/study.db.
        db = pathlib.Path(tmp) / "study.db"
        shutil.copyfile(study_db.path, db)
        result = register(
            tracking_uri=tracking_uri,
            model_name=model_name,
            model_dir=model.path,
            evaluation_dir=evaluation.path,
            feature_spec_path=spec_path,
            study=study_summary,
            study_db=db,
            test_dir=test.path,
            hpo_plots_dir=plots.path,
            test_raw=raw_path,
            pipeline_run_id=pipeline_run_id,
            margin=margin,
            mirror_stage=mirror_stage,
            data_window=data_window,
            data_uris=data_uris,
            decision_report=promotion_report.path,
        )
    outputs = namedtuple("outputs", ["model_version", "promoted", "reason"])
    return outputs(result.version, result.promoted, result.reason)


def retire_studies_component(
    *,
    model_name: str,
    study_name: str,
    keep_studies: int,
    mlflow_tracking_uri: str = "",
) -> dict:  # type: ignore[type-arg]
    """KFP step after register: keep the newest ``keep_studies`` studies of ``model_name`` in
    the Optuna storage (env CTRFLOW_STORAGE_URL), each older one exported to MLflow and deleted;
    never this run's study nor the champion's (components/hpo/retention.py). 0 keeps all."""
    import logging
    import os

    from ctrflow.components.hpo.retention import retire_studies
    from ctrflow.components.hpo.storage import storage_url_from_env
    from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV

    logging.basicConfig(level=logging.INFO)
    result = retire_studies(
        storage_url=storage_url_from_env(),
        model_name=model_name,
        keep=keep_studies,
        current_study=study_name,
        tracking_uri=mlflow_tracking_uri or os.environ.get(MLFLOW_TRACKING_URI_ENV) or None,
    )
    return result.to_dict()
