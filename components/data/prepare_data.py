"""Step `prepare_data`: raw impression logs -> train/valid/test FFM datasets + fitted feature spec.

Two streaming passes, so any input size works with bounded memory:
1. parse and fit: parse every chunk, count bad rows, count feature values of training rows (by
   day when splitting by time: which days are train is known only at the end of the pass), and
   keep the parsed good rows in a compact on-disk cache (distinct values + int32 codes);
2. transform: map the cached rows to features with the fitted spec, append them to their split.
Bad rows (wrong column count, label not 0/1, unparsable number or time) are dropped, counted and
reported with file and line; the step fails after pass 1 (or earlier, once the count exceeds the
limit for any plausible input size) when they exceed `max_bad_fraction` of the input rows.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.data import _split
from ctrflow.components.data._chunk_cache import ChunkCache
from ctrflow.components.data._chunk_reader import RawChunk, file_columns, read_chunks
from ctrflow.components.data._dataset_writer import DatasetWriter
from ctrflow.components.data._input_files import InputFile, list_inputs
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
from ctrflow.components.data._split import SPLITS, TEST, TRAIN, TimeSplit
from ctrflow.components.data.feature_spec import FittedFeatureSpec, SpecFitter
from ctrflow.components.names import TEST_RAW_FILE

__all__ = [
    "BadInputError",
    "BadRow",
    "PrepareResult",
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
    the raw test rows (or, by time, the rows that may turn out to be test rows)."""
    spec = plan.spec
    by_day: dict[int, SpecFitter] = {}
    fitter = spec.fitter()
    for chunk in read_chunks(
        plan.files,
        spec=spec,
        needed=plan.needed,
        chunk_rows=plan.chunk_rows,
        threads=plan.threads,
        parse=lambda table: spec.parse(table, with_labels=True, with_timestamps=plan.use_time),
    ):
        parsed = chunk.parsed
        assert parsed is not None
        bad.record(chunk, parsed)
        progress = _progress(chunk, plan.files)
        if progress and progress < 1.0:  # bound the total rows, with room for uneven lines
            bad.check(final=False, total_rows_bound=2.0 * bad.rows / progress)
        good = ~parsed.problems.bad
        ids = _split.row_ids(chunk.file.name, chunk.lines)
        if parsed.timestamps is not None:
            days = _split.days_of(parsed.timestamps)
            for day in np.unique(days[good]).tolist():
                day_fitter = by_day.setdefault(int(day), spec.fitter())
                day_fitter.update(parsed, rows=good & (days == day), row_ids=ids)
            cache.put(parsed, good, days)
            test_rows.add_candidates(chunk.table, good, days)
        else:
            split = _ratio(plan, ids)
            fitter.update(parsed, rows=good & (split == TRAIN), row_ids=ids)
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
    if fitter.rows == 0:
        raise ValueError(f"no training rows among the {bad.rows:,} input rows")
    return fitter.finish(), time_split


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


def _default_threads() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 4))
    except AttributeError:  # not Linux
        return max(1, min(os.cpu_count() or 1, 4))


def prepare_data(
    *,
    input_uri: str,
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
) -> PrepareResult:
    """Prepare FFM datasets from raw logs; see the module docstring.

    input_uri: a CSV/TSV/Parquet file (optionally .gz/.bz2/.zst), a directory or a glob; local or
    any pyarrow filesystem URI. spec_path: feature spec JSON (default: Criteo's schema).
    split: "auto" (by time when the timestamp column exists, else by ratio), "time" or "ratio".
    rare_threshold: overrides the spec's. split_dirs: write a split elsewhere than
    output_dir/<split> (the KFP component gives each split its own artifact).
    cache_memory_mb: parsed rows kept in memory between the passes; beyond, they go to a
    temporary directory in output_dir (about 170 bytes per Criteo row). The same budget again
    holds the raw rows that may be test rows during a time split.
    test_raw_path: where the raw test rows go (default output_dir/test_raw.parquet).
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
    spec = FeatureSpec.from_file(spec_path) if spec_path else FeatureSpec.criteo()
    if rare_threshold is not None:
        spec = spec.with_options(rare_threshold=rare_threshold)
    files = list_inputs(input_uri)
    use_time = _decide_split(spec, files, split)
    if use_time and (valid_days < 1 or test_days < 1):
        raise ValueError(f"valid_days and test_days must be >= 1, got {valid_days}, {test_days}")
    needed = [spec.label, *spec.fields] + ([spec.timestamp] if use_time and spec.timestamp else [])
    plan = _Plan(
        spec, files, use_time, needed, valid_fraction, test_fraction, valid_days, test_days,
        seed, chunk_rows, threads or _default_threads(),
    )  # fmt: skip
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bad = BadRowLog(max_bad_fraction, max_examples)
    cache = ChunkCache(out, memory_bytes=cache_memory_mb << 20)
    test_raw = Path(test_raw_path) if test_raw_path else out / TEST_RAW_FILE
    test_rows = RawTestRows(
        test_raw, spec, test_days=test_days if use_time else None,
        memory_bytes=cache_memory_mb << 20, threads=plan.threads,
    )  # fmt: skip
    try:
        log.info("prepare_data: pass 1 (parse, fit) over %d file(s) from %s", len(files), input_uri)
        fitted, time_split = _fit_pass(plan, bad, cache, test_rows)
        fitted_at = time.perf_counter()
        dirs = {name: Path((split_dirs or {}).get(name, out / name)) for name in SPLITS}
        log.info("prepare_data: pass 2 (transform), %d features", fitted.n_features)
        stats = _transform_pass(fitted, time_split, cache, dirs, plan.threads)
        test_rows.finish(time_split.test_days if time_split else None)
    finally:
        cache.close()
        test_rows.close()
    if test_rows.rows != stats["test"].rows:  # the two are built apart: never ship a mismatch
        test_raw.unlink()
        raise RuntimeError(
            f"{test_rows.rows} raw test rows for a test split of {stats['test'].rows} rows"
        )
    fitted.save(str(out / "feature_spec.json"))
    done = time.perf_counter()
    if time_split is not None:
        method, detail = "time", time_split.describe()
    else:
        method = "ratio"
        detail = {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "seed": seed}
    result = PrepareResult(
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
        seconds={
            "fit": round(fitted_at - started, 3),
            "transform": round(done - fitted_at, 3),
            "total": round(done - started, 3),
        },
    )
    (out / "stats.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    log.info(
        "prepare_data: %d rows (%d bad) -> %s in %.1fs",
        result.input_rows, result.bad_rows, output_dir, result.seconds["total"],
    )  # fmt: skip
    return result
