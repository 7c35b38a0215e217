"""What a study was created for, kept in its user attrs, and the sampler/pruner rebuilt from it.

Optuna stores neither the sampler nor the pruner in the storage: each worker constructs its own.
``create_study`` records the choice here once; every worker rebuilds the same kind of sampler from
it (warm-start source trials included, read from a copy kept in the same storage), so a worker
never needs MLflow, and all workers suggest from the same search-space definition.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner, MedianPruner
from optuna.samplers import BaseSampler, CmaEsSampler, TPESampler
from optuna.search_space import IntersectionSearchSpace
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo.search_space import SearchSpace
from ctrflow.components.names import (
    ATTR_BUDGET,
    ATTR_MODEL_TYPE,
    ATTR_PRUNER,
    ATTR_READY,
    ATTR_SAMPLER,
    ATTR_SEED,
    ATTR_SPACE,
    ATTR_SPACE_VERSION,
    ATTR_WARM_START,
)

__all__ = [
    "ATTR_BUDGET",
    "ATTR_MODEL_TYPE",
    "ATTR_PRUNER",
    "ATTR_READY",
    "ATTR_SAMPLER",
    "ATTR_SEED",
    "ATTR_SPACE",
    "ATTR_SPACE_VERSION",
    "ATTR_WARM_START",
    "SnapshotCmaEsSampler",
    "StudyConfig",
    "build_pruner",
    "build_sampler",
    "source_trials",
]


# Steps are epochs (FFM) or boosting rounds (XGBoost). A slow start is normal for a small learning
# rate, so a trial is compared with the median only after a warm-up.
DEFAULT_PRUNERS: dict[str, dict[str, Any]] = {
    "ffm": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
    "xgboost": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 50},
}


@dataclass(frozen=True)
class StudyConfig:
    """The ctrflow user attrs of a study, validated."""

    model_type: str
    space: SearchSpace
    space_version: str
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    warm_start: dict[str, Any]
    budget: int | None
    seed: int

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudyConfig:
        attrs = study.user_attrs
        if not attrs.get(ATTR_READY):
            raise ValueError(
                f"study {study.study_name!r} was not set up by `ctrflow hpo create` "
                f"(user attr {ATTR_READY!r} missing): create it before starting workers"
            )
        space = SearchSpace.from_dict(attrs[ATTR_SPACE])
        return cls(
            model_type=attrs[ATTR_MODEL_TYPE],
            space=space,
            space_version=attrs[ATTR_SPACE_VERSION],
            sampler=dict(attrs[ATTR_SAMPLER]),
            pruner=dict(attrs[ATTR_PRUNER]),
            warm_start=dict(attrs.get(ATTR_WARM_START, {})),
            budget=attrs.get(ATTR_BUDGET),
            seed=int(attrs.get(ATTR_SEED, 0)),
        )


class SnapshotCmaEsSampler(CmaEsSampler):
    """CmaEsSampler that infers its search space from the trials snapshot it then samples from.

    Optuna's CmaEsSampler computes the intersection search space with ``use_cache=False`` and
    then reads the trials again (``use_cache=True``) to sample: two storage reads per trial, 7 SQL
    statements each on RDBStorage. TPESampler already takes both from the per-``ask`` snapshot;
    this does the same for CMA-ES (same filter as ``CmaEsSampler.infer_relative_search_space``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._snapshot_space = IntersectionSearchSpace()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        # `cma` handles neither single-value nor categorical distributions.
        return {
            name: dist
            for name, dist in self._snapshot_space.calculate(study, use_cache=True).items()
            if not dist.single() and isinstance(dist, (FloatDistribution, IntDistribution))
        }


def source_trials(storage: str | BaseStorage, source_study_name: str) -> list[FrozenTrial]:
    """The completed trials of the warm-start source study kept beside the study."""
    study = optuna.load_study(study_name=source_study_name, storage=storage)
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def build_sampler(
    config: dict[str, Any], storage: str | BaseStorage, seed: int | None
) -> BaseSampler:
    """The sampler described by ``config`` (the study's ATTR_SAMPLER)."""
    name = config.get("name")
    if name == "tpe":
        # constant_liar: running trials count as bad guesses, so parallel workers spread out.
        return TPESampler(
            seed=seed,
            n_startup_trials=int(config.get("n_startup_trials", 10)),
            multivariate=bool(config.get("multivariate", True)),
            constant_liar=True,
        )
    if name == "cmaes" and config.get("source_study") is None:
        return SnapshotCmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        trials = source_trials(storage, config["source_study"])
        if not trials:
            raise ValueError(
                f"warm-start source study {config['source_study']!r} holds no completed trials"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # source_trials: on purpose
            return SnapshotCmaEsSampler(
                seed=seed, source_trials=trials, warn_independent_sampling=False
            )
    raise ValueError(f"unknown sampler {name!r} in the study's {ATTR_SAMPLER} user attr")


def build_pruner(config: dict[str, Any]) -> BasePruner:
    if config.get("name") == "median":
        return MedianPruner(
            n_startup_trials=int(config["n_startup_trials"]),
            n_warmup_steps=int(config["n_warmup_steps"]),
        )
    raise ValueError(f"unknown pruner {config.get('name')!r} in the study's {ATTR_PRUNER}")
