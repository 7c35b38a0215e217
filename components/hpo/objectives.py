"""Optuna objectives: train one model on the training Dataset, return its validation logloss.

Both objectives load the Dataset directories once (memory-mapped) and are then called per trial.
Per-epoch (FFM) or per-`report_every`-rounds (XGBoost) validation logloss goes to
``trial.report`` so the study's pruner can stop a bad trial (``optuna.TrialPruned``). The value is
the best validation logloss reached (early stopping keeps that epoch/round); AUC of the kept
model on the validation set and the best epoch/round count are trial user attrs.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from sklearn.metrics import roc_auc_score

from ctrflow.components.hpo.search_space import SearchSpace
from ctrflow.components.training.models import ffm_model, load_dataset, xgb_matrices, xgb_train

__all__ = ["FFMObjective", "XGBoostObjective", "make_objective"]

Objective = Callable[[optuna.Trial], float]


def _auc(labels: Any, scores: Any) -> float:
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores)))


class FFMObjective:
    """ffm_ext.FFM with the trial's k/eta/lam, a fixed epoch budget and early stopping."""

    def __init__(self, space: SearchSpace, train: Any, valid: Any, *, n_threads: int, seed: int):
        self.space, self.train, self.valid = space, train, valid
        self.n_threads, self.seed = n_threads, seed

    def __call__(self, trial: optuna.Trial) -> float:
        import ffm_ext

        params = self.space.suggest(trial)
        model = ffm_model(params, self.space.fixed, n_threads=self.n_threads, seed=self.seed)

        def report(epoch: int, train_logloss: float, valid_logloss: float | None) -> None:
            assert valid_logloss is not None  # fit() was given a validation set
            trial.report(valid_logloss, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: valid logloss {valid_logloss}")

        try:
            history = model.fit(self.train, valid=self.valid, callback=report)
        except ffm_ext.FFMDivergenceError as exc:
            # A bad point of the space, not a broken worker: the trial ends FAIL (NaN value),
            # which frees its budget slot, and the worker goes on.
            trial.set_user_attr("failure", str(exc))
            return float("nan")
        value = history.best_valid_logloss
        trial.set_user_attr("best_epoch", int(history.best_epoch))
        trial.set_user_attr("epochs_run", len(history.valid_logloss))
        if value is None or not math.isfinite(value):
            return float("nan")
        trial.set_user_attr("auc", _auc(self.valid.labels, model.predict(self.valid)))
        return float(value)


class XGBoostObjective:
    """xgboost.train with the trial's parameters, a round budget and early stopping on valid."""

    def __init__(
        self,
        space: SearchSpace,
        train: Any,
        valid: Any,
        *,
        n_threads: int,
        seed: int,
        report_every: int = 10,
    ):
        self.space, self.n_threads, self.seed = space, n_threads, seed
        self.report_every = max(1, report_every)
        self.valid_labels = np.asarray(valid.labels)
        self.dtrain, self.dvalid = xgb_matrices(train, valid)

    def __call__(self, trial: optuna.Trial) -> float:
        import xgboost as xgb

        params = self.space.suggest(trial)
        report_every = self.report_every

        class Report(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if (epoch + 1) % report_every == 0:
                    value = float(evals_log["valid"]["logloss"][-1])
                    trial.report(value, step=epoch + 1)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at round {epoch + 1}: logloss {value}")
                return False

        booster = xgb_train(
            params,
            self.space.fixed,
            self.dtrain,
            self.dvalid,
            n_threads=self.n_threads,
            seed=self.seed,
            callbacks=[Report()],
        )
        rounds = int(booster.best_iteration) + 1
        value = float(booster.best_score)
        trial.set_user_attr("best_rounds", rounds)
        if not math.isfinite(value):
            return float("nan")
        scores = booster.predict(self.dvalid, iteration_range=(0, rounds))
        trial.set_user_attr("auc", _auc(self.valid_labels, scores))
        return value


def make_objective(
    *,
    space: SearchSpace,
    train_dir: str | pathlib.Path,
    valid_dir: str | pathlib.Path,
    n_threads: int = 1,
    seed: int = 0,
) -> Objective:
    """The objective for ``space.model_type``, with both datasets loaded once."""
    train = load_dataset(train_dir, "training")
    valid = load_dataset(valid_dir, "validation")
    if space.model_type == "ffm":
        return FFMObjective(space, train, valid, n_threads=n_threads, seed=seed)
    if space.model_type == "xgboost":
        return XGBoostObjective(space, train, valid, n_threads=n_threads, seed=seed)
    raise ValueError(f"no objective for model type {space.model_type!r}")
