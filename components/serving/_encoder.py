"""Columns of plain Python values -> feature ids, exactly as prepare_data encodes raw rows.

prepare_data reads CSV cells as text and Parquet columns as typed Arrow arrays, parses them with
`FeatureSpec.parse` and encodes them with `FittedFeatureSpec.encode`. Serving gets JSON values
instead (str, int, float, None, ...) and must give each row the same features without going
through pandas; what each value means is in `_values`. Bins and vocabulary lookups use the
training functions (`_binning`, `lookup`), vectorised over all numeric fields at once; requests
of a few rows go value by value. Values already seen map to their id through a bounded memo per
field.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.data import _binning
from ctrflow.components.data._fitted import FIRST_VALUE, MISSING, RARE, FittedFeatureSpec, lookup
from ctrflow.components.data._hashing import hash_strings
from ctrflow.components.serving import _lookup
from ctrflow.components.serving._errors import BadRequestError
from ctrflow.components.serving._values import Bad, Memo, NumberReader, category_text

# Requests of up to this many rows go value by value through the memos (less numpy overhead).
FEW_ROWS = 16
# Composite key of a numeric field's bin key: field index in the high bits, key in the low ones.
_KEY_BITS = 32
_KEY_BIAS = 1 << (_KEY_BITS - 1)


class RowEncoder:
    """Feature ids for raw rows given as columns: {column name: sequence of values}."""

    def __init__(self, fitted: FittedFeatureSpec) -> None:
        spec = fitted.spec
        self.fitted = fitted
        self.numeric: tuple[str, ...] = spec.numeric
        self.categorical: tuple[str, ...] = spec.categorical
        self.columns: tuple[str, ...] = spec.fields
        self.n_fields = len(spec.fields)
        self.n_features = fitted.n_features
        offsets = fitted.offsets.astype(np.int64)
        n_numeric = len(spec.numeric)
        self._num_offsets = offsets[:n_numeric, None]
        self._edges = fitted.edges[:n_numeric]
        self._all_log_square = all(e is None for e in self._edges)
        # All numeric vocabularies in one sorted array of composite keys (field, bin key), and
        # the global feature id of each entry: one searchsorted serves every numeric field.
        composite, ids = [], []
        for j in range(n_numeric):
            vocabulary = fitted.vocabularies[j]
            composite.append((np.int64(j) << _KEY_BITS) + vocabulary + _KEY_BIAS)
            ids.append(offsets[j] + FIRST_VALUE + np.arange(vocabulary.size, dtype=np.int64))
        self._num_keys = np.concatenate(composite) if composite else np.empty(0, np.int64)
        self._num_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        self._field_index = np.arange(n_numeric, dtype=np.int64)[:, None]
        self._num_offsets_flat = offsets[:n_numeric]
        # Plain numbers (int, float) already seen -> global id, per numeric field.
        self._num_memos = [Memo({}) for _ in range(n_numeric)]
        # The same lookup as plain Python, for a few values: bin key -> global id per field.
        self._num_vocab = [
            {key: int(offsets[j]) + FIRST_VALUE + rank for rank, key in enumerate(v.tolist())}
            for j, v in enumerate(fitted.vocabularies[:n_numeric])
        ]
        self._edge_lists = [None if e is None else e.tolist() for e in self._edges]
        self._numbers = NumberReader()
        self._cat_offsets = offsets[n_numeric:].tolist()
        self._cat_vocabularies = fitted.vocabularies[n_numeric:]
        self._memos = [
            Memo({None: offset + MISSING, "": offset + MISSING}) for offset in self._cat_offsets
        ]
        self._hash_seed = spec.hash_seed

    # ---- numeric fields -------------------------------------------------------------------

    def _numeric_row(
        self, name: str, column: Sequence[Any], bad: Callable[..., None]
    ) -> npt.NDArray[np.float64] | list[float]:
        values = np.empty(len(column), dtype=np.float64)
        plain = column if isinstance(column, list) else list(column)
        if _lookup.plain_floats(plain, values) < 0 and not np.isinf(values).any():
            return values
        out: list[float] = []
        for row, value in enumerate(column):
            number = self._numbers.number(value)
            if isinstance(number, Bad):
                bad(row, name, number.why)
                number = math.nan
            out.append(number)
        return out

    def _numeric_ids_at(
        self, fields: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.int64]:
        """Global feature ids of numeric values (NaN = missing), each of numeric field
        `fields[i]`: the bins of `_binning` and the vocabulary lookup of `encode`."""
        if self._all_log_square:
            keys = _binning.log_square_bins(values)
        else:
            keys = np.empty(values.shape, dtype=np.int64)
            for j in np.unique(fields).tolist():
                at, edges = fields == j, self._edges[j]
                keys[at] = (
                    _binning.log_square_bins(values[at])
                    if edges is None
                    else _binning.quantile_bins(values[at], edges)
                )
        composite = (keys + _KEY_BIAS) + (fields << _KEY_BITS)
        offsets = self._num_offsets_flat[fields]
        if self._num_keys.size:
            position = np.minimum(
                np.searchsorted(self._num_keys, composite), self._num_keys.size - 1
            )
            found = self._num_keys[position] == composite
            ids = np.where(found, self._num_ids[position], offsets + RARE)
        else:
            ids = offsets + RARE
        missing = np.isnan(values)
        ids[missing] = offsets[missing] + MISSING
        return ids

    def _few_numeric_ids(self, fields: list[int], numbers: list[float]) -> list[int]:
        """`_numeric_ids_at` for a few values, numpy only for the logarithms. Each step is the
        one `_binning` takes (IEEE operations: floor, comparisons, x*x as numpy's square), and
        np.log is the same ufunc, so the keys are the same (the proof test's one-row case)."""
        small = _binning.SMALL
        magnitudes = np.log(np.maximum(np.abs(np.array(numbers, dtype=np.float64)), small))
        out = []
        for j, v, log in zip(fields, numbers, magnitudes.tolist(), strict=True):
            offset = int(self._num_offsets_flat[j])
            if math.isnan(v):
                out.append(offset + MISSING)
                continue
            edges = self._edge_lists[j]
            if edges is not None:
                key = bisect.bisect_right(edges, v)
            elif v > small:
                key = _binning.POSITIVE_BASE + math.floor(log * log)
            elif v < -small:
                key = _binning.NEGATIVE_BASE - math.floor(log * log)
            else:
                key = math.floor(v)
            out.append(self._num_vocab[j].get(key, offset + RARE))
        return out

    def _numeric_ids(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """(n_numeric, n) floats (NaN = missing) -> global feature ids, same shape."""
        fields = np.broadcast_to(self._field_index, values.shape).reshape(-1)
        return self._numeric_ids_at(fields, values.reshape(-1)).reshape(values.shape)

    # ---- a few rows: one value at a time, through the memos -------------------------------

    def _encode_few(
        self, columns: Mapping[str, Sequence[Any]], n_rows: int, bad: Callable[..., None]
    ) -> npt.NDArray[np.int64]:
        """(n_fields, n_rows) ids for a small request: a dict lookup per value already seen, the
        vectorised functions for the others (whose results the memos keep)."""
        ids: list[Any] = []
        new_numbers: list[tuple[int, int, int]] = []  # (position in ids, field, row)
        for j, name in enumerate(self.numeric):
            memo = self._num_memos[j].data
            for row, value in enumerate(columns[name]):
                kind = type(value)
                found = memo.get(value) if kind is int or kind is float else None
                if found is None:
                    new_numbers.append((len(ids), j, row))
                ids.append(found)
        if new_numbers:
            numbers, keep = [], []
            for _, j, row in new_numbers:
                value = columns[self.numeric[j]][row]
                number = self._numbers.number(value)
                if isinstance(number, Bad):
                    bad(row, self.numeric[j], number.why)
                    number = math.nan
                # Only plain, present numbers become memo keys (True == 1 must not hit them).
                keep.append(type(value) in (int, float) and not math.isnan(number))
                numbers.append(number)
            found_ids = self._few_numeric_ids([j for _, j, _ in new_numbers], numbers)
            for (at, j, row), feature, store in zip(new_numbers, found_ids, keep, strict=True):
                ids[at] = feature
                if store:
                    self._num_memos[j].store(columns[self.numeric[j]][row], feature)
        new_texts: list[tuple[int, int, str]] = []  # (position in ids, field, text)
        for field, name in enumerate(self.categorical):
            memo = self._memos[field].data
            for row, value in enumerate(columns[name]):
                try:
                    found = memo.get(value)
                except TypeError:  # unhashable: a list or an object
                    found = None
                if found is None:
                    text = category_text(value)
                    if isinstance(text, Bad):
                        bad(row, name, text.why)
                    elif text is None:
                        found = self._cat_offsets[field] + MISSING
                    else:
                        new_texts.append((len(ids), field, text))
                ids.append(found)
        if new_texts:
            # One hash call for the request's new texts, then each field's `lookup`, per value.
            hashes = hash_strings([text for _, _, text in new_texts], self._hash_seed).tolist()
            for (at, field, text), key in zip(new_texts, hashes, strict=True):
                vocabulary, offset = self._cat_vocabularies[field], self._cat_offsets[field]
                position = min(int(vocabulary.searchsorted(key)), vocabulary.size - 1)
                found = vocabulary.size and vocabulary[position] == key
                ids[at] = offset + (position + FIRST_VALUE if found else RARE)
                self._memos[field].store(text, ids[at])
        return np.array([-1 if i is None else i for i in ids], dtype=np.int64).reshape(
            self.n_fields, n_rows
        )

    # ---- categorical fields ---------------------------------------------------------------

    def _categorical_ids(
        self, column: Sequence[Any], field: int, name: str, bad: Callable[..., None]
    ) -> npt.NDArray[np.int64]:
        """Global ids of one categorical column; values new to the memo are resolved in one
        vectorised hash-and-lookup over their distinct texts."""
        memo = self._memos[field]
        ids = np.empty(len(column), dtype=np.int64)
        plain = column if isinstance(column, list) else list(column)
        if not _lookup.memo_ids(plain, memo.data, ids):
            return ids
        new = np.flatnonzero(ids < 0)
        texts: dict[str, list[int]] = {}
        for row in new.tolist():
            text = category_text(column[row])
            if isinstance(text, Bad):
                bad(row, name, text.why)
            elif text is None:
                ids[row] = self._cat_offsets[field] + MISSING
            else:
                texts.setdefault(text, []).append(row)
        if texts:
            distinct = list(texts)
            found = (
                lookup(self._cat_vocabularies[field], hash_strings(distinct, self._hash_seed))
                + self._cat_offsets[field]
            )
            for text, feature in zip(distinct, found.tolist(), strict=True):
                ids[texts[text]] = feature
                memo.store(text, feature)
        return ids

    # ---- rows -----------------------------------------------------------------------------

    def encode(self, columns: Mapping[str, Sequence[Any]], n_rows: int) -> npt.NDArray[np.int32]:
        """Feature ids, shape (n_rows, n_fields), C order. Raises BadRequestError for a missing
        column or a bad value, naming the first bad row (counted from 0) and its column."""
        absent = [c for c in self.columns if c not in columns]
        if absent:
            raise BadRequestError(
                f"column(s) {', '.join(absent)} missing from the request "
                f"(it has: {', '.join(map(str, list(columns)[:60])) or 'none'})"
            )
        first_bad: list[tuple[int, int, str, str]] = []

        def bad(row: int, name: str, why: str) -> None:
            first_bad.append((row, self.columns.index(name), name, why))

        for name in self.columns:
            if len(columns[name]) != n_rows:
                raise BadRequestError(
                    f"column {name} has {len(columns[name])} values for {n_rows} rows"
                )
        if n_rows <= FEW_ROWS:
            out = self._encode_few(columns, n_rows, bad)
        else:
            out = np.empty((self.n_fields, n_rows), dtype=np.int64)
            n_numeric = len(self.numeric)
            if n_numeric:
                numbers = [self._numeric_row(name, columns[name], bad) for name in self.numeric]
                out[:n_numeric] = self._numeric_ids(np.array(numbers, dtype=np.float64))
            for field, name in enumerate(self.categorical):
                out[n_numeric + field] = self._categorical_ids(columns[name], field, name, bad)
        if first_bad:
            row, _, name, why = min(first_bad)
            raise BadRequestError(f"row {row}, column {name}: {why}")
        return np.ascontiguousarray(out.T, dtype=np.int32)
