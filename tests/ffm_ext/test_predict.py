"""Prediction: batch and one-row paths agree, unknown ids are handled alike in both."""

from __future__ import annotations

import numpy as np
import pytest

import ffm_ext


@pytest.fixture(scope="module")
def model_and_data() -> tuple[ffm_ext.FFM, ffm_ext.Dataset]:
    rng = np.random.default_rng(1)
    rows = 300
    lengths = rng.integers(1, 12, size=rows)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    nnz = int(indptr[-1])
    data = ffm_ext.Dataset(
        indptr, rng.integers(0, 8, nnz), rng.integers(0, 90, nnz),
        rng.uniform(0.1, 2, nnz).astype(np.float32), (rng.random(rows) < 0.3),
    )  # fmt: skip
    model = ffm_ext.FFM(k=4, epochs=3, n_threads=2)
    model.fit(data)
    return model, data


def rows_of(data: ffm_ext.Dataset):  # type: ignore[no-untyped-def]
    for i in range(data.n_rows):
        lo, hi = data.indptr[i], data.indptr[i + 1]
        yield data.fields[lo:hi], data.features[lo:hi], data.values[lo:hi]


def test_one_row_path_equals_batch_path(
    model_and_data: tuple[ffm_ext.FFM, ffm_ext.Dataset],
) -> None:
    model, data = model_and_data
    batch = model.predict(data)
    assert batch.dtype == np.float32 and ((batch > 0) & (batch < 1)).all()
    one = np.array([model.predict_one(*row) for row in rows_of(data)], dtype=np.float32)
    np.testing.assert_allclose(one, batch, rtol=1e-6, atol=1e-7)
    # Python lists work too (converted once).
    f, j, v = next(rows_of(data))
    assert model.predict_one(f.tolist(), j.tolist(), v.tolist()) == pytest.approx(float(batch[0]))


def test_one_row_reads_every_array_layout_as_its_values(
    model_and_data: tuple[ffm_ext.FFM, ffm_ext.Dataset],
) -> None:
    """Native int32/float32 C arrays are read in place, anything else converted first."""
    model, data = model_and_data
    f, j, v = next(rows_of(data))
    expected = model.predict_one(f, j, v)
    swapped = (f.astype(">i4"), j.astype(">i4"), v.astype(">f4"))
    strided = tuple(np.repeat(a, 2)[::2] for a in (f, j, v))
    wider = (f.astype(np.int64), j.astype(np.int64), v.astype(np.float64))
    for arrays in (swapped, strided, wider):
        assert model.predict_one(*arrays) == expected
    with pytest.raises(ValueError, match="must be 1-D, got 2-D"):
        model.predict_one(f[None, :], j[None, :], v[None, :])


def test_threads_give_the_same_predictions(
    model_and_data: tuple[ffm_ext.FFM, ffm_ext.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = model_and_data
    # The shared fixture's thread count is put back after the test.
    monkeypatch.setattr(model, "n_threads", 1)
    one_thread = model.predict(data)
    monkeypatch.setattr(model, "n_threads", 2)
    np.testing.assert_array_equal(model.predict(data), one_thread)
    assert len(one_thread) == data.n_rows
    # A per-call count (what a server picks per batch) overrides the model's setting.
    np.testing.assert_array_equal(model.predict(data, n_threads=1), one_thread)
    np.testing.assert_array_equal(model.predict(data, n_threads=-1), one_thread)
    with pytest.raises(ValueError, match="n_threads must be"):
        model.predict(data, n_threads=0)


def test_unknown_features_are_dropped_in_both_paths(
    model_and_data: tuple[ffm_ext.FFM, ffm_ext.Dataset],
) -> None:
    model, _ = model_and_data
    fields = np.array([0, 1, 2, 3], np.int32)
    features = np.array([5, 6, 10_000, 7], np.int32)  # 10_000 is beyond the model
    values = np.array([1.0, 0.5, 3.0, 2.0], np.float32)
    keep = features < model.n_features
    expected = model.predict_one(fields[keep], features[keep], values[keep])
    assert model.predict_one(fields, features, values) == pytest.approx(expected, rel=1e-7)
    batch = ffm_ext.Dataset([0, 4], fields, features, values, [1.0])
    assert float(model.predict(batch)[0]) == pytest.approx(expected, rel=1e-6)


def test_fields_beyond_the_model_are_an_error_in_both_paths(
    model_and_data: tuple[ffm_ext.FFM, ffm_ext.Dataset],
) -> None:
    model, _ = model_and_data
    fields = np.array([0, 50], np.int32)
    features = np.array([1, 2], np.int32)
    values = np.ones(2, np.float32)
    with pytest.raises(
        ValueError, match="field 50 at position 1 is outside the model's fields 0..7"
    ):
        model.predict_one(fields, features, values)
    with pytest.raises(ValueError, match=r"fields\[1\] = 50 but the model has fields 0..7"):
        model.predict(ffm_ext.Dataset([0, 2], fields, features, values, [0.0]))


def test_mismatched_row_arrays_and_unfitted_model() -> None:
    model = ffm_ext.FFM()
    with pytest.raises(RuntimeError, match="no weights yet"):
        model.predict_one([0], [0], [1.0])
    model.init_weights(5, 2)
    with pytest.raises(ValueError, match="same length"):
        model.predict_one([0, 1], [0], [1.0])
    assert model.predict_one([], [], []) == 0.5


def test_weights_view_c_memory_without_copy() -> None:
    model = ffm_ext.FFM(k=4)
    model.init_weights(10, 3)
    view = model.weights
    assert view.shape == (10, 3, 4) and view.dtype == np.float32
    assert not view.flags.owndata and view.base is not None
    assert np.shares_memory(view, model.weights)
    before = model.predict_one([0, 1], [2, 3], [1.0, 1.0])
    view[2, 1, :] = 0.0  # writes land in the C buffer the kernels read
    assert model.predict_one([0, 1], [2, 3], [1.0, 1.0]) == 0.5 != before
