"""prepare_data throughput on generated Criteo-format logs (target: >= 200k raw rows/s).

Baselines, in the same process on the same file: pandas.read_csv (C engine, default options) and
pyarrow.csv.read_csv (multi-threaded), i.e. only parsing the text into a table. The ratios say
what the full step (bad-row checks, fit, transform, writing three binary datasets) costs over a
plain parse.

Usage: .venv/bin/python -m benchmarks.prep_bench [--rows 1000000] [--repeat 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv

import ffm_ext  # noqa: F401  (imported up front: its one-off import cost is not per row)
from ctrflow.components.data.prepare_data import PrepareResult, prepare_data
from ctrflow.components.data.synth_data import write_synth

TARGET_ROWS_PER_S = 200_000


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, float, object]:
    """Best wall time, the CPU time of that run (all threads), and its result."""
    best, cpu, result = float("inf"), 0.0, None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        value = run()
        wall = time.perf_counter() - started
        if wall < best:
            best, cpu, result = wall, time.process_time() - cpu_started, value
    return best, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs")
    parser.add_argument("--threads", type=int, default=None, help="CSV parser threads")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="prep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv, parquet = work / "log.csv", work / "log.parquet"
    started = time.perf_counter()
    write_synth(str(csv), rows=args.rows, days=args.days, seed=0)
    synth_s = time.perf_counter() - started
    write_synth(str(parquet), rows=args.rows, days=args.days, seed=0)
    size_mb = csv.stat().st_size / 1e6
    print(f"input: {args.rows:,} rows, {size_mb:.0f} MB CSV ({work})")
    print(f"ctrflow data synth (CSV): {synth_s:.2f} s = {args.rows / synth_s:,.0f} rows/s")

    read_s, read_cpu, _ = best_of(args.repeat, lambda: pd.read_csv(csv))
    arrow_s, arrow_cpu, _ = best_of(args.repeat, lambda: pacsv.read_csv(csv))

    def run(source: Path) -> PrepareResult:
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        return prepare_data(input_uri=str(source), output_dir=str(out), threads=args.threads)

    prep_s, prep_cpu, result = best_of(args.repeat, lambda: run(csv))
    assert isinstance(result, PrepareResult)
    prep_pq_s, prep_pq_cpu, _ = best_of(args.repeat, lambda: run(parquet))

    rows = args.rows

    def line(name: str, wall: float, cpu: float) -> str:
        return f"{name:27s}{wall:6.2f} s [{cpu:5.1f} CPU s] = {rows / wall:>9,.0f} rows/s"

    print("(wall time, best of runs; CPU seconds of all threads in brackets)")
    print(line("baseline pandas.read_csv:", read_s, read_cpu))
    print(line("baseline pyarrow read_csv:", arrow_s, arrow_cpu))
    print(
        line("prepare_data (CSV):", prep_s, prep_cpu)
        + f"  (pass 1 parse+fit {result.seconds['fit']:.2f} s, "
        f"pass 2 transform+write {result.seconds['transform']:.2f} s)"
    )
    print(line("prepare_data (Parquet):", prep_pq_s, prep_pq_cpu))
    print(
        f"time ratio prepare_data(CSV) / pandas.read_csv: {prep_s / read_s:.2f}x, "
        f"/ pyarrow read_csv: {prep_s / arrow_s:.2f}x"
    )
    print(
        f"CPU cost (independent of other load on the machine): {rows / prep_cpu:,.0f} rows per "
        f"CPU second for prepare_data, {rows / arrow_cpu:,.0f} for pyarrow read_csv alone"
    )
    verdict = "meets" if rows / prep_s >= TARGET_ROWS_PER_S else "MISSES"
    print(f"target {TARGET_ROWS_PER_S:,} rows/s: {verdict} it ({rows / prep_s:,.0f} rows/s)")
    print(
        f"output: {result.n_features:,} features, splits "
        + ", ".join(f"{k} {v.rows:,}" for k, v in result.splits.items())
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
