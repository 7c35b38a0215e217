"""Dataset: rows of (field, feature, value) tokens with 0/1 labels, as CSR arrays.

On disk a dataset is a directory of .npy arrays plus meta.json (docs/architecture.md,
Contracts); loading memory-maps the arrays, so a 10 GB dataset opens instantly and pages in as
training reads it.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ffm_ext import _core

if TYPE_CHECKING:
    import scipy.sparse

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Dataset", "read_libffm"]

FORMAT_NAME = "ctrflow-ffm-csr"
FORMAT_VERSION = 1
_ARRAYS: dict[str, type[np.generic]] = {
    "indptr": np.int64,
    "fields": np.int32,
    "features": np.int32,
    "values": np.float32,
    "labels": np.float32,
}


def _as_array(name: str, data: Any, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A 1-D C-contiguous array of `dtype`: the input itself when it already is one."""
    arr = np.asarray(data)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype != dtype:
        if arr.size and not np.can_cast(arr.dtype, dtype, casting="same_kind"):
            raise TypeError(f"{name} must hold {np.dtype(dtype).name} values, got {arr.dtype}")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


class Dataset:
    """CSR rows for FFM: `indptr` (n_rows+1, int64) delimits each row's tokens in `fields`
    (int32), `features` (int32) and `values` (float32); `labels` (float32) are 0 or 1.

    Arrays of the right dtype are used as they are (no copy). `n_features` and `n_fields` default
    to one more than the largest id present; pass them to reserve room (e.g. a hash space).
    Construction validates structure and content (`validate=False` skips the O(nnz) checks and
    keeps only the O(1) ones; the C kernels never read out of bounds either way).
    """

    __slots__ = ("features", "fields", "indptr", "labels", "n_features", "n_fields", "values")

    def __init__(
        self,
        indptr: npt.ArrayLike,
        fields: npt.ArrayLike,
        features: npt.ArrayLike,
        values: npt.ArrayLike,
        labels: npt.ArrayLike | None = None,
        *,
        n_features: int | None = None,
        n_fields: int | None = None,
        validate: bool = True,
    ) -> None:
        self.indptr = _as_array("indptr", indptr, np.int64)
        self.fields = _as_array("fields", fields, np.int32)
        self.features = _as_array("features", features, np.int32)
        self.values = _as_array("values", values, np.float32)
        n_rows = len(self.indptr) - 1
        self.labels = (
            np.zeros(max(n_rows, 0), dtype=np.float32)
            if labels is None
            else _as_array("labels", labels, np.float32)
        )
        self._check_structure()
        if validate:
            self._check_content()
        self.n_fields = self._size("n_fields", n_fields, self.fields, validate)
        self.n_features = self._size("n_features", n_features, self.features, validate)

    # -- checks -----------------------------------------------------------------------------
    def _check_structure(self) -> None:
        if len(self.indptr) < 1:
            raise ValueError("indptr must have n_rows + 1 entries (at least [0])")
        nnz = len(self.fields)
        if len(self.features) != nnz or len(self.values) != nnz:
            raise ValueError(
                f"fields, features and values must have equal lengths, got "
                f"{len(self.fields)}, {len(self.features)}, {len(self.values)}"
            )
        if self.indptr[0] != 0 or self.indptr[-1] != nnz:
            raise ValueError(
                f"indptr must start at 0 and end at nnz={nnz}, "
                f"got {self.indptr[0]}..{self.indptr[-1]}"
            )
        if len(self.labels) != len(self.indptr) - 1:
            raise ValueError(
                f"labels has {len(self.labels)} entries for {len(self.indptr) - 1} rows"
            )
        steps = np.diff(self.indptr)
        if steps.size and steps.min() < 0:
            row = int(np.argmax(steps < 0))
            raise ValueError(f"indptr decreases at row {row}: rows must be contiguous")

    def _check_content(self) -> None:
        for name in ("fields", "features"):
            arr = getattr(self, name)
            if arr.size and arr.min() < 0:
                pos = int(np.argmax(arr < 0))
                raise ValueError(f"{name}[{pos}] = {arr[pos]} is negative")
        if self.values.size and not np.isfinite(self.values).all():
            pos = int(np.argmax(~np.isfinite(self.values)))
            raise ValueError(f"values[{pos}] = {self.values[pos]} is not finite")
        bad = (self.labels != 0) & (self.labels != 1)
        if bad.any():
            pos = int(np.argmax(bad))
            raise ValueError(f"labels[{pos}] = {self.labels[pos]} is not 0 or 1")

    @staticmethod
    def _size(name: str, given: int | None, ids: npt.NDArray[np.int32], scan: bool) -> int:
        if given is None:
            return int(ids.max()) + 1 if ids.size else 0
        if given < 0:
            raise ValueError(f"{name} must be >= 0, got {given}")
        if scan and ids.size and int(ids.max()) >= given:
            raise ValueError(f"{name}={given} but the data holds id {int(ids.max())}")
        return int(given)

    # -- views ------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.fields)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return (
            f"Dataset(n_rows={self.n_rows}, nnz={self.nnz}, n_fields={self.n_fields}, "
            f"n_features={self.n_features})"
        )

    def take(self, rows: npt.ArrayLike) -> Dataset:
        """The given rows (in that order) as a new dataset (copies)."""
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise IndexError(f"row index out of range 0..{self.n_rows - 1}")
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        lengths = ends - starts
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # Positions of every kept token, without a Python loop over rows.
        pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return Dataset(
            indptr,
            self.fields[pos],
            self.features[pos],
            self.values[pos],
            self.labels[idx],
            n_features=self.n_features,
            n_fields=self.n_fields,
            validate=False,
        )

    def to_csr_matrix(self) -> scipy.sparse.csr_matrix:
        """(n_rows, n_features) sparse matrix of the values (fields dropped), e.g. for XGBoost."""
        import scipy.sparse

        return scipy.sparse.csr_matrix(
            (self.values, self.features, self.indptr), shape=(self.n_rows, self.n_features)
        )

    # -- storage ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the directory format: one .npy per array plus meta.json."""
        out = pathlib.Path(path)
        out.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(out / f"{name}.npy", getattr(self, name), allow_pickle=False)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "nnz": self.nnz,
            "n_features": self.n_features,
            "n_fields": self.n_fields,
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = True, validate: bool = False
    ) -> Dataset:
        """Open a saved dataset; arrays are memory-mapped read-only unless mmap=False."""
        src = pathlib.Path(path)
        meta_path = src / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{meta_path}: not a dataset directory (no meta.json)"
            ) from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_path}: invalid JSON: {exc}") from None
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: unsupported dataset format {meta.get('format')!r} "
                f"version {meta.get('format_version')!r} "
                f"(expected {FORMAT_NAME!r} {FORMAT_VERSION})"
            )
        arrays = {}
        for name, dtype in _ARRAYS.items():
            file = src / f"{name}.npy"
            arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
            if arr.dtype != dtype or arr.ndim != 1:
                raise ValueError(
                    f"{file}: expected 1-D {np.dtype(dtype).name}, got {arr.dtype} {arr.shape}"
                )
            arrays[name] = arr
        for key, actual in (("n_rows", len(arrays["indptr"]) - 1), ("nnz", len(arrays["fields"]))):
            if meta.get(key) != actual:
                raise ValueError(f"{meta_path}: {key}={meta.get(key)} but the arrays hold {actual}")
        return cls(
            arrays["indptr"],
            arrays["fields"],
            arrays["features"],
            arrays["values"],
            arrays["labels"],
            n_features=int(meta["n_features"]),
            n_fields=int(meta["n_fields"]),
            validate=validate,
        )


def read_libffm(
    path: str | os.PathLike[str],
    *,
    skip_empty_lines: bool = False,
    n_features: int | None = None,
    n_fields: int | None = None,
) -> Dataset:
    """Parse a LIBFFM text file (`label field:feature:value ...` per line) in C, GIL released.

    Every token is validated; the first bad one raises FFMFormatError naming the file, line,
    column and token. Labels may be 0/1 or -1/+1 (stored as 0/1).
    """
    indptr, fields, features, values, labels, max_field, max_feature = _core.parse_libffm_file(
        os.fspath(path), skip_empty_lines
    )
    for name, given, largest in (
        ("n_fields", n_fields, max_field),
        ("n_features", n_features, max_feature),
    ):
        if given is not None and largest >= given:
            raise ValueError(f"{os.fspath(path)}: {name}={given} but the file holds id {largest}")
    return Dataset(
        indptr,
        fields,
        features,
        values,
        labels,
        n_features=max_feature + 1 if n_features is None else n_features,
        n_fields=max_field + 1 if n_fields is None else n_fields,
        validate=False,  # the parser already checked every token
    )
