"""The names the steps, the pipeline, the CLI and the manifests agree on, in one place.

Environment variables and Secret keys, MLflow aliases and tags, Optuna study attributes, artifact
file names, the worker cap and the model types. A step takes these from here, never from another
concern's module. The manifests (``manifests/base``) repeat a few of them as YAML; a test keeps
the two equal.
"""

from __future__ import annotations

from typing import Final

# ---- environment variables and Secret keys ----------------------------------------------------
# The Optuna storage URL: a Kubernetes Secret key, read as the env var of the same name.
STORAGE_URL_ENV: Final = "CTRFLOW_STORAGE_URL"
STORAGE_SECRET: Final = "ctrflow-storage"  # the Secret holding it (manifests/base)
MLFLOW_TRACKING_URI_ENV: Final = "MLFLOW_TRACKING_URI"
# MLflow credentials, if the tracking server needs them: the optional Secret's keys.
MLFLOW_SECRET_KEYS: Final = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
MLFLOW_CONFIG_MAP: Final = "ctrflow-config"  # holds MLFLOW_TRACKING_URI for pipeline steps
# The HPO worker's Optuna fast path (components/hpo/_fast_path.py): 0/off/false/no turns it off,
# 1/on/true/yes or unset leaves it on where the installed Optuna matches what it was written for.
OPTUNA_FAST_PATH_ENV: Final = "CTRFLOW_OPTUNA_FAST_PATH"
# Seconds an HPO worker rides out an unreachable Optuna storage before it exits 3 (default 60;
# `ctrflow hpo worker --storage-outage-limit` wins over it).
STORAGE_OUTAGE_LIMIT_ENV: Final = "CTRFLOW_STORAGE_OUTAGE_LIMIT"
# The ctrflow wheel a logged model carries, so stock `mlflow models serve` installs it from the
# model (the image sets it to the wheel it was built from).
WHEEL_ENV: Final = "CTRFLOW_WHEEL"
# The KFP API endpoint when `ctrflow submit|schedule|status` get no --host (as kfp.Client reads).
KFP_ENDPOINT_ENV: Final = "KF_PIPELINES_ENDPOINT"

# ---- pods -------------------------------------------------------------------------------------
# Every ctrflow pod carries this label (it names the application; it admits nothing by itself).
POD_LABEL: Final = ("app.kubernetes.io/part-of", "ctrflow")
RUN_AS_USER: Final = 10001  # the image's numeric user (images/Dockerfile)
# The labels the NetworkPolicies admit to PostgreSQL and to MLflow. Anyone who can create pods
# can set a label, so the ValidatingAdmissionPolicy `ctrflow-client-labels` (manifests/base/
# admission.yaml) lets a pod carry one only when it runs as a ServiceAccount listed below.
POSTGRES_CLIENT_LABEL: Final = ("ctrflow.io/postgres-client", "true")
MLFLOW_CLIENT_LABEL: Final = ("ctrflow.io/mlflow-client", "true")

# ---- ServiceAccounts: one per component (manifests/base/serviceaccounts.yaml) -------------------
SA_HPO_WORKER: Final = "ctrflow-hpo-worker"  # `ctrflow hpo worker` Jobs, Optuna's schema Job
SA_HPO_CREATE: Final = "ctrflow-hpo-create"  # `ctrflow hpo create` Job: also reads the registry
SA_LAUNCHER: Final = "ctrflow-launcher"  # `ctrflow hpo launch` run in a pod: may create Jobs
SA_PIPELINE: Final = "ctrflow-pipeline"  # KFP runs (`ctrflow submit|schedule`)
SA_MLFLOW: Final = "ctrflow-mlflow"  # the tracking server: the only writer of the bucket
SA_MLFLOW_BOOTSTRAP: Final = "ctrflow-mlflow-bootstrap"  # creates MLflow's users
SA_DASHBOARD: Final = "ctrflow-optuna-dashboard"
SA_SERVING: Final = "ctrflow-serving"  # a model server reading the registry (read-only user)
SA_POSTGRES: Final = "ctrflow-postgres"
POSTGRES_CLIENTS: Final = (SA_HPO_WORKER, SA_HPO_CREATE, SA_PIPELINE, SA_MLFLOW, SA_DASHBOARD)
MLFLOW_CLIENTS: Final = (SA_HPO_CREATE, SA_PIPELINE, SA_MLFLOW_BOOTSTRAP, SA_SERVING)

# ---- MLflow users (basic-auth app): Secret keys the bootstrap reads ------------------------------
MLFLOW_ADMIN_SECRET: Final = "ctrflow-mlflow-admin"  # MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD
MLFLOW_AUTH_SECRET: Final = "ctrflow-mlflow-auth"  # the registering user (pipeline steps)
MLFLOW_READER_SECRET: Final = "ctrflow-mlflow-reader"  # read-only: serving, people in the UI

# ---- HPO fan-out -------------------------------------------------------------------------------
# Each worker holds one PostgreSQL connection (+1 overflow for a moment): 50 workers stay inside
# PostgreSQL's default max_connections of 100 with room for the other steps.
MAX_WORKERS: Final = 50

# ---- data splits -------------------------------------------------------------------------------
# Fewest rows a train/valid/test split may have: prepare_data refuses a smaller one, evaluate
# refuses to score (and so register to judge) a model on a smaller test set.
MIN_SPLIT_ROWS: Final = 100

