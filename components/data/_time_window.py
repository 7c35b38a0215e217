"""Timestamps as UTC seconds within a plausible window, in the unit the column is written in.

A time split puts the latest days in the test set, so one row from the year 5138 would become the
whole test set: a timestamp outside the window (default 2000-01-01 .. now + 1 day) is a bad row,
counted and reported like any other. Epoch numbers may be seconds, milliseconds, microseconds or
nanoseconds; the unit is decided once for the whole column, from the first chunk with values (the
unit that puts most of them inside the window), and stated in the report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from ctrflow.components.data._raw_columns import Problems
from ctrflow.components.data._text import shorten

DEFAULT_EARLIEST = "2000-01-01"
LATEST_MARGIN = dt.timedelta(days=1)
UNITS = {"seconds": 1.0, "milliseconds": 1e3, "microseconds": 1e6, "nanoseconds": 1e9}


def _epoch_seconds(text: str, what: str) -> float:
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise ValueError(
            f"{what} must be an ISO date or time, got {shorten(text)}: {exc}"
        ) from None
    if pd.isna(stamp):
        raise ValueError(f"{what} must be an ISO date or time, got {shorten(text)}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return float(stamp.timestamp())


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class TimeWindow:
    """Reads a timestamp column chunk by chunk; see the module docstring."""

    earliest: float  # epoch seconds, inclusive
    latest: float  # epoch seconds, inclusive
    column: str = "timestamp"
    unit: str | None = None  # decided on the first chunk with values

    @classmethod
    def of(cls, earliest: str | None, latest: str | None, *, column: str) -> TimeWindow:
        """earliest/latest: ISO dates or times (UTC unless they say otherwise); None for the
        defaults (2000-01-01, now + 1 day)."""
        first = _epoch_seconds(earliest or DEFAULT_EARLIEST, "the earliest timestamp")
        if latest is None:
            last = (dt.datetime.now(dt.UTC) + LATEST_MARGIN).timestamp()
        else:
            last = _epoch_seconds(latest, "the latest timestamp")
        if last <= first:
            raise ValueError(f"the time window {_iso(first)} .. {_iso(last)} is empty")
        return cls(first, last, column)

    def describe(self) -> list[str]:
        return [_iso(self.earliest), _iso(self.latest)]

    def _decide_unit(self, values: npt.NDArray[np.float64]) -> str:
        inside = {
            unit: int(
                np.count_nonzero(
                    (values >= self.earliest * scale) & (values <= self.latest * scale)
                )
            )
            for unit, scale in UNITS.items()
        }
        return max(inside, key=lambda unit: inside[unit])  # ties: the first, seconds

    def seconds(self, values: npt.NDArray[np.float64], problems: Problems) -> npt.NDArray[np.int64]:
        """Whole UTC seconds of each row; rows outside the window (and missing ones, flagged by
        the parser already) are marked bad and get 0."""
        present = ~np.isnan(values)
        if self.unit is None:
            if not present.any():
                return np.zeros(values.size, dtype=np.int64)
            self.unit = self._decide_unit(values[present])
        seconds = values / UNITS[self.unit]
        inside = (seconds >= self.earliest) & (seconds <= self.latest)
        outside = present & ~inside & ~problems.bad
        if outside.any():
            window = f"{_iso(self.earliest)} .. {_iso(self.latest)}"
            problems.flag(
                outside,
                [
                    f"{self.column}: {value:.17g} is outside {window} (read as {self.unit})"
                    for value in values[outside][:5]
                ],
            )
        seconds[~inside] = 0.0
        return np.floor(seconds).astype(np.int64)
