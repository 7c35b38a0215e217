"""The streamed fit, more rules: missing values are never counted, the quantile sample is drawn
by stable row ids (pinned: the same rows give the same bins in every release), fitters of
different specs do not merge.

Fast checks that `make mutation` runs against every mutant of `_fitting.py`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctrflow.components.data._fitting import key_counts
from ctrflow.components.data._frames import frame_to_table
from ctrflow.components.data._hashing import hash_strings
from ctrflow.components.data.feature_spec import FeatureSpec

QUANTILE = FeatureSpec(
    numeric=("n", "m"), categorical=("c",), numeric_binning="quantile", quantile_bins=4,
    quantile_sample=5, rare_threshold=1,
)  # fmt: skip


def _parsed(spec: FeatureSpec, frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    return spec.parse(frame_to_table(frame, spec))


def _numbers(rows: int, start: int = 0) -> pd.DataFrame:
    values = [float(i) for i in range(start, start + rows)]
    return pd.DataFrame({"label": [0] * rows, "n": values, "m": values, "c": ["a"] * rows})


def _sample(fitter, field: int) -> list[float]:  # type: ignore[no-untyped-def]
    return sorted(fitter._samples[field].values.tolist())


def test_missing_values_are_never_counted_or_sampled() -> None:
    spec = FeatureSpec(numeric=("n",), categorical=("c",), rare_threshold=1)
    frame = pd.DataFrame(
        {"label": [0] * 4, "n": [None, 5.0, None, 5.0], "c": [None, "a", None, "a"]}
    )
    fitter = spec.fitter()
    fitter.update(_parsed(spec, frame))
    fitted = fitter.finish()
    assert fitted.vocabularies[1].tolist() == hash_strings(["a"], seed=0).tolist()
    assert fitted.vocabularies[0].size == 1
    quantile = QUANTILE.fitter()
    sparse = pd.DataFrame(
        {"label": [0] * 4, "n": [None, 7.0, None, 9.0], "m": [1.0] * 4, "c": ["a"] * 4}
    )
    quantile.update(_parsed(QUANTILE, sparse))
    assert _sample(quantile, 0) == [7.0, 9.0]


def test_the_quantile_sample_is_pinned_per_field() -> None:
    fitter = QUANTILE.fitter()
    fitter.update(_parsed(QUANTILE, _numbers(100)), row_ids=np.arange(100, dtype=np.int64))
    # two fields of equal values are sampled independently (a salt per field)
    assert _sample(fitter, 0) == PINNED[0]
    assert _sample(fitter, 1) == PINNED[1]


PINNED = ([10.0, 13.0, 81.0, 89.0, 93.0], [9.0, 14.0, 82.0, 90.0, 94.0])


def test_default_row_ids_are_the_running_row_count() -> None:
    by_count = QUANTILE.fitter()
    for start in (0, 60):
        by_count.update(_parsed(QUANTILE, _numbers(60, start)))
    explicit = QUANTILE.fitter()
    explicit.update(_parsed(QUANTILE, _numbers(120)), row_ids=np.arange(120, dtype=np.int64))
    assert _sample(by_count, 0) == _sample(explicit, 0)
    assert by_count.rows == 120
    other_ids = QUANTILE.fitter()
    other_ids.update(_parsed(QUANTILE, _numbers(120)), row_ids=np.arange(120, dtype=np.int64) + 7)
    assert _sample(other_ids, 0) != _sample(explicit, 0)


def test_merged_quantile_fitters_sample_as_one_fit() -> None:
    one = QUANTILE.fitter()
    one.update(_parsed(QUANTILE, _numbers(80)), row_ids=np.arange(80, dtype=np.int64))
    a, b = QUANTILE.fitter(), QUANTILE.fitter()
    a.update(_parsed(QUANTILE, _numbers(40)), row_ids=np.arange(40, dtype=np.int64))
    b.update(_parsed(QUANTILE, _numbers(40, 40)), row_ids=np.arange(40, 80, dtype=np.int64))
    a.merge(b)
    assert _sample(a, 0) == _sample(one, 0) and _sample(a, 1) == _sample(one, 1)
    assert a.finish().edges[0].tolist() == one.finish().edges[0].tolist()  # type: ignore[union-attr]


def test_fitters_of_different_specs_do_not_merge() -> None:
    small = FeatureSpec(numeric=("n",), categorical=("c",))
    with pytest.raises(ValueError, match="zip"):
        small.fitter().merge(QUANTILE.fitter())
    one_numeric = FeatureSpec(numeric=("n",), categorical=("c", "d"))
    with pytest.raises(ValueError, match="zip"):
        one_numeric.fitter().merge(QUANTILE.fitter())  # same field count, fewer samples
    more_fields = FeatureSpec(numeric=("n", "m"), categorical=("c", "d"))
    with pytest.raises(ValueError, match="zip"):
        more_fields.fitter().merge(QUANTILE.fitter())  # as many samples, one field more


def test_key_counts_of_negative_bins() -> None:
    # negative numbers bin to keys near -1000 (the mirrored log-square rule)
    keys, counts = key_counts(np.array([-1001, -1000, -1001, -1005], dtype=np.int64))
    assert keys.tolist() == [-1005, -1001, -1000] and counts.tolist() == [1, 2, 1]
