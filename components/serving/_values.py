"""What one raw value means at serving time, as prepare_data reads the same value in a log.

- numeric field: a JSON number is its value; a string is parsed by the training parser
  (`_raw_columns._parse_numbers`), one distinct string at a time so that a row's answer never
  depends on the other rows of the request; null, NaN and "" (and "nan" spellings) are missing;
  infinity, an unparsable string, true/false, a list or an object are bad.
- categorical field: a string is hashed like a CSV cell; an integer (or an integral float below
  2**53, which is what pandas makes of integers next to a null) is its decimal text, as a CSV cell
  would carry it; null and "" are missing; anything else is bad.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from ctrflow.components.data._raw_columns import _parse_numbers

# Entries kept per memo before it is cleared: bounds memory when clients send endless new values.
MEMO_LIMIT = 1 << 16
_EXACT_INT = float(2**53)  # integral floats below this are exact integers


class Bad:
    """A value that makes its row bad, with the reason."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_missing(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    # pandas' NA and NaT, without importing pandas here.
    return type(value).__name__ in ("NAType", "NaTType")


def category_text(value: Any) -> str | Bad | None:
    """The text a categorical value stands for (None: missing)."""
    if isinstance(value, str):
        return value or None
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return Bad(f"{describe(value)} is not a category (send a string)")
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer() and abs(number) < _EXACT_INT:
            return str(int(number))
    return Bad(f"{describe(value)} is not a category (send a string or an integer)")


class Memo:
    """value -> result, cleared when it outgrows MEMO_LIMIT (cheap, and rare in practice)."""

    __slots__ = ("data", "seed")

    def __init__(self, seed: dict[Any, Any]) -> None:
        self.seed = seed
        self.data: dict[Any, Any] = dict(seed)

    def store(self, key: Any, value: Any) -> None:
        if len(self.data) >= MEMO_LIMIT:
            self.data = dict(self.seed)
        self.data[key] = value


class NumberReader:
    """Numeric values -> float (NaN = missing) or Bad; numeric strings are parsed once each."""

    def __init__(self) -> None:
        self._text_numbers = Memo({})  # numeric strings -> float (NaN = missing) or Bad

    def _text_number(self, text: str) -> float | Bad:
        found = self._text_numbers.data.get(text)
        if found is None:
            values, missing, bad = _parse_numbers(pa.array([text], pa.large_string()))
            if bad[0]:
                found = Bad(f"cannot parse {describe(text)} as a finite number")
            else:
                found = math.nan if missing[0] else float(values[0])
            self._text_numbers.store(text, found)
        return found

    def number(self, value: Any) -> float | Bad:
        if isinstance(value, str):
            return self._text_number(value)
        if is_missing(value):
            return math.nan
        if isinstance(value, bool | np.bool_):
            return Bad(f"{describe(value)} is not a number (send 1 or 0)")
        if isinstance(value, int | np.integer | float | np.floating):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isinf(number):
                return Bad(f"{describe(value)} is not a finite number")
            return number
        return Bad(f"{describe(value)} is not a number")
