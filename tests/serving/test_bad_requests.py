"""Bad requests to the lean server: a 4xx with a one-line reason naming the row and column (or
the part of the request at fault), no stack trace or install path in the body, never a 500.
The same reasons reach MLflow's server through the pyfunc (a 400 from `mlflow models serve`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import pytest

from tests.serving.conftest import SavedModel, lean_command
from tests.testkit.http import post_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def one_row(saved: SavedModel, **changes: Any) -> dict[str, Any]:
    row = {c: saved.rows[0][c] for c in saved.predictor.columns}
    row.update(changes)
    return row


def split(rows: list[dict[str, Any]]) -> bytes:
    columns = list(rows[0])
    data = [[row[c] for c in columns] for row in rows]
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def cases(saved: SavedModel) -> list[tuple[str, bytes, str, int, str]]:
    """(case, body, content type, status, text the message must hold)."""
    good = one_row(saved)
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    big_int = b'{"inputs": {"I1": [1' + b"0" * 5000 + b"]}}"
    return [
        ("deep JSON", deep, "application/json", 400, "nested too deeply"),
        ("list value", split([good, one_row(saved, I5=[1, 2])]), "application/json", 400,
         "row 1, column I5: a list is not a number"),
        ("object value", split([one_row(saved, C2={"a": 1})]), "application/json", 400,
         "row 0, column C2: an object is not a category"),
        ("bool number", split([good, good, one_row(saved, I3=True)]), "application/json", 400,
         "row 2, column I3: true is not a number"),
        ("text number", split([one_row(saved, I1="twelve")]), "application/json", 400,
         "row 0, column I1: cannot parse 'twelve' as a finite number"),
        ("infinite", split([one_row(saved, I8=float("inf"))]), "application/json", 400,
         "row 0, column I8: inf is not a finite number"),
        ("too large", split([one_row(saved, I9=10**400)]), "application/json", 400,
         "row 0, column I9: 1000000000000000000000000000000000000... is not a finite number"),
        ("float category", split([one_row(saved, C4=0.5)]), "application/json", 400,
         "row 0, column C4: 0.5 is not a category"),
        ("lone surrogate", split([good, one_row(saved, C6="a\ud800")]), "application/json", 400,
         "row 1, column C6: text with a lone surrogate is not UTF-8"),
        ("missing column", json.dumps({"instances": [{"I1": 1}]}).encode(), "application/json",
         400, "column(s) I2, I3"),
        ("two formats", b'{"instances": [], "inputs": []}', "application/json", 400,
         "exactly one of"),
        ("not JSON", b'{"instances": [', "application/json", 400, "not valid JSON at line 1"),
        ("rows without names", b'{"instances": [[1, 2]]}', "application/json", 400,
         "instances row 0 is list"),
        ("ragged split", b'{"dataframe_split": {"columns": ["I1"], "data": [[1, 2]]}}',
         "application/json", 400, "dataframe_split row 0 has 2 values for 1 columns"),
        ("huge digits", big_int, "application/json", 400, "not valid JSON"),
        ("ragged CSV", b"I1,I2\n1\n", "text/csv", 400, "CSV row 0 (line 2) has 1 fields"),
        ("other type", b"I1=1", "application/x-www-form-urlencoded", 415, "not supported"),
    ]  # fmt: skip


def test_bad_requests_get_a_4xx_with_one_line_naming_row_and_column(
    saved_model: SavedModel, lean_url: str
) -> None:
    seen = []
    for case, body, content_type, status, needle in cases(saved_model):
        got, text = post_bytes(f"{lean_url}/invocations", body, content_type)
        message = json.loads(text)["message"]
        assert (got, case) == (status, case), text[:300]
        assert needle in message, (case, message)
        assert "\n" not in message and "Traceback" not in text and "site-packages" not in text
        assert sys.prefix not in text, (case, text[:300])
        seen.append(case)
    # The server is still up and right after all of them.
    good = split([one_row(saved_model)])
    assert post_bytes(f"{lean_url}/invocations", good, "application/json")[0] == 200
    assert len(seen) == len(cases(saved_model))


def test_mlflow_serving_reports_a_bad_value_naming_the_row_and_column(
    saved_model: SavedModel, mlflow_url: str
) -> None:
    body = split([one_row(saved_model), one_row(saved_model, I5=[1, 2])])
    status, text = post_bytes(f"{mlflow_url}/invocations", body, "application/json")
    assert status == 400
    # MLflow wraps the reason in its own text, with a dump of the frame.
    assert "Error: row 1, column I5: a list is not a number" in json.loads(text)["message"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "99999"], "argument --port/-p: 99999 is not in 0..65535"),
        (["--workers", "0"], "argument --workers/-w: 0 is not in 1..1024"),
        (["--port", "taken"], "cannot listen on 127.0.0.1:"),
    ],
)
def test_server_options_that_cannot_work_are_one_line(
    saved_model: SavedModel, flags: list[str], message: str
) -> None:
    """A port out of range or already taken, no workers: one line and exit 2, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        flags = [str(taken.getsockname()[1]) if f == "taken" else f for f in flags]
        command = lean_command(saved_model.path, 0)
        done = subprocess.run(
            [*command[: command.index("--port")], *flags], capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
