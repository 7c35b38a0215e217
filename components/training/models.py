"""Building and training a model from a search-space point: one place for the HPO trials and the
final training, so the final model is trained exactly as the trial that chose its parameters.

FFM: ``ffm_ext.FFM`` with the searched k/eta/lam and the space's fixed epoch budget, patience and
normalisation. XGBoost: ``xgboost.train`` on CSR matrices of the Datasets (both padded to the
same width: XGBoost refuses an eval set of another width) with early stopping on validation.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xgboost as xgb

    import ffm_ext

__all__ = ["check_params", "ffm_model", "load_dataset", "xgb_matrices", "xgb_train"]


def load_dataset(path: str | pathlib.Path, role: str) -> Any:
    """An ffm_ext.Dataset from a directory, checked to be usable for training/validation/test.

    Every pipeline step that reads a dataset (HPO workers, train-final, evaluate, register)
    comes through here: the content is validated on load (labels 0/1, ids non-negative and
    inside meta.json's sizes, finite values; errors name the .npy file and the index), and
    both labels must be present (AUC and early stopping need them)."""
    import ffm_ext

    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{role} dataset directory {path} does not exist")
    ds = ffm_ext.Dataset.load(str(path), validate=True)
    if ds.n_rows == 0:
        raise ValueError(f"{role} dataset {path} has no rows")
    clicks = int(np.count_nonzero(np.asarray(ds.labels) == 1))
    if clicks in (0, ds.n_rows):
        raise ValueError(
            f"{role} dataset {path} needs both positive and negative labels, "
            f"got {clicks:,} clicks in {ds.n_rows:,} rows"
        )
    return ds


def check_params(params: Mapping[str, Any], names: Sequence[str], model_type: str) -> None:
    """Raise ValueError naming the unknown or missing parameters of a model type."""
    unknown = sorted(set(params) - set(names))
    missing = sorted(set(names) - set(params))
    if unknown or missing:
        raise ValueError(
            f"{model_type} parameters: unknown {unknown or 'none'}, missing {missing or 'none'} "
            f"(expected exactly {sorted(names)})"
        )


def ffm_model(
    params: Mapping[str, Any], fixed: Mapping[str, Any], *, n_threads: int, seed: int
) -> ffm_ext.FFM:
    """An untrained FFM for a point of the FFM search space."""
    import ffm_ext

    return ffm_ext.FFM(
        k=int(params["k"]),
        eta=float(params["eta"]),
        lam=float(params["lam"]),
        epochs=int(fixed["max_epochs"]),
        patience=int(fixed["patience"]),
        normalize=bool(fixed["normalize"]),
        n_threads=n_threads,
        seed=seed,
    )


def xgb_matrices(train: Any, valid: Any) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """Training and validation DMatrix of the same width, from ffm_ext Datasets."""
    import xgboost as xgb

    n_cols = max(int(train.n_features), int(valid.n_features))
    x_train, x_valid = train.to_csr_matrix(), valid.to_csr_matrix()
    x_train.resize((x_train.shape[0], n_cols))
    x_valid.resize((x_valid.shape[0], n_cols))
    return (
        xgb.DMatrix(x_train, label=np.asarray(train.labels)),
        xgb.DMatrix(x_valid, label=np.asarray(valid.labels)),
    )


def xgb_train(
    params: Mapping[str, Any],
    fixed: Mapping[str, Any],
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    *,
    n_threads: int,
    seed: int,
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
) -> xgb.Booster:
    """A booster for a point of the XGBoost space; early stopping on ``dvalid`` ("valid")."""
    import xgboost as xgb

    return xgb.train(
        {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": str(fixed["tree_method"]),
            "nthread": n_threads,
            "seed": seed,
            **params,
        },
        dtrain,
        num_boost_round=int(fixed["max_rounds"]),
        evals=[(dvalid, "valid")],
        early_stopping_rounds=int(fixed["early_stopping_rounds"]),
        callbacks=list(callbacks),
        verbose_eval=False,
    )
