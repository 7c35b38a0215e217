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
# The KFP API endpoint when `ctrflow submit|schedule|status` get no --host (as kfp.Client reads).
KFP_ENDPOINT_ENV: Final = "KF_PIPELINES_ENDPOINT"

# ---- pods -------------------------------------------------------------------------------------
# The manifests' NetworkPolicies admit only pods with this label to PostgreSQL and MLflow.
POD_LABEL: Final = ("app.kubernetes.io/part-of", "ctrflow")
RUN_AS_USER: Final = 10001  # the image's numeric user (images/Dockerfile)

# ---- HPO fan-out -------------------------------------------------------------------------------
# Each worker holds one PostgreSQL connection (+1 overflow for a moment): 50 workers stay inside
# PostgreSQL's default max_connections of 100 with room for the other steps.
MAX_WORKERS: Final = 50

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
TAG_LOCK_OWNER: Final = "ctrflow.lock.owner"
TAG_LOCK_EXPIRES: Final = "ctrflow.lock.expires_at"

# Values of TAG_PROMOTION_DECISION, the same on the run and on the version.
DECISION_PROMOTED: Final = "promoted"
DECISION_KEPT: Final = "kept_champion"
DECISION_FAILED: Final = "failed"
# Earlier builds wrote "kept" on the run (the version always had kept_champion): still read.
_LEGACY_DECISIONS: Final = {"kept": DECISION_KEPT}


def read_decision(value: str | None) -> str | None:
    """A promotion decision tag as written now, also for runs tagged the old way."""
    return None if value is None else _LEGACY_DECISIONS.get(value, value)


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
ATTR_DEFAULT_TRIAL: Final = "ctrflow.default_trial"  # on the enqueued library-defaults trial

# ---- artifact and file names -------------------------------------------------------------------
STUDY_DB_ARTIFACT: Final = "optuna/study.db"  # the study export, an MLflow run artifact
TEST_RAW_FILE: Final = "test_raw.parquet"  # raw test rows, for the promotion gate
