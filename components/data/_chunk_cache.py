"""Parsed rows kept between the fit and the transform pass, so text is parsed once.

A chunk is its good rows only: labels, the split key (ratio split, or UTC day for a time
split), then per field its distinct values and the rows' int32 codes. Chunks stay in memory up
to `memory_bytes` in total; the rest go to files of consecutive .npy arrays in a temporary
directory, removed by `close()`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ctrflow.components.data._raw_columns import Coded, Problems
from ctrflow.components.data._schema import ParsedTable

_Arrays = list[npt.NDArray[np.generic]]
DEFAULT_MEMORY_BYTES = 1 << 30


class ChunkCache:
    def __init__(self, parent: Path, *, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.parent = parent
        self.memory_bytes = memory_bytes
        self.spilled_bytes = 0
        self._held = 0
        self._directory: Path | None = None
        self._chunks: list[_Arrays | Path] = []

    def put(
        self, parsed: ParsedTable, rows: npt.NDArray[np.bool_], split_key: npt.NDArray[np.integer]
    ) -> None:
        """Keep `rows` of a parsed chunk with their split key."""
        assert parsed.labels is not None
        arrays: _Arrays = [parsed.labels[rows], split_key[rows].astype(np.int32)]
        for coded in parsed.fields:
            arrays += [coded.uniq, coded.codes[rows]]
        size = sum(a.nbytes for a in arrays)
        if self._held + size <= self.memory_bytes:
            self._held += size
            self._chunks.append(arrays)
            return
        if self._directory is None:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._directory = Path(tempfile.mkdtemp(prefix=".prepare-cache-", dir=self.parent))
        path = self._directory / f"{len(self._chunks):06d}.npy"
        with path.open("wb") as out:
            for array in arrays:
                np.save(out, array, allow_pickle=False)
        self.spilled_bytes += size
        self._chunks.append(path)

    def chunks(
        self, n_fields: int
    ) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.int32], ParsedTable]]:
        """(labels, split keys, parsed rows) per chunk, in the order they were put; each chunk
        is released once consumed."""
        for index, entry in enumerate(self._chunks):
            if isinstance(entry, Path):
                with entry.open("rb") as src:
                    arrays = [np.load(src, allow_pickle=False) for _ in range(2 + 2 * n_fields)]
                entry.unlink()
            else:
                arrays = entry
            self._chunks[index] = []
            labels, keys = arrays[0], arrays[1]
            fields = [Coded(arrays[i], arrays[i + 1]) for i in range(2, len(arrays), 2)]
            parsed = ParsedTable(labels.size, fields, labels, None, Problems.none(labels.size))
            yield labels, keys, parsed

    def close(self) -> None:
        self._chunks = []
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
