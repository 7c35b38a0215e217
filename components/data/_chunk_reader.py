"""Stream input files as Arrow tables of a bounded size, each row tagged with its line number.

CSV/TSV: the byte stream is cut at line ends into chunks; each chunk is parsed by Arrow's CSV
reader on a worker thread (serial reader per chunk, so rows with a wrong column count come with
their physical row number), every needed column as a dictionary of strings so that nothing can
fail to convert: numbers are parsed per distinct string later, where a bad one is a bad row.
Parquet: record batches, line number = 1-based row number in the file.
The caller's `parse` (raw table -> ParsedTable) also runs on the worker threads; the main thread
only reads bytes and consumes results in order.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctrflow.components.data._input_files import InputFile
from ctrflow.components.data._ordered_pool import in_order
from ctrflow.components.data._schema import FeatureSpec, ParsedTable, SpecError
from ctrflow.components.data._text import check_wide_encoding, shorten, undecodable_lines

_TEXT = pa.dictionary(pa.int32(), pa.string())
_BOM = b"\xef\xbb\xbf"
# Arrow parses a chunk block by block: a few MB keeps it in cache (one huge block is ~3x slower).
_BLOCK_BYTES = 4 << 20
_MAX_TEXT = 200  # characters of a bad line kept in a message
_PIECE_BYTES = 1 << 18  # compressed input is read in pieces of this size


def _unreadable(file: InputFile, line: int, exc: OSError) -> ValueError:
    """A read error of a file (a compressed stream cut short or corrupt, an I/O error)."""
    return ValueError(
        f"{file.name}: line {line}: cannot read the file from here on ({exc}); "
        "is it cut short or corrupt?"
    )


@dataclass
class RawChunk:
    file: InputFile
    file_index: int
    table: pa.Table  # rows with the right column count; needed columns only
    lines: npt.NDArray[np.int64]  # 1-based line (CSV) or row (Parquet) number of each row
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (line, why) of dropped rows
    n_invalid: int = 0
    progress: float | None = None  # share of the file read so far (None: unknown, compressed)
    parsed: ParsedTable | None = None  # the table through the caller's parse function


def file_columns(file: InputFile, spec: FeatureSpec) -> list[str]:
    """Column names of a file: its header (CSV), its schema (Parquet) or the spec's order."""
    if file.is_parquet:
        try:
            with file.filesystem.open_input_file(file.path) as handle:
                return list(pq.ParquetFile(handle).schema_arrow.names)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValueError(f"{file.name}: cannot read it as Parquet: {exc}") from None
    if not spec.header:
        return list(spec.file_columns())
    try:
        with file.filesystem.open_input_stream(file.path, compression="detect") as stream:
            head = b""
            while b"\n" not in head:
                block = stream.read(1 << 16)
                if not block:
                    break
                head += block
    except OSError as exc:
        raise _unreadable(file, 1, exc) from None
    check_wide_encoding(file.name, head)
    first = head.split(b"\n", 1)[0].removeprefix(_BOM).rstrip(b"\r")
    if not first:
        raise ValueError(f"{file.name}: empty file or empty header line")
    _, undecodable = undecodable_lines(first)
    if undecodable:
        raise ValueError(f"{file.name}: line 1: the header is {undecodable[0][1]}")
    try:
        header = pacsv.read_csv(
            io.BytesIO(first + b"\n"),
            parse_options=pacsv.ParseOptions(delimiter=file.separator(spec.separator)),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{file.name}: line 1: cannot read the header: {exc}") from exc
    return list(header.column_names)


def _check_columns(file: InputFile, names: Sequence[str], needed: Sequence[str]) -> None:
    absent = [c for c in needed if c not in names]
    if absent:
        raise SpecError(
            f"{file.name}: column(s) {', '.join(absent)} missing "
            f"(the file has {len(names)} columns: {', '.join(list(names)[:45])})"
        )


def _parse_csv_chunk(
    head: bytes, body: memoryview, *, names: list[str], needed: list[str], sep: str
) -> tuple[pa.Table, npt.NDArray[np.int64], list[tuple[int, str]], int, str | None]:
    """Parse the lines head + body: (table, 0-based line of each row, invalid rows as
    (0-based line, why), number of lines, Arrow's error if the chunk could not be parsed)."""
    data = b"".join((head, body))  # on the worker thread: the copy is off the main thread
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    # Arrow fails a whole chunk on one byte that is not UTF-8 (and cannot even hand such a line
    # to on_invalid): replace those bytes, then drop their lines as bad rows below.
    data, undecodable = undecodable_lines(data)
    invalid: list[tuple[int, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        number = -1 if row.number is None else row.number - 1
        why = (
            f"expected {row.expected_columns} columns, got {row.actual_columns}: "
            f"{shorten(row.text, _MAX_TEXT)}"
        )
        invalid.append((number, why))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=_BLOCK_BYTES
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=needed,
                column_types=dict.fromkeys(needed, _TEXT),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        return pa.table({}), np.empty(0, np.int64), [], n_lines, str(exc)
    keep = np.ones(n_lines, dtype=np.bool_)
    keep[[number for number, _ in invalid if 0 <= number < n_lines]] = False
    lines = np.flatnonzero(keep).astype(np.int64)
    # Arrow also breaks lines at a lone \r and inside quotes, so its row numbers can run past
    # the chunk's \n-counted lines: then no row can be matched to its line.
    beyond = any(number >= n_lines for number, _ in invalid)
    if beyond or len(lines) != table.num_rows:
        error = (
            f"{table.num_rows + len(invalid)} rows parsed from {n_lines} lines; "
            "line breaks inside quoted values and lone carriage returns are not supported"
        )
        return table, lines, invalid, n_lines, error
    if undecodable:
        table, lines, invalid = _drop_lines(table, lines, invalid, undecodable)
    return table, lines, invalid, n_lines, None


def _drop_lines(
    table: pa.Table,
    lines: npt.NDArray[np.int64],
    invalid: list[tuple[int, str]],
    bad: list[tuple[int, str]],
) -> tuple[pa.Table, npt.NDArray[np.int64], list[tuple[int, str]]]:
    """Move the rows of the `bad` lines (0-based, with why) from the table to `invalid`; a
    line already invalid (wrong column count) stays one bad row."""
    already = {number for number, _ in invalid}
    invalid = invalid + [(number, why) for number, why in bad if number not in already]
    keep = ~np.isin(lines, [number for number, _ in bad])
    return table.filter(pa.array(keep)), lines[keep], invalid


@dataclass
class _Pending:
    """A chunk parsed with line numbers relative to the chunk; the reader adds the offset."""

    chunk: RawChunk
    n_lines: int
    error: str | None
    unreadable: OSError | None = None  # the file could not be read on after the chunks before


def _read_block(stream: pa.NativeFile, size: int, *, pieces: bool) -> tuple[bytes, OSError | None]:
    """Up to `size` bytes and the read error that stopped it early, if any. A compressed stream
    is read in pieces, so what came before an error (a file cut short) is still parsed."""
    parts: list[bytes] = []
    total = 0
    while total < size:
        try:
            part: bytes = stream.read(min(_PIECE_BYTES, size - total) if pieces else size)
        except OSError as exc:
            return b"".join(parts), exc
        if not part:
            break
        parts.append(part)
        total += len(part)
        if not pieces:
            break
    return (parts[0] if len(parts) == 1 else b"".join(parts)), None


def _read(stream: pa.NativeFile, size: int, file: InputFile) -> bytes:
    try:
        data: bytes = stream.read(size)
    except OSError as exc:
        raise _unreadable(file, 1, exc) from None
    return data


def _read_failure(file: InputFile, index: int, exc: OSError) -> Callable[[], _Pending]:
    empty = RawChunk(file, index, pa.table({}), np.empty(0, np.int64))
    return lambda: _Pending(empty, 0, None, exc)


def _csv_jobs(
    file: InputFile,
    index: int,
    spec: FeatureSpec,
    needed: list[str],
    chunk_rows: int,
    parse: Callable[[pa.Table], ParsedTable],
) -> Iterator[Callable[[], _Pending]]:
    names = file_columns(file, spec)
    _check_columns(file, names, needed)
    sep = file.separator(spec.separator)
    with file.filesystem.open_input_stream(file.path, compression="detect") as stream:
        try:
            rest = stream.read(1 << 16)
        except OSError as exc:
            raise _unreadable(file, 1, exc) from None
        check_wide_encoding(file.name, rest)
        consumed = 0
        if rest.startswith(_BOM):
            rest = rest[len(_BOM) :]
        if spec.header:
            cut = rest.find(b"\n")
            while cut < 0 and (more := _read(stream, 1 << 16, file)):
                rest += more
                cut = rest.find(b"\n")
            consumed = cut + 1 if cut >= 0 else len(rest)
            rest = rest[cut + 1 :] if cut >= 0 else b""
        # Bytes per chunk from the average line length of the first block.
        sample_lines = max(rest.count(b"\n"), 1)
        chunk_bytes = max(1 << 16, chunk_rows * max(len(rest) // sample_lines, 1))
        while True:
            block, failure = _read_block(stream, chunk_bytes, pieces=file.is_compressed)
            eof = not block
            cut = block.rfind(b"\n") + 1
            if failure is not None:
                # Whole lines read before it are parsed first; the failure names the next line.
                if cut:
                    body = memoryview(block)[:cut]
                    yield _chunk_job(file, index, rest, body, None, names, needed, sep, parse)
                yield _read_failure(file, index, failure)
                return
            if eof:
                head, body, rest = rest, memoryview(b""), b""
                if not head:
                    return
            elif cut == 0:  # no line end in this block: a very long line, read on
                rest += block
                continue
            else:
                head, body, rest = rest, memoryview(block)[:cut], block[cut:]
            consumed += len(head) + len(body)
            progress = None if file.is_compressed else min(consumed / max(file.size, 1), 1.0)
            yield _chunk_job(file, index, head, body, progress, names, needed, sep, parse)
            if eof:
                return


def _chunk_job(
    file: InputFile,
    index: int,
    head: bytes,
    body: memoryview,
    progress: float | None,
    names: list[str],
    needed: list[str],
    sep: str,
    parse: Callable[[pa.Table], ParsedTable],
) -> Callable[[], _Pending]:
    def job() -> _Pending:
        table, lines, invalid, n_lines, error = _parse_csv_chunk(
            head, body, names=names, needed=needed, sep=sep
        )
        chunk = RawChunk(file, index, table, lines, invalid, len(invalid), progress)
        if error is None:
            chunk.parsed = parse(table)
        return _Pending(chunk, n_lines, error)

    return job


def _csv_chunks(
    file: InputFile,
    index: int,
    spec: FeatureSpec,
    needed: list[str],
    chunk_rows: int,
    parse: Callable[[pa.Table], ParsedTable],
    threads: int,
) -> Generator[RawChunk, None, None]:
    """Parsed chunks in file order, with 1-based line numbers (the header is line 1)."""
    first = 2 if spec.header else 1
    jobs = _csv_jobs(file, index, spec, needed, chunk_rows, parse)
    with closing(in_order(jobs, threads)) as results:
        yield from _numbered(file, results, first)


def _numbered(file: InputFile, results: Iterator[_Pending], first: int) -> Iterator[RawChunk]:
    for pending in results:
        chunk = pending.chunk
        if pending.unreadable is not None:
            raise _unreadable(file, first, pending.unreadable)
        if pending.error is not None:
            last = first + pending.n_lines - 1
            raise ValueError(f"{file.name}: lines {first}-{last}: {pending.error}")
        chunk.lines += first
        chunk.invalid = [(line + first if line >= 0 else -1, why) for line, why in chunk.invalid]
        first += pending.n_lines
        yield chunk


def _parquet_batches(
    file: InputFile, reader: pq.ParquetFile, chunk_rows: int, needed: list[str]
) -> Iterator[pa.RecordBatch]:
    """The record batches, a read error naming the file and the first row not read."""
    batches = reader.iter_batches(batch_size=chunk_rows, columns=needed)
    first = 1
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValueError(
                f"{file.name}: row {first}: cannot read the Parquet file from here on ({exc})"
            ) from None
        first += batch.num_rows
        yield batch


def _parquet_jobs(
    file: InputFile,
    index: int,
    needed: list[str],
    chunk_rows: int,
    spec: FeatureSpec,
    parse: Callable[[pa.Table], ParsedTable],
) -> Iterator[Callable[[], RawChunk]]:
    _check_columns(file, file_columns(file, spec), needed)
    with file.filesystem.open_input_file(file.path) as handle:
        reader = pq.ParquetFile(handle)
        total = max(reader.metadata.num_rows, 1)
        first = 1
        for batch in _parquet_batches(file, reader, chunk_rows, needed):
            n = batch.num_rows
            table = pa.Table.from_batches([batch])
            lines = np.arange(first, first + n, dtype=np.int64)
            first += n
            chunk = RawChunk(file, index, table, lines, progress=(first - 1) / total)

            def job(chunk: RawChunk = chunk) -> RawChunk:
                chunk.parsed = parse(chunk.table)
                return chunk

            yield job


def read_chunks(
    files: Sequence[InputFile],
    *,
    spec: FeatureSpec,
    needed: list[str],
    chunk_rows: int,
    parse: Callable[[pa.Table], ParsedTable],
    threads: int = 2,
) -> Generator[RawChunk, None, None]:
    """All files' rows in order, `chunk_rows` rows (about, for CSV) at a time, each chunk's
    table already passed through `parse` on a worker thread."""
    for index, file in enumerate(files):
        if file.is_parquet:
            jobs = _parquet_jobs(file, index, needed, chunk_rows, spec, parse)
            with closing(in_order(jobs, threads)) as chunks:
                yield from chunks
        else:
            with closing(_csv_chunks(file, index, spec, needed, chunk_rows, parse, threads)) as c:
                yield from c
