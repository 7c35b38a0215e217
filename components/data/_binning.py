"""Numeric value -> integer bin key.

Default: the Criteo winners' rule (Juan et al., "3 Idiots" solution): `floor(log(v)**2)` for v > 2,
and small values kept as their own bins. Here the three value ranges get disjoint key ranges, so
3.0 (log^2 = 1.2) does not share a bin with 1.0 as it does in the original script, and negative
values get the mirrored rule instead of all collapsing into the small-value bins.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SMALL = 2.0  # |v| <= SMALL: bin = floor(v), i.e. -2, -1, 0, 1, 2
POSITIVE_BASE = 1_000  # v > SMALL: key = 1000 + floor(log(v)^2)
NEGATIVE_BASE = -1_000  # v < -SMALL: key = -1000 - floor(log(-v)^2)


def log_square_bins(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Criteo rule for finite values (NaN in -> key 0; callers mask missing values first)."""
    v = np.nan_to_num(values, nan=0.0)
    keys = np.floor(np.clip(v, -SMALL, SMALL))
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.floor(np.log(np.maximum(np.abs(v), SMALL)) ** 2)
    keys = np.where(v > SMALL, POSITIVE_BASE + magnitude, keys)
    keys = np.where(v < -SMALL, NEGATIVE_BASE - magnitude, keys)
    return keys.astype(np.int64)


def quantile_edges(sample: npt.NDArray[np.float64], n_bins: int) -> npt.NDArray[np.float64]:
    """Distinct inner edges of `n_bins` equal-frequency bins of a sample (fewer on ties)."""
    if sample.size == 0:
        return np.empty(0, dtype=np.float64)
    inner = np.quantile(sample, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], method="lower")
    return np.unique(inner)


def quantile_bins(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Bin index in [0, len(edges)]: the number of edges <= v."""
    return np.searchsorted(edges, values, side="right").astype(np.int64)
