"""The weekly ctrflow pipeline (KFP v2).

    plan-hpo ─▶ data-window ─▶ prepare-data ─▶ create-study ─▶ hpo-worker x n_workers
                                                                 (ParallelFor)       │
                 register ◀── evaluate ◀── train-final ◀── finalize-study ◀──────────┘
                    │
                    └─▶ retire-studies (keep_studies newest studies of the model; 0: all)

Every step is a lightweight Python component over a step function of ``ctrflow.components``,
running on the project image (chosen at compile time; ``install_kfp_package=False``: the image
holds kfp). The same compiled spec runs on Kubeflow and locally through
``kfp.local.SubprocessRunner`` (``ctrflow run``).

Secrets never travel as parameters: the Optuna storage URL comes from the Secret named by
``storage_secret`` (key ``CTRFLOW_STORAGE_URL``) and MLflow's credentials, if the server needs
them, from the optional Secret ``mlflow_secret`` (keys ``MLFLOW_TRACKING_USERNAME``,
``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``), both through
``kfp.kubernetes.use_secret_as_env``. Locally, where no Kubernetes applies them, the steps inherit
those variables from the ``ctrflow run`` process (SubprocessRunner starts each step with the
parent's environment). MLflow's location is not secret: the run parameter
``mlflow_tracking_uri`` when given, else MLFLOW_TRACKING_URI from the manifests' ConfigMap
``ctrflow-config``; create-study (the warm-start lookup) and register use the same rule.

No ``from __future__ import annotations`` here: KFP reads the pipeline function's annotations as
types.
"""

import dataclasses
import inspect
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineParameterChannel
from kfp.dsl.python_component import PythonComponent

from ctrflow.components.kfp_components import (
    create_study_component,
    evaluate_component,
    finalize_study_component,
    hpo_worker_component,
    prepare_data_component,
    register_component,
    retire_studies_component,
    train_final_component,
)
from ctrflow.components.names import (
    MAX_WORKERS,
    MLFLOW_AUTH_SECRET,
    MLFLOW_CLIENT_LABEL,
    MLFLOW_CONFIG_MAP,
    MLFLOW_SECRET_KEYS,
    POD_LABEL,
    POSTGRES_CLIENT_LABEL,
    RUN_AS_USER,
    STORAGE_SECRET,
)
from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV as TRACKING_ENV
from ctrflow.components.names import STORAGE_URL_ENV as STORAGE_ENV
from ctrflow.pipelines._component_factory import step_component
from ctrflow.pipelines._data_window_step import data_window_component
from ctrflow.pipelines._image import default_image
from ctrflow.pipelines._pipeline_steps import plan_hpo_component

__all__ = [
    "PIPELINE_NAME",
    "STORAGE_ENV",
    "build_pipeline",
    "compile_pipeline",
]

PIPELINE_NAME = "ctrflow"
WORKER_THREADS = 1  # one FFM thread per worker: scale out with workers, deterministic trials
# The final fit runs as its trial ran, so the registered model is the best trial's, bit for bit.
# At 2 threads (lock-free updates, so another order each run) a fit with patience 1 can stop on
# another epoch: on CI's 15k-row run it gave 0.4805 validation logloss against its trial's 0.4732.
TRAIN_THREADS = WORKER_THREADS


# What a run returns (kfp.local hands these to `ctrflow run`; the KFP UI shows them).
class PipelineOutputs(NamedTuple):
    hpo: dict  # type: ignore[type-arg]  # finalize_study's summary: best params, warm start
    test_logloss: float
    test_auc: float
    model_version: str
    promoted: bool
    promotion_reason: str


@dataclasses.dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


