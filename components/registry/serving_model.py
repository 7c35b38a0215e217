"""The served model: an MLflow pyfunc that takes raw rows and returns click probabilities.

One class for both model types. Its artifacts are the fitted feature spec (JSON) and the model
file (``model.ffm`` or XGBoost's ``model.json``); ``predict`` transforms the raw rows with the
spec exactly as prepare_data did, then predicts. The model is logged "from code": MLflow stores
the three-line ``_serving_entry.py`` (no pickle), which imports this class from the installed
ctrflow package (which also brings the compiled ffm_ext). So the logged model names
``ctrflow==<version>`` as its requirement and ships no compiled ``.so`` (a copied extension would
tie the model to one platform and Python version).

    info = log_serving_model(feature_spec_path=..., model_path=..., name="model")
    mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_frame)  # -> float64 array
"""

from __future__ import annotations

import pathlib
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel
from mlflow.types.schema import AnyType, ColSpec, Schema, TensorSpec

from ctrflow.components.data.feature_spec import FittedFeatureSpec
from ctrflow.components.training.trained_model import TrainedModel, load_trained_model

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

__all__ = [
    "ARTIFACT_MODEL",
    "ARTIFACT_SPEC",
    "CtrModel",
    "default_pip_requirements",
    "log_serving_model",
    "model_signature",
]

ARTIFACT_MODEL = "model"
ARTIFACT_SPEC = "feature_spec"
# Logged as the model's code ("models from code"); it instantiates CtrModel from the package.
ENTRY_POINT = pathlib.Path(__file__).with_name("_serving_entry.py")


class CtrModel(PythonModel):
    """Raw rows (pandas DataFrame with the spec's feature columns) -> click probabilities."""

    def __init__(self) -> None:
        # Filled by load_context (or from_parts); nothing heavy is pickled with the class.
        self._spec: FittedFeatureSpec | None = None
        self._model: TrainedModel | None = None

    @classmethod
    def from_parts(cls, spec: FittedFeatureSpec, model: TrainedModel) -> CtrModel:
        """An in-memory instance (what ``load_context`` builds from the artifacts)."""
        instance = cls()
        instance._spec, instance._model = spec, model
        return instance

    def load_context(self, context: Any) -> None:
        self._spec = FittedFeatureSpec.load(context.artifacts[ARTIFACT_SPEC])
        self._model = load_trained_model(context.artifacts[ARTIFACT_MODEL])

    @property
    def spec(self) -> FittedFeatureSpec:
        if self._spec is None:
            raise RuntimeError("CtrModel has no feature spec: load it through mlflow.pyfunc")
        return self._spec

    @property
    def model(self) -> TrainedModel:
        if self._model is None:
            raise RuntimeError("CtrModel has no model: load it through mlflow.pyfunc")
        return self._model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> npt.NDArray[np.float64]:
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(
                f"expected a pandas DataFrame of raw rows, got {type(model_input).__name__}"
            )
        try:
            dataset = self.spec.transform(model_input, with_labels=False)
        except ValueError as exc:  # BadRowsError (row and column named), SpecError (columns)
            # As an MlflowException the scoring server answers 400 with this message, instead of
            # a 500 that hides it in a stack trace.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        return self.model.predict(dataset)


def model_signature(spec: FittedFeatureSpec) -> ModelSignature:
    """Inputs: the spec's raw feature columns, all required (values may be null). Numeric columns
    accept any JSON scalar (ints, floats, numeric strings, null): MLflow would refuse int64 for a
    "double" column and NaN for a "long" one. Output: one float64 probability per row."""
    columns: list[ColSpec | TensorSpec] = [
        ColSpec(AnyType(), name)  # type: ignore[no-untyped-call]
        for name in spec.spec.numeric
    ]
    columns += [ColSpec("string", name) for name in spec.spec.categorical]
    return ModelSignature(
        inputs=Schema(columns), outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))])
    )


def default_pip_requirements() -> list[str]:
    """The ctrflow distribution at this exact version (it pulls mlflow, xgboost, pandas...)."""
    import ctrflow

    return [f"ctrflow=={ctrflow.__version__}"]


def log_serving_model(
    *,
    feature_spec_path: str | pathlib.Path,
    model_path: str | pathlib.Path,
    name: str = "model",
    pip_requirements: Sequence[str] | None = None,
    input_example: pd.DataFrame | None = None,
    tags: dict[str, Any] | None = None,
) -> ModelInfo:
    """Log the pyfunc model to the active MLflow run (MLflow 3: stored under models/<model_id>).

    Both files are loaded first, so a broken spec or model fails here, not at serving time.
    """
    spec = FittedFeatureSpec.load(str(feature_spec_path))
    trained = load_trained_model(model_path)
    model_file = pathlib.Path(model_path)
    if model_file.is_dir():
        from ctrflow.components.names import MODEL_FILES

        model_file = model_file / MODEL_FILES[trained.model_type]
    with warnings.catch_warnings():
        # Without an input example MLflow warns that it cannot check the signature; the
        # signature is built from the spec here, and register passes an example when it has one.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info: ModelInfo = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY_POINT),  # models from code: nothing pickled
            artifacts={ARTIFACT_SPEC: str(feature_spec_path), ARTIFACT_MODEL: str(model_file)},
            pip_requirements=list(pip_requirements or default_pip_requirements()),
            signature=model_signature(spec),
            input_example=input_example,
            tags=tags,
        )
    return info
