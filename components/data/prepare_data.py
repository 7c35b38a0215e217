"""Step `prepare_data`: raw impression logs -> train/valid/test FFM datasets + fitted feature spec.

Two streaming passes, so any input size works with bounded memory:
1. parse and fit: parse every chunk, count bad rows, count feature values of training rows (by
   day when splitting by time: which days are train is known only at the end of the pass), and
   keep the parsed good rows in a compact on-disk cache (distinct values + int32 codes);
2. transform: map the cached rows to features with the fitted spec, append them to their split.
Bad rows (wrong column count, label not 0/1, unparsable number or time, a timestamp outside the
plausible window, a byte that is not UTF-8) are dropped, counted and reported with file and line;
the step fails after pass 1 (or earlier, once the count exceeds the limit for any plausible input
size) when they exceed `max_bad_fraction` of the input rows. It also fails after pass 1 when a
split would have fewer than `min_split_rows` rows or one label only. Outputs are written under
temporary names and moved into place at the end (`_staging`): a failure leaves none behind.

Output (output_dir): train/, valid/, test/ (ffm_ext Dataset directories), feature_spec.json
(the FittedFeatureSpec), stats.json (the PrepareResult), test_raw.parquet (the test Dataset's
rows as raw columns, same rows in the same order: what the promotion gate scores a champion with
another feature spec on; see `_raw_test_rows`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.fs as pafs

from ctrflow.components.data import _split
from ctrflow.components.data._chunk_cache import ChunkCache
from ctrflow.components.data._chunk_reader import RawChunk, file_columns, read_chunks
from ctrflow.components.data._dataset_writer import DatasetWriter
from ctrflow.components.data._input_files import InputFile, list_all_inputs
from ctrflow.components.data._ordered_pool import in_order
from ctrflow.components.data._prepare_report import (
    BadInputError,
    BadRow,
    BadRowLog,
    PrepareResult,
    SplitStats,
)
from ctrflow.components.data._raw_test_rows import RawTestRows
from ctrflow.components.data._schema import FeatureSpec, ParsedTable
from ctrflow.components.data._split import SPLITS, TEST, TRAIN, SplitError, TimeSplit
from ctrflow.components.data._staging import StagedOutputs
from ctrflow.components.data._time_window import TimeWindow
from ctrflow.components.data.feature_spec import FittedFeatureSpec, SpecFitter
from ctrflow.components.names import MIN_SPLIT_ROWS, TEST_RAW_FILE

__all__ = [
    "BadInputError",
    "BadRow",
    "PrepareResult",
    "SplitError",
    "SplitStats",
    "prepare_data",
]

log = logging.getLogger(__name__)
SPLIT_METHODS = ("auto", "time", "ratio")


@dataclass
class _Plan:
    spec: FeatureSpec
    files: list[InputFile]
    use_time: bool
    needed: list[str]
    valid_fraction: float
    test_fraction: float
    valid_days: int
    test_days: int
    seed: int
    chunk_rows: int
    threads: int
    time_window: TimeWindow | None
    min_split_rows: int


def _decide_split(spec: FeatureSpec, files: list[InputFile], split: str) -> bool:
    """True for a time split. 'auto': by time when the spec's timestamp column is present."""
    if split not in SPLIT_METHODS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_METHODS)}, got {split!r}")
    if split == "ratio":
        return False
    if spec.timestamp is None:
        if split == "time":
            raise ValueError("split='time' needs a timestamp column in the feature spec")
        return False
    present = spec.timestamp in file_columns(files[0], spec)
    if not present and (split == "time" or not spec.timestamp_optional):
        raise ValueError(f"{files[0].name}: timestamp column {spec.timestamp!r} is missing")
    return present


def _progress(chunk: RawChunk, files: list[InputFile]) -> float | None:
    """Share of the whole input read after this chunk, when known."""
    if chunk.progress is None:
        return None
    total = sum(f.size for f in files) or 1
    before = sum(f.size for f in files[: chunk.file_index])
    return (before + chunk.progress * chunk.file.size) / total


