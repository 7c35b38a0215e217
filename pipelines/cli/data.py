"""`ctrflow data synth|prepare`: make a synthetic raw log; turn raw logs into FFM datasets.

Errors print one line (or the bad-row report) naming the file, line or key, and exit 1; an
unexpected error (a bug, not bad input) prints one line too and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from ctrflow.components.names import MIN_SPLIT_ROWS
from ctrflow.pipelines.cli._parsing import logs_progress

EXIT_BAD_INPUT = 1
EXIT_INTERNAL = 2


def _unexpected(command: str, exc: Exception) -> int:
    print(
        f"ctrflow data {command}: unexpected {type(exc).__name__}: {exc} "
        "(a bug in ctrflow, not in your input: please report it)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def _day(text: str) -> datetime.date:
    """An argparse type: a bad date is a usage error naming it."""
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _synth(args: argparse.Namespace) -> int:
    from ctrflow.components.data.synth_data import write_synth

    started = time.perf_counter()
    try:
        write_synth(
            args.out,
            rows=args.rows,
            days=args.days,
            seed=args.seed,
            fmt=args.format,
            start=args.start,
            model_seed=args.model_seed,
        )
    except (ValueError, OSError) as exc:
        print(f"ctrflow data synth: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the CLI boundary: one line, no traceback
        return _unexpected("synth", exc)
    seconds = time.perf_counter() - started
    print(f"wrote {args.rows:,} rows over {args.days} day(s) to {args.out} in {seconds:.1f}s")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ctrflow.components.data.prepare_data import prepare_data

    try:
        result = prepare_data(
            input_uri=args.input[0] if len(args.input) == 1 else args.input,
            output_dir=args.out,
            spec_path=args.spec,
            split=args.split,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            valid_days=args.valid_days,
            test_days=args.test_days,
            seed=args.seed,
            chunk_rows=args.chunk_rows,
            max_bad_fraction=args.max_bad_fraction,
            rare_threshold=args.rare_threshold,
            threads=args.threads,
            cache_memory_mb=args.cache_memory_mb,
            min_split_rows=args.min_split_rows,
            earliest_time=args.earliest_time,
            latest_time=args.latest_time,
        )
    except (ValueError, OSError) as exc:  # SpecError, BadInputError, SplitError: ValueErrors
        print(f"ctrflow data prepare: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the CLI boundary: one line, no traceback
        return _unexpected("prepare", exc)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    data = subparsers.add_parser("data", help="synthetic data and data preparation")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    synth = commands.add_parser(
        "synth",
        help="write a synthetic raw log in the Criteo schema (planted signal, timestamps)",
        description="Columns: label, I1..I13, C1..C26 (hex), timestamp (UTC epoch seconds).",
    )
    synth.add_argument("out", help="output file (local path or pyarrow URI)")
    synth.add_argument("--rows", type=int, default=100_000)
    synth.add_argument("--days", type=int, default=7, help="days the timestamps span")
    synth.add_argument("--seed", type=int, default=0, help="seed of the rows")
    synth.add_argument(
        "--model-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of the planted click model (default: --seed); the days of one log share it "
        "and differ in --seed, or each day is a log of its own with nothing to learn across days",
    )
    synth.add_argument(
        "--start",
        type=_day,
        default=None,
        metavar="YYYY-MM-DD",
        help="first day of the timestamps (default: 2024-01-01); e.g. one file per day of a "
        "data window: --days 1 --start 2026-11-27",
    )
    synth.add_argument(
        "--format",
        choices=("csv", "tsv", "parquet"),
        default=None,
        help="default: from the file name (.parquet, .tsv, else CSV)",
    )
    synth.set_defaults(func=_synth)

    prepare = commands.add_parser(
        "prepare",
        help="raw logs -> train/valid/test FFM datasets, feature_spec.json, stats.json",
        description="INPUT: a CSV/TSV/Parquet file, a directory or a glob; local or any "
        "filesystem pyarrow supports (s3://, gs://, hdfs://). Several INPUTs (e.g. one per day) "
        "are read in order, and each must name data.",
    )
    prepare.add_argument("input", nargs="+")
    prepare.add_argument("out", help="output directory")
    prepare.add_argument("--spec", default=None, help="feature spec JSON (default: Criteo)")
    prepare.add_argument("--split", choices=("auto", "time", "ratio"), default="auto")
    prepare.add_argument("--valid-fraction", type=float, default=0.1)
    prepare.add_argument("--test-fraction", type=float, default=0.1)
    prepare.add_argument("--valid-days", type=int, default=1)
    prepare.add_argument("--test-days", type=int, default=1)
    prepare.add_argument("--seed", type=int, default=0, help="seed of the ratio split")
    prepare.add_argument("--chunk-rows", type=int, default=250_000)
    prepare.add_argument(
        "--max-bad-fraction", type=float, default=0.001, help="fail above this share of bad rows"
    )
    prepare.add_argument("--rare-threshold", type=int, default=None, help="override the spec's")
    prepare.add_argument("--threads", type=int, default=None, help="parser threads")
    prepare.add_argument(
        "--cache-memory-mb",
        type=int,
        default=1024,
        help="parsed rows kept in memory between the passes (the rest go to disk)",
    )
    prepare.add_argument(
        "--min-split-rows",
        type=int,
        default=MIN_SPLIT_ROWS,
        help="fail when train, valid or test would have fewer rows (each also needs both labels)",
    )
    prepare.add_argument(
        "--earliest-time",
        default=None,
        help="time split: rows with an earlier timestamp are bad rows (default 2000-01-01)",
    )
    prepare.add_argument(
        "--latest-time",
        default=None,
        help="time split: rows with a later timestamp are bad rows (default now + 1 day)",
    )
    prepare.add_argument("--json", action="store_true", help="print the stats as JSON")
    prepare.set_defaults(func=_prepare)
    logs_progress(prepare)