# Sized for the reference workload (a week of Criteo-like logs, tens of millions of rows);
# prepare_data streams, so its memory does not grow with the input.
RESOURCES = {
    "plan-hpo": Resources("100m", "500m", "128Mi", "256Mi"),
    "data-window": Resources("100m", "500m", "128Mi", "256Mi"),
    "prepare-data": Resources("2", "4", "4Gi", "8Gi"),
    "create-study": Resources("250m", "1", "512Mi", "1Gi"),
    "hpo-worker": Resources(str(WORKER_THREADS), str(WORKER_THREADS), "2Gi", "4Gi"),
    "finalize-study": Resources("500m", "1", "1Gi", "2Gi"),
    "train-final": Resources(str(TRAIN_THREADS), str(TRAIN_THREADS), "4Gi", "8Gi"),
    "evaluate": Resources("1", "2", "2Gi", "4Gi"),
    "register": Resources("1", "2", "2Gi", "4Gi"),
    "retire-studies": Resources("250m", "1", "512Mi", "1Gi"),
}
# Steps that talk to the database or MLflow retry on failure; all are idempotent on retry
# (create_study leaves a ready study as it is, workers rejoin the study and its exact budget).
RETRY: dict[str, Any] = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0}
WORKER_TIMEOUT_SECONDS = 12 * 3600
# Where a step writes: /tmp and the image user's home (images/Dockerfile) for the step's code, and
# the local paths under which KFP's launcher stages artifacts (/gcs, /minio, /s3 by the artifact
# store's scheme). Each is an
# emptyDir, so a step also runs with a read-only root filesystem, which the KFP platform spec
# cannot request: the MutatingAdmissionPolicy in manifests/cluster/pipeline-steps sets it.
WRITABLE_DIRS = {
    "tmp": "/tmp",
    "home": "/home/ctrflow",
    "kfp-gcs": "/gcs",
    "kfp-minio": "/minio",
    "kfp-s3": "/s3",
}
# The run parameters' descriptions, which the KFP UI shows on the run form. KFP's compiler reads
# them from the Args section of the pipeline function's docstring (into root.inputDefinitions of
# the spec); that docstring is made from this, one line each, since a wrapped docstring line would
# reach the spec as a line break.
PARAMETER_DESCRIPTIONS = {
    "data_uri": "Click log to train on: Parquet/CSV file, directory or glob, local or gs:// s3://; "
    "a template such as gs://bucket/logs/{date-7d..date}/*.parquet reads the run's own week.",
    "model_name": "Registered MLflow model (and experiment) name; its champion warm-starts the "
    "search and is the model to beat.",
    "model_type": "Model family: ffm (field-aware factorization machine) or xgboost.",
    "n_workers": "Parallel HPO worker pods sharing one Optuna study (1-50, at most trial_budget).",
    "trial_budget": "Trials in the whole study, over all workers (exact, not per worker).",
    "storage_secret": "Kubernetes Secret whose key CTRFLOW_STORAGE_URL holds the Optuna storage "
    "URL (PostgreSQL); never pass the URL itself.",
    "mlflow_tracking_uri": "MLflow tracking URI without credentials; empty: MLFLOW_TRACKING_URI "
    "of the ConfigMap ctrflow-config.",
    "mlflow_secret": "Optional Kubernetes Secret with MLFLOW_TRACKING_USERNAME/PASSWORD or "
    "MLFLOW_TRACKING_TOKEN, for an MLflow server with authentication.",
    "promotion_margin": "The challenger becomes champion only if its test logloss beats the "
    "champion's, on the same rows, by at least this much (a finite number >= 0).",
    "mirror_production_stage": "Also move MLflow's legacy Production stage when the champion "
    "alias moves.",
    "seed": "Seed of the data split, the HPO samplers and the final training.",
    "feature_spec_uri": "Feature spec JSON (file or URI); empty: the built-in Criteo schema.",
    "search_space_tag": "Tag appended to the search-space version; a new tag starts the search "
    "cold instead of from the champion's study.",
    "data_date": "Day (YYYY-MM-DD, UTC) that fills a data_uri template; empty: the run's "
    "scheduled time.",
    "keep_studies": "Optuna studies of this model kept after a successful run, newest first; "
    "older ones go to MLflow and leave the database (the champion's never does); 0 keeps all.",
}


def _components(image: str) -> dict[str, PythonComponent]:
    funcs: dict[str, Callable[..., Any]] = {
        "plan-hpo": plan_hpo_component,
        "data-window": data_window_component,
        "prepare-data": prepare_data_component,
        "create-study": create_study_component,
        "hpo-worker": hpo_worker_component,
        "finalize-study": finalize_study_component,
        "train-final": train_final_component,
        "evaluate": evaluate_component,
        "register": register_component,
        "retire-studies": retire_studies_component,
    }
    return {name: step_component(func, image=image, name=name) for name, func in funcs.items()}


