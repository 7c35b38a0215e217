"""The split rules, unit by unit: which rows are train/valid/test, and which splits are refused.

Fast, pure-numpy checks: `make mutation` runs them against every mutant of `_split.py`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctrflow.components.data._hashing import MASK64
from ctrflow.components.data._split import (
    _SPLIT_SALT,
    SPLITS,
    TEST,
    TRAIN,
    VALID,
    SplitError,
    TimeSplit,
    check_sizes,
    days_of,
    ratio_split,
    row_ids,
)


def test_split_codes_name_the_splits_in_order() -> None:
    assert (TRAIN, VALID, TEST) == (0, 1, 2)
    assert SPLITS == ("train", "valid", "test")


def test_row_ids_depend_on_the_base_name_and_the_line_only() -> None:
    lines = np.array([0, 1, 7, 1000], dtype=np.int64)
    ids = row_ids("gs://bucket/a/part-0.csv", lines)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, row_ids("/local/copy/part-0.csv", lines))
    np.testing.assert_array_equal(ids, row_ids("part-0.csv", lines))
    assert not np.array_equal(ids, row_ids("part-1.csv", lines))
    # consecutive lines have consecutive ids (the line is added to the file's hash)
    np.testing.assert_array_equal(ids - ids[0], lines)


def test_row_ids_are_pinned_so_a_release_never_resplits_old_data() -> None:
    # Changing the id or split hash re-assigns rows between train and test across weeks.
    ids = row_ids("day-1.csv", np.arange(4, dtype=np.int64))
    assert ids.tolist() == [
        2780040259114913017,
        2780040259114913018,
        2780040259114913019,
        2780040259114913020,
    ]
    split = ratio_split(
        np.arange(40, dtype=np.int64), valid_fraction=0.25, test_fraction=0.25, seed=7
    )
    assert "".join(map(str, split.tolist())) == PINNED_SPLIT


PINNED_SPLIT = "1012001221200021100100020010221201000200"


def test_ratio_split_fractions_and_bands() -> None:
    ids = np.arange(200_000, dtype=np.int64)
    split = ratio_split(ids, valid_fraction=0.2, test_fraction=0.1, seed=3)
    assert split.dtype == np.int8
    assert set(np.unique(split).tolist()) == {TRAIN, VALID, TEST}
    shares = np.bincount(split, minlength=3) / ids.size
    np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.005)


def test_ratio_split_is_stable_and_seeded() -> None:
    ids = np.arange(5000, dtype=np.int64) * 31 + 11
    a = ratio_split(ids, valid_fraction=0.1, test_fraction=0.1, seed=1)
    np.testing.assert_array_equal(
        a, ratio_split(ids, valid_fraction=0.1, test_fraction=0.1, seed=1)
    )
    assert not np.array_equal(a, ratio_split(ids, valid_fraction=0.1, test_fraction=0.1, seed=2))
    # a row's split does not depend on the other rows given with it
    np.testing.assert_array_equal(
        a[100:200], ratio_split(ids[100:200], valid_fraction=0.1, test_fraction=0.1, seed=1)
    )


def test_ratio_split_grows_test_out_of_valid_not_out_of_train() -> None:
    ids = np.arange(20_000, dtype=np.int64)
    small = ratio_split(ids, valid_fraction=0.3, test_fraction=0.1, seed=5)
    large = ratio_split(ids, valid_fraction=0.2, test_fraction=0.2, seed=5)
    # same train band (0.4 of the unit interval), test rows stay test
    np.testing.assert_array_equal(small == TRAIN, large == TRAIN)
    assert np.all(large[small == TEST] == TEST)


def test_ratio_split_edge_fractions() -> None:
    ids = np.arange(1000, dtype=np.int64)
    assert np.all(ratio_split(ids, valid_fraction=0.0, test_fraction=0.0, seed=0) == TRAIN)
    assert np.all(ratio_split(ids, valid_fraction=0.0, test_fraction=1.0, seed=0) == TEST)
    assert np.all(ratio_split(ids, valid_fraction=1.0, test_fraction=0.0, seed=0) == VALID)


def test_days_of_is_the_utc_day_floor() -> None:
    ts = np.array([0, 86_399, 86_400, -1, 10 * 86_400 + 5], dtype=np.int64)
    assert days_of(ts).tolist() == [0, 0, 1, -1, 10]


def test_time_split_takes_the_last_days_as_test_and_the_ones_before_as_valid() -> None:
    days = np.array([5, 3, 9, 3, 7, 8, 9, 4])  # present: 3 4 5 7 8 9
    plan = TimeSplit.plan(days, valid_days=2, test_days=1)
    assert plan.train_days == (3, 4, 5)
    assert plan.valid_days == (7, 8)
    assert plan.test_days == (9,)
    assert plan.days_by_split() == ((3, 4, 5), (7, 8), (9,))
    two_tests = TimeSplit.plan(days, valid_days=1, test_days=2)
    assert (two_tests.train_days, two_tests.valid_days, two_tests.test_days) == (
        (3, 4, 5),
        (7,),
        (8, 9),
    )
    assigned = plan.assign_days(np.array([3, 7, 9, 8, 5, 4], dtype=np.int64))
    assert assigned.dtype == np.int8
    assert assigned.tolist() == [TRAIN, VALID, TEST, VALID, TRAIN, TRAIN]
    assert plan.describe() == {
        "train": ["1970-01-04", "1970-01-05", "1970-01-06"],
        "valid": ["1970-01-08", "1970-01-09"],
        "test": ["1970-01-10"],
    }


def test_time_split_needs_one_train_day_beyond_valid_and_test() -> None:
    plan = TimeSplit.plan([1, 2, 3], valid_days=1, test_days=1)
    assert plan.train_days == (1,)
    with pytest.raises(
        ValueError, match=r"at least 3 days with data \(1 valid, 1 test, 1\+ train\)"
    ):
        TimeSplit.plan([1, 2], valid_days=1, test_days=1)
    with pytest.raises(ValueError, match=r"the input has 2 \(1970-01-02, 1970-01-03\)"):
        TimeSplit.plan([1, 2, 2], valid_days=1, test_days=1)
    with pytest.raises(ValueError, match=r"the input has 0 \(none\)"):
        TimeSplit.plan([], valid_days=1, test_days=1)


@pytest.mark.parametrize(("valid", "test"), [(0, 1), (1, 0), (-1, 2)])
def test_time_split_refuses_empty_valid_or_test(valid: int, test: int) -> None:
    with pytest.raises(ValueError, match=f"must be >= 1, got {valid}, {test}"):
        TimeSplit.plan(range(10), valid_days=valid, test_days=test)


def test_check_sizes_accepts_exactly_the_minimum_with_both_labels() -> None:
    check_sizes({"train": (10, 1), "valid": (10, 9), "test": (10, 5)}, min_rows=10)


@pytest.mark.parametrize("positives", [0, 30])
def test_check_sizes_refuses_a_single_label_overall(positives: int) -> None:
    counts = {
        "train": (10, positives // 3),
        "valid": (10, positives // 3),
        "test": (10, positives // 3),
    }
    with pytest.raises(SplitError, match=f"all 30 good rows have label {int(positives > 0)}"):
        check_sizes(counts, min_rows=1)


def test_check_sizes_names_each_bad_split_and_where_it_came_from() -> None:
    counts = {"train": (100, 50), "valid": (9, 3), "test": (20, 0)}
    with pytest.raises(SplitError) as err:
        check_sizes(counts, min_rows=10, where={"valid": "2024-01-02", "test": ""})
    message = str(err.value)
    assert "the valid split (2024-01-02) has 9 rows, fewer than 10" in message
    assert "the test split has only label 0 in 20 rows; " not in message
    assert (
        "the valid split (2024-01-02) has 9 rows, fewer than 10; "
        "the test split has only label 0 in 20 rows." in message
    )
    assert "train" not in message.split(".", maxsplit=1)[0]
    assert "at least 10 rows (min_split_rows)" in message


def test_check_sizes_refuses_a_split_of_only_positives() -> None:
    with pytest.raises(SplitError, match=r"the test split has only label 1 in 20 rows\."):
        check_sizes({"train": (100, 50), "valid": (20, 3), "test": (20, 20)}, min_rows=10)
    with pytest.raises(SplitError, match=r"the train split has only label 0 in 100 rows\."):
        check_sizes({"train": (100, 0), "valid": (20, 3), "test": (20, 2)}, min_rows=10)


def test_one_row_splits_name_their_label_right() -> None:
    with pytest.raises(SplitError, match="all 1 good rows have label 1"):
        check_sizes({"train": (1, 1)}, min_rows=1)
    with pytest.raises(SplitError, match=r"the valid split has only label 1 in 1 rows\."):
        check_sizes({"train": (5, 2), "valid": (1, 1), "test": (5, 1)}, min_rows=1)


def _unmix64(x: int) -> int:
    """The inverse of the splitmix64 finalizer (each step is a bijection on 64-bit integers)."""
    x ^= (x >> 31) ^ (x >> 62)
    x = (x * pow(0x94D049BB133111EB, -1, 1 << 64)) & MASK64
    x ^= (x >> 27) ^ (x >> 54)
    x = (x * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & MASK64
    x ^= (x >> 30) ^ (x >> 60)
    return x


def _id_at(u: float, seed: int) -> int:
    """A row id whose unit hash is exactly u (a multiple of 2**-53)."""
    base = ((seed & MASK64) * 0x9E3779B97F4A7C15 + _SPLIT_SALT) & MASK64
    mixed = int(u * (1 << 53)) << 11
    return (_unmix64(_unmix64(mixed)) ^ base) - (
        1 << 64 if _unmix64(_unmix64(mixed)) ^ base >= 1 << 63 else 0
    )


def test_each_band_is_closed_below_and_open_above() -> None:
    ids = np.array([_id_at(u, 9) for u in (0.25, 0.5, 0.25 - 2**-53, 0.5 - 2**-53)], np.int64)
    split = ratio_split(ids, valid_fraction=0.25, test_fraction=0.25, seed=9)
    assert split.tolist() == [VALID, TRAIN, TEST, VALID]


def test_the_valid_days_are_right_before_the_test_days_on_longer_inputs() -> None:
    plan = TimeSplit.plan(range(9), valid_days=2, test_days=3)
    assert (plan.train_days, plan.valid_days, plan.test_days) == ((0, 1, 2, 3), (4, 5), (6, 7, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.test_days = ()  # type: ignore[misc]
