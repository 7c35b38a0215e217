"""create_study step: make the shared study once, before any worker starts.

Here, and only here: the storage tables are created, the warm start is resolved (MLflow registry
-> champion's ``optuna/study.db``), the source trials are copied into the same storage under
``<study>.warm-source`` so every worker can rebuild the same CmaEsSampler, the library defaults
are enqueued as the first trial, and the choice is recorded in the study's user attrs. Doing the
table creation and ``enqueue_trial`` in each worker instead races (duplicate default trials).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from ctrflow.components.hpo import _study_config as cfg
from ctrflow.components.hpo._warm_start import WarmStart, find_warm_start, warm_start_from_file
from ctrflow.components.hpo.search_space import SearchSpace, get_space
from ctrflow.components.hpo.storage import (
    StorageSettings,
    dispose,
    make_storage,
    redact_url,
)
from ctrflow.components.names import ATTR_DEFAULT_TRIAL, ATTR_MODEL_NAME

__all__ = ["StudyInfo", "create_study", "source_study_name"]

_log = logging.getLogger(__name__)
SAMPLERS = ("auto", "tpe", "cmaes")


def source_study_name(study_name: str) -> str:
    return f"{study_name}.warm-source"


@dataclass(frozen=True)
class StudyInfo:
    study_name: str
    storage: str  # redacted URL
    model_type: str
    search_space_version: str
    sampler: str  # "tpe" (cold) or "cmaes" (warm)
    warm_start: dict[str, Any]
    budget: int | None
    created: bool  # False: the study already existed, complete, and was left as it was

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _info(study: optuna.Study, storage_url: str, created: bool) -> StudyInfo:
    conf = cfg.StudyConfig.from_study(study)
    return StudyInfo(
        study_name=study.study_name,
        storage=redact_url(storage_url),
        model_type=conf.model_type,
        search_space_version=conf.space_version,
        sampler=str(conf.sampler["name"]),
        warm_start=conf.warm_start,
        budget=conf.budget,
        created=created,
    )


def _existing(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def create_study(
    *,
    storage_url: str,
    study_name: str,
    model_type: str,
    mlflow_tracking_uri: str | None = None,
    model_name: str | None = None,
    space_tag: str | None = None,
    seed: int = 0,
    budget: int | None = None,
    space: SearchSpace | None = None,
    warm_start_db: str | None = None,
    sampler: str = "auto",
    settings: StorageSettings | None = None,
) -> StudyInfo:
    """Create the study (idempotent when re-run after success) and return what it was set up as.

    ``space`` overrides the registered search space of ``model_type`` (for experiments and tests);
    ``budget``, when given, is recorded so that every worker uses the same global budget;
    ``warm_start_db``, a study.db exported by ``finalize_study``, replaces the MLflow lookup.
    ``sampler``: "auto" (Warm Starting CMA-ES when a source is found, else TPE), "tpe" or
    "cmaes" (warm-started when a source is found, else plain CMA-ES).
    """
    if not study_name or len(study_name) > 400:
        raise ValueError("study_name must be 1-400 characters")
    space = space or get_space(model_type)
    if space.model_type != model_type:
        raise ValueError(f"search space is for {space.model_type!r}, not {model_type!r}")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    version = space.version(space_tag)
    storage = make_storage(storage_url, settings)  # creates the tables, once, here
    try:
        study = _existing(storage, study_name)
        if study is not None and study.user_attrs.get(cfg.ATTR_READY):
            info = _info(study, storage_url, created=False)
            if (info.model_type, info.search_space_version, info.budget) != (
                model_type,
                version,
                budget,
            ):
                raise ValueError(
                    f"study {study_name!r} already exists for {info.model_type} "
                    f"{info.search_space_version} budget {info.budget}; asked for {model_type} "
                    f"{version} budget {budget}: use a new study name"
                )
            _log.info("study %s already set up; leaving it as it is", study_name)
            return info
        if study is not None:
            # A create step that died half-way: no worker can have used it (they need READY).
            _log.warning("removing half-made study %s and setting it up again", study_name)
            optuna.delete_study(study_name=study_name, storage=storage)
        if _existing(storage, source_study_name(study_name)) is not None:
            optuna.delete_study(study_name=source_study_name(study_name), storage=storage)

        if warm_start_db is not None:
            warm = warm_start_from_file(warm_start_db, space=space, space_version=version)
        else:
            with tempfile.TemporaryDirectory(prefix="ctrflow-warm-") as workdir:
                warm = find_warm_start(
                    tracking_uri=mlflow_tracking_uri,
                    model_name=model_name,
                    space=space,
                    space_version=version,
                    workdir=workdir,
                )
        sampler_config = _sampler_config(storage, study_name, warm, sampler)
        if warm.warm:
            _log.info("warm start: %d trials from run %s", len(warm.trials), warm.run_id)
        else:
            _log.info("cold start (TPE): %s", warm.reason)

        study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize")
        attrs: dict[str, Any] = {
            cfg.ATTR_MODEL_TYPE: model_type,
            cfg.ATTR_SPACE: space.to_dict(),
            cfg.ATTR_SPACE_VERSION: version,
            cfg.ATTR_SAMPLER: sampler_config,
            cfg.ATTR_PRUNER: cfg.DEFAULT_PRUNERS[model_type],
            cfg.ATTR_WARM_START: warm.to_attrs(),
            cfg.ATTR_BUDGET: budget,
            cfg.ATTR_SEED: seed,
        }
        if model_name:  # what study retention (retention.py) keeps or deletes for a model
            attrs[ATTR_MODEL_NAME] = model_name
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(dict(space.defaults), user_attrs={ATTR_DEFAULT_TRIAL: True})
        study.set_user_attr(cfg.ATTR_READY, True)
        return _info(study, storage_url, created=True)
    finally:
        dispose(storage)


def _sampler_config(
    storage: optuna.storages.BaseStorage, study_name: str, warm: WarmStart, sampler: str
) -> dict[str, Any]:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if sampler == "tpe" or (sampler == "auto" and not warm.warm):
        return {"name": "tpe", "n_startup_trials": 10, "multivariate": True}
    if not warm.warm:  # CMA-ES asked for, nothing to warm-start from
        return {"name": "cmaes", "source_study": None, "n_source_trials": 0}
    # Workers read the source trials from this copy: no MLflow access needed on workers.
    source = optuna.create_study(
        storage=storage, study_name=source_study_name(study_name), direction="minimize"
    )
    source.add_trials(warm.trials)
    return {"name": "cmaes", "source_study": source.study_name, "n_source_trials": len(warm.trials)}
