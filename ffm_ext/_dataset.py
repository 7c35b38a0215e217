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
from ffm_ext._errors import FFMDatasetError, shown
from ffm_ext._threads import scan_threads

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
        largest = self._check_content() if validate else (None, None)
        self.n_fields = self._size("n_fields", n_fields, self.fields, largest[0], "fields")
        self.n_features = self._size(
            "n_features", n_features, self.features, largest[1], "features"
        )

    # -- checks -----------------------------------------------------------------------------
    def _check_structure(self) -> None:
        """O(n_rows) checks: sizes agree and indptr delimits contiguous rows."""
        if len(self.indptr) < 1:
            raise FFMDatasetError(
                "indptr must have n_rows + 1 entries (at least [0])", array="indptr"
            )
        nnz = len(self.fields)
        if len(self.features) != nnz or len(self.values) != nnz:
            raise FFMDatasetError(
                f"fields, features and values must have equal lengths, got "
                f"{len(self.fields)}, {len(self.features)}, {len(self.values)}",
                array="features" if len(self.features) != nnz else "values",
            )
        if self.indptr[0] != 0 or self.indptr[-1] != nnz:
            raise FFMDatasetError(
                f"indptr must start at 0 and end at nnz={nnz}, "
                f"got {self.indptr[0]}..{self.indptr[-1]}",
                array="indptr",
                index=0 if self.indptr[0] != 0 else len(self.indptr) - 1,
            )
        if len(self.labels) != len(self.indptr) - 1:
            raise FFMDatasetError(
                f"labels has {len(self.labels)} entries for {len(self.indptr) - 1} rows",
                array="labels",
            )
        steps = np.diff(self.indptr)
        if steps.size and steps.min() < 0:
            row = int(np.argmax(steps < 0))
            raise FFMDatasetError(
                f"indptr decreases at row {row}: indptr[{row + 1}] = {self.indptr[row + 1]} "
                f"< indptr[{row}] = {self.indptr[row]} (rows must be contiguous)",
                array="indptr",
                index=row + 1,
            )

    def _check_content(self) -> tuple[int, int]:
        """O(nnz) checks: ids non-negative, values finite, labels 0 or 1. One read of the token
        arrays finds whether any is bad (a memory-mapped dataset pays for every extra pass);
        only then is the first bad one looked for. Returns the largest field and feature id
        (-1 without tokens)."""
        if not self.nnz:
            field_max = feature_max = -1
        else:
            field_min, field_max, feature_min, feature_max, nonfinite = _core.scan_tokens(
                self.fields, self.features, self.values, scan_threads()
            )
            for name, smallest in (("fields", field_min), ("features", feature_min)):
                if smallest < 0:
                    arr = getattr(self, name)
                    pos = int(np.argmax(arr < 0))
                    raise FFMDatasetError(
                        f"{name}[{pos}] = {arr[pos]} is negative", array=name, index=pos
                    )
            if nonfinite:
                pos = int(np.argmax(~np.isfinite(self.values)))
                raise FFMDatasetError(
                    f"values[{pos}] = {self.values[pos]} is not finite", array="values", index=pos
                )
        bad = (self.labels != 0) & (self.labels != 1)  # NaN compares unequal: caught too
        if bad.any():
            pos = int(np.argmax(bad))
            raise FFMDatasetError(
                f"labels[{pos}] = {self.labels[pos]} is not 0 or 1 (a dataset stores clicks as "
                f"1 and non-clicks as 0; LIBFFM text's -1/+1 become 0/1 when read)",
                array="labels",
                index=pos,
            )
        return field_max, feature_max

    @staticmethod
    def _size(
        name: str, given: int | None, ids: npt.NDArray[np.int32], largest: int | None, array: str
    ) -> int:
        """`given`, checked against the largest id when the content was validated; without
        one, one more than the largest id. `largest` None: not scanned."""
        if given is None:
            if largest is None:
                largest = int(ids.max()) if ids.size else -1
            return largest + 1
        if given < 0:
            raise FFMDatasetError(f"{name} must be >= 0, got {given}", array=array)
        if largest is not None and largest >= given:
            pos = int(np.argmax(ids >= given))
            raise FFMDatasetError(
                f"{array}[{pos}] = {ids[pos]} is not below the declared {name}={given}",
                array=array,
                index=pos,
            )
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
        cls, path: str | os.PathLike[str], *, mmap: bool = True, validate: bool = True
    ) -> Dataset:
        """Open a saved dataset; arrays are memory-mapped read-only unless mmap=False.

        Every array is checked as on construction (one read of the token arrays, shared among
        a few threads on a large dataset, small next to an epoch); a bad one raises
        FFMDatasetError naming the file and the index.
        `validate=False` is the explicit opt-out: only the O(1) and O(n_rows) checks run.
        """
        src = pathlib.Path(path)
        meta_path = src / "meta.json"
        meta = _read_meta(meta_path)
        arrays = {
            name: _load_array(src / f"{name}.npy", dtype, mmap) for name, dtype in _ARRAYS.items()
        }
        for key, actual in (("n_rows", len(arrays["indptr"]) - 1), ("nnz", len(arrays["fields"]))):
            if meta.get(key) != actual:
                raise FFMDatasetError(
                    f"{key}={shown(meta.get(key))} but the arrays hold {actual}",
                    array="meta",
                    path=str(meta_path),
                )
        try:
            return cls(
                arrays["indptr"],
                arrays["fields"],
                arrays["features"],
                arrays["values"],
                arrays["labels"],
                n_features=meta["n_features"],
                n_fields=meta["n_fields"],
                validate=validate,
            )
        except FFMDatasetError as exc:
            raise exc.in_file(str(src / f"{exc.array}.npy")) from None


