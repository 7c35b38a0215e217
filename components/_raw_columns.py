"""Raw Arrow columns -> distinct values plus per-row codes, and the rows whose value is bad.

Work is done on distinct values wherever possible: a CSV column read as (or encoded to) an Arrow
dictionary is parsed, hashed and looked up once per distinct string, and rows only pay for a
`take`. Every converter returns the mask of bad rows and a few example messages naming the column
and the offending token, so callers can report them with line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ctrflow.components._hashing import hash_strings

# Example messages kept per column and per call; enough to diagnose, bounded in size.
MAX_EXAMPLES = 5
# String tokens that mean "no value" in numeric columns (pandas' own NaN spellings).
_NAN_TOKENS = frozenset({"nan", "NaN", "NAN", "-nan", "-NaN"})


@dataclass(frozen=True)
class Coded:
    """Distinct values `uniq` and, per row, the index of the row's value in it (-1 = missing)."""

    uniq: npt.NDArray[np.generic]
    codes: npt.NDArray[np.int64]


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


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(column.chunks) if isinstance(column, pa.ChunkedArray) else [column]


def _concat(parts: list[Coded], empty: npt.NDArray[np.generic]) -> Coded:
    """Concatenate per-chunk codings (each chunk may carry its own dictionary)."""
    if len(parts) == 1:
        return parts[0]
    codes, offset = [], 0
    for part in parts:
        codes.append(np.where(part.codes >= 0, part.codes + offset, -1))
        offset += len(part.uniq)
    uniq = np.concatenate([p.uniq for p in parts]) if parts else empty
    return Coded(uniq, np.concatenate(codes) if codes else np.empty(0, np.int64))


def _as_dictionary(array: pa.Array) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """Distinct strings (no nulls) and per-row indices (-1 = null) of any Arrow array."""
    if not pa.types.is_dictionary(array.type):
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            array = pc.cast(array, pa.string())
        array = array.dictionary_encode()
    dictionary = array.dictionary
    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        dictionary = pc.cast(dictionary, pa.string())
    indices = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return dictionary.to_numpy(zero_copy_only=False), indices


def _remap_missing(
    indices: npt.NDArray[np.int64], missing_uniq: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Send rows whose distinct value means "missing" to code -1."""
    if not missing_uniq.any():
        return indices
    remap = np.arange(len(missing_uniq) + 1, dtype=np.int64) - 1
    remap[1:][missing_uniq] = -1
    return remap[indices + 1]


def _is_numeric_type(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)
    )


def _parse_numbers(
    strings: npt.NDArray[np.object_],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Floats of distinct strings, plus masks of missing ("", NaN spellings) and unparsable ones."""
    series = pd.Series(strings, dtype=object)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    stripped = series.str.strip()
    missing = (stripped.eq("") | stripped.isin(_NAN_TOKENS)).to_numpy(dtype=np.bool_)
    unparsable = (np.isnan(values) & ~missing) | np.isinf(values)
    return values, missing, unparsable


def numeric(column: pa.Array | pa.ChunkedArray, name: str, problems: Problems) -> Coded:
    """Float values of a numeric column; missing -> -1; unparsable or infinite -> bad row."""
    parts = []
    start = 0
    for array in _chunks(column):
        n = len(array)
        rows = np.zeros(len(problems.bad), dtype=np.bool_)
        if _is_numeric_type(array.type) or pa.types.is_null(array.type):
            values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
            infinite = np.isinf(values)
            codes = np.where(np.isnan(values) | infinite, -1, np.arange(n, dtype=np.int64))
            if infinite.any():
                rows[start : start + n] = infinite
                problems.flag(rows, f"{name}: {values[infinite][0]!r} is not a finite number")
            parts.append(Coded(values, codes))
        else:
            strings, indices = _as_dictionary(array)
            values, missing, unparsable = _parse_numbers(strings)
            codes = _remap_missing(indices, missing | unparsable)
            if unparsable.any():
                bad_rows = unparsable[indices] & (indices >= 0)
                rows[start : start + n] = bad_rows
                tokens = strings[indices[bad_rows][:MAX_EXAMPLES]]
                problems.flag(rows, [f"{name}: cannot parse {t!r} as a number" for t in tokens])
            parts.append(Coded(values, codes))
        start += n
    return _concat(parts, np.empty(0, np.float64))


def categorical(column: pa.Array | pa.ChunkedArray, *, seed: int) -> Coded:
    """Stable 64-bit hashes of the distinct values (as text); empty or null -> missing (-1)."""
    parts = []
    for array in _chunks(column):
        strings, indices = _as_dictionary(array)
        codes = _remap_missing(indices, strings == "")
        parts.append(Coded(hash_strings(strings, seed), codes))
    return _concat(parts, np.empty(0, np.int64))


def labels(
    column: pa.Array | pa.ChunkedArray, name: str, problems: Problems
) -> npt.NDArray[np.float32]:
    """0/1 labels as float32; missing or any other value -> bad row (label set to 0)."""
    coded = numeric(column, name, problems)
    values = np.append(coded.uniq.astype(np.float64), np.nan)[coded.codes]
    valid = (values == 0.0) | (values == 1.0)
    missing = coded.codes < 0
    problems.flag(missing & ~problems.bad, f"{name}: label is missing")
    wrong = ~valid & ~missing
    if wrong.any():
        shown = [f"{name}: label {v:g} is not 0 or 1" for v in values[wrong][:MAX_EXAMPLES]]
        problems.flag(wrong, shown)
    return np.where(valid, values, 0.0).astype(np.float32)


def timestamps(
    column: pa.Array | pa.ChunkedArray, name: str, problems: Problems
) -> npt.NDArray[np.int64]:
    """UTC seconds since the epoch from epoch seconds, Arrow timestamps/dates or ISO-8601 text."""
    out = []
    start = 0
    for array in _chunks(column):
        n = len(array)
        if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
            seconds = pc.cast(pc.cast(array, pa.timestamp("s")), pa.int64())
            values = seconds.to_numpy(zero_copy_only=False).astype(np.float64)
        elif _is_numeric_type(array.type):
            values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        else:
            strings, indices = _as_dictionary(array)
            uniq, _, _ = _parse_numbers(strings)
            text = np.isnan(uniq)
            if text.any():
                parsed = pd.to_datetime(
                    pd.Series(strings[text]), utc=True, errors="coerce", format="ISO8601"
                )
                seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
                uniq[text] = seconds.to_numpy(dtype=np.float64, na_value=np.nan)
            values = np.append(uniq, np.nan)[indices]
            unreadable = np.isnan(values) & (indices >= 0)
            if unreadable.any():
                rows = np.zeros(len(problems.bad), dtype=np.bool_)
                rows[start : start + n] = unreadable
                tokens = strings[indices[unreadable][:MAX_EXAMPLES]]
                problems.flag(rows, [f"{name}: cannot parse {t!r} as a time" for t in tokens])
        rows = np.zeros(len(problems.bad), dtype=np.bool_)
        rows[start : start + n] = np.isnan(values)
        problems.flag(rows & ~problems.bad, f"{name}: timestamp is missing")
        out.append(np.nan_to_num(values, nan=0.0).astype(np.int64))
        start += n
    return np.concatenate(out) if out else np.empty(0, np.int64)