def _fit_pass(
    plan: _Plan, bad: BadRowLog, cache: ChunkCache, test_rows: RawTestRows
) -> tuple[FittedFeatureSpec, TimeSplit | None]:
    """Parse everything once: count bad rows, fit on training rows, cache the good rows, keep
    the raw test rows (or, by time, the rows that may turn out to be test rows); then check
    the split sizes."""
    spec = plan.spec
    by_day: dict[int, SpecFitter] = {}
    counts: dict[int, list[int]] = {}  # split key (day, or ratio split) -> [rows, positives]
    fitter = spec.fitter()
    chunks = read_chunks(
        plan.files,
        spec=spec,
        needed=plan.needed,
        chunk_rows=plan.chunk_rows,
        threads=plan.threads,
        parse=lambda table: spec.parse(table, with_labels=True, with_timestamps=plan.use_time),
    )
    with closing(chunks):
        for chunk in chunks:
            parsed = chunk.parsed
            assert parsed is not None and parsed.labels is not None
            seconds = None
            if parsed.timestamps is not None:
                assert plan.time_window is not None
                seconds = plan.time_window.seconds(parsed.timestamps, parsed.problems)
            bad.record(chunk, parsed)
            progress = _progress(chunk, plan.files)
            if progress and progress < 1.0:  # bound the total rows, with room for uneven lines
                bad.check(final=False, total_rows_bound=2.0 * bad.rows / progress)
            good = ~parsed.problems.bad
            ids = _split.row_ids(chunk.file.name, chunk.lines)
            if seconds is not None:
                days = _split.days_of(seconds)
                for day in np.unique(days[good]).tolist():
                    rows = good & (days == day)
                    day_fitter = by_day.setdefault(int(day), spec.fitter())
                    day_fitter.update(parsed, rows=rows, row_ids=ids)
                    _count(counts, int(day), parsed.labels[rows])
                cache.put(parsed, good, days)
                test_rows.add_candidates(chunk.table, good, days)
            else:
                split = _ratio(plan, ids)
                fitter.update(parsed, rows=good & (split == TRAIN), row_ids=ids)
                for key in range(len(SPLITS)):
                    _count(counts, key, parsed.labels[good & (split == key)])
                cache.put(parsed, good, split)
                test_rows.add_test(chunk.table, parsed, good & (split == TEST))
    bad.check(final=True)
    if bad.rows == 0:
        raise ValueError(f"{', '.join(f.name for f in plan.files)}: no data rows")
    time_split = None
    if plan.use_time:
        time_split = TimeSplit.plan(
            list(by_day), valid_days=plan.valid_days, test_days=plan.test_days
        )
        for day in time_split.train_days:
            fitter.merge(by_day[day])
    _check_split_sizes(counts, time_split, plan.min_split_rows)
    if fitter.rows == 0:
        raise ValueError(f"no training rows among the {bad.rows:,} input rows")
    return fitter.finish(), time_split


def _count(counts: dict[int, list[int]], key: int, labels: npt.NDArray[np.float32]) -> None:
    entry = counts.setdefault(key, [0, 0])
    entry[0] += labels.size
    entry[1] += int(np.count_nonzero(labels))


def _check_split_sizes(
    counts: dict[int, list[int]], time_split: TimeSplit | None, min_rows: int
) -> None:
    """Raise SplitError before anything is written when a split is too small or one-label."""
    if time_split is None:
        sizes = {name: counts.get(key, [0, 0]) for key, name in enumerate(SPLITS)}
        _split.check_sizes({name: (r, p) for name, (r, p) in sizes.items()}, min_rows=min_rows)
        return
    detail = time_split.describe()
    by_split: dict[str, tuple[int, int]] = {
        name: (sum(counts[d][0] for d in days), sum(counts[d][1] for d in days))
        for name, days in zip(SPLITS, time_split.days_by_split(), strict=True)
    }
    where = {name: "days " + ", ".join(detail[name]) for name in SPLITS}
    _split.check_sizes(by_split, min_rows=min_rows, where=where)


