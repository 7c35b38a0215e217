"""The C tables of serving give every value the id training's functions give it.

Categories: `hash_strings` + `lookup` (what prepare_data encodes with) for vocabulary entries,
unseen and rare texts, empty strings (missing), nulls, non-ASCII and long texts, keys that share
a probe chain, and empty vocabularies. Numbers: `_binning`'s bins + `lookup`, at the bin
boundaries of both rules, where a different log or comparison would move a value."""

from __future__ import annotations

import numpy as np
import pytest

from ctrflow.components.data import _binning
from ctrflow.components.data._fitted import MISSING, RARE, lookup
from ctrflow.components.data._hashing import hash_key, hash_strings
from ctrflow.components.serving import _lookup

SEED = 12345
KEY = hash_key(SEED).encode("ascii")
TEXTS = [
    "a", "05db9164", "x" * 7, "x" * 8, "x" * 9, "y" * 67, "héllo wörld ünïcode", "é中",
    "emoji \U0001f600", " pad ", 'q"t', "c,d", "None", "null", "NaN", "0", "-1", "\x00nul",
]  # fmt: skip


def expected_ids(vocabulary: np.ndarray, offset: int, texts: list[str]) -> list[int]:
    """What prepare_data gives a text: its hash looked up in the field's vocabulary."""
    ids: list[int] = (lookup(vocabulary, hash_strings(texts, SEED)) + offset).tolist()
    return ids


def test_hash_is_the_training_hash_for_every_length_and_script() -> None:
    texts = TEXTS + [chr(0x41 + i % 26) * i for i in range(1, 40)]
    for seed in (0, 7, 2**63 + 5, SEED):
        key = hash_key(seed).encode("ascii")
        np.testing.assert_array_equal(_lookup.hash_texts(texts, key), hash_strings(texts, seed))


def test_table_agrees_with_hash_and_lookup_on_vocabulary_and_other_texts() -> None:
    rng = np.random.default_rng(0)
    seen = [f"v{i:05x}" for i in range(5000)] + TEXTS[::2]
    unseen = [f"u{i:05x}" for i in range(2000)] + TEXTS[1::2]
    vocabularies = [
        np.unique(hash_strings(seen, SEED)),  # a big field
        np.unique(hash_strings(seen[:3], SEED)),  # a tiny one
        np.empty(0, dtype=np.int64),  # a field with every value rare
    ]
    offsets = [10, 10 + 2 + 5015, 10 + 2 + 5015 + 2 + 3]
    table = _lookup.CategoryTable(vocabularies, offsets, KEY)
    texts = seen + unseen
    rng.shuffle(texts)
    for field, (vocabulary, offset) in enumerate(zip(vocabularies, offsets, strict=True)):
        want = expected_ids(vocabulary, offset, texts)
        out = np.empty((3, len(texts)), dtype=np.int64)
        # fill() takes list[list[object]]: a list[str] is not one (lists are invariant).
        columns: list[list[object]] = [
            list[object](texts) if f == field else [None] * len(texts) for f in range(3)
        ]
        assert table.fill(columns, out) == 0
        assert out[field].tolist() == want
        fields = np.full(len(texts), field, dtype=np.int64)
        assert table.text_ids(texts, fields).tolist() == want
    # Every vocabulary entry is found (none lost to a slot collision), at its rank.
    hashes = vocabularies[0]
    ids = table.lookup(0, hashes)
    np.testing.assert_array_equal(ids, offsets[0] + 2 + np.arange(hashes.size))


def test_colliding_hashes_share_a_probe_chain() -> None:
    # Hashes equal in their low 20 bits land in the same slot of a small field's block.
    low = np.int64(0x5A5A5)
    vocabulary = np.sort(np.array([low + (i << 20) for i in range(1, 40)], dtype=np.int64))
    table = _lookup.CategoryTable([vocabulary], [0], KEY)
    np.testing.assert_array_equal(table.lookup(0, vocabulary), 2 + np.arange(vocabulary.size))
    absent = np.array([low, low + (99 << 20), low + 1], dtype=np.int64)
    assert table.lookup(0, absent).tolist() == [1, 1, 1]  # rare


def test_nulls_and_empty_texts_are_missing_and_other_values_are_left_to_python() -> None:
    vocabulary = np.unique(hash_strings(["a", "b"], SEED))
    table = _lookup.CategoryTable([vocabulary, vocabulary], [0, 4], KEY)

    class Text(str):
        pass

    values: list[object] = [None, "", "a", "zz", 7, 7.0, True, Text("a"), "\ud800", "b"]
    out = np.empty((2, len(values)), dtype=np.int64)
    left = table.fill([values, list(reversed(values))], out)
    a, b = expected_ids(vocabulary, 0, ["a", "b"])
    other = _lookup.NOT_PLAIN
    first = [MISSING, MISSING, a, 1, other, other, other, other, other, b]  # 1: rare
    assert out[0].tolist() == first
    assert out[1].tolist() == [i if i == other else 4 + i for i in first[::-1]]
    assert left == 2 * 5
    # A lone surrogate has no UTF-8 form: -1, which the encoder reports as a bad value.
    assert table.text_ids(["\ud800", "a"], np.array([0, 0])).tolist() == [-1, a]


def test_numeric_table_bins_and_looks_up_as_training_does() -> None:
    rng = np.random.default_rng(1)
    squares = np.exp(np.sqrt(np.arange(1.0, 700.0)))  # log(v)**2 at (or next to) an integer
    near = np.concatenate([squares, np.nextafter(squares, 0), np.nextafter(squares, np.inf)])
    edges = np.unique(np.round(rng.normal(0, 50, 7), 1))
    values = np.concatenate([
        near, -near, edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
        rng.normal(0, 1e3, 3000), rng.integers(-5, 30, 500),
        [0.0, -0.0, 2.0, -2.0, 1.999, 2.0000001, -2.0000001, 1e308, -1e308, 5e-324, np.nan],
    ])  # fmt: skip
    rng.shuffle(values)
    log_keys = _binning.log_square_bins(values)
    quantile_keys = _binning.quantile_bins(values, edges)
    vocabularies = [np.unique(log_keys[::3]), np.unique(quantile_keys[:-40])]
    offsets = [0, 2 + vocabularies[0].size]
    table = _lookup.NumericTable(vocabularies, offsets, [None, edges])
    both = np.stack([values, values])
    logs = np.log(np.maximum(np.abs(both), _binning.SMALL))
    out = np.empty(both.shape, dtype=np.int64)
    table.fill(both, logs, out)
    for field, keys in enumerate((log_keys, quantile_keys)):
        want = lookup(vocabularies[field], keys) + offsets[field]
        want[np.isnan(values)] = offsets[field] + MISSING
        np.testing.assert_array_equal(out[field], want)
    assert (out[0] == RARE).any()  # some values fall outside the vocabulary


def test_bad_shapes_are_errors() -> None:
    table = _lookup.CategoryTable([np.empty(0, dtype=np.int64)], [0], KEY)
    with pytest.raises(ValueError, match="1 columns"):
        table.fill([["a"]], np.empty((2, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="has 2 values for 1 rows"):
        table.fill([["a", "b"]], np.empty((1, 1), dtype=np.int64))
    with pytest.raises(IndexError):
        table.lookup(1, np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="16-byte key"):
        _lookup.CategoryTable([], [], b"short")
    numbers = _lookup.NumericTable([np.empty(0, dtype=np.int64)], [0], [None])
    with pytest.raises(ValueError, match="for 1 fields"):
        numbers.fill(np.zeros((1, 3)), np.zeros((1, 2)), np.empty((1, 3), dtype=np.int64))
