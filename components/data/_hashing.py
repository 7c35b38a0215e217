"""Stable 64-bit hashes: the same input gives the same hash in every process, machine and version.

Strings: SipHash-2-4 of the UTF-8 bytes, keyed with the 16 ASCII hex digits of the seed, then the
splitmix64 finalizer; this is exactly what `pandas.util.hash_array(..., categorize=False)` computes
in C. The definition is pinned by a pure-Python reference in the tests, so a pandas change that
altered it would fail there rather than silently re-map every served model's features.
Python's `hash()` is salted per process and is never used.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

MASK64 = (1 << 64) - 1


def hash_key(seed: int) -> str:
    """The 16-byte SipHash key for a seed: its low 64 bits as 16 lowercase hex digits."""
    return f"{seed & MASK64:016x}"


def hash_strings(values: npt.ArrayLike, seed: int) -> npt.NDArray[np.int64]:
    """Stable keyed 64-bit hashes of strings (no nulls), as int64 so they sort as numbers."""
    array = np.asarray(values, dtype=object)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    hashed = pd.util.hash_array(array, encoding="utf8", hash_key=hash_key(seed), categorize=False)
    return np.asarray(hashed, dtype=np.uint64).view(np.int64)


def mix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The splitmix64 finalizer, vectorized: a bijective scramble of 64-bit integers."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def row_unit_hash(
    line_numbers: npt.NDArray[np.int64], *, seed: int, salt: int = 0
) -> npt.NDArray[np.float64]:
    """A uniform number in [0, 1) per (line number, seed, salt), used for stable ratio splits."""
    base = np.uint64(((seed & MASK64) * 0x9E3779B97F4A7C15 + (salt & MASK64)) & MASK64)
    mixed = mix64(mix64(line_numbers.astype(np.uint64) ^ base))
    # The top 53 bits give an exactly representable double in [0, 1).
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
