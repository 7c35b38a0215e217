"""Write an ffm_ext Dataset directory chunk by chunk, never holding the whole split in memory.

Every row has one feature per field (value 1), so only `features` and `labels` depend on the
data: they are appended to .npy files whose header is rewritten with the final length at the end
(NumPy pads 1-D headers so the length fits in place). `indptr`, `fields` and `values` follow from
the row count and are written in blocks. meta.json follows ffm_ext's format, and the result is
opened with `ffm_ext.Dataset.load` before it is reported as written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

_BLOCK_ROWS = 1 << 20


class _GrowingNpy:
    """A 1-D .npy file opened for appending."""

    def __init__(self, path: Path, dtype: type[np.generic]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.length = 0
        self._file: IO[bytes] = path.open("wb")
        self._write_header()
        self._data_offset = self._file.tell()

    def _write_header(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.length,),
        }
        np.lib.format.write_array_header_1_0(self._file, header)

    def append(self, values: npt.NDArray[np.generic]) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        self._file.write(data.data)
        self.length += data.size

    def close(self) -> None:
        self._file.seek(0)
        self._write_header()
        if self._file.tell() != self._data_offset:  # NumPy reserves room; guard all the same
            raise RuntimeError(f"{self.path}: the .npy header changed size; file is corrupt")
        self._file.close()


def _write_repeated(path: Path, block: npt.NDArray[np.generic], length: int) -> None:
    """A .npy of `length` entries repeating `block` (whose size is a multiple of the period)."""
    out = _GrowingNpy(path, block.dtype.type)
    full, rest = divmod(length, block.size)
    for _ in range(full):
        out.append(block)
    out.append(block[:rest])
    out.close()


class DatasetWriter:
    """Rows of (n_fields feature ids, label) appended in order; `close()` finishes the directory."""

    def __init__(self, directory: Path, *, n_fields: int, n_features: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.n_fields = n_fields
        self.n_features = n_features
        self.rows = 0
        self.positives = 0
        self._features = _GrowingNpy(directory / "features.npy", np.int32)
        self._labels = _GrowingNpy(directory / "labels.npy", np.float32)

    def append(self, features: npt.NDArray[np.int32], labels: npt.NDArray[np.float32]) -> None:
        if features.shape != (labels.size, self.n_fields):
            raise ValueError(f"features {features.shape} do not match {labels.size} labels")
        self._features.append(features)
        self._labels.append(labels)
        self.rows += labels.size
        self.positives += int(np.count_nonzero(labels))

    def close(self) -> None:
        import ffm_ext
        from ffm_ext import FORMAT_NAME, FORMAT_VERSION

        self._features.close()
        self._labels.close()
        m, n = self.n_fields, self.rows
        indptr = _GrowingNpy(self.directory / "indptr.npy", np.int64)
        for start in range(0, n + 1, _BLOCK_ROWS):
            indptr.append(np.arange(start, min(start + _BLOCK_ROWS, n + 1), dtype=np.int64) * m)
        indptr.close()
        block_rows = max(1, _BLOCK_ROWS // m)
        fields = np.tile(np.arange(m, dtype=np.int32), block_rows)
        _write_repeated(self.directory / "fields.npy", fields, n * m)
        _write_repeated(self.directory / "values.npy", np.ones(fields.size, np.float32), n * m)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "n_rows": n,
            "nnz": n * m,
            "n_features": self.n_features,
            "n_fields": m,
        }
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        ffm_ext.Dataset.load(self.directory)  # the contract check: raises if anything is off
