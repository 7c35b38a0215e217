"""MLflow's /invocations request formats -> raw columns, with size and depth limits.

JSON bodies: `dataframe_split` ({"columns": [...], "data": [[...], ...]}), `dataframe_records`
([{column: value}, ...]), `instances` (records) and `inputs` (records, or {column: [values]}), an
optional `params` object beside them (ignored: a ctrflow model takes none). CSV bodies: a header
line, then one row per line; an empty cell is missing, as in prepare_data's CSV reader. A record
that lacks a column has a null there (what MLflow's pandas parsing gives); a column that no record
has is a missing column. Everything else is a BadRequestError naming the row and column.

    columns, n_rows = parse_request(body, content_type="application/json", wanted=spec_columns)
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ctrflow.components.serving._errors import BadRequestError

__all__ = ["JSON_FORMATS", "MAX_BODY_BYTES", "parse_request"]

JSON_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_BODY_BYTES = 64 << 20  # a 10k-row request is about 4 MB

Columns = dict[str, Sequence[Any]]


def _load_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # say, an integer of more digits than Python converts
        raise BadRequestError(f"not valid JSON: {exc}") from None
    except RecursionError:
        # The C parser counts nesting against Python's recursion limit (1000): the depth bound.
        raise BadRequestError("JSON nested too deeply (a request needs 4 levels)") from None


def _transposed(names: list[str], rows: list[list[Any]], wanted: Sequence[str]) -> Columns:
    """The wanted columns of rows of equal length (checked by the caller), transposed by zip
    in C rather than a Python loop per value."""
    position = {name: i for i, name in enumerate(names)}
    present = [name for name in wanted if name in position]
    if not rows:
        return {name: [] for name in present}
    transposed = list(zip(*rows, strict=True))
    return {name: list(transposed[position[name]]) for name in present}


def _records(records: Any, key: str, wanted: Sequence[str]) -> tuple[Columns, int]:
    if not isinstance(records, list):
        raise BadRequestError(f"{key} must be a list of objects, one per row")
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequestError(
                f"{key} row {row} is {type(record).__name__}, not an object naming the columns"
            )
    present = set().union(*records)
    columns: Columns = {name: [r.get(name) for r in records] for name in wanted if name in present}
    if not records:
        columns = {name: [] for name in wanted}
    return columns, len(records)


def _split(split: Any, wanted: Sequence[str]) -> tuple[Columns, int]:
    if not isinstance(split, dict):
        raise BadRequestError("dataframe_split must be an object with 'columns' and 'data'")
    extra = set(split) - {"columns", "data", "index"}
    if extra or "data" not in split:
        raise BadRequestError(
            f"dataframe_split must have 'data' and 'columns' (and optionally 'index'), "
            f"got {', '.join(map(repr, sorted(split)))}"
        )
    names, data = split.get("columns"), split["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequestError("dataframe_split 'columns' must be a list of column names")
    if not isinstance(data, list):
        raise BadRequestError("dataframe_split 'data' must be a list of rows")
    width = len(names)
    for row, values in enumerate(data):
        if not isinstance(values, list) or len(values) != width:
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise BadRequestError(f"dataframe_split row {row} has {got} for {width} columns")
    return _transposed(names, data, wanted), len(data)


def _column_lists(inputs: Mapping[str, Any], wanted: Sequence[str]) -> tuple[Columns, int]:
    columns: Columns = {}
    n_rows: int | None = None
    for name in wanted:
        if name not in inputs:
            continue
        values = inputs[name]
        if not isinstance(values, list):
            raise BadRequestError(f"inputs column {name} must be a list of values, one per row")
        if n_rows is not None and len(values) != n_rows:
            raise BadRequestError(f"inputs column {name} has {len(values)} values, others {n_rows}")
        n_rows = len(values)
        columns[name] = values
    return columns, n_rows or 0


def _parse_json(body: bytes, wanted: Sequence[str]) -> tuple[Columns, int]:
    document = _load_json(body)
    if not isinstance(document, dict):
        raise BadRequestError(
            f"the body must be a JSON object with one of {', '.join(JSON_FORMATS)}"
        )
    found = [key for key in JSON_FORMATS if key in document]
    unknown = set(document) - set(JSON_FORMATS) - {"params"}
    if len(found) != 1 or unknown:
        raise BadRequestError(
            f"the body must hold exactly one of {', '.join(JSON_FORMATS)} (and optionally "
            f"params), got {', '.join(map(repr, sorted(document))) or 'an empty object'}"
        )
    key = found[0]
    value = document[key]
    if key == "dataframe_split":
        return _split(value, wanted)
    if key == "inputs" and isinstance(value, dict):
        return _column_lists(value, wanted)
    return _records(value, key, wanted)


def _parse_csv(body: bytes, wanted: Sequence[str]) -> tuple[Columns, int]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise BadRequestError(f"not valid CSV: {exc}") from None
    lines = [line for line in lines if line]  # blank lines carry no row
    if not lines:
        raise BadRequestError("the CSV body has no header line")
    header, data = lines[0], lines[1:]
    for row, values in enumerate(data):
        if len(values) != len(header):
            raise BadRequestError(
                f"CSV row {row} (line {row + 2}) has {len(values)} fields, the header {len(header)}"
            )
    return _transposed(header, data, wanted), len(data)


def parse_request(body: bytes, *, content_type: str, wanted: Sequence[str]) -> tuple[Columns, int]:
    """Columns (only the `wanted` ones the request has) and the number of rows."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequestError(f"the body is larger than {MAX_BODY_BYTES} bytes", status=413)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return _parse_json(body, wanted)
    if media == "text/csv":
        return _parse_csv(body, wanted)
    raise BadRequestError(
        f"content type {media or 'none'!r} is not supported: send application/json or text/csv",
        status=415,
    )
