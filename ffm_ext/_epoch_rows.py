"""The order in which each training epoch visits the rows.

No epoch copies the dataset: the engine copies a few hundred rows of the order at a time into
a small per-thread buffer and trains on that (ffm_kernels.c, STAGE_ROWS), which is as fast as
training over a full shuffled copy and gives identical results, at no memory cost.

A dataset larger than the memory budget (half of physical memory) is a memory-mapped file that
does not stay in the page cache: a uniform shuffle would read a random page from disk for
every row. Its epochs instead visit blocks of BLOCK_ROWS consecutive rows in shuffled order,
and the rows of each block in shuffled order, so each epoch reads the file in large pieces,
like LIBFFM's --on-disk (which shuffles nothing within its blocks).
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from ffm_ext import _core
from ffm_ext._dataset import Dataset

__all__ = ["BLOCK_ROWS", "EpochRows", "block_order"]

#: Rows per block when the dataset is beyond the memory budget (about 4 MB of tokens at 39
#: tokens per row).
BLOCK_ROWS = 8192

Arrays = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
]


def memory_budget_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 4 << 30


def block_order(n_rows: int, seed: int, block_rows: int = BLOCK_ROWS) -> npt.NDArray[np.int64]:
    """A permutation of range(n_rows) that takes whole blocks of `block_rows` rows in shuffled
    order, each block's rows in shuffled order (the last block may be short)."""
    n_blocks = -(-n_rows // block_rows)
    blocks = _core.permutation(n_blocks, seed)
    parts = []
    for i, block in enumerate(blocks.tolist()):
        start = block * block_rows
        size = min(block_rows, n_rows - start)
        parts.append(start + _core.permutation(size, seed * 1_000_003 + i + 1))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


class EpochRows:
    """Per-epoch (arrays, order) for Engine.train_epoch; the arrays are always the dataset's."""

    def __init__(self, data: Dataset, budget_bytes: int | None = None) -> None:
        self._data = data
        self.arrays: Arrays = (data.indptr, data.fields, data.features, data.values, data.labels)
        size = sum(a.nbytes for a in self.arrays)
        #: True when the dataset is beyond the memory budget and epochs go block by block.
        self.by_blocks = size > (memory_budget_bytes() if budget_bytes is None else budget_bytes)
        self._identity: npt.NDArray[np.int64] | None = None

    def epoch(self, seed: int | None) -> tuple[Arrays, npt.NDArray[np.int64]]:
        """The epoch's rows and the order to visit them in (seed None: dataset order)."""
        n_rows = self._data.n_rows
        if seed is None:
            if self._identity is None:
                self._identity = np.arange(n_rows, dtype=np.int64)
            return self.arrays, self._identity
        if self.by_blocks:
            return self.arrays, block_order(n_rows, seed)
        return self.arrays, _core.permutation(n_rows, seed)
