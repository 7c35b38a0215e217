"""Columns of plain Python values -> feature ids, exactly as prepare_data encodes raw rows.

prepare_data reads CSV cells as text and Parquet columns as typed Arrow arrays, parses them with
`FeatureSpec.parse` and encodes them with `FittedFeatureSpec.encode`. Serving gets JSON values
instead (str, int, float, None, ...) and must give each row the same features without going
through pandas; what each value means is in `_values`.

The values are scattered Python objects, so the time of a batch goes in visiting each one once.
Two C tables built at load (`_lookup`) do it: the categorical one hashes each string's UTF-8
bytes with the training hash and probes the field's vocabulary hashes; the numeric one bins
each number by the training rule (with numpy's log, as `_binning` takes it) and probes the
field's bin keys. Values that are not plain (integer categories, numbers as text, bad values)
go through `_values` in Python. A request of one row takes the same path as one of 10,000.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.data import _binning
from ctrflow.components.data._fitted import MISSING, FittedFeatureSpec
from ctrflow.components.data._hashing import hash_key
from ctrflow.components.serving import _lookup
from ctrflow.components.serving._errors import BadRequestError
from ctrflow.components.serving._values import Bad, NumberReader, category_text


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
        offsets = fitted.offsets.astype(np.int64).tolist()
        n_numeric = len(spec.numeric)
        edges = list(fitted.edges[:n_numeric])
        self._any_log_square = any(e is None for e in edges)
        self._numbers_table = _lookup.NumericTable(
            list(fitted.vocabularies[:n_numeric]), offsets[:n_numeric], edges
        )
        self._numbers = NumberReader()
        self._cat_offsets = offsets[n_numeric:]
        self._categories = _lookup.CategoryTable(
            list(fitted.vocabularies[n_numeric:]),
            self._cat_offsets,
            hash_key(spec.hash_seed).encode("ascii"),
        )

    # ---- numeric fields -------------------------------------------------------------------

    def _numbers_of(
        self,
        name: str,
        column: Sequence[Any],
        out: npt.NDArray[np.float64],
        bad: Callable[..., None],
    ) -> None:
        """out[:] = the column's numbers (NaN = missing): plain JSON numbers in C, the rest
        (numbers as text, bad values) by `NumberReader`."""
        plain = column if isinstance(column, list) else list(column)
        row = _lookup.plain_floats(plain, out)  # where C stopped; -1: it did them all
        while row >= 0:
            number = self._numbers.number(plain[row])
            if isinstance(number, Bad):
                bad(row, name, number.why)
                number = np.nan
            out[row] = number
            row = _lookup.plain_floats(plain, out, row + 1)

    def _numeric_ids(
        self, columns: Mapping[str, Sequence[Any]], n_rows: int, bad: Callable[..., None]
    ) -> npt.NDArray[np.int64]:
        """(n_numeric, n_rows) global ids: each value binned and looked up as training does."""
        values = np.empty((len(self.numeric), n_rows), dtype=np.float64)
        for j, name in enumerate(self.numeric):
            self._numbers_of(name, columns[name], values[j], bad)
        logs = values
        if self._any_log_square:
            with np.errstate(invalid="ignore"):  # NaN in, NaN out: those are missing
                logs = np.log(np.maximum(np.abs(values), _binning.SMALL))
        out = np.empty((len(self.numeric), n_rows), dtype=np.int64)
        self._numbers_table.fill(values, logs, out)
        return out

    # ---- categorical fields ---------------------------------------------------------------

    def _categorical_ids(
        self, columns: Mapping[str, Sequence[Any]], n_rows: int, bad: Callable[..., None]
    ) -> npt.NDArray[np.int64]:
        """(n_categorical, n_rows) global ids: strings and nulls in C (`CategoryTable`), the
        other values (integer categories, bad values) by `category_text`."""
        lists: list[list[Any]] = [
            c if isinstance(c, list) else list(c) for c in (columns[n] for n in self.categorical)
        ]
        out = np.empty((len(lists), n_rows), dtype=np.int64)
        if not self._categories.fill(lists, out):
            return out
        fields, rows = np.nonzero(out == _lookup.NOT_PLAIN)
        texts: list[str] = []
        at: list[int] = []
        for field, row in zip(fields.tolist(), rows.tolist(), strict=True):
            text = category_text(lists[field][row])
            if isinstance(text, Bad):
                bad(row, self.categorical[field], text.why)
            elif text is None:
                out[field, row] = self._cat_offsets[field] + MISSING
            else:
                texts.append(text)
                at.append(field * n_rows + row)
        if texts:
            flat = out.reshape(-1)
            flat[at] = found = self._categories.text_ids(texts, np.array(at) // n_rows)
            for i in np.flatnonzero(found < 0).tolist():
                field, row = divmod(at[i], n_rows)
                bad(row, self.categorical[field], "text with a lone surrogate is not UTF-8")
        return out

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
        out = np.empty((self.n_fields, n_rows), dtype=np.int64)
        n_numeric = len(self.numeric)
        out[:n_numeric] = self._numeric_ids(columns, n_rows, bad)
        out[n_numeric:] = self._categorical_ids(columns, n_rows, bad)
        if first_bad:
            row, _, name, why = min(first_bad)
            raise BadRequestError(f"row {row}, column {name}: {why}")
        return np.ascontiguousarray(out.T, dtype=np.int32)
