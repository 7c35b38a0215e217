"""Streaming fit: value counts per field (for the rare threshold) and quantile samples.

Memory stays proportional to the number of distinct values, not rows: each chunk is reduced to
(distinct key, count) pairs before it is kept, and pending pairs are merged once they outgrow the
merged table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ctrflow.components.data import _binning
from ctrflow.components.data._hashing import row_unit_hash

if TYPE_CHECKING:
    from ctrflow.components.data._fitted import FittedFeatureSpec
    from ctrflow.components.data._schema import FeatureSpec, ParsedTable

_QUANTILE_SALT = 0x51


def _reduce(
    keys: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Sum counts of equal keys; keys come back sorted and distinct."""
    if keys.size == 0:
        return keys, counts
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=uniq.size).astype(np.int64)


def key_counts(
    keys: npt.NDArray[np.int64], counts: npt.NDArray[np.int64] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Distinct keys and their summed counts (1 per key by default); a bincount when the key
    range is small, as for numeric bins."""
    weights = np.ones(keys.size, dtype=np.int64) if counts is None else counts.astype(np.int64)
    if keys.size == 0:
        return keys, weights
    low, high = int(keys.min()), int(keys.max())
    if high - low < 4 * keys.size + 1024:
        totals = np.bincount(keys - low, weights=weights, minlength=high - low + 1)
        present = np.flatnonzero(totals)
        return present.astype(np.int64) + low, totals[present].astype(np.int64)
    return _reduce(keys, weights)


class KeyCounter:
    """Counts of int64 keys accumulated over chunks."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self._pending_size = 0

    def add(self, keys: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> None:
        self._pending.append((keys, counts))
        self._pending_size += keys.size
        if self._pending_size > max(1_000_000, self._keys.size):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        self._keys, self._counts = _reduce(keys, counts)
        self._pending, self._pending_size = [], 0

    def result(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Sorted distinct keys and their total counts."""
        self._merge()
        return self._keys, self._counts


class BottomKSample:
    """The `k` values whose row hash is smallest: a uniform, seeded, order-independent sample."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._values = np.empty(0, dtype=np.float64)
        self._hashes = np.empty(0, dtype=np.float64)

    def add(self, values: npt.NDArray[np.float64], hashes: npt.NDArray[np.float64]) -> None:
        values = np.concatenate([self._values, values])
        hashes = np.concatenate([self._hashes, hashes])
        if values.size > self.k:
            keep = np.argpartition(hashes, self.k)[: self.k]
            values, hashes = values[keep], hashes[keep]
        self._values, self._hashes = values, hashes

    @property
    def values(self) -> npt.NDArray[np.float64]:
        return self._values

    def merge(self, other: BottomKSample) -> None:
        self.add(other._values, other._hashes)


def select_vocabulary(
    keys: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], *, threshold: int, limit: int | None
) -> npt.NDArray[np.int64]:
    """Sorted keys seen at least `threshold` times, at most `limit` of the most frequent."""
    frequent = counts >= threshold
    keys, counts = keys[frequent], counts[frequent]
    if limit is not None and keys.size > limit:
        order = np.lexsort((keys, -counts))  # by count descending, ties by key: deterministic
        keys = keys[order[:limit]]
    return np.sort(keys)


class SpecFitter:
    """Fits a FeatureSpec chunk by chunk; `finish()` gives the FittedFeatureSpec."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.rows = 0
        self._quantile = spec.numeric_binning == "quantile"
        n_numeric = len(spec.numeric)
        self._counters = [KeyCounter() for _ in spec.fields]
        self._samples = [BottomKSample(spec.quantile_sample) for _ in range(n_numeric)]

    def update(
        self,
        parsed: ParsedTable,
        *,
        rows: npt.NDArray[np.bool_] | None = None,
        row_ids: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Count the chunk's good rows (and only `rows` when given: the training rows).

        row_ids: stable ids of the chunk's rows (say, line numbers), used to draw the quantile
        sample; by default the running row count, so the sample depends on row order then.
        """
        use = ~parsed.problems.bad if rows is None else rows & ~parsed.problems.bad
        if row_ids is None:
            row_ids = np.arange(self.rows, self.rows + parsed.n_rows, dtype=np.int64)
        n_numeric = len(self.spec.numeric)
        for j, coded in enumerate(parsed.fields):
            codes = coded.codes[use]
            present = codes >= 0
            if j < n_numeric and self._quantile:
                values = np.asarray(coded.uniq, dtype=np.float64)[codes[present]]
                hashes = row_unit_hash(
                    row_ids[use][present], seed=self.spec.hash_seed, salt=_QUANTILE_SALT + j
                )
                self._samples[j].add(values, hashes)
                continue
            # Count per distinct value first, then per key: distinct values are far fewer.
            counts = np.bincount(codes[present], minlength=coded.uniq.size)
            seen = np.flatnonzero(counts)
            if j < n_numeric:
                keys = _binning.log_square_bins(np.asarray(coded.uniq, dtype=np.float64)[seen])
                self._counters[j].add(*key_counts(keys, counts[seen]))
            else:
                keys = np.asarray(coded.uniq, dtype=np.int64)[seen]
                self._counters[j].add(keys, counts[seen].astype(np.int64))
        self.rows += int(use.sum())

    def merge(self, other: SpecFitter) -> None:
        """Add another fitter's counts (say, another day's rows) to this one."""
        for counter, theirs in zip(self._counters, other._counters, strict=True):
            counter.add(*theirs.result())
        for sample, their_sample in zip(self._samples, other._samples, strict=True):
            sample.merge(their_sample)
        self.rows += other.rows

    def finish(self) -> FittedFeatureSpec:
        from ctrflow.components.data._fitted import FittedFeatureSpec

        spec = self.spec
        vocabularies: list[npt.NDArray[np.int64]] = []
        edges: list[npt.NDArray[np.float64] | None] = []
        for j, counter in enumerate(self._counters):
            if j < len(spec.numeric) and self._quantile:
                field_edges = _binning.quantile_edges(self._samples[j].values, spec.quantile_bins)
                edges.append(field_edges)
                vocabularies.append(np.arange(field_edges.size + 1, dtype=np.int64))
                continue
            keys, counts = counter.result()
            vocabularies.append(
                select_vocabulary(
                    keys, counts, threshold=spec.rare_threshold, limit=spec.max_values_per_field
                )
            )
            edges.append(None)
        return FittedFeatureSpec(
            spec=spec, vocabularies=tuple(vocabularies), edges=tuple(edges), rows_fitted=self.rows
        )
