"""Which split (train/valid/test) each row goes to: by time when rows carry a timestamp, else by
a seeded hash of (file name, line number), so a row's split never depends on chunking, threads
or the other files in the input."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.data._hashing import hash_strings, row_unit_hash

TRAIN, VALID, TEST = 0, 1, 2
SPLITS = ("train", "valid", "test")
SECONDS_PER_DAY = 86_400
_SPLIT_SALT = 0x5B17


def row_ids(file_name: str, lines: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Stable row ids: the file's base name hash plus the line number."""
    base = hash_strings([file_name.rsplit("/", 1)[-1]], seed=0)[0].view(np.uint64)
    return np.asarray((lines.astype(np.uint64) + base).view(np.int64), dtype=np.int64)


def ratio_split(
    ids: npt.NDArray[np.int64], *, valid_fraction: float, test_fraction: float, seed: int
) -> npt.NDArray[np.int8]:
    u = row_unit_hash(ids, seed=seed, salt=_SPLIT_SALT)
    split = np.full(ids.size, TRAIN, dtype=np.int8)
    split[u < test_fraction + valid_fraction] = VALID
    split[u < test_fraction] = TEST
    return split


def days_of(timestamps: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """UTC calendar day numbers (days since 1970-01-01)."""
    return np.floor_divide(timestamps, SECONDS_PER_DAY)


def _iso(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


@dataclass(frozen=True)
class TimeSplit:
    """The last `test_days` UTC calendar days with data are test, the `valid_days` before valid."""

    train_days: tuple[int, ...]
    valid_days: tuple[int, ...]
    test_days: tuple[int, ...]

    @classmethod
    def plan(cls, days: npt.ArrayLike, *, valid_days: int, test_days: int) -> TimeSplit:
        present = sorted({int(d) for d in np.asarray(days).tolist()})
        if valid_days < 1 or test_days < 1:
            raise ValueError(
                f"valid_days and test_days must be >= 1, got {valid_days}, {test_days}"
            )
        if len(present) < valid_days + test_days + 1:
            shown = ", ".join(_iso(d) for d in present) or "none"
            raise ValueError(
                f"a time split needs at least {valid_days + test_days + 1} days with data "
                f"({valid_days} valid, {test_days} test, 1+ train); the input has "
                f"{len(present)} ({shown}). Use a ratio split instead (split='ratio')."
            )
        test = present[-test_days:]
        valid = present[-(test_days + valid_days) : -test_days]
        return cls(tuple(present[: -(test_days + valid_days)]), tuple(valid), tuple(test))

    def days_by_split(self) -> tuple[tuple[int, ...], ...]:
        """(train, valid, test) days, in SPLITS order."""
        return self.train_days, self.valid_days, self.test_days

    def assign_days(self, days: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int8]:
        split = np.full(days.size, TRAIN, dtype=np.int8)
        split[np.isin(days, self.valid_days)] = VALID
        split[np.isin(days, self.test_days)] = TEST
        return split

    def describe(self) -> dict[str, Any]:
        return {
            name: [_iso(d) for d in days]
            for name, days in zip(
                SPLITS, (self.train_days, self.valid_days, self.test_days), strict=True
            )
        }


class SplitError(ValueError):
    """A split too small, or without both labels, to train on or to judge a model by."""


def check_sizes(
    counts: dict[str, tuple[int, int]], *, min_rows: int, where: dict[str, str] | None = None
) -> None:
    """Refuse degenerate splits before anything is written. counts: split -> (rows, positives);
    where: split -> what it holds (its days), for the message."""
    rows = sum(r for r, _ in counts.values())
    positives = sum(p for _, p in counts.values())
    if positives in (0, rows):
        raise SplitError(
            f"all {rows:,} good rows have label {int(positives > 0)}: a click model needs rows "
            "of both labels (is the label column the right one?)"
        )
    problems = []
    for name, (n, p) in counts.items():
        held = f" ({where[name]})" if where and where.get(name) else ""
        if n < min_rows:
            problems.append(f"the {name} split{held} has {n:,} rows, fewer than {min_rows:,}")
        elif p in (0, n):
            problems.append(f"the {name} split{held} has only label {int(p > 0)} in {n:,} rows")
    if problems:
        raise SplitError(
            "; ".join(problems) + f". Every split needs at least {min_rows:,} rows "
            "(min_split_rows) of both labels: give more data, more valid/test days or a larger "
            "fraction, or lower min_split_rows."
        )
