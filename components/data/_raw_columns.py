"""Raw Arrow columns -> distinct values plus per-row codes, and the rows whose value is bad.

Work is done on distinct values wherever possible: a CSV column read as (or encoded to) an Arrow
dictionary is parsed, hashed and looked up once per distinct string, and rows only pay for a
`take`. Every converter reports bad rows in a `Problems` (mask plus a few example messages
naming the column and the offending token), so callers can report them with line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctrflow.components.data._hashing import hash_strings
from ctrflow.components.data._text import shorten

# Example messages kept per column and per call; enough to diagnose, bounded in size.
MAX_EXAMPLES = 5
# String tokens that mean "no value" in numeric columns (pandas' own NaN spellings).
_NAN_TOKENS = frozenset({"nan", "NaN", "NAN", "-nan", "-NaN"})
Column: TypeAlias = "pa.Array | pa.ChunkedArray"


@dataclass(frozen=True)
class Coded:
    """Distinct values `uniq` and, per row, the index of the row's value in it (-1 = missing).

    `uniq` may repeat a value (chunks of an Arrow column carry separate dictionaries).
    """

    uniq: npt.NDArray[np.generic]
    codes: npt.NDArray[np.int32]


@dataclass
class Problems:
    """Bad rows of one table: a mask and a few (row index, message) examples."""

    bad: npt.NDArray[np.bool_]
    examples: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def none(cls, n_rows: int) -> Problems:
        return cls(np.zeros(n_rows, dtype=np.bool_))

    def flag(self, rows: npt.NDArray[np.bool_], message: str | list[str]) -> None:
        """Mark `rows` bad; `message` is one text or one per flagged row (only a few are kept)."""
        new = rows & ~self.bad
        self.bad |= rows
        for i, row in enumerate(np.flatnonzero(new)[:MAX_EXAMPLES].tolist()):
            self.examples.append((row, message if isinstance(message, str) else message[i]))


def _is_text(type_: pa.DataType) -> bool:
    return bool(pa.types.is_string(type_) or pa.types.is_large_string(type_))


def _is_numeric_type(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(type_)
        or pa.types.is_floating(type_)
        or pa.types.is_boolean(type_)
        or pa.types.is_null(type_)
    )


def _dictionary(column: Column) -> tuple[pa.Array, npt.NDArray[np.int32]]:
    """Distinct values as one Arrow string array (no nulls) and per-row indices (-1 = null)."""
    chunks = list(column.chunks) if isinstance(column, pa.ChunkedArray) else [column]
    dictionaries: list[pa.Array] = []
    indices: list[npt.NDArray[np.int32]] = []
    offset = 0
    for array in chunks:
        if not pa.types.is_dictionary(array.type):
            array = (
                array if _is_text(array.type) else pc.cast(array, pa.string())
            ).dictionary_encode()
        values = array.dictionary
        if not _is_text(values.type):
            values = pc.cast(values, pa.string())
        idx = pc.cast(array.indices, pa.int32())
        if idx.null_count:
            idx = pc.fill_null(idx, -1)
        part = idx.to_numpy(zero_copy_only=False)
        indices.append(
            np.where(part >= 0, part + np.int32(offset), np.int32(-1)) if offset else part
        )
        dictionaries.append(pc.cast(values, pa.large_string()))
        offset += len(values)
    if not chunks:
        return pa.array([], pa.large_string()), np.empty(0, np.int32)
    return pa.concat_arrays(dictionaries), np.concatenate(indices).astype(np.int32, copy=False)


def _remap_missing(
    indices: npt.NDArray[np.int32], missing_uniq: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int32]:
    """Send rows whose distinct value means "missing" to code -1."""
    if not missing_uniq.any():
        return indices
    remap = np.arange(-1, len(missing_uniq), dtype=np.int32)
    remap[1:][missing_uniq] = -1
    return remap[indices + 1]


def _parse_numbers(
    dictionary: pa.Array,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Floats of distinct strings, plus masks of missing ("", NaN spellings) and bad ones.

    Arrow's cast parses the clean case in C++; only a dictionary holding a bad token takes the
    pandas path, which tells the bad tokens apart.
    """
    try:
        values = pc.cast(dictionary, pa.float64()).to_numpy(zero_copy_only=False)
        return values, np.isnan(values), np.isinf(values)
    except pa.ArrowInvalid:
        pass
    series = pd.Series(dictionary.to_numpy(zero_copy_only=False), dtype=object)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    stripped = series.str.strip()
    missing = (stripped.eq("") | stripped.isin(_NAN_TOKENS)).to_numpy(dtype=np.bool_)
    bad = (np.isnan(values) & ~missing) | np.isinf(values)
    return values, missing, bad


