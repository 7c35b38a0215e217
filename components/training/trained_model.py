"""A trained model of either type behind one interface: predict click probabilities for an
ffm_ext.Dataset, save to and load from one file.

Files: FFM -> ``model.ffm`` (ffm_ext's checked binary format), XGBoost -> ``model.json``
(XGBoost's JSON model, holding only the trees up to the best early-stopping round). evaluate,
the served pyfunc model and the promotion gate all predict through this, so a number measured in
one of them is the number the others would give.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.names import MODEL_FILES

if TYPE_CHECKING:
    import xgboost as xgb

    import ffm_ext

__all__ = ["FFMPredictor", "TrainedModel", "XGBoostPredictor", "load_trained_model"]


class TrainedModel:
    """Base of the two model types; ``model`` is the library object."""

    model_type: str = ""

    def predict(self, data: ffm_ext.Dataset, threads: int | None = None) -> npt.NDArray[np.float64]:
        """Probabilities; `threads` (-1: all CPUs) overrides the model's thread setting where
        the library takes one per call (FFM); None keeps the model's."""
        raise NotImplementedError

    def _write(self, path: pathlib.Path) -> None:
        raise NotImplementedError

    def save(self, directory: str | pathlib.Path) -> pathlib.Path:
        """Write the model file into ``directory``; returns its path."""
        out = pathlib.Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / MODEL_FILES[self.model_type]
        self._write(path)
        return path


class FFMPredictor(TrainedModel):
    model_type = "ffm"

    def __init__(self, model: ffm_ext.FFM) -> None:
        self.model = model

    def predict(self, data: ffm_ext.Dataset, threads: int | None = None) -> npt.NDArray[np.float64]:
        return np.asarray(self.model.predict(data, threads), dtype=np.float64)

    def _write(self, path: pathlib.Path) -> None:
        self.model.save(path)


class XGBoostPredictor(TrainedModel):
    model_type = "xgboost"

    def __init__(self, booster: xgb.Booster) -> None:
        self.model = booster

    def predict(self, data: ffm_ext.Dataset, threads: int | None = None) -> npt.NDArray[np.float64]:
        import xgboost as xgb

        del threads  # the booster keeps its own nthread: setting it per call would race

        matrix = data.to_csr_matrix()
        width = int(self.model.num_features())
        if matrix.shape[1] != width:
            # Same feature spec, so no feature lies beyond the model's width; a Dataset built
            # with a wider spec would be cut here, which the feature-spec check upstream rules out.
            matrix.resize((matrix.shape[0], width))
        return np.asarray(self.model.predict(xgb.DMatrix(matrix)), dtype=np.float64)

    def _write(self, path: pathlib.Path) -> None:
        self.model.save_model(str(path))


def _model_file(path: pathlib.Path) -> pathlib.Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = [path / name for name in MODEL_FILES.values() if (path / name).is_file()]
        if len(found) == 1:
            return found[0]
        raise FileNotFoundError(
            f"{path}: expected exactly one of {', '.join(MODEL_FILES.values())}, "
            f"found {[p.name for p in found] or 'none'}"
        )
    raise FileNotFoundError(f"model path {path} does not exist")


def load_trained_model(path: str | pathlib.Path) -> TrainedModel:
    """Load ``model.ffm`` or ``model.json``, or the one of them inside a directory."""
    file = _model_file(pathlib.Path(path))
    if file.suffix == ".ffm":
        import ffm_ext

        return FFMPredictor(ffm_ext.FFM.load(file))
    if file.suffix == ".json":
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(str(file))
        except xgb.core.XGBoostError as exc:
            raise ValueError(f"{file}: not an XGBoost JSON model: {exc}") from None
        return XGBoostPredictor(booster)
    raise ValueError(f"{file}: unknown model file type (expected .ffm or .json)")


def wrap(model_type: str, model: Any) -> TrainedModel:
    """The predictor for a library model object of ``model_type``."""
    if model_type == "ffm":
        return FFMPredictor(model)
    if model_type == "xgboost":
        return XGBoostPredictor(model)
    raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_FILES)}")
