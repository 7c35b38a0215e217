"""The served model: an MLflow pyfunc that takes raw rows and returns click probabilities.

One class for both model types. Its artifacts are the fitted feature spec (JSON) and the model
file (``model.ffm`` or XGBoost's ``model.json``); ``predict`` hands the raw rows to
``serving.predictor.Predictor``, the prediction function the lean HTTP server calls too, which
encodes them exactly as prepare_data did (without pandas per row), then predicts. Every input
column is typed "any" in the signature, so MLflow passes values through unchanged whichever
request format carried them (a "string" column made the null of an ``instances`` row 'None').

The model is logged "from code": MLflow stores the three-line ``_serving_entry.py`` (no
pickle), which imports this class from the installed ctrflow package (which also brings the
compiled ffm_ext). So the logged model names ``ctrflow==<version>`` as its requirement and ships
no compiled ``.so`` (a copied extension would tie the model to one platform and Python version).

    info = log_serving_model(feature_spec_path=..., model_path=..., name="model")
    mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_frame)  # -> float64 array
"""

from __future__ import annotations

import os
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
from ctrflow.components.serving._errors import BadRequestError
from ctrflow.components.serving._installed_engine import prefer_installed_ffm_ext
from ctrflow.components.serving.predictor import (
    ARTIFACT_MODEL,
    ARTIFACT_SPEC,
    ARTIFACT_WHEEL,
    Predictor,
    columns_of,
)
from ctrflow.components.training.trained_model import TrainedModel, load_trained_model

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

__all__ = [
    "ARTIFACT_MODEL",
    "ARTIFACT_SPEC",
    "CtrModel",
    "default_pip_requirements",
    "find_wheel",
    "log_serving_model",
    "model_signature",
    "save_serving_model",
]

# Logged as the model's code ("models from code"); it instantiates CtrModel from the package.
ENTRY_POINT = pathlib.Path(__file__).with_name("_serving_entry.py")


class CtrModel(PythonModel):
    """Raw rows (a DataFrame, a dict of columns or a list of records) -> click probabilities."""

    def __init__(self) -> None:
        # Filled by load_context (or from_parts); nothing heavy is pickled with the class.
        self._predictor: Predictor | None = None

    @classmethod
    def from_parts(cls, spec: FittedFeatureSpec, model: TrainedModel) -> CtrModel:
        """An in-memory instance (what ``load_context`` builds from the artifacts)."""
        instance = cls()
        instance._predictor = Predictor(spec, model)
        return instance

    def load_context(self, context: Any) -> None:
        prefer_installed_ffm_ext()  # the server may have started in a ctrflow checkout
        spec = FittedFeatureSpec.load(context.artifacts[ARTIFACT_SPEC])
        self._predictor = Predictor(spec, load_trained_model(context.artifacts[ARTIFACT_MODEL]))

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise RuntimeError("CtrModel is not loaded: load it through mlflow.pyfunc")
        return self._predictor

    @property
    def spec(self) -> FittedFeatureSpec:
        return self.predictor.spec

    @property
    def model(self) -> TrainedModel:
        return self.predictor.model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> npt.NDArray[np.float64]:
        try:
            columns, n_rows = columns_of(model_input, self.predictor.columns)
            return self.predictor.predict(columns, n_rows)
        except BadRequestError as exc:  # names the row and column
            # As an MlflowException the scoring server answers 400 with this message, instead of
            # a 500 that hides it in a stack trace.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def model_signature(spec: FittedFeatureSpec) -> ModelSignature:
    """Inputs: the spec's raw feature columns, all required (values may be null), all typed "any":
    MLflow would refuse int64 for a "double" column and NaN for a "long" one, and it turns the
    null of a "string" column into 'None' for `instances`/`inputs` requests. The values are
    checked by the predictor instead. Output: one float64 probability per row."""
    columns: list[ColSpec | TensorSpec] = [
        ColSpec(AnyType(), name)  # type: ignore[no-untyped-call]
        for name in spec.spec.fields
    ]
    return ModelSignature(
        inputs=Schema(columns), outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))])
    )


def default_pip_requirements() -> list[str]:
    """The ctrflow distribution at this exact version (it pulls mlflow, xgboost, pandas...)."""
    import ctrflow

    return [f"ctrflow=={ctrflow.__version__}"]


# What a served model imports, pinned to the versions it was trained and tested with.
SERVING_DISTRIBUTIONS = ("mlflow", "numpy", "pandas", "pyarrow", "scipy", "xgboost-cpu")


