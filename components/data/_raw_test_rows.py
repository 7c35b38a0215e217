"""The raw rows of the test split, written by prepare_data as Parquet for the promotion gate.

Next week's challenger is fitted with another feature spec than the champion (the spec is refit
every run), so the only fair comparison is on raw rows run through each model's own spec
(``promotion``). The file holds exactly the rows of the prepared test Dataset, in its order (bad
rows excluded): the label as int8, numeric columns as float64 (the value prepare_data parsed),
categorical columns as strings (the text as read), a missing value as null.

Pass 1 of prepare_data meets the rows in the order pass 2 writes the Datasets in:
- ratio split: a row's split is known at once, so test rows go straight to the file;
- time split: the test days are known only after pass 1. Rows of the latest ``test_days`` days
  seen so far are kept (a later test day is always among them: days that arrive later can only
  push a day out of that window); rows of a day that falls out are dropped. Kept rows (the raw
  Arrow columns, so nothing is converted for rows that are dropped later) stay in memory up to a
  budget and go to Arrow IPC files in a temporary directory beyond it. Once the split is planned,
  the kept rows of the test days are parsed again (on worker threads) and written in order.
The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import ipc

from ctrflow.components.data._ordered_pool import in_order
from ctrflow.components.data._schema import FeatureSpec, ParsedTable

__all__ = ["RawTestRows", "raw_rows_schema"]

_ROW_GROUP_ROWS = 1 << 17  # buffer small chunks into row groups of a useful size


def raw_rows_schema(spec: FeatureSpec) -> pa.Schema:
    return pa.schema(
        [pa.field(spec.label, pa.int8())]
        + [pa.field(name, pa.float64()) for name in spec.numeric]
        + [pa.field(name, pa.string()) for name in spec.categorical]
    )


def _clean(
    spec: FeatureSpec, table: pa.Table, parsed: ParsedTable, rows: npt.NDArray[np.bool_]
) -> pa.Table:
    """The output columns of `rows` (good rows) of a raw table and its parsed form."""
    assert parsed.labels is not None
    take = np.flatnonzero(rows)
    selected = pa.array(rows)
    columns: list[pa.Array] = [pa.array(parsed.labels[take].astype(np.int8))]
    n_numeric = len(spec.numeric)
    for j, coded in enumerate(parsed.fields):
        codes = coded.codes[take]
        missing = codes < 0
        if j < n_numeric:
            values = np.append(np.asarray(coded.uniq, dtype=np.float64), np.nan)[codes]
            columns.append(pa.array(values, mask=missing))
        else:
            # filter, not take: take on a chunked dictionary column is ~10x slower
            text = pc.cast(table.column(spec.fields[j]).filter(selected), pa.string())
            columns.append(pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text))
    return pa.Table.from_arrays(
        [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns],
        schema=raw_rows_schema(spec),
    )


@dataclass
class _Kept:
    """Candidate rows of one chunk (time split): their raw columns (or the IPC file holding
    them) and their days."""

    table: pa.Table | None
    path: Path | None
    days: npt.NDArray[np.int32]

    def load(self) -> pa.Table:
        if self.table is not None:
            return self.table
        assert self.path is not None
        with pa.memory_map(str(self.path)) as source:
            return ipc.open_stream(source).read_all()


class RawTestRows:
    """Collects the test split's raw rows during prepare_data's pass 1; see the module docstring.

    ratio split: ``add_test(table, parsed, rows)`` per chunk, then ``finish()``.
    time split: ``add_candidates(table, rows, days)`` per chunk, then ``finish(test_days)``.
    ``close()`` always (it removes the temporary files; the output stays only if finished).
    """

    def __init__(
        self,
        path: Path,
        spec: FeatureSpec,
        *,
        test_days: int | None,
        memory_bytes: int,
        threads: int = 1,
    ) -> None:
        self.path = path
        self.spec = spec
        self.rows = 0
        self._test_days = test_days
        self._memory_bytes = memory_bytes
        self._threads = threads
        self._columns = [spec.label, *spec.fields]
        self._partial = path.with_name(f".{path.name}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            str(self._partial), raw_rows_schema(spec)
        )
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._latest: list[int] = []  # the latest `test_days` days seen, ascending
        self._kept: list[_Kept] = []
        self._held = 0
        self._directory: Path | None = None
        self._spilled = 0
        self._finished = False

    # ---- writing -------------------------------------------------------------------------

    def _write(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= _ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        assert self._writer is not None
        if self._buffered:
            self._writer.write_table(pa.concat_tables(self._buffer))
        self._buffer, self._buffered = [], 0

    def add_test(self, table: pa.Table, parsed: ParsedTable, rows: npt.NDArray[np.bool_]) -> None:
        """Ratio split: `rows` are this chunk's test rows (good rows only)."""
        if self._test_days is not None:
            raise RuntimeError("add_test is for a ratio split")
        if rows.any():
            self._write(_clean(self.spec, table, parsed, rows))

    # ---- time split: candidates ----------------------------------------------------------

    def add_candidates(
        self, table: pa.Table, rows: npt.NDArray[np.bool_], days: npt.NDArray[np.int64]
    ) -> None:
        """Time split: `rows` are this chunk's good rows, `days` every row's day."""
        if self._test_days is None:
            raise RuntimeError("add_candidates is for a time split")
        present = np.unique(days[rows]).tolist()
        latest = sorted(set(self._latest) | {int(d) for d in present})[-self._test_days :]
        if latest != self._latest:
            self._latest = latest
            self._drop_older_than(latest[0])
        if not latest:
            return
        keep = rows & (days >= latest[0])
        if not keep.any():
            return
        raw = table.select(self._columns)
        if not keep.all():
            raw = raw.filter(pa.array(keep))
        entry = _Kept(raw, None, days[keep].astype(np.int32))  # day numbers fit in int32
        size = raw.nbytes
        if self._held + size > self._memory_bytes:
            entry = self._spill(entry)
        else:
            self._held += size
        self._kept.append(entry)

    def _spill(self, entry: _Kept) -> _Kept:
        assert entry.table is not None
        if self._directory is None:
            self._directory = Path(
                tempfile.mkdtemp(prefix=".prepare-test-rows-", dir=self.path.parent)
            )
        self._spilled += 1  # a counter, not len(self._kept): dropped entries shrink the list
        path = self._directory / f"{self._spilled:06d}.arrows"
        with ipc.new_stream(str(path), entry.table.schema) as out:
            out.write_table(entry.table)
        return _Kept(None, path, entry.days)

    def _drop_older_than(self, first: int) -> None:
        """Forget kept rows whose every day is before `first` (no longer a possible test day)."""
        for entry in self._kept:
            if entry.days.size and int(entry.days.max()) < first:
                if entry.table is not None:
                    self._held -= entry.table.nbytes
                if entry.path is not None:
                    entry.path.unlink(missing_ok=True)
                entry.table, entry.path, entry.days = None, None, entry.days[:0]
        self._kept = [e for e in self._kept if e.days.size]

    def _test_tables(self, test_days: tuple[int, ...]) -> Iterator[Callable[[], pa.Table]]:
        for index, entry in enumerate(self._kept):
            rows = np.isin(entry.days, test_days)
            if not rows.any():
                continue

            def job(entry: _Kept = entry, rows: npt.NDArray[np.bool_] = rows) -> pa.Table:
                raw = entry.load()
                if not rows.all():
                    raw = raw.filter(pa.array(rows))
                parsed = self.spec.parse(raw, with_labels=True)
                if parsed.problems.bad.any():  # they were good in pass 1: a bug, not bad input
                    raise RuntimeError(
                        f"kept test rows no longer parse: {parsed.problems.examples[:3]}"
                    )
                return _clean(self.spec, raw, parsed, np.ones(raw.num_rows, dtype=np.bool_))

            self._kept[index] = _Kept(None, None, entry.days)  # the job holds it; free on use
            yield job

    # ---- end -----------------------------------------------------------------------------

    def finish(self, test_days: tuple[int, ...] | None = None) -> None:
        """Write what remains and move the file into place. `test_days`: the planned test days
        of a time split (None for a ratio split)."""
        if (test_days is None) != (self._test_days is None):
            raise RuntimeError("finish() needs the test days exactly for a time split")
        if test_days is not None:
            for table in in_order(self._test_tables(test_days), self._threads):
                self._write(table)
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        self._partial.replace(self.path)
        self._finished = True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._finished:
            self._partial.unlink(missing_ok=True)
        self._kept = []
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
