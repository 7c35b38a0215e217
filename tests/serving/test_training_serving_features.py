"""The proof that serving encodes raw rows exactly as training does.

Generated raw rows (nulls, empty strings, numeric strings, integer categories, frequent, rare
and one-off values, large integers, unicode, CSV quoting) are written to a CSV log and run
through prepare_data, the real training path. The prepared test split's features must equal what
the serving encoder makes of the same rows sent as JSON values (the whole request, and one row at
a time), and sent as a CSV request body.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import ffm_ext
from ctrflow.components.data._fitted import FIRST_VALUE, MISSING, RARE
from ctrflow.components.data.feature_spec import FeatureSpec, FittedFeatureSpec
from ctrflow.components.data.prepare_data import prepare_data
from ctrflow.components.serving._encoder import RowEncoder
from ctrflow.components.serving.requests import parse_request
from tests.serving.rawgen import raw_rows, to_csv


@pytest.mark.parametrize(
    ("seed", "binning"), [(0, "log_square"), (1, "log_square"), (2, "quantile")]
)
def test_serving_features_equal_prepare_datas_features(
    tmp_path: pathlib.Path, seed: int, binning: str
) -> None:
    rows = raw_rows(3000, seed)
    log = tmp_path / "log.csv"
    log.write_text(to_csv(rows), encoding="utf-8")
    spec = tmp_path / "spec.json"
    FeatureSpec.criteo(numeric_binning=binning, quantile_bins=8).save(str(spec))
    result = prepare_data(
        input_uri=str(log), output_dir=str(tmp_path / "prepared"), spec_path=str(spec),
        split="ratio", valid_fraction=0.1, test_fraction=0.5, rare_threshold=3, seed=seed,
        threads=1,
    )  # fmt: skip
    fitted = FittedFeatureSpec.load(str(tmp_path / "prepared" / "feature_spec.json"))
    test = ffm_ext.Dataset.load(tmp_path / "prepared" / "test")
    trained = test.features.reshape(test.n_rows, fitted.n_fields)
    # The prepared test rows, found again by their row id in C26.
    row_ids = pd.read_parquet(result.test_raw_path)["C26"].tolist()
    sent = [rows[int(row_id.removeprefix("row-"))] for row_id in row_ids]
    assert len(sent) == test.n_rows > 1000

    encoder = RowEncoder(fitted)
    names = fitted.raw_columns
    # As JSON values: what a client's json.dumps of these rows gives back to the server.
    as_json = json.loads(json.dumps(sent))
    columns = {name: [row[name] for row in as_json] for name in names}
    np.testing.assert_array_equal(encoder.encode(columns, len(sent)), trained)
    # One row per request: a row's features do not depend on the rows beside it.
    fresh = RowEncoder(fitted)
    for i in range(0, len(sent), 7):
        one = {name: [as_json[i][name]] for name in names}
        np.testing.assert_array_equal(fresh.encode(one, 1)[0], trained[i])
    # As a CSV request body.
    body = to_csv(sent, tuple(names)).encode()
    csv_columns, n_rows = parse_request(body, content_type="text/csv", wanted=names)
    np.testing.assert_array_equal(RowEncoder(fitted).encode(csv_columns, n_rows), trained)

    # The rows reach every kind of feature, so the comparison covers each of them.
    local = trained - fitted.offsets.astype(np.int64)
    n_numeric = len(fitted.spec.numeric)
    assert fitted.spec.numeric_binning == binning
    numeric, categorical = local[:, :n_numeric], local[:, n_numeric:-1]
    for kinds in (numeric, categorical):
        assert (kinds == MISSING).any(axis=0).all()
        assert (kinds >= FIRST_VALUE).any(axis=0).all()
    assert (categorical == RARE).any(axis=0).all()
    if binning == "log_square":  # quantile bins hold every value: none is rare
        assert (numeric == RARE).any(axis=0).all()
