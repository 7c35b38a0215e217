"""train_final step: the final model, trained with the study's best parameters as its trial was.

The model is built and trained by the same code as the HPO trials (``training.models``): same fixed
epoch/round budget, same early stopping on the validation set (the best epoch's weights, or the
trees up to the best round, are what is saved). Output: ``model.ffm`` or ``model.json`` plus
``train_result.json`` in ``output_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from ctrflow.components.data.fingerprint import dataset_fingerprint
from ctrflow.components.hpo.search_space import SearchSpace, get_space
from ctrflow.components.training.models import (
    ffm_model,
    load_dataset,
    xgb_matrices,
    xgb_train,
)
from ctrflow.components.training.trained_model import TrainedModel, wrap

__all__ = ["TRAIN_RESULT_FILE", "TrainResult", "train_final"]

_log = logging.getLogger(__name__)
TRAIN_RESULT_FILE = "train_result.json"


@dataclass(frozen=True)
class TrainResult:
    model_type: str
    model_path: str
    params: dict[str, Any]
    fixed: dict[str, Any]
    n_threads: int
    seed: int
    train_rows: int
    valid_rows: int
    n_features: int
    n_fields: int
    best_iteration: int  # 1-based best epoch (FFM) or number of boosting rounds kept (XGBoost)
    iterations_run: int
    stopped_early: bool
    valid_logloss: float
    valid_auc: float
    seconds: float
    data_fingerprint: str  # of the training and validation Dataset files (``data.fingerprint``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> TrainResult:
        """From ``train_result.json`` (or the directory holding it)."""
        file = pathlib.Path(path)
        if file.is_dir():
            file = file / TRAIN_RESULT_FILE
        return cls(**json.loads(file.read_text(encoding="utf-8")))


def _fit_ffm(
    params: Mapping[str, Any], space: SearchSpace, train: Any, valid: Any, n_threads: int, seed: int
) -> tuple[TrainedModel, int, int, bool, float]:
    model = ffm_model(params, space.fixed, n_threads=n_threads, seed=seed)
    history = model.fit(train, valid=valid)  # FFMDivergenceError says which parameter to change
    value = history.best_valid_logloss
    if value is None or not math.isfinite(value):
        raise ValueError(f"FFM training with {dict(params)} gave no finite validation logloss")
    runs = len(history.valid_logloss)
    return wrap("ffm", model), int(history.best_epoch), runs, bool(history.stopped_early), value


def _fit_xgboost(
    params: Mapping[str, Any], space: SearchSpace, train: Any, valid: Any, n_threads: int, seed: int
) -> tuple[TrainedModel, int, int, bool, float]:
    dtrain, dvalid = xgb_matrices(train, valid)
    booster = xgb_train(params, space.fixed, dtrain, dvalid, n_threads=n_threads, seed=seed)
    rounds = int(booster.best_iteration) + 1
    runs = int(booster.num_boosted_rounds())
    value = float(booster.best_score)
    if not math.isfinite(value):
        raise ValueError(f"XGBoost training with {dict(params)} gave no finite validation logloss")
    # Keep only the trees up to the best round: the saved model then predicts as early stopping
    # chose, whatever `iteration_range` a reader passes (or forgets to pass).
    kept = booster[:rounds]
    return wrap("xgboost", kept), rounds, runs, runs < int(space.fixed["max_rounds"]), value


def train_final(
    *,
    model_type: str,
    params: Mapping[str, Any],
    train_dir: str | pathlib.Path,
    valid_dir: str | pathlib.Path,
    output_dir: str | pathlib.Path,
    n_threads: int = 1,
    seed: int = 0,
    space: SearchSpace | None = None,
) -> TrainResult:
    """Train with ``params`` (exactly the space's searched parameters), save, and return the
    summary. ``space`` overrides the registered search space (its fixed settings) for tests."""
    space = space or get_space(model_type)
    if space.model_type != model_type:
        raise ValueError(f"search space is for {space.model_type!r}, not {model_type!r}")
    params = space.typed(params)  # ints stay ints, whichever boundary the values crossed
    train = load_dataset(train_dir, "training")
    valid = load_dataset(valid_dir, "validation")
    started = time.perf_counter()
    fit = _fit_ffm if model_type == "ffm" else _fit_xgboost
    model, best, runs, stopped, value = fit(params, space, train, valid, n_threads, seed)
    seconds = time.perf_counter() - started
    scores = model.predict(valid)
    out = pathlib.Path(output_dir)
    path = model.save(out)
    result = TrainResult(
        model_type=model_type,
        model_path=str(path),
        params=dict(params),
        fixed=dict(space.fixed),
        n_threads=n_threads,
        seed=seed,
        train_rows=int(train.n_rows),
        valid_rows=int(valid.n_rows),
        n_features=max(int(train.n_features), int(valid.n_features)),
        n_fields=max(int(train.n_fields), int(valid.n_fields)),
        best_iteration=best,
        iterations_run=runs,
        stopped_early=stopped,
        valid_logloss=float(value),
        valid_auc=float(roc_auc_score(np.asarray(valid.labels), scores)),
        seconds=round(seconds, 3),
        data_fingerprint=dataset_fingerprint({"train": train_dir, "valid": valid_dir}),
    )
    (out / TRAIN_RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    _log.info(
        "trained %s: best iteration %d of %d, valid logloss %.5f, AUC %.4f (%.1f s)",
        model_type, best, runs, value, result.valid_auc, seconds,
    )  # fmt: skip
    return result
