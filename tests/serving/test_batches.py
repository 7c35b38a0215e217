"""A big batch (scored on every CPU) gives each row the probability it gets alone, and the
column layouts of the request parser give the columns of the rows they carry."""

from __future__ import annotations

import json

import numpy as np

from ctrflow.components.serving.predictor import THREADED_ROWS
from ctrflow.components.serving.requests import parse_request
from tests.serving.conftest import SavedModel
from tests.serving.rawgen import to_csv


def test_a_threaded_batch_gives_each_row_its_one_row_probability(saved_model: SavedModel) -> None:
    predictor = saved_model.predictor
    names = predictor.columns
    rows = (saved_model.rows * (THREADED_ROWS // len(saved_model.rows) + 1))[: THREADED_ROWS + 7]
    batch = predictor.predict({n: [r[n] for r in rows] for n in names}, len(rows))
    alone = [predictor.predict({n: [r[n]] for n in names}, 1)[0] for r in rows[:: len(rows) // 97]]
    np.testing.assert_array_equal(batch[:: len(rows) // 97], alone)
    small = predictor.predict({n: [r[n] for r in rows[:500]] for n in names}, 500)
    np.testing.assert_array_equal(batch[:500], small)


def test_split_csv_and_records_give_the_same_columns(saved_model: SavedModel) -> None:
    names = saved_model.predictor.columns
    rows = [{n: r[n] for n in names} for r in saved_model.rows[:50]]
    split = {"columns": ["extra", *names], "data": [[0, *(r[n] for n in names)] for r in rows]}
    as_split = parse_request(
        json.dumps({"dataframe_split": split}).encode(), content_type="application/json",
        wanted=names,
    )  # fmt: skip
    as_records = parse_request(
        json.dumps({"dataframe_records": rows}).encode(), content_type="application/json",
        wanted=names,
    )  # fmt: skip
    assert as_split == as_records
    assert as_split[0]["C1"] == [r["C1"] for r in rows] and as_split[1] == 50
    csv_columns, n_rows = parse_request(
        to_csv(rows, tuple(names)).encode(), content_type="text/csv", wanted=names
    )
    assert n_rows == 50 and list(csv_columns) == list(names)
    empty = {"dataframe_split": {"columns": list(names), "data": []}}
    columns, n_rows = parse_request(
        json.dumps(empty).encode(), content_type="application/json", wanted=names
    )
    assert n_rows == 0 and columns == {n: [] for n in names}