def _ratio(plan: _Plan, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
    return _split.ratio_split(
        ids, valid_fraction=plan.valid_fraction, test_fraction=plan.test_fraction, seed=plan.seed
    )


_Encoded = tuple[npt.NDArray[np.float32], npt.NDArray[np.integer[Any]], npt.NDArray[np.int32]]


def _transform_pass(
    fitted: FittedFeatureSpec,
    time_split: TimeSplit | None,
    cache: ChunkCache,
    dirs: Mapping[str, Path],
    threads: int,
) -> dict[str, SplitStats]:
    """Encode the cached rows with the fitted spec (on worker threads) and append them to
    their split (on this thread)."""
    writers = [
        DatasetWriter(dirs[name], n_fields=fitted.n_fields, n_features=fitted.n_features)
        for name in SPLITS
    ]

    def jobs() -> Iterator[Callable[[], _Encoded]]:
        for labels, keys, parsed in cache.chunks(fitted.n_fields):

            def job(
                labels: npt.NDArray[np.float32] = labels,
                keys: npt.NDArray[np.int32] = keys,
                parsed: ParsedTable = parsed,
            ) -> _Encoded:
                split = keys if time_split is None else time_split.assign_days(keys)
                return labels, split, fitted.encode(parsed)

            yield job

    for labels, split, features in in_order(jobs(), threads):
        for index, writer in enumerate(writers):
            rows = split == index
            if rows.all():  # common with a time split: no copy
                writer.append(features, labels)
            elif rows.any():
                writer.append(features[rows], labels[rows])
    stats = {}
    for name, writer in zip(SPLITS, writers, strict=True):
        writer.close()
        rate = writer.positives / writer.rows if writer.rows else 0.0
        stats[name] = SplitStats(writer.rows, writer.positives, rate)
    return stats


def _describe(uris: Sequence[str]) -> str:
    return uris[0] if len(uris) == 1 else f"{len(uris)} URIs ({uris[0]} ... {uris[-1]})"


def _default_threads() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 4))
    except AttributeError:  # not Linux
        return max(1, min(os.cpu_count() or 1, 4))


def _refuse_overwriting_inputs(files: list[InputFile], outputs: list[Path]) -> None:
    """Outputs replace what is at their paths: an input there (or inside a replaced directory)
    would be deleted by its own preparation."""
    local = [
        Path(f.path).resolve() for f in files if isinstance(f.filesystem, pafs.LocalFileSystem)
    ]
    for output in outputs:
        target = output.resolve()
        for source in local:
            if source == target or target in source.parents:
                raise ValueError(
                    f"output {output} would replace the input {source}: "
                    f"write the prepared data elsewhere"
                )