def wheel_requirements(wheel: pathlib.Path) -> list[str]:
    """The model's own copy of the ctrflow wheel (a path relative to the model directory, which
    is where MLflow runs pip), plus this environment's versions of what serving imports."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in SERVING_DISTRIBUTIONS:
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return [f"./artifacts/{wheel.name}", *pins]


def find_wheel(wheel: str | pathlib.Path | None) -> pathlib.Path | None:
    """The ctrflow wheel to ship: `wheel`, else $CTRFLOW_WHEEL (the image sets it), else none.
    Either may name the wheel file or a directory holding exactly one wheel of this version."""
    import ctrflow
    from ctrflow.components.names import WHEEL_ENV

    chosen = wheel if wheel is not None else os.environ.get(WHEEL_ENV) or None
    if chosen is None:
        return None
    path = pathlib.Path(chosen)
    pattern = f"ctrflow-{ctrflow.__version__}-*.whl"
    if path.is_dir():
        found = sorted(path.glob(pattern))
        path = found[0] if len(found) == 1 else path / pattern
    if not path.is_file() or not path.match(pattern):
        raise FileNotFoundError(
            f"{chosen}: no single {pattern} there (set {WHEEL_ENV} to the ctrflow wheel of this "
            f"version or its directory, or unset it)"
        )
    return path


def _model_arguments(
    feature_spec_path: str | pathlib.Path,
    model_path: str | pathlib.Path,
    pip_requirements: Sequence[str] | None,
    wheel: str | pathlib.Path | None,
) -> dict[str, Any]:
    """What mlflow.pyfunc.log_model and save_model both take. Both files are loaded first, so a
    broken spec or model fails here, not at serving time."""
    spec = FittedFeatureSpec.load(str(feature_spec_path))
    trained = load_trained_model(model_path)
    model_file = pathlib.Path(model_path)
    if model_file.is_dir():
        from ctrflow.components.names import MODEL_FILES

        model_file = model_file / MODEL_FILES[trained.model_type]
    artifacts = {ARTIFACT_SPEC: str(feature_spec_path), ARTIFACT_MODEL: str(model_file)}
    wheel_file = find_wheel(wheel)
    if wheel_file is not None:
        artifacts[ARTIFACT_WHEEL] = str(wheel_file)
    requirements = list(
        pip_requirements
        or (wheel_requirements(wheel_file) if wheel_file else default_pip_requirements())
    )
    return {
        "python_model": str(ENTRY_POINT),  # models from code: nothing pickled
        "artifacts": artifacts,
        "pip_requirements": requirements,
        "signature": model_signature(spec),
    }


def log_serving_model(
    *,
    feature_spec_path: str | pathlib.Path,
    model_path: str | pathlib.Path,
    name: str = "model",
    pip_requirements: Sequence[str] | None = None,
    input_example: pd.DataFrame | None = None,
    tags: dict[str, Any] | None = None,
    wheel: str | pathlib.Path | None = None,
) -> ModelInfo:
    """Log the pyfunc model to the active MLflow run (MLflow 3: stored under models/<model_id>).

    wheel: a ctrflow wheel to carry as an artifact, so that stock `mlflow models serve` installs
    the model where no index has ctrflow (default: $CTRFLOW_WHEEL; without one the model
    requires ``ctrflow==<version>`` from an index).
    """
    arguments = _model_arguments(feature_spec_path, model_path, pip_requirements, wheel)
    with warnings.catch_warnings():
        # Without an input example MLflow warns that it cannot check the signature; the
        # signature is built from the spec here, and register passes an example when it has one.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info: ModelInfo = mlflow.pyfunc.log_model(
            name=name, input_example=input_example, tags=tags, **arguments
        )
    return info


def save_serving_model(
    path: str | pathlib.Path,
    *,
    feature_spec_path: str | pathlib.Path,
    model_path: str | pathlib.Path,
    pip_requirements: Sequence[str] | None = None,
    wheel: str | pathlib.Path | None = None,
) -> pathlib.Path:
    """The same model as `log_serving_model`, written to a local directory (no tracking server):
    for benchmarks and for serving a model file by hand."""
    arguments = _model_arguments(feature_spec_path, model_path, pip_requirements, wheel)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        mlflow.pyfunc.save_model(str(path), **arguments)
    return pathlib.Path(path)