def _configure(
    task: dsl.PipelineTask, step: str, *, cache: bool, retry: bool, retries: bool
) -> None:
    res = RESOURCES[step]
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    # Caching is compiled per task: KFP ignores run-level caching options when a run is
    # submitted by pipeline version id.
    task.set_caching_options(enable_caching=cache)
    if retry and retries:
        task.set_retry(**RETRY)
    kubernetes.add_pod_label(task, *POD_LABEL)
    # The image's user, never root. The KFP platform spec carries no more of a securityContext:
    # the rest (read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp)
    # comes from manifests/cluster/pipeline-steps (README, "Security").
    kubernetes.set_security_context(
        task, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, run_as_non_root=True
    )
    for volume, path in WRITABLE_DIRS.items():
        kubernetes.empty_dir_mount(task, volume_name=volume, mount_path=path)


def _use_storage_secret(task: dsl.PipelineTask, secret: PipelineParameterChannel) -> None:
    # Admitted to PostgreSQL by the NetworkPolicy; the admission policy allows the label only on
    # pods of the pipeline's ServiceAccount.
    kubernetes.add_pod_label(task, *POSTGRES_CLIENT_LABEL)
    kubernetes.use_secret_as_env(
        task, secret_name=secret, secret_key_to_env={STORAGE_ENV: STORAGE_ENV}
    )


def _use_mlflow(task: dsl.PipelineTask, secret: PipelineParameterChannel) -> None:
    """MLflow's location and credentials as env vars. Both are optional: the location may come
    as the run parameter ``mlflow_tracking_uri`` instead, and a server without authentication
    needs no Secret."""
    kubernetes.add_pod_label(task, *MLFLOW_CLIENT_LABEL)
    kubernetes.use_config_map_as_env(
        task,
        config_map_name=MLFLOW_CONFIG_MAP,
        config_map_key_to_env={TRACKING_ENV: TRACKING_ENV},
        optional=True,
    )
    kubernetes.use_secret_as_env(
        task,
        secret_name=secret,
        secret_key_to_env={key: key for key in MLFLOW_SECRET_KEYS},
        optional=True,
    )


