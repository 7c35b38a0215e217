"""Warm Starting CMA-ES really starts from last week's trials, not only in name.

The end-to-end tests (test_warm_start.py) check that the sampler is CMA-ES with a source study;
a sampler built without the source trials is also CMA-ES and writes the same ``cma:``
attributes. What tells them apart is where the first points land: a warm start samples around
the best source trials, a cold CMA-ES around the middle of the search space. Here last week's
optimum sits far from that middle, and the objective is cheap (no model is trained).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pytest

from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.search_space import Param, get_space
from ctrflow.components.hpo.storage import StorageSettings
from ctrflow.components.names import ATTR_DEFAULT_TRIAL

SPACE = get_space("ffm")
NO_HEARTBEAT = StorageSettings(heartbeat_interval=None, grace_period=None, connect_attempts=3)


def _bounds(p: Param) -> tuple[float, float]:
    assert p.low is not None and p.high is not None  # the ffm space has ranges only
    return float(p.low), float(p.high)


BOUNDS = {p.name: _bounds(p) for p in SPACE.params}
# Last week's optimum, near a corner of the (log-scaled) space: far from its centre.
OPTIMUM = {"k": 3, "eta": 0.03, "lam": 5e-4}

pytestmark = pytest.mark.slow  # about 10 s: 40 trials through the real worker on SQLite


def _unit(params: Mapping[str, Any]) -> np.ndarray:
    """The point in [0, 1]^3, each axis log-scaled as the search space samples it."""
    assert all(p.log for p in SPACE.params)
    return np.array(
        [math.log(params[n] / lo) / math.log(hi / lo) for n, (lo, hi) in BOUNDS.items()]
    )


def _objective(trial: optuna.Trial) -> float:
    return float(np.sum((_unit(SPACE.suggest(trial)) - _unit(OPTIMUM)) ** 2))


def _sampled(url: str, study_name: str) -> np.ndarray:
    """The points CMA-ES sampled (the enqueued defaults left out), in [0, 1]^3."""
    study = optuna.load_study(study_name=study_name, storage=url)
    sampled = [t for t in study.trials if not t.user_attrs.get(ATTR_DEFAULT_TRIAL)]
    assert len(sampled) == 9
    assert all(any(k.startswith("cma:") for k in t.system_attrs) for t in sampled)  # CMA-ES's
    return np.array([_unit(t.params) for t in sampled])


def test_warm_start_samples_around_last_weeks_best_and_cold_does_not(
    tmp_path: pathlib.Path,
) -> None:
    assert np.linalg.norm(_unit(OPTIMUM) - 0.5) > 0.6  # far from where a cold start samples
    # Last week: a TPE study of 20 trials, kept in a file as the register step keeps it.
    last_week = f"sqlite:///{tmp_path / 'last-week.db'}"
    create_study(storage_url=last_week, study_name="last-week", model_type="ffm", budget=20)
    run_worker(
        storage_url=last_week, study_name="last-week", settings=NO_HEARTBEAT, seed=0,
        objective=_objective, progress=False,
    )  # fmt: skip
    source = optuna.load_study(study_name="last-week", storage=last_week)
    assert source.best_value < 0.01  # it found the optimum

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    warm = create_study(
        storage_url=url, study_name="warm", model_type="ffm", budget=10,
        warm_start_db=str(tmp_path / "last-week.db"),
    )  # fmt: skip
    assert warm.sampler == "cmaes" and warm.warm_start["n_source_trials"] == 20
    cold = create_study(storage_url=url, study_name="cold", model_type="ffm", budget=10,
                        sampler="cmaes")  # fmt: skip
    assert cold.sampler == "cmaes" and not cold.warm_start["warm"]
    for name in ("warm", "cold"):
        run_worker(
            storage_url=url, study_name=name, settings=NO_HEARTBEAT, seed=1,
            objective=_objective, progress=False,
        )  # fmt: skip

    # The mean of the sampled points estimates the mean CMA-ES started from. Warm: last week's
    # best trials (measured over seeds 1-17: 0.08-0.22 from the optimum, >= 0.5 from the centre).
    # Cold: the centre (0.57-0.65 from the optimum): the control that shows this test tells the
    # two apart.
    optimum = _unit(OPTIMUM)
    warm_points, cold_points = _sampled(url, "warm"), _sampled(url, "cold")
    warm_mean, cold_mean = warm_points.mean(axis=0), cold_points.mean(axis=0)
    assert np.linalg.norm(warm_mean - optimum) < 0.3, warm_points
    assert np.linalg.norm(warm_mean - 0.5) > 0.4, warm_points
    assert np.median(np.linalg.norm(warm_points - optimum, axis=1)) < 0.35, warm_points
    assert np.linalg.norm(cold_mean - optimum) > 0.45, cold_points
