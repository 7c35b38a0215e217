"""One answer per row: the same raw rows sent in every request format MLflow accepts, to the lean
server and to `mlflow models serve` of the same model, get the same probabilities as the
in-process predictor, or a 4xx where a server does not take the format."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.serving.conftest import SavedModel
from tests.serving.rawgen import to_csv
from tests.testkit.http import post_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def case_rows(saved: SavedModel) -> list[dict[str, Any]]:
    """Training rows with the cases that once went wrong, one per row."""
    rows = [dict(row) for row in saved.rows[:8]]
    rows[0]["C3"] = None  # a null category (it became the string 'None' for instances/inputs)
    rows[1]["I2"] = None  # a null number
    rows[2]["C5"] = "never-seen-in-training"  # an unseen category
    rows[3]["I4"] = "12"  # a number as text
    rows[4]["C7"] = 7  # an integer category: its text "7"
    rows[5]["C8"] = ""  # an empty category: missing
    rows[6]["I6"] = 10**30  # a large integer: a finite number
    rows[7]["I7"] = 2.5  # a float in a column of integers
    for row in rows:
        row.pop("label")
    return rows


def bodies(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, tuple[bytes, str]]:
    records = [{c: row[c] for c in columns} for row in rows]
    sparse = [{c: v for c, v in record.items() if v is not None} for record in records]
    split = {"columns": list(columns), "data": [[r[c] for c in columns] for r in records]}
    inputs = {c: [r[c] for r in records] for c in columns}
    as_json = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "dataframe_records (nulls left out)": {"dataframe_records": sparse},
        "instances": {"instances": records},
        "instances (nulls left out)": {"instances": sparse},
        "inputs (records)": {"inputs": records},
        "inputs (columns)": {"inputs": inputs},
    }
    out = {name: (json.dumps(body).encode(), "application/json") for name, body in as_json.items()}
    out["csv"] = (to_csv(rows, columns).encode(), "text/csv")
    return out


def test_every_format_gives_the_in_process_predictions(
    saved_model: SavedModel, lean_url: str, mlflow_url: str
) -> None:
    rows = case_rows(saved_model)
    columns = saved_model.predictor.columns
    expected = saved_model.predictor.predict({c: [r[c] for r in rows] for c in columns}, len(rows))
    assert np.unique(expected).size == len(rows)
    got: dict[tuple[str, str], list[float] | int] = {}
    for server, url in (("lean", lean_url), ("mlflow", mlflow_url)):
        for name, (body, content_type) in bodies(rows, columns).items():
            status, text = post_bytes(f"{url}/invocations", body, content_type)
            got[server, name] = json.loads(text)["predictions"] if status == 200 else status
    # MLflow's own parsers refuse two of them with a 400 (the lean server takes them):
    # CSV needs a typed signature (every column is "any" here), and `instances` records must
    # all have the same keys.
    assert got.pop(("mlflow", "csv")) == 400
    assert got.pop(("mlflow", "instances (nulls left out)")) == 400
    assert len(got) == 2 * len(bodies(rows, columns)) - 2
    for key, predictions in got.items():
        assert predictions == expected.tolist(), key
