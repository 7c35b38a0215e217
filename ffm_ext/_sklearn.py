"""A scikit-learn-style estimator over FFM, for HPO objectives and sklearn tooling."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin

from ffm_ext._dataset import Dataset
from ffm_ext._model import FFM, EpochCallback, FitHistory

__all__ = ["FFMClassifier"]


class FFMClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """sklearn estimator: fit(X, y, eval_set=...) / predict_proba(X) with X an ffm_ext.Dataset.

    y defaults to X's labels; given, it replaces them (without copying X's token arrays).
    """

    def __init__(
        self,
        k: int = 4,
        eta: float = 0.2,
        lam: float = 2e-5,
        epochs: int = 15,
        normalize: bool = True,
        n_threads: int = 1,
        seed: int = 0,
        patience: int = 1,
    ) -> None:
        self.k = k
        self.eta = eta
        self.lam = lam
        self.epochs = epochs
        self.normalize = normalize
        self.n_threads = n_threads
        self.seed = seed
        self.patience = patience

    def fit(
        self,
        X: Dataset,
        y: npt.ArrayLike | None = None,
        *,
        eval_set: Dataset | None = None,
        callback: EpochCallback | None = None,
    ) -> FFMClassifier:
        train = _with_labels(X, y)
        self.model_ = FFM(**self.get_params(), progress=False)
        self.history_: FitHistory = self.model_.fit(train, eval_set, callback=callback)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Dataset) -> npt.NDArray[np.float32]:
        p = self.model_.predict(X)
        return np.column_stack([1.0 - p, p]).astype(np.float32)

    def predict(self, X: Dataset) -> npt.NDArray[np.int64]:
        return (self.model_.predict(X) >= 0.5).astype(np.int64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _with_labels(X: Dataset, y: npt.ArrayLike | None) -> Dataset:
    if not isinstance(X, Dataset):
        raise TypeError(f"X must be an ffm_ext.Dataset, got {type(X).__name__}")
    if y is None:
        return X
    return Dataset(
        X.indptr, X.fields, X.features, X.values, np.asarray(y, dtype=np.float32),
        n_features=X.n_features, n_fields=X.n_fields, validate=False,
    )  # fmt: skip
