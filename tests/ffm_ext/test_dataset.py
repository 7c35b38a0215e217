"""Dataset: zero-copy construction, validation, the binary directory format."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import ffm_ext


def arrays() -> tuple[np.ndarray, ...]:
    return (
        np.array([0, 2, 3], np.int64),
        np.array([0, 1, 0], np.int32),
        np.array([4, 9, 2], np.int32),
        np.array([1.0, 0.5, 2.0], np.float32),
        np.array([1.0, 0.0], np.float32),
    )


def test_matching_dtypes_are_not_copied() -> None:
    parts = arrays()
    data = ffm_ext.Dataset(*parts)
    for name, source in zip(
        ("indptr", "fields", "features", "values", "labels"), parts, strict=True
    ):
        assert getattr(data, name) is source
    assert (data.n_rows, data.nnz, data.n_fields, data.n_features) == (2, 3, 2, 10)


def test_other_dtypes_are_converted() -> None:
    data = ffm_ext.Dataset([0, 1], [0], [3], [1], [True])
    assert data.values.dtype == np.float32 and data.labels.dtype == np.float32


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: (p[0][:-1], *p[1:]), "indptr must start at 0 and end at nnz=3"),
        (
            lambda p: (np.array([0, 3, 2, 3], np.int64), *p[1:4], np.zeros(3, np.float32)),
            "indptr decreases at row 1",
        ),
        (lambda p: (p[0], np.array([0, -1, 0], np.int32), *p[2:]), r"fields\[1\] = -1 is negative"),
        (
            lambda p: (*p[:3], np.array([1, np.nan, 1], np.float32), p[4]),
            r"values\[1\] = nan is not finite",
        ),
        (lambda p: (*p[:4], np.array([1, 2], np.float32)), r"labels\[1\] = 2.0 is not 0 or 1"),
        (lambda p: (*p[:4], np.array([1], np.float32)), "labels has 1 entries for 2 rows"),
        (lambda p: (p[0], p[1][:2], *p[2:]), "equal lengths"),
        (lambda p: (p[0], np.zeros((3, 1), np.int32), *p[2:]), "fields must be 1-D"),
        (lambda p: (p[0], np.array([0.5, 1, 0]), *p[2:]), "fields must hold int32"),
    ],
)
def test_invalid_arrays_are_rejected(change, words) -> None:  # type: ignore[no-untyped-def]
    parts = change(arrays())
    with pytest.raises((ValueError, TypeError), match=words):
        ffm_ext.Dataset(*parts)


def test_an_empty_row_is_valid() -> None:
    """The contrast to the cases above: indptr may repeat (a row without tokens)."""
    indptr = np.array([0, 3, 3], np.int64)
    data = ffm_ext.Dataset(indptr, *arrays()[1:])
    assert (data.n_rows, data.nnz, data.n_fields, data.n_features) == (2, 3, 2, 10)
    np.testing.assert_array_equal(np.diff(data.indptr), [3, 0])
    np.testing.assert_array_equal(data.labels, [1.0, 0.0])
    # A row without tokens has margin 0: probability one half, whatever the weights.
    model = ffm_ext.FFM(k=2, epochs=1)
    model.fit(data)
    assert model.predict(data)[1] == 0.5


def test_declared_sizes() -> None:
    assert ffm_ext.Dataset(*arrays(), n_features=1000, n_fields=39).n_features == 1000
    with pytest.raises(
        ValueError, match=r"features\[1\] = 9 is not below the declared n_features=5"
    ):
        ffm_ext.Dataset(*arrays(), n_features=5)


def test_save_and_memory_mapped_load(tmp_path: pathlib.Path) -> None:
    data = ffm_ext.Dataset(*arrays(), n_features=50)
    data.save(tmp_path / "ds")
    loaded = ffm_ext.Dataset.load(tmp_path / "ds")
    assert not loaded.features.flags.writeable
    base: object = loaded.features  # object: an array's .base is an ndarray or None
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap), "load() copied instead of memory-mapping"
    for name in ("indptr", "fields", "features", "values", "labels"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))
    assert loaded.n_features == 50
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["format"] == "ctrflow-ffm-csr" and meta["format_version"] == 1
    # A model trains and predicts straight from the read-only memory maps.
    model = ffm_ext.FFM(epochs=1)
    model.fit(loaded)
    assert model.predict(loaded).shape == (2,)


def test_load_errors_name_the_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        ffm_ext.Dataset.load(tmp_path)
    ffm_ext.Dataset(*arrays()).save(tmp_path / "ds")
    meta = tmp_path / "ds" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 7}))
    with pytest.raises(ValueError, match="unsupported dataset format"):
        ffm_ext.Dataset.load(tmp_path / "ds")
    ffm_ext.Dataset(*arrays()).save(tmp_path / "ds")
    np.save(tmp_path / "ds" / "fields.npy", np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="nnz=3 but the arrays hold 2"):
        ffm_ext.Dataset.load(tmp_path / "ds")


def test_take_and_sparse_matrix() -> None:
    data = ffm_ext.Dataset(*arrays())
    sub = data.take([1, 0, 1])
    np.testing.assert_array_equal(sub.indptr, [0, 1, 3, 4])
    np.testing.assert_array_equal(sub.features, [2, 4, 9, 2])
    np.testing.assert_array_equal(sub.labels, [0, 1, 0])
    with pytest.raises(IndexError):
        data.take([2])
    matrix = data.to_csr_matrix()
    assert matrix.shape == (2, 10) and matrix[0, 9] == 0.5


_EXTREME_IDS = np.array([np.iinfo(np.int32).min, -1, 0, np.iinfo(np.int32).max], np.int32)
_SPECIAL_VALUES = np.array(
    [np.inf, -np.inf, np.nan, np.finfo(np.float32).max, -0.0, 1e-45], np.float32
)


@pytest.mark.parametrize("seed", range(40))
def test_the_one_pass_scan_finds_what_numpy_finds(seed: int) -> None:
    """The loaded dataset's checks read the token arrays once (ffm_scan_tokens): its ranges
    and its non-finite flag against numpy's, with extremes planted anywhere, first and last
    positions included, and lengths around the vector widths."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 70))
    fields = rng.integers(0, 40, count).astype(np.int32)
    features = rng.integers(0, 1 << 20, count).astype(np.int32)
    values = rng.random(count, dtype=np.float32)
    planted: tuple[tuple[np.ndarray, np.ndarray], ...] = (
        (fields, _EXTREME_IDS),
        (features, _EXTREME_IDS),
        (values, _SPECIAL_VALUES),
    )
    for arr, pool in planted:
        for _ in range(int(rng.integers(0, 3))):
            pos = int(rng.choice([0, count - 1, int(rng.integers(0, count))]))
            arr[pos] = pool[int(rng.integers(0, len(pool)))]
    found = ffm_ext._core.scan_tokens(fields, features, values)
    expected = (
        int(fields.min()),
        int(fields.max()),
        int(features.min()),
        int(features.max()),
        not bool(np.isfinite(values).all()),
    )
    assert found == expected


@pytest.mark.parametrize("threads", [2, 3])
def test_the_scan_shared_among_threads_sees_every_share(threads: int) -> None:
    """Threads take shares of at least 1M tokens: each extreme sits in a different one."""
    count = 3_500_001
    fields = np.zeros(count, np.int32)
    features = np.ones(count, np.int32)
    values = np.ones(count, np.float32)
    fields[count - 1], features[count // 2], values[-1] = 41, 7, np.nan
    fields[count // 3 + 1], features[count - 2] = -3, -9
    assert ffm_ext._core.scan_tokens(fields, features, values, threads) == (-3, 41, -9, 7, True)
    values[-1] = 2.0
    assert ffm_ext._core.scan_tokens(fields, features, values, threads)[4] is False
