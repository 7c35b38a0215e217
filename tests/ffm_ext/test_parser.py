"""LIBFFM text parsing: every malformed input names file, line, column and token."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import ffm_ext
from ffm_ext import FFMFormatError


def write(tmp_path: pathlib.Path, text: str | bytes) -> pathlib.Path:
    path = tmp_path / "data.ffm"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_parses_rows_labels_and_tokens(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "1 0:3:1 2:7:0.5\n0 1:4:2.5e-1\n-1\t0:1:1  1:2:3\n+1 0:0:1\n")
    data = ffm_ext.read_libffm(path)
    assert data.n_rows == 4
    np.testing.assert_array_equal(data.indptr, [0, 2, 3, 5, 6])
    np.testing.assert_array_equal(data.labels, [1, 0, 0, 1])
    np.testing.assert_array_equal(data.fields, [0, 2, 1, 0, 1, 0])
    np.testing.assert_array_equal(data.features, [3, 7, 4, 1, 2, 0])
    np.testing.assert_array_equal(data.values, np.array([1, 0.5, 0.25, 1, 3, 1], np.float32))
    assert (data.n_fields, data.n_features) == (3, 8)


@pytest.mark.parametrize(("label", "value"), [("0", 0), ("1", 1), ("-1", 0), ("+1", 1)])
@pytest.mark.parametrize("after", [" 0:1:1\n", "\t0:1:1\n", "\n", "", "\r\n"])
def test_the_four_labels_alone_or_before_tokens(
    tmp_path: pathlib.Path, label: str, value: int, after: str
) -> None:
    data = ffm_ext.read_libffm(write(tmp_path, f"{1 - value} 0:0:1\n{label}{after}"))
    np.testing.assert_array_equal(data.labels, [1 - value, value])
    assert data.indptr[-1] - data.indptr[-2] == (1 if "0:1:1" in after else 0)


def test_crlf_no_trailing_newline_and_empty_row(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "1 0:1:1\r\n0\r\n1 1:2:1")
    data = ffm_ext.read_libffm(path)
    np.testing.assert_array_equal(data.indptr, [0, 1, 1, 2])
    np.testing.assert_array_equal(data.labels, [1, 0, 1])


def test_long_line(tmp_path: pathlib.Path) -> None:
    tokens = " ".join(f"{i % 50}:{i}:1" for i in range(200_000))  # ~2.5 MB on one line
    data = ffm_ext.read_libffm(write(tmp_path, f"1 {tokens}\n"))
    assert data.nnz == 200_000
    assert data.features[-1] == 199_999


def test_values_parse_exactly(tmp_path: pathlib.Path) -> None:
    texts = [
        "0.1",
        "1e-7",
        "3.4028234e38",
        "-2.5",
        "123456789012345678901234",
        "0.30000000000000004",
    ]
    line = "1 " + " ".join(f"0:{i}:{t}" for i, t in enumerate(texts)) + "\n"
    data = ffm_ext.read_libffm(write(tmp_path, line))
    np.testing.assert_array_equal(
        data.values, np.array([float(t) for t in texts], dtype=np.float32)
    )


# Tokens that start like a label but are not one (the parser compares whole tokens).
NOT_LABELS = [
    "-1.5", "-10", "-1x", "-1:", "+1.0", "+10", "+1x", "10", "1x", "1.0", "01", "0.5", "0.0",
    "00", "-0", "+0", "-", "+", "1e0", "-2", "+2",
]  # fmt: skip
BAD = [
    # text, line, token, words in the message
    ("1 0:1:1\n1 0:1\n", 2, "0:1", "two colons"),
    ("1 0:1:1:1\n", 1, "0:1:1:1", "two colons"),
    ("1 a:1:1\n", 1, "a:1:1", "field is not a non-negative integer"),
    ("1 -3:1:1\n", 1, "-3:1:1", "field is negative"),
    ("1 0:x:1\n", 1, "0:x:1", "feature is not a non-negative integer"),
    ("1 0:-1:1\n", 1, "0:-1:1", "feature is negative"),
    ("1 0:99999999999:1\n", 1, "0:99999999999:1", "32 bits"),
    ("1 0:1:abc\n", 1, "0:1:abc", "not a number"),
    ("1 0:1:\n", 1, "0:1:", "not a number"),
    ("1 0:1:nan\n", 1, "0:1:nan", "not finite"),
    ("1 0:1:inf\n", 1, "0:1:inf", "not finite"),
    ("1 0:1:-Infinity\n", 1, "0:1:-Infinity", "not finite"),
    ("1 0:1:1e39\n", 1, "0:1:1e39", "not finite"),
    ("2 0:1:1\n", 1, "2", "label must be 0 or 1"),
    ("1.0 0:1:1\n", 1, "1.0", "label must be 0 or 1"),
    ("yes 0:1:1\n", 1, "yes", "label must be 0 or 1"),
    # Only 0, 1, -1 and +1 are labels: a longer token that starts like one is not.
    *[(f"1 0:1:1\n{label} 0:1:1\n", 2, label, "label must be 0 or 1") for label in NOT_LABELS],
    ("1 0:1:1\n\n0 0:1:1\n", 2, "", "empty line"),
    ("1 0:1:1\n   \n", 2, "", "empty line"),
]


@pytest.mark.parametrize(("text", "line", "token", "words"), BAD)
def test_malformed_input_names_file_line_and_token(
    tmp_path: pathlib.Path, text: str, line: int, token: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FFMFormatError) as info:
        ffm_ext.read_libffm(path)
    err = info.value
    assert (err.path, err.line, err.token) == (str(path), line, token)
    message = str(err)
    assert message.startswith(f"{path}:{line}")
    assert words in message
    if token:
        assert repr(token) in message
        assert err.column >= 1


def test_error_column_points_at_token(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FFMFormatError) as info:
        ffm_ext.read_libffm(write(tmp_path, "0 0:1:1 1:2:1 2:x:1\n"))
    assert info.value.column == 15


def test_empty_lines_skipped_on_request(tmp_path: pathlib.Path) -> None:
    data = ffm_ext.read_libffm(write(tmp_path, "1 0:1:1\n\n  \n0 0:2:1\n"), skip_empty_lines=True)
    assert data.n_rows == 2


def test_empty_file_and_missing_file(tmp_path: pathlib.Path) -> None:
    assert ffm_ext.read_libffm(write(tmp_path, "")).n_rows == 0
    with pytest.raises(FileNotFoundError, match="nope.ffm"):
        ffm_ext.read_libffm(tmp_path / "nope.ffm")


def test_declared_sizes_are_checked(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "1 3:10:1\n")
    assert ffm_ext.read_libffm(path, n_fields=8, n_features=100).n_features == 100
    with pytest.raises(ValueError, match="n_features=5 but the file holds id 10"):
        ffm_ext.read_libffm(path, n_features=5)


def test_shared_criteo_samples_parse() -> None:
    root = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
    files = sorted(root.glob("*/*.ffm"))
    if not files:
        pytest.skip(f"{root} is absent (optional extra data beside the checkout)")
    for path in files:
        data = ffm_ext.read_libffm(path)
        assert data.n_rows == sum(1 for _ in path.open()) and data.nnz > 0