def _tokens(
    dictionary: pa.Array, indices: npt.NDArray[np.int32], rows: npt.NDArray[np.bool_]
) -> list[str]:
    """The raw text of the first few flagged rows, for messages."""
    picked = indices[rows][:MAX_EXAMPLES]
    return [str(t) for t in dictionary.take(pa.array(picked)).to_pylist()]


def numeric(column: Column, name: str, problems: Problems) -> Coded:
    """Float values of a numeric column; missing -> -1; unparsable or infinite -> bad row."""
    if _is_numeric_type(column.type):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        infinite = np.isinf(values)
        codes = np.arange(values.size, dtype=np.int32)
        codes[np.isnan(values) | infinite] = -1
        if infinite.any():
            problems.flag(infinite, f"{name}: {float(values[infinite][0])} is not a finite number")
        return Coded(values, codes)
    dictionary, indices = _dictionary(column)
    values, missing, bad = _parse_numbers(dictionary)
    codes = _remap_missing(indices, missing | bad)
    if bad.any():
        rows = bad[indices] & (indices >= 0)
        tokens = _tokens(dictionary, indices, rows)
        problems.flag(
            rows, [f"{name}: cannot parse {shorten(t)} as a finite number" for t in tokens]
        )
    return Coded(values, codes)


def categorical(column: Column, *, seed: int) -> Coded:
    """Stable 64-bit hashes of the distinct values (as text); empty or null -> missing (-1)."""
    dictionary, indices = _dictionary(column)
    empty = pc.equal(dictionary, "").to_numpy(zero_copy_only=False)
    codes = _remap_missing(indices, empty)
    return Coded(hash_strings(dictionary.to_numpy(zero_copy_only=False), seed), codes)


def labels(column: Column, name: str, problems: Problems) -> npt.NDArray[np.float32]:
    """0/1 labels as float32; missing or any other value -> bad row (label set to 0)."""
    coded = numeric(column, name, problems)
    values = np.append(coded.uniq.astype(np.float64), np.nan)[coded.codes]
    valid = (values == 0.0) | (values == 1.0)
    missing = coded.codes < 0
    problems.flag(missing, f"{name}: label is missing")
    wrong = ~valid & ~missing
    if wrong.any():
        problems.flag(
            wrong, [f"{name}: label {v:g} is not 0 or 1" for v in values[wrong][:MAX_EXAMPLES]]
        )
    return np.where(valid, values, 0.0).astype(np.float32)


def timestamps(column: Column, name: str, problems: Problems) -> npt.NDArray[np.float64]:
    """Epoch numbers as written (the unit is decided over the whole column: `_time_window`), or
    UTC seconds from Arrow timestamps/dates or ISO-8601 text; NaN where missing or unreadable."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        seconds = pc.cast(pc.cast(column, pa.timestamp("s"), safe=False), pa.int64())
        values = seconds.to_numpy(zero_copy_only=False).astype(np.float64)
    elif _is_numeric_type(column.type):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        dictionary, indices = _dictionary(column)
        parsed_numbers, _, _ = _parse_numbers(dictionary)
        uniq = parsed_numbers.copy()  # Arrow's buffer is read-only
        text = np.isnan(uniq)
        if text.any():
            strings = pd.Series(dictionary.to_numpy(zero_copy_only=False)[text])
            parsed = pd.to_datetime(strings, utc=True, errors="coerce", format="ISO8601")
            seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
            uniq[text] = seconds.to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.append(uniq, np.nan)[indices]
        unreadable = np.isnan(values) & (indices >= 0)
        if unreadable.any():
            tokens = _tokens(dictionary, indices, unreadable)
            problems.flag(
                unreadable, [f"{name}: cannot parse {shorten(t)} as a time" for t in tokens]
            )
    problems.flag(np.isnan(values), f"{name}: timestamp is missing")
    return np.asarray(values, dtype=np.float64)
