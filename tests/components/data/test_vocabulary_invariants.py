"""The vocabulary, part by part: which values a field keeps (rare threshold, size limit, ties),
streamed counts that do not depend on chunking, and a fit on the training rows only.

Fast checks that `make mutation` runs against every mutant of `_fitting.py`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctrflow.components.data._fitting import (
    BottomKSample,
    KeyCounter,
    key_counts,
    select_vocabulary,
)
from ctrflow.components.data._frames import frame_to_table
from ctrflow.components.data._hashing import hash_strings
from ctrflow.components.data.feature_spec import FeatureSpec


def _ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_the_vocabulary_keeps_values_seen_at_least_threshold_times_sorted() -> None:
    keys, counts = _ints(9, 3, 5, 7), _ints(2, 10, 1, 3)
    assert select_vocabulary(keys, counts, threshold=2, limit=None).tolist() == [3, 7, 9]
    assert select_vocabulary(keys, counts, threshold=3, limit=None).tolist() == [3, 7]
    assert select_vocabulary(keys, counts, threshold=11, limit=None).tolist() == []
    assert select_vocabulary(keys, counts, threshold=1, limit=None).dtype == np.int64


def test_the_size_limit_keeps_the_most_frequent_and_breaks_ties_by_key() -> None:
    keys, counts = _ints(50, 40, 30, 20, 10), _ints(5, 9, 5, 1, 5)
    assert select_vocabulary(keys, counts, threshold=1, limit=2).tolist() == [10, 40]
    assert select_vocabulary(keys, counts, threshold=1, limit=3).tolist() == [10, 30, 40]
    assert select_vocabulary(keys, counts, threshold=1, limit=5).tolist() == [10, 20, 30, 40, 50]
    assert select_vocabulary(keys, counts, threshold=1, limit=4).tolist() == [10, 30, 40, 50]
    assert select_vocabulary(keys, counts, threshold=2, limit=4).tolist() == [10, 30, 40, 50]


def test_key_counts_sum_equal_keys_on_both_paths() -> None:
    small = _ints(3, 1, 3, 3, -2)
    assert [a.tolist() for a in key_counts(small)] == [[-2, 1, 3], [1, 1, 3]]
    assert [a.tolist() for a in key_counts(small, _ints(1, 2, 3, 4, 5))] == [[-2, 1, 3], [5, 2, 8]]
    wide = _ints(10**15, -(10**15), 10**15, 7)  # a range too wide for a bincount
    keys, counts = key_counts(wide, _ints(2, 1, 3, 1))
    assert keys.tolist() == [-(10**15), 7, 10**15] and counts.tolist() == [1, 1, 5]
    assert keys.dtype == np.int64 and counts.dtype == np.int64
    empty = key_counts(np.empty(0, np.int64))
    assert empty[0].size == 0 and empty[1].size == 0
    # the largest range that still takes the bincount path gives the same answer
    edge = _ints(0, 4 * 2 + 1024, 0)
    assert [a.tolist() for a in key_counts(edge)] == [[0, 1032], [2, 1]]
    edge = _ints(0, 4 * 2 + 1023)
    assert [a.tolist() for a in key_counts(edge)] == [[0, 1031], [1, 1]]


def test_a_key_counter_is_independent_of_chunking() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(-50, 50, 3000).astype(np.int64) * 10**12
    whole = KeyCounter()
    whole.add(*key_counts(keys))
    chunked = KeyCounter()
    for part in np.array_split(keys, 7):
        chunked.add(part, np.ones(part.size, np.int64))
    expected = np.unique(keys, return_counts=True)
    for counter in (whole, chunked):
        got_keys, got_counts = counter.result()
        assert got_keys.tolist() == expected[0].tolist()
        assert got_counts.tolist() == expected[1].tolist()
    assert [a.size for a in KeyCounter().result()] == [0, 0]


def test_a_key_counter_merges_pending_chunks_past_a_million_keys() -> None:
    counter = KeyCounter()
    block = np.arange(600_000, dtype=np.int64)
    counter.add(block, np.ones(block.size, np.int64))
    assert counter._pending_size == 600_000
    counter.add(block, np.ones(block.size, np.int64))
    assert counter._pending == [] and counter._pending_size == 0 and counter._keys.size == 600_000
    counter.add(block[:10], np.ones(10, np.int64))
    assert counter._pending_size == 10
    _, counts = counter.result()
    assert counts[:10].tolist() == [3] * 10 and counts[10:].max() == 2


def test_the_bottom_k_sample_keeps_the_smallest_hashes_in_any_order() -> None:
    values = np.arange(100, dtype=np.float64)
    hashes = np.random.default_rng(1).permutation(100).astype(np.float64)
    whole = BottomKSample(10)
    whole.add(values, hashes)
    expected = sorted(values[hashes < 10].tolist())
    assert sorted(whole.values.tolist()) == expected
    a, b = BottomKSample(10), BottomKSample(10)
    a.add(values[::2], hashes[::2])
    b.add(values[1::2], hashes[1::2])
    a.merge(b)
    assert sorted(a.values.tolist()) == expected
    few = BottomKSample(10)
    few.add(values[:10], hashes[:10])
    assert sorted(few.values.tolist()) == values[:10].tolist()


def _frame(values: list[str], numbers: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"label": [0] * len(values), "n": numbers, "c": values})


def _vocab(spec: FeatureSpec, values: list[str]) -> list[int]:
    return sorted(hash_strings(values, seed=spec.hash_seed).tolist())


def test_the_fit_counts_only_the_training_rows_given() -> None:
    spec = FeatureSpec(numeric=("n",), categorical=("c",), rare_threshold=2)
    frame = _frame(["a", "a", "b", "b", "t", "t", "t"], [1, 1, 1, 1, 50, 50, 50])
    parsed = spec.parse(frame_to_table(frame, spec))
    train = np.array([True, True, True, True, False, False, False])
    fitter = spec.fitter()
    fitter.update(parsed, rows=train)
    fitted = fitter.finish()
    assert fitted.rows_fitted == 4
    assert fitted.vocabularies[1].tolist() == _vocab(spec, ["a", "b"])
    assert fitted.vocabularies[0].size == 1  # the one numeric bin of the value 1
    everything = spec.fitter()
    everything.update(parsed)
    assert everything.finish().vocabularies[1].tolist() == _vocab(spec, ["a", "b", "t"])


def test_bad_rows_are_never_counted() -> None:
    spec = FeatureSpec(numeric=("n",), categorical=("c",), rare_threshold=2)
    frame = pd.DataFrame(
        {"label": [0, 1, 0, 1], "n": ["1", "1", "oops", "oops"], "c": ["a", "a", "z", "z"]}
    )
    parsed = spec.parse(frame_to_table(frame, spec))
    assert parsed.problems.bad.tolist() == [False, False, True, True]
    fitter = spec.fitter()
    fitter.update(parsed, rows=np.ones(4, dtype=bool))
    fitted = fitter.finish()
    assert fitted.rows_fitted == 2
    assert fitted.vocabularies[1].tolist() == _vocab(spec, ["a"])


def test_merged_fitters_equal_one_fit_and_respect_the_limit() -> None:
    spec = FeatureSpec(numeric=("n",), categorical=("c",), rare_threshold=1, max_values_per_field=2)
    day1 = _frame(["a", "b", "b", "c"], [1, 2, 3, 4])
    day2 = _frame(["c", "c", "a", "d"], [5, 6, 7, 8])
    one = spec.fitter()
    for day in (day1, day2):
        one.update(spec.parse(frame_to_table(day, spec)))
    parts = [spec.fitter(), spec.fitter()]
    for fitter, day in zip(parts, (day1, day2), strict=True):
        fitter.update(spec.parse(frame_to_table(day, spec)))
    parts[0].merge(parts[1])
    a, b = one.finish(), parts[0].finish()
    assert a.rows_fitted == b.rows_fitted == 8
    assert [v.tolist() for v in a.vocabularies] == [v.tolist() for v in b.vocabularies]
    # c: 3, a: 2, b: 2 -> c and (a or b by key)
    assert len(a.vocabularies[1]) == 2 and _vocab(spec, ["c"])[0] in a.vocabularies[1].tolist()


@pytest.mark.parametrize("chunks", [1, 3])
def test_a_quantile_fit_draws_the_same_sample_however_chunked(chunks: int) -> None:
    spec = FeatureSpec(
        numeric=("n",), categorical=("c",), numeric_binning="quantile", quantile_bins=4,
        quantile_sample=50, rare_threshold=1,
    )  # fmt: skip
    numbers = [float(i) for i in range(200)]
    frame = _frame(["a"] * 200, numbers)
    whole = spec.fitter()
    whole.update(spec.parse(frame_to_table(frame, spec)), row_ids=np.arange(200, dtype=np.int64))
    split = spec.fitter()
    for part in np.array_split(np.arange(200), chunks):
        chunk = frame.iloc[part].reset_index(drop=True)
        split.update(spec.parse(frame_to_table(chunk, spec)), row_ids=part.astype(np.int64))
    a, b = whole.finish(), split.finish()
    assert a.edges[0] is not None and b.edges[0] is not None
    assert a.edges[0].tolist() == b.edges[0].tolist()
    assert a.vocabularies[0].tolist() == list(range(a.edges[0].size + 1))
    assert 2 <= a.edges[0].size <= 3
    assert sorted(whole._samples[0].values.tolist()) == sorted(split._samples[0].values.tolist())
    assert len(whole._samples[0].values) == 50
    assert a.edges[1] is None and a.vocabularies[1].tolist() == _vocab(spec, ["a"])
