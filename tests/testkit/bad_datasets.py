"""Binary dataset directories broken in one way each (issue #13), shared by the ffm_ext tests and
the CLI tests: every case must be refused on load with an error naming the file and the index."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import ffm_ext

ROWS, N_FIELDS, N_FEATURES = 40, 3, 30


def good_dataset(path: pathlib.Path) -> pathlib.Path:
    """A small valid dataset directory (both labels, every id inside meta.json's sizes)."""
    rng = np.random.default_rng(7)
    ffm_ext.Dataset(
        np.arange(ROWS + 1, dtype=np.int64) * N_FIELDS,
        np.tile(np.arange(N_FIELDS, dtype=np.int32), ROWS),
        rng.integers(0, N_FEATURES, ROWS * N_FIELDS).astype(np.int32),
        rng.uniform(0.5, 1.5, ROWS * N_FIELDS).astype(np.float32),
        (np.arange(ROWS) % 3 == 0).astype(np.float32),
        n_features=N_FEATURES,
        n_fields=N_FIELDS,
    ).save(path)
    return path


def _set(name: str, index: int, value: float) -> Callable[[pathlib.Path], None]:
    def change(path: pathlib.Path) -> None:
        arr = np.load(path / f"{name}.npy")
        arr[index] = value
        np.save(path / f"{name}.npy", arr)

    return change


def _meta(key: str, value: int) -> Callable[[pathlib.Path], None]:
    def change(path: pathlib.Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**meta, key: value}))

    return change


def _truncate(name: str, cut: int) -> Callable[[pathlib.Path], None]:
    def change(path: pathlib.Path) -> None:
        file = path / f"{name}.npy"
        file.write_bytes(file.read_bytes()[:-cut])

    return change


def _swap_rows(path: pathlib.Path) -> None:
    indptr = np.load(path / "indptr.npy")
    indptr[5] = indptr[7]  # row 4 ends after row 5 does: indptr decreases
    np.save(path / "indptr.npy", indptr)


@dataclass(frozen=True)
class BadCase:
    name: str
    change: Callable[[pathlib.Path], None]
    file: str  # the file the error names
    words: str  # a regex the error must match after the file name (index included)


BAD_DATASETS = [
    BadCase("label 2", _set("labels", 3, 2.0), "labels.npy", r"labels\[3\] = 2\.0 is not 0 or 1"),
    BadCase("label nan", _set("labels", 5, np.nan), "labels.npy", r"labels\[5\] = nan is not 0"),
    BadCase("label -1", _set("labels", 0, -1.0), "labels.npy", r"labels\[0\] = -1\.0 is not 0"),
    BadCase("field -1", _set("fields", 7, -1), "fields.npy", r"fields\[7\] = -1 is negative"),
    BadCase(
        "feature -4", _set("features", 11, -4), "features.npy", r"features\[11\] = -4 is negative"
    ),
    BadCase(
        "field beyond meta",
        _set("fields", 9, N_FIELDS),
        "fields.npy",
        rf"fields\[9\] = {N_FIELDS} is not below the declared n_fields={N_FIELDS}",
    ),
    BadCase(
        "feature beyond meta",
        _set("features", 13, N_FEATURES + 5),
        "features.npy",
        rf"features\[13\] = {N_FEATURES + 5} is not below the declared n_features={N_FEATURES}",
    ),
    BadCase(
        "meta understates n_features",
        _meta("n_features", 2),
        "features.npy",
        r"features\[\d+\] = \d+ is not below the declared n_features=2",
    ),
    BadCase(
        "meta understates n_fields",
        _meta("n_fields", 1),
        "fields.npy",
        r"fields\[1\] = 1 is not below the declared n_fields=1",
    ),
    BadCase("value nan", _set("values", 17, np.nan), "values.npy", r"values\[17\] = nan is not"),
    BadCase("value inf", _set("values", 18, np.inf), "values.npy", r"values\[18\] = inf is not"),
    BadCase("value -inf", _set("values", 19, -np.inf), "values.npy", r"values\[19\] = -inf is not"),
    BadCase(
        "truncated fields",
        _truncate("fields", 10),
        "fields.npy",
        r"truncated: its header declares int32 \(120,\) \(480 bytes of data\), the file holds 470",
    ),
    BadCase(
        "truncated labels",
        _truncate("labels", 4),
        "labels.npy",
        r"truncated: its header declares float32 \(40,\) \(160 bytes of data\), the file holds 156",
    ),
    BadCase(
        "indptr decreases",
        _swap_rows,
        "indptr.npy",
        r"indptr decreases at row 5: indptr\[6\] = 18 < indptr\[5\] = 21",
    ),
    BadCase(
        "meta n_features not an integer",
        _meta("n_features", "30"),  # type: ignore[arg-type]
        "meta.json",
        r"n_features must be an integer >= 0, got '30'",
    ),
]


def bad_dataset(case: BadCase, path: pathlib.Path) -> pathlib.Path:
    """A good dataset at `path`, broken as `case` says."""
    good_dataset(path)
    case.change(path)
    return path