def _read_meta(meta_path: pathlib.Path) -> dict[str, Any]:
    """meta.json of a dataset directory, with its format and sizes checked."""
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path}: not a dataset directory (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FFMDatasetError(f"invalid JSON: {exc}", array="meta", path=str(meta_path)) from None
    if not isinstance(meta, dict):
        raise FFMDatasetError(
            f"expected a JSON object, got {type(meta).__name__}", array="meta", path=str(meta_path)
        )
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise FFMDatasetError(
            f"unsupported dataset format {shown(meta.get('format'))} "
            f"version {shown(meta.get('format_version'))} "
            f"(expected {FORMAT_NAME!r} {FORMAT_VERSION})",
            array="meta",
            path=str(meta_path),
        )
    for key in ("n_rows", "nnz", "n_features", "n_fields"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FFMDatasetError(
                f"{key} must be an integer >= 0, got {shown(value)}",
                array="meta",
                path=str(meta_path),
            )
    return meta


def _load_array(file: pathlib.Path, dtype: type[np.generic], mmap: bool) -> npt.NDArray[Any]:
    """One .npy array of the dataset; a truncated or foreign file is an error naming it."""
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # e.g. numpy's "mmap length is greater than file size"
        raise FFMDatasetError(_npy_problem(file, exc), array=file.stem, path=str(file)) from None
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
        found = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise FFMDatasetError(
            f"expected a 1-D {np.dtype(dtype).name} array, got {found}",
            array=file.stem,
            path=str(file),
        )
    return arr


def _npy_problem(file: pathlib.Path, exc: BaseException) -> str:
    """Why numpy could not open `file`, in the user's terms (truncation: bytes declared vs held)."""
    try:
        with file.open("rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
            held = os.fstat(fh.fileno()).st_size - fh.tell()
    except (ValueError, EOFError, OSError) as header_exc:
        return f"not a readable .npy array ({header_exc})"
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if held < needed:
        return (
            f"truncated: its header declares {dtype} {shape} ({needed:,} bytes of data), "
            f"the file holds {held:,}"
        )
    return f"not a readable .npy array ({exc})"


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
