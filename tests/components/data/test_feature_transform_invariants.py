"""The feature transform that training (prepare_data) and serving (RowEncoder) share: numeric
bins, the vocabulary lookup and the global feature ids of each field.

Fast checks that `make mutation` runs against every mutant of `_binning.py` and of the id
functions of `_fitted.py`; that serving gives the same ids as training on generated rows is
tests/serving/test_training_serving_features.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctrflow.components.data import _binning
from ctrflow.components.data._fitted import FIRST_VALUE, MISSING, RARE, FittedFeatureSpec, lookup
from ctrflow.components.data._frames import frame_to_table
from ctrflow.components.data._hashing import hash_strings
from ctrflow.components.data.feature_spec import FeatureSpec
from ctrflow.components.serving._encoder import RowEncoder


def _f(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_small_values_are_their_own_floor_bins() -> None:
    keys = _binning.log_square_bins(_f(-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.99, 2.0))
    assert keys.dtype == np.int64
    assert keys.tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2]
    assert _binning.log_square_bins(_f(float("nan"))).tolist() == [0]


def test_large_values_get_the_criteo_log_square_rule_in_their_own_ranges() -> None:
    values = _f(2.0000001, 3.0, 10.0, 100.0, 1e6)
    expected = [1000 + math.floor(math.log(v) ** 2) for v in values.tolist()]
    assert _binning.log_square_bins(values).tolist() == expected == [1000, 1001, 1005, 1021, 1190]
    negative = _binning.log_square_bins(-values)
    assert negative.tolist() == [-1000, -1001, -1005, -1021, -1190]
    assert (_binning.SMALL, _binning.POSITIVE_BASE, _binning.NEGATIVE_BASE) == (2.0, 1000, -1000)


def test_quantile_edges_are_distinct_lower_quantiles() -> None:
    sample = np.arange(1.0, 101.0)
    assert _binning.quantile_edges(sample, 4).tolist() == [25.0, 50.0, 75.0]
    assert _binning.quantile_edges(sample, 2).tolist() == [50.0]
    assert _binning.quantile_edges(sample, 1).tolist() == []
    assert _binning.quantile_edges(_f(1, 1, 1, 1, 2), 4).tolist() == [1.0]
    assert _binning.quantile_edges(_f(), 4).size == 0


def test_quantile_bins_count_the_edges_at_or_below() -> None:
    edges = _f(10.0, 20.0)
    bins = _binning.quantile_bins(_f(-5.0, 10.0, 15.0, 20.0, 99.0), edges)
    assert bins.dtype == np.int64 and bins.tolist() == [0, 1, 1, 2, 2]


def test_lookup_gives_the_rank_after_missing_and_rare() -> None:
    assert (MISSING, RARE, FIRST_VALUE) == (0, 1, 2)
    vocabulary = np.array([-7, 3, 40], dtype=np.int64)
    keys = np.array([3, -7, 40, 41, 0, -100, 100], dtype=np.int64)
    assert lookup(vocabulary, keys).tolist() == [3, 2, 4, RARE, RARE, RARE, RARE]
    empty = lookup(np.empty(0, np.int64), keys)
    assert empty.dtype == np.int64 and empty.tolist() == [RARE] * 7


def _fitted() -> tuple[FittedFeatureSpec, FeatureSpec]:
    spec = FeatureSpec(numeric=("n",), categorical=("c", "d"), rare_threshold=1)
    frame = pd.DataFrame(
        {"label": [0, 1, 0], "n": [1.0, 50.0, 1.0], "c": ["a", "b", "a"], "d": ["x", "x", "x"]}
    )
    return spec.fit([frame]), spec


def test_fields_take_consecutive_id_ranges_of_missing_rare_and_values() -> None:
    fitted, _ = _fitted()
    assert [v.size for v in fitted.vocabularies] == [2, 2, 1]
    assert fitted.field_sizes.tolist() == [4, 4, 3]
    assert fitted.field_sizes.dtype == np.int64 and fitted.offsets.dtype == np.int64
    assert fitted.offsets.tolist() == [0, 4, 8]
    assert fitted.n_features == 11 and isinstance(fitted.n_features, int)


def test_encode_gives_global_ids_for_known_rare_and_missing_values() -> None:
    fitted, spec = _fitted()
    frame = pd.DataFrame(
        {"label": [0, 0, 0, 0], "n": [50.0, 1.0, 7.0, None], "c": ["b", "zz", None, "a"],
         "d": ["x", "x", "y", None]}
    )  # fmt: skip
    ids = fitted.encode(spec.parse(frame_to_table(frame, spec)))
    a, b = sorted(hash_strings(["a", "b"], seed=0).tolist())
    rank_b = sorted([a, b]).index(int(hash_strings(["b"], seed=0)[0]))
    assert ids.dtype == np.int32 and ids.shape == (4, 3)
    assert ids[:, 0].tolist() == [3, 2, RARE, MISSING]  # bins of 1.0 and 50.0: 1 < 1015
    assert ids[:, 1].tolist() == [4 + 2 + rank_b, 4 + RARE, 4 + MISSING, 4 + 2 + (1 - rank_b)]
    assert ids[:, 2].tolist() == [8 + 2, 8 + 2, 8 + RARE, 8 + MISSING]
    # serving encodes the same rows to the same ids, by the same shared functions
    served = RowEncoder(fitted).encode({c: frame[c].tolist() for c in ("n", "c", "d")}, 4)
    assert served.tolist() == ids.tolist()


def test_quantile_fields_encode_by_their_edges() -> None:
    spec = FeatureSpec(
        numeric=("n",), categorical=("c",), numeric_binning="quantile", quantile_bins=2,
        rare_threshold=1,
    )  # fmt: skip
    frame = pd.DataFrame({"label": [0] * 4, "n": [1.0, 2.0, 3.0, 4.0], "c": ["a"] * 4})
    fitted = spec.fit([frame])
    assert fitted.edges[0] is not None and fitted.edges[0].tolist() == [2.0]
    ids = fitted.encode(spec.parse(frame_to_table(frame, spec)))
    assert ids[:, 0].tolist() == [2, 3, 3, 3]


def test_rows_parsed_for_another_spec_are_refused() -> None:
    fitted, _ = _fitted()
    other = FeatureSpec(numeric=("n",), categorical=("c",), rare_threshold=1)
    frame = pd.DataFrame({"label": [0], "n": [1.0], "c": ["a"]})
    with pytest.raises(ValueError, match="zip"):
        fitted.encode(other.parse(frame_to_table(frame, other)))