def build_pipeline(image: str | None = None, *, retries: bool = True) -> GraphComponent:
    """The pipeline with every step on ``image`` (default: the project image of this version).

    ``retries=False`` is the variant for local runs (kfp.local): no retry policies, since a
    failing step there is bad input or a bug, not a lost pod or a database fail-over, and retrying
    only delays the error; and no schedule-time placeholder, which kfp.local 2.17 cannot resolve
    (an IndexError in its placeholder code): `ctrflow run` passes the run parameter data_date.
    """
    steps = _components(image or default_image())

    def configure(task: dsl.PipelineTask, step: str, *, cache: bool, retry: bool) -> None:
        _configure(task, step, cache=cache, retry=retry, retries=retries)

    def ctr_pipeline(
        data_uri: str,
        model_name: str = "ctr-ffm",
        model_type: str = "ffm",
        n_workers: int = 4,
        trial_budget: int = 40,
        storage_secret: str = STORAGE_SECRET,
        mlflow_tracking_uri: str = "",
        mlflow_secret: str = MLFLOW_AUTH_SECRET,
        promotion_margin: float = 0.0,
        mirror_production_stage: bool = False,
        seed: int = 0,
        feature_spec_uri: str = "",
        search_space_tag: str = "",
        data_date: str = "",
        keep_studies: int = 8,
    ) -> PipelineOutputs:
        plan = steps["plan-hpo"](
            n_workers=n_workers,
            budget=trial_budget,
            model_name=model_name,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        configure(plan, "plan-hpo", cache=False, retry=False)

        # The run's data from its date: a templated data_uri filled from the schedule time.
        window = steps["data-window"](
            data_uri=data_uri,
            data_date=data_date,
            schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER if retries else "",
        ).after(plan)
        configure(window, "data-window", cache=False, retry=False)

        prep = steps["prepare-data"](
            data_uris=window.outputs["data_uris"], spec_uri=feature_spec_uri, seed=seed
        )
        configure(prep, "prepare-data", cache=False, retry=False)

        create = steps["create-study"](
            study_name=plan.outputs["study_name"],
            model_type=model_type,
            model_name=model_name,
            budget=trial_budget,
            space_tag=search_space_tag,
            seed=seed,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ).after(prep)
        configure(create, "create-study", cache=False, retry=True)
        _use_storage_secret(create, storage_secret)
        _use_mlflow(create, mlflow_secret)

        # Each item carries the study name: kfp.local (2.17) replaces every *other* task output
        # fed into a ParallelFor body with the loop item. .after() orders workers after creation.
        with dsl.ParallelFor(items=plan.outputs["Output"], parallelism=MAX_WORKERS) as slot:
            worker = steps["hpo-worker"](
                study_name=slot.study_name,
                budget=trial_budget,
                worker_index=slot.index,
                n_threads=WORKER_THREADS,
                train=prep.outputs["train"],
                valid=prep.outputs["valid"],
            ).after(create)
            configure(worker, "hpo-worker", cache=False, retry=True)
            _use_storage_secret(worker, storage_secret)
            kubernetes.set_timeout(worker, WORKER_TIMEOUT_SECONDS)

        final = steps["finalize-study"](study_name=create.outputs["study_name"]).after(worker)
        configure(final, "finalize-study", cache=False, retry=True)
        _use_storage_secret(final, storage_secret)

        train = steps["train-final"](
            model_type=model_type,
            best_params=final.outputs["best_params"],
            n_threads=TRAIN_THREADS,
            seed=seed,
            train=prep.outputs["train"],
            valid=prep.outputs["valid"],
        )
        configure(train, "train-final", cache=True, retry=False)

        evaluation = steps["evaluate"](test=prep.outputs["test"], model=train.outputs["model"])
        configure(evaluation, "evaluate", cache=True, retry=False)

        register = steps["register"](
            model_name=model_name,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            study_summary=final.outputs["summary"],
            margin=promotion_margin,
            mirror_stage=mirror_production_stage,
            model=train.outputs["model"],
            evaluation=evaluation.outputs["evaluation"],
            feature_spec=prep.outputs["feature_spec"],
            study_db=final.outputs["study_db"],
            plots=final.outputs["plots"],
            test=prep.outputs["test"],
            # The raw test rows: a champion fitted with last week's feature spec is compared
            # with this run's model on them, each through its own spec.
            test_raw=prep.outputs["test_raw"],
            mlflow_tracking_uri=mlflow_tracking_uri,
            # The week's data as MLflow params: template, date, window, URIs.
            data_window=window.outputs["window"],
            data_uris=window.outputs["data_uris"],
        )
        # Never cached: a cache hit would skip the registration and the promotion decision.
        configure(register, "register", cache=False, retry=True)
        _use_mlflow(register, mlflow_secret)

        # After the promotion: the champion whose study must stay is the one just decided. Not
        # before: a failed run deletes nothing.
        retire = steps["retire-studies"](
            model_name=model_name,
            study_name=create.outputs["study_name"],
            keep_studies=keep_studies,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ).after(register)
        configure(retire, "retire-studies", cache=False, retry=True)
        _use_storage_secret(retire, storage_secret)
        _use_mlflow(retire, mlflow_secret)

        return PipelineOutputs(
            hpo=final.outputs["summary"],
            test_logloss=evaluation.outputs["test_logloss"],
            test_auc=evaluation.outputs["test_auc"],
            model_version=register.outputs["model_version"],
            promoted=register.outputs["promoted"],
            promotion_reason=register.outputs["reason"],
        )

    ctr_pipeline.__doc__ = _args_docstring(ctr_pipeline)
    pipeline: GraphComponent = dsl.pipeline(
        name=PIPELINE_NAME,
        description="Weekly CTR model: data prep, distributed Optuna HPO warm-started from the "
        "champion, final training, test evaluation, MLflow registration and promotion.",
    )(ctr_pipeline)
    return pipeline


def _args_docstring(func: Callable[..., Any]) -> str:
    """A Google-style Args section of PARAMETER_DESCRIPTIONS for ``func``'s parameters."""
    params = list(inspect.signature(func).parameters)
    if set(params) != set(PARAMETER_DESCRIPTIONS):
        raise RuntimeError(
            f"PARAMETER_DESCRIPTIONS does not match the pipeline's parameters: {sorted(params)}"
        )
    # docstring_parser recognises the Google style only after a summary line.
    args = "".join(f"    {name}: {PARAMETER_DESCRIPTIONS[name]}\n" for name in params)
    return f"The weekly CTR pipeline.\n\nArgs:\n{args}"


def compile_pipeline(
    path: str | pathlib.Path, image: str | None = None, *, retries: bool = True
) -> pathlib.Path:
    """Write the pipeline spec (YAML) to ``path``; returns it."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(image, retries=retries), package_path=str(out))
    return out
