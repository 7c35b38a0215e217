"""The one prediction function of a served model: raw columns -> click probabilities.

The MLflow pyfunc (`registry.serving_model.CtrModel`) and the lean HTTP server (`server`) both
call `Predictor.predict`, so the two cannot give different answers.

    predictor = Predictor.from_model_dir("path/to/downloaded/model")   # an MLflow model directory
    predictor.predict({"I1": [3, None], ..., "C26": ["a9f3", ""]}, n_rows=2)  # -> float64 array
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.data.feature_spec import FittedFeatureSpec
from ctrflow.components.names import MODEL_FILES
from ctrflow.components.serving._encoder import RowEncoder
from ctrflow.components.training.trained_model import TrainedModel, load_trained_model

__all__ = ["ARTIFACT_MODEL", "ARTIFACT_SPEC", "ARTIFACT_WHEEL", "Predictor", "columns_of"]

# Artifact keys of the logged pyfunc model; their files sit under <model>/artifacts/.
ARTIFACT_MODEL = "model"
ARTIFACT_SPEC = "feature_spec"
ARTIFACT_WHEEL = "ctrflow_wheel"  # the ctrflow wheel a model carries (see log_serving_model)
SPEC_FILE = "feature_spec.json"
# Batches of at least this many rows are scored on every CPU the process may use; smaller ones
# on one thread, whatever the model was trained with (a thread team costs more than a few rows).
THREADED_ROWS = 4096


@functools.lru_cache(maxsize=8)
def _row_layout(n_rows: int, n_fields: int) -> tuple[npt.NDArray[np.int64], ...]:
    """indptr, field ids and values of n_rows rows with one feature per field (reused)."""
    indptr = np.arange(n_rows + 1, dtype=np.int64) * n_fields
    fields = np.tile(np.arange(n_fields, dtype=np.int32), n_rows)
    values = np.ones(n_rows * n_fields, dtype=np.float32)
    for array in (indptr, fields, values):
        array.flags.writeable = False
    return indptr, fields, values  # type: ignore[return-value]


class Predictor:
    """A fitted feature spec and a trained model behind one `predict`."""

    def __init__(self, spec: FittedFeatureSpec, model: TrainedModel) -> None:
        self.spec = spec
        self.model = model
        self.encoder = RowEncoder(spec)

    @classmethod
    def from_model_dir(cls, path: str | pathlib.Path) -> Predictor:
        """Load from a logged ctrflow MLflow model (its artifacts/ folder)."""
        artifacts = pathlib.Path(path) / "artifacts"
        models = [artifacts / name for name in MODEL_FILES.values() if (artifacts / name).is_file()]
        if not (artifacts / SPEC_FILE).is_file() or len(models) != 1:
            raise FileNotFoundError(
                f"{path}: not a ctrflow model (expected artifacts/{SPEC_FILE} and one of "
                f"{', '.join(MODEL_FILES.values())})"
            )
        spec = FittedFeatureSpec.load(str(artifacts / SPEC_FILE))
        return cls(spec, load_trained_model(models[0]))

    @property
    def columns(self) -> tuple[str, ...]:
        return self.encoder.columns

    def features(self, columns: Mapping[str, Sequence[Any]], n_rows: int) -> npt.NDArray[np.int32]:
        """(n_rows, n_fields) global feature ids: what prepare_data writes for these raw rows."""
        return self.encoder.encode(columns, n_rows)

    def predict(self, columns: Mapping[str, Sequence[Any]], n_rows: int) -> npt.NDArray[np.float64]:
        """Click probabilities (float64) for raw rows given as {column: values}; BadRequestError for
        a missing column or a bad value (message names the row and column)."""
        import ffm_ext

        features = self.encoder.encode(columns, n_rows)
        if n_rows == 0:
            return np.empty(0, dtype=np.float64)
        indptr, fields, values = _row_layout(n_rows, self.encoder.n_fields)
        data = ffm_ext.Dataset(
            indptr, fields, features.reshape(-1), values,
            n_features=self.encoder.n_features, n_fields=self.encoder.n_fields, validate=False,
        )  # fmt: skip
        return self.model.predict(data, -1 if n_rows >= THREADED_ROWS else 1)


def columns_of(model_input: Any, wanted: Sequence[str]) -> tuple[dict[str, Sequence[Any]], int]:
    """What MLflow hands a pyfunc (a DataFrame; a dict of columns; a list of records) as plain
    Python columns, so every request format reaches `Predictor.predict` the same way."""
    import pandas as pd

    from ctrflow.components.serving._errors import BadRequestError

    if isinstance(model_input, pd.DataFrame):
        columns: dict[str, Sequence[Any]] = {
            name: model_input[name].tolist() for name in wanted if name in model_input.columns
        }
        return columns, len(model_input)
    if isinstance(model_input, Mapping):
        columns = {
            name: np.asarray(model_input[name], dtype=object).reshape(-1).tolist()
            for name in wanted
            if name in model_input
        }
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise BadRequestError(f"columns of different lengths: {sorted(lengths)}")
        return columns, lengths.pop() if lengths else 0
    if isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        keys = {name for record in model_input for name in record}
        records: dict[str, Sequence[Any]] = {
            n: [r.get(n) for r in model_input] for n in wanted if n in keys
        }
        return records, len(model_input)
    raise BadRequestError(
        f"expected raw rows as a DataFrame, a dict of columns or a list of records, got "
        f"{type(model_input).__name__} (a request without column names?)"
    )
