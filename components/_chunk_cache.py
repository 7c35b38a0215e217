"""Parsed rows kept on disk between the fit and the transform pass, so text is parsed once.

Each chunk is one file of consecutive .npy arrays: labels, the split key (ratio split, or UTC
day for a time split), then per field its distinct values and the rows' codes. Only good rows
are kept. Files live in a temporary directory removed by `close()`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ctrflow.components._raw_columns import Coded
from ctrflow.components._schema import ParsedTable


class ChunkCache:
    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix=".prepare-cache-", dir=parent))
        self._files: list[Path] = []

    def put(
        self, parsed: ParsedTable, rows: npt.NDArray[np.bool_], split_key: npt.NDArray[np.integer]
    ) -> None:
        """Keep `rows` of a parsed chunk with their split key."""
        assert parsed.labels is not None
        path = self.directory / f"{len(self._files):06d}.npy"
        with path.open("wb") as out:
            np.save(out, parsed.labels[rows], allow_pickle=False)
            np.save(out, split_key[rows].astype(np.int32), allow_pickle=False)
            for coded in parsed.fields:
                np.save(out, coded.uniq, allow_pickle=False)
                np.save(out, coded.codes[rows], allow_pickle=False)
        self._files.append(path)

    def chunks(
        self, n_fields: int
    ) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.int32], ParsedTable]]:
        """(labels, split keys, parsed rows) per chunk, in the order they were put."""
        from ctrflow.components._raw_columns import Problems

        for path in self._files:
            with path.open("rb") as src:
                labels = np.load(src, allow_pickle=False)
                keys = np.load(src, allow_pickle=False)
                fields = []
                for _ in range(n_fields):
                    uniq = np.load(src, allow_pickle=False)
                    fields.append(Coded(uniq, np.load(src, allow_pickle=False)))
            parsed = ParsedTable(labels.size, fields, labels, None, Problems.none(labels.size))
            yield labels, keys, parsed
            path.unlink()

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