def prepare_data(
    *,
    input_uri: str | Sequence[str],
    output_dir: str,
    spec_path: str | None = None,
    split: str = "auto",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    valid_days: int = 1,
    test_days: int = 1,
    seed: int = 0,
    chunk_rows: int = 250_000,
    max_bad_fraction: float = 0.001,
    rare_threshold: int | None = None,
    threads: int | None = None,
    max_examples: int = 20,
    split_dirs: Mapping[str, str] | None = None,
    cache_memory_mb: int = 1024,
    test_raw_path: str | None = None,
    min_split_rows: int = MIN_SPLIT_ROWS,
    earliest_time: str | None = None,
    latest_time: str | None = None,
) -> PrepareResult:
    """Prepare FFM datasets from raw logs; see the module docstring.

    input_uri: a CSV/TSV/Parquet file (optionally .gz/.bz2/.zst), a directory or a glob; local or
    any pyarrow filesystem URI; or a list of them (a data window, one per day), read in that
    order, each of which must name data. spec_path: feature spec JSON (default: Criteo's schema).
    split: "auto" (by time when the timestamp column exists, else by ratio), "time" or "ratio".
    rare_threshold: overrides the spec's. split_dirs: write a split elsewhere than
    output_dir/<split> (the KFP component gives each split its own artifact).
    cache_memory_mb: parsed rows kept in memory between the passes; beyond, they go to a
    temporary directory in output_dir (about 170 bytes per Criteo row). The same budget again
    holds the raw rows that may be test rows during a time split.
    test_raw_path: where the raw test rows go (default output_dir/test_raw.parquet).
    min_split_rows: fewest rows each of train/valid/test may have (each also needs both labels).
    earliest_time/latest_time: the plausible timestamp window, ISO dates or times (default
    2000-01-01 .. now + 1 day); a time split's rows outside it are bad rows.
    """
    started = time.perf_counter()
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError("valid_fraction + test_fraction must leave rows for training")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if min_split_rows < 1:
        raise ValueError(f"min_split_rows must be >= 1, got {min_split_rows}")
    spec = FeatureSpec.from_file(spec_path) if spec_path else FeatureSpec.criteo()
    if rare_threshold is not None:
        spec = spec.with_options(rare_threshold=rare_threshold)
    files = list_all_inputs(input_uri)
    source = input_uri if isinstance(input_uri, str) else _describe(input_uri)
    use_time = _decide_split(spec, files, split)
    if use_time and (valid_days < 1 or test_days < 1):
        raise ValueError(f"valid_days and test_days must be >= 1, got {valid_days}, {test_days}")
    needed = [spec.label, *spec.fields] + ([spec.timestamp] if use_time and spec.timestamp else [])
    window = None
    if use_time:
        assert spec.timestamp is not None
        window = TimeWindow.of(earliest_time, latest_time, column=spec.timestamp)
    plan = _Plan(
        spec, files, use_time, needed, valid_fraction, test_fraction, valid_days, test_days,
        seed, chunk_rows, threads or _default_threads(), window, min_split_rows,
    )  # fmt: skip
    out = Path(output_dir)
    test_raw = Path(test_raw_path) if test_raw_path else out / TEST_RAW_FILE
    finals = {name: Path((split_dirs or {}).get(name, out / name)) for name in SPLITS}
    finals |= {"test_raw": test_raw, "spec": out / "feature_spec.json", "stats": out / "stats.json"}
    # An existing output directory stays (only its outputs are replaced); any other path goes.
    _refuse_overwriting_inputs(files, [*([] if out.is_dir() else [out]), *finals.values()])
    staged = StagedOutputs()
    # A new output directory appears whole; into an existing one, each output is moved alone.
    root = None if out.is_dir() else staged.stage(out)

    def place(final: Path) -> Path:
        if root is not None and final.parent == out:
            return root / final.name
        return staged.stage(final)

    paths = {name: place(final) for name, final in finals.items()}
    work = root or out
    try:
        work.mkdir(parents=True, exist_ok=True)
        bad = BadRowLog(max_bad_fraction, max_examples)
        cache = ChunkCache(work, memory_bytes=cache_memory_mb << 20)
        test_rows = RawTestRows(
            paths["test_raw"], spec, test_days=test_days if use_time else None,
            memory_bytes=cache_memory_mb << 20, threads=plan.threads,
        )  # fmt: skip
        try:
            log.info(
                "prepare_data: pass 1 (parse, fit) over %d file(s) from %s", len(files), source
            )
            fitted, time_split = _fit_pass(plan, bad, cache, test_rows)
            fitted_at = time.perf_counter()
            dirs = {name: paths[name] for name in SPLITS}
            log.info("prepare_data: pass 2 (transform), %d features", fitted.n_features)
            stats = _transform_pass(fitted, time_split, cache, dirs, plan.threads)
            test_rows.finish(time_split.test_days if time_split else None)
        finally:
            cache.close()
            test_rows.close()
        if test_rows.rows != stats["test"].rows:  # the two are built apart: never ship a mismatch
            raise RuntimeError(
                f"{test_rows.rows} raw test rows for a test split of {stats['test'].rows} rows"
            )
        fitted.save(str(paths["spec"]))
        result = _result(
            out, files, bad, time_split, stats, fitted, test_raw, plan, started, fitted_at
        )
        paths["stats"].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    log.info(
        "prepare_data: %d rows (%d bad) -> %s in %.1fs",
        result.input_rows, result.bad_rows, output_dir, result.seconds["total"],
    )  # fmt: skip
    return result


def _result(
    out: Path,
    files: list[InputFile],
    bad: BadRowLog,
    time_split: TimeSplit | None,
    stats: dict[str, SplitStats],
    fitted: FittedFeatureSpec,
    test_raw: Path,
    plan: _Plan,
    started: float,
    fitted_at: float,
) -> PrepareResult:
    done = time.perf_counter()
    if time_split is not None:
        method, detail = "time", time_split.describe()
    else:
        method = "ratio"
        detail = {
            "valid_fraction": plan.valid_fraction, "test_fraction": plan.test_fraction,
            "seed": plan.seed,
        }  # fmt: skip
    window = plan.time_window
    return PrepareResult(
        output_dir=str(out),
        input_files=[f.name for f in files],
        input_rows=bad.rows,
        bad_rows=bad.bad,
        bad_fraction=bad.fraction(),
        bad_examples=bad.examples,
        split_method=method,
        split_detail=detail,
        splits=stats,
        n_fields=fitted.n_fields,
        n_features=fitted.n_features,
        features_per_field=fitted.features_per_field(),
        test_raw_path=str(test_raw),
        timestamp_unit=(window.unit or "") if window else "",
        timestamp_window=window.describe() if window else [],
        seconds={
            "fit": round(fitted_at - started, 3),
            "transform": round(done - fitted_at, 3),
            "total": round(done - started, 3),
        },
    )
