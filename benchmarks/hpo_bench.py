"""Distributed HPO figures (docs/performance.md, HPO). Starts its own PostgreSQL.

    python -m benchmarks.hpo_bench [--parts overhead,parallel,warm] [--rows 60000] ...

1. overhead: storage cost per trial of the ctrflow worker loop on PostgreSQL (budget lock,
   stale-trial sweep, heartbeat thread, Optuna's RDB reads/writes) with the CMA-ES sampler and a
   free objective; baseline: the worker's CMA-ES sampler class on Optuna's in-memory storage,
   same process. Also Optuna's own optimize() with its CmaEsSampler on the same PostgreSQL.
   Target <= 25 ms.
2. parallel: wall time for a fixed budget with 1 and then 2 worker processes when a trial costs
   about 1 s of one core (a pure-Python loop, so no BLAS threads blur the count). Target
   speed-up >= 1.8 (2 cores here).
3. warm: two disjoint slices of one synth_ctr.py dataset are last week and this week. Last
   week's cold TPE study is exported (study.db, as the register step logs it); this week runs a
   cold TPE study and a Warm Starting CMA-ES study from that export, same budget, FFM objective.
   Figure: trials the warm study needs to reach the best value the cold study reaches in its
   whole budget. Target: half the budget or fewer.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.samplers import CmaEsSampler
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

import ffm_ext
from ctrflow.components.hpo._study_config import SnapshotCmaEsSampler
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.finalize_study import finalize_study
from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage
from tests.testkit.servers import postgres_server

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYNTH = ROOT / "benchmarks" / "synth_ctr.py"
SPACE = get_space("ffm")
SETTINGS = StorageSettings(heartbeat_interval=10, grace_period=30)


def quad(trial: optuna.Trial) -> float:
    """A free objective on the FFM space (bowl around k=8, eta=e^-2, lam=1e-5)."""
    p = SPACE.suggest(trial)
    return float(
        (math.log2(p["k"]) - 3) ** 2
        + (math.log(p["eta"]) + 2) ** 2
        + (math.log10(p["lam"]) + 5) ** 2
    )


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- 1. storage overhead ----------------------------------------------------------------------
class _Meter:
    """Wall and client-CPU time, SQL statements and pool checkouts (each one a pre-ping) of a
    block: on a busy machine the wall time swings, the counts do not."""

    def __init__(self) -> None:
        self.statements = self.checkouts = self.connects = 0
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Pool, "checkout", self._checkout)
        event.listen(Pool, "connect", self._connect)

    def _statement(self, *args: Any) -> None:
        self.statements += 1

    def _checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def _connect(self, *args: Any) -> None:
        self.connects += 1

    def run(self, label: str, trials: int, block: Callable[[], Any]) -> float:
        self.statements = self.checkouts = self.connects = 0
        wall, cpu = time.perf_counter(), time.process_time()
        block()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"  {label:<38} {wall / trials * 1e3:7.2f} ms/trial  (client CPU "
            f"{cpu / trials * 1e3:6.2f} ms, {self.statements / trials:5.1f} statements, "
            f"{self.checkouts / trials:5.1f} pool checkouts, {self.connects} new connections)"
        )
        return wall / trials


def bench_overhead(url: str, trials: int) -> None:
    print(f"\n[1] storage overhead per trial, CMA-ES, free objective, {trials} trials")
    print(f"  load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    meter = _Meter()
    # The worker's own CMA-ES sampler class, so the baseline differs from it only in storage.
    memory = optuna.create_study(
        sampler=SnapshotCmaEsSampler(seed=0, warn_independent_sampling=False)
    )
    memory.enqueue_trial(dict(SPACE.defaults))
    t_memory = meter.run(
        "in-memory storage, optimize() (baseline)",
        trials,
        lambda: memory.optimize(quad, n_trials=trials),
    )

    storage = make_storage(url, SETTINGS)
    plain = optuna.create_study(
        storage=storage,
        study_name=_name("plain"),
        sampler=CmaEsSampler(seed=0, warn_independent_sampling=False),
    )
    plain.enqueue_trial(dict(SPACE.defaults))
    t_plain = meter.run(
        "PostgreSQL, Optuna's optimize() alone",
        trials,
        lambda: plain.optimize(quad, n_trials=trials),
    )
    dispose(storage)

    name = _name("worker")
    create_study(storage_url=url, study_name=name, model_type="ffm", sampler="cmaes", budget=trials)
    t_worker = meter.run(
        "PostgreSQL, ctrflow worker loop",
        trials,
        lambda: run_worker(
            storage_url=url,
            study_name=name,
            settings=SETTINGS,
            objective=quad,
            seed=0,
            progress=False,
        ),
    )
    overhead = (t_worker - t_memory) * 1e3
    print(
        f"  storage overhead of the worker loop: {overhead:.2f} ms/trial "
        f"(target <= 25 ms: {'met' if overhead <= 25 else 'NOT met'}); Optuna's optimize() "
        f"alone on RDB storage: {(t_plain - t_memory) * 1e3:.2f} ms (the worker adds its budget "
        "lock and count, and skips reads Optuna repeats: WorkerStorage, SnapshotCmaEsSampler)"
    )
    print(f"  load average after: {os.getloadavg()[0]:.2f}")


# -- 2. parallel speed-up ---------------------------------------------------------------------
def _burn(iterations: int) -> float:
    acc = 0.0
    for i in range(iterations):
        acc += (i % 7) * 0.5
    return acc


def _calibrate(seconds: float) -> int:
    n = 200_000
    while True:
        started = time.perf_counter()
        _burn(n)
        took = time.perf_counter() - started
        if took > 0.2:
            return int(n * seconds / took)
        n *= 2


def _busy_worker(url: str, study_name: str, iterations: int, sleep: float, seed: int) -> None:
    logging.disable(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        value = quad(trial)
        _burn(iterations)
        time.sleep(sleep)
        return value

    run_worker(
        storage_url=url,
        study_name=study_name,
        settings=SETTINGS,
        objective=objective,
        seed=seed,
        progress=False,
    )


def _run_workers(
    url: str, workers: int, budget: int, iterations: int, sleep: float
) -> tuple[float, float, int]:
    """(process wall time, search span from first trial start to last end, peak overlap)."""
    name = _name(f"par{workers}")
    create_study(storage_url=url, study_name=name, model_type="ffm", budget=budget)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_busy_worker, args=(url, name, iterations, sleep, seed))
        for seed in range(workers)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"a worker failed: exit codes {[p.exitcode for p in procs]}")
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget == len(trials)
    spans = [(t.datetime_start, t.datetime_complete) for t in trials]
    starts = [a for a, _ in spans if a is not None]
    ends = [b for _, b in spans if b is not None]
    events = sorted([(a, 1) for a in starts] + [(b, -1) for b in ends])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return wall, (max(ends) - min(starts)).total_seconds(), peak


def bench_parallel(url: str, budget: int, seconds: float) -> None:
    iterations = _calibrate(seconds)
    print(f"\n[2] fixed budget of {budget} trials of ~{seconds:.1f} s, 1 then 2 worker processes")
    for label, burn, sleep in (
        ("CPU-bound trials (one core each)", iterations, 0.0),
        ("waiting trials (no CPU: the coordination alone)", 0, seconds),
    ):
        print(f"  {label}; load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
        wall1, span1, _ = _run_workers(url, 1, budget, burn, sleep)
        wall2, span2, peak = _run_workers(url, 2, budget, burn, sleep)
        print(f"    1 worker : search {span1:6.1f} s  (process wall {wall1:6.1f} s, with start-up)")
        print(
            f"    2 workers: search {span2:6.1f} s  (process wall {wall2:6.1f} s, with start-up); "
            f"up to {peak} trials ran at once"
        )
        speedup = span1 / span2
        print(
            f"    speed-up {speedup:.2f}x on the search (target >= 1.8: "
            f"{'met' if speedup >= 1.8 else 'NOT met'}); {wall1 / wall2:.2f}x with start-up"
        )


# -- 3. warm-start value ----------------------------------------------------------------------
def _weeks(directory: pathlib.Path, rows: int) -> dict[str, pathlib.Path]:
    """Last week = first half of the synth rows, this week = second half; 80/20 train/valid."""
    out = directory / f"weeks-{rows}"
    paths = {
        f"{week}_{part}": out / f"{week}_{part}"
        for week in ("last", "this")
        for part in ("train", "valid")
    }
    if all((p / "meta.json").exists() for p in paths.values()):
        return paths
    text = directory / f"synth-{rows}-seed0"
    if not (text / "train.ffm").exists():
        subprocess.run(
            [sys.executable, str(SYNTH), str(text), "--rows", str(rows), "--seed", "0"], check=True
        )
    full = ffm_ext.read_libffm(str(text / "train.ffm"))
    half = full.n_rows // 2
    for week, start in (("last", 0), ("this", half)):
        cut = start + int(half * 0.8)
        full.take(np.arange(start, cut)).save(paths[f"{week}_train"])
        full.take(np.arange(cut, start + half)).save(paths[f"{week}_valid"])
    return paths


def _best_so_far(study: optuna.Study) -> list[float]:
    best, curve = math.inf, []
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = min(best, t.value)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            curve.append(best)
    return curve


def _search(
    url: str, name: str, data: tuple[pathlib.Path, pathlib.Path], budget: int, seed: int, **kw: Any
) -> optuna.Study:
    create_study(storage_url=url, study_name=name, model_type="ffm", budget=budget, **kw)
    run_worker(
        storage_url=url,
        study_name=name,
        train_dir=data[0],
        valid_dir=data[1],
        settings=SETTINGS,
        seed=seed,
        progress=False,
    )
    return optuna.load_study(study_name=name, storage=url)


def bench_warm(url: str, directory: pathlib.Path, rows: int, budget: int, repeats: int) -> None:
    paths = _weeks(directory, rows)
    last = (paths["last_train"], paths["last_valid"])
    this = (paths["this_train"], paths["this_valid"])
    print(
        f"\n[3] warm start: synth_ctr --rows {rows} split into two weeks of {rows // 2} rows "
        f"(80/20 train/valid), FFM, budget {budget}, {repeats} repeats"
    )
    needed: list[float] = []
    for r in range(repeats):
        started = time.perf_counter()
        week1 = _search(url, _name(f"last{r}"), last, budget, seed=r)
        db = finalize_study(
            storage_url=url,
            study_name=week1.study_name,
            out_dir=directory / f"export-{week1.study_name}",
        ).study_db
        cold = _best_so_far(_search(url, _name(f"cold{r}"), this, budget, seed=100 + r))
        warm_study = _search(url, _name(f"warm{r}"), this, budget, seed=100 + r, warm_start_db=db)
        assert warm_study.user_attrs["ctrflow.sampler"]["name"] == "cmaes"
        warm = _best_so_far(warm_study)
        target = cold[-1]
        reach = next((i + 1 for i, v in enumerate(warm) if v <= target), None)
        needed.append(reach if reach is not None else math.inf)
        shown = f"{reach:3d}" if reach is not None else "not reached"
        print(
            f"  repeat {r}: cold TPE best {target:.5f} after {budget}; warm CMA-ES best "
            f"{warm[-1]:.5f}, reaches {target:.5f} at trial {shown}; defaults {cold[0]:.5f}; "
            f"{time.perf_counter() - started:.0f} s"
        )
    median = statistics.median(needed)
    print(
        f"  trials warm CMA-ES needs to reach the cold final best: median {median} of {budget} "
        f"({median / budget:.0%}; target <= 50%: {'met' if median <= budget / 2 else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", default="overhead,parallel,warm")
    parser.add_argument("--overhead-trials", type=int, default=200)
    parser.add_argument("--parallel-budget", type=int, default=12)
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--ws-budget", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="cache for the data")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, live
    parts = set(args.parts.split(","))
    logging.disable(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directory = args.dir or pathlib.Path(tempfile.gettempdir()) / "ctrflow-hpo-bench"
    directory.mkdir(parents=True, exist_ok=True)
    benches: dict[str, Callable[[str], None]] = {
        "overhead": lambda url: bench_overhead(url, args.overhead_trials),
        "parallel": lambda url: bench_parallel(url, args.parallel_budget, args.trial_seconds),
        "warm": lambda url: bench_warm(url, directory, args.rows, args.ws_budget, args.repeats),
    }
    with postgres_server() as url:
        print("PostgreSQL: throwaway server on 127.0.0.1 (fsync off)")
        for part, bench in benches.items():
            if part in parts:
                bench(url)


if __name__ == "__main__":
    main()
