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