# ---- model types -------------------------------------------------------------------------------
# Adding a model type: its name here, its search space (hpo/search_space.py), and its fit and
# predictor (training/models.py, training/trained_model.py).
MODEL_TYPES: Final = ("ffm", "xgboost")
MODEL_FILES: Final = {"ffm": "model.ffm", "xgboost": "model.json"}

# ---- MLflow registry: aliases ------------------------------------------------------------------
CHAMPION_ALIAS: Final = "champion"
CHALLENGER_ALIAS: Final = "challenger"
LEGACY_STAGE: Final = "Production"  # registries written before aliases (seed system)

# ---- MLflow tags (run and model version) -------------------------------------------------------
TAG_SPACE_VERSION: Final = "ctrflow.search_space_version"
TAG_STUDY_NAME: Final = "ctrflow.study_name"
TAG_MODEL_TYPE: Final = "ctrflow.model_type"
TAG_DATA: Final = "ctrflow.data_fingerprint"
TAG_CODE: Final = "ctrflow.code_version"
TAG_PIPELINE_RUN: Final = "ctrflow.pipeline_run_id"
TAG_SPEC: Final = "ctrflow.feature_spec_fingerprint"
TAG_WARM_START: Final = "ctrflow.warm_start"
TAG_PROMOTION: Final = "ctrflow.promotion."  # prefix of the decision record on a version
TAG_PROMOTION_DECISION: Final = TAG_PROMOTION + "decision"
TAG_PROMOTION_REASON: Final = TAG_PROMOTION + "reason"
TAG_CHAMPION_SINCE: Final = "ctrflow.champion.since"
TAG_CHAMPION_PREVIOUS: Final = "ctrflow.champion.previous_version"
TAG_CHAMPION_UNTIL: Final = "ctrflow.champion.until"
TAG_CHAMPION_REPLACED_BY: Final = "ctrflow.champion.replaced_by"
# On the registered model: one tag per `ctrflow model rollback`, keyed by its UTC time, the record
# as JSON (registry/_rollback_records.py).
TAG_ROLLBACK_PREFIX: Final = "ctrflow.rollback."
# On the register step's run: its process's wall clock, renewed every few seconds while it runs;
# a RUNNING run whose heartbeat stopped belongs to a killed step (registry/run_heartbeat.py).
TAG_HEARTBEAT: Final = "ctrflow.register.heartbeat"
TAG_STOPPED: Final = "ctrflow.register.stopped"  # why a later run marked this one KILLED
TAG_LOCK_OWNER: Final = "ctrflow.lock.owner"
TAG_LOCK_EXPIRES: Final = "ctrflow.lock.expires_at"

# Values of TAG_PROMOTION_DECISION, the same on the run and on the version.
DECISION_PROMOTED: Final = "promoted"
DECISION_KEPT: Final = "kept_champion"
DECISION_FAILED: Final = "failed"
# In flight, on the version only: "pending" from its creation until the gate decides; "promoting"
# (the intent) once the gate chose it and before alias champion moved and the history was written.
# A killed step leaves one of them; the next register run sets it right (registry/promotion.py).
DECISION_PENDING: Final = "pending"
DECISION_PROMOTING: Final = "promoting"
# Earlier builds wrote "kept" on the run (the version always had kept_champion): still read.
_LEGACY_DECISIONS: Final = {"kept": DECISION_KEPT}


def read_decision(value: str | None) -> str | None:
    """A promotion decision tag as written now, also for runs tagged the old way."""
    return None if value is None else _LEGACY_DECISIONS.get(value, value)


# ---- test-only fault injection ----------------------------------------------------------------
# Test-only: the register step SIGKILLs itself at the named checkpoint (an on_event name, e.g.
# "champion_set"), so tests can kill a real step at a precise point. Never set in production.
TEST_KILL_AT_ENV: Final = "CTRFLOW_TEST_KILL_AT"

# ---- Optuna study user attributes --------------------------------------------------------------
ATTR_MODEL_TYPE: Final = "ctrflow.model_type"
ATTR_SPACE: Final = "ctrflow.search_space"
ATTR_SPACE_VERSION: Final = "ctrflow.search_space_version"
ATTR_SAMPLER: Final = "ctrflow.sampler"
ATTR_PRUNER: Final = "ctrflow.pruner"
ATTR_WARM_START: Final = "ctrflow.warm_start"
ATTR_BUDGET: Final = "ctrflow.budget"
ATTR_SEED: Final = "ctrflow.seed"
ATTR_READY: Final = "ctrflow.ready"  # set last: a study without it is a half-made one
ATTR_MODEL_NAME: Final = "ctrflow.model_name"  # the registered model: study retention's scope
ATTR_FINALIZED: Final = "ctrflow.finalized_at"  # finalize_study ran (UTC): no step reads it after
# An unfinalized study idle this long is taken for abandoned by retire-studies: a week's pipeline
# runs for hours, not days.
STUDY_ABANDONED_AFTER_S: Final = 2 * 24 * 3600.0
ATTR_DEFAULT_TRIAL: Final = "ctrflow.default_trial"  # on the enqueued library-defaults trial

# ---- artifact and file names -------------------------------------------------------------------
STUDY_DB_ARTIFACT: Final = "optuna/study.db"  # the study export, an MLflow run artifact
TEST_RAW_FILE: Final = "test_raw.parquet"  # raw test rows, for the promotion gate
