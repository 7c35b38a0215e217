"""ctrflow's FFM engine against LIBFFM, measured the way a user measures it (docs/performance.md).

    python -m benchmarks.ffm_bench --libffm DIR [--rows 200000] [--rounds 3] [--dir DIR]
                                   [--scale 1000000,2000000] [--no-small] [--no-predict]

Every training figure is the wall time of a whole process, as a user sees it: LIBFFM's
`ffm-train` and `ctrflow ffm train`, each reading its own binary cache of the same files (made
once, untimed, before the first round), peak RSS from the kernel (wait4). The programs take
turns in every round (the first one alternating) and each figure is the median of the rounds:
this VM's speed drifts 30-50% between phases, so only side-by-side ratios mean anything.

- epoch difference: (wall(15 epochs) - wall(5 epochs)) / 10 with validation every epoch and no
  early stopping: the cost of one more epoch, free of start-up and file costs.
- whole job: train with early stopping on validation (LIBFFM --auto-stop, ctrflow patience 1),
  then save the model.
- threads: ctrflow's epoch difference at 1 and 2 threads (scaling), on the reference workload
  and on a small low-dimensional set (the first 70,000 rows and first 10 fields of it). Its
  epochs take 10-25 ms while a process's start varies by +-0.1 s, so its long run has 125
  epochs (--small-long-epochs) and it runs 5 rounds (--small-rounds). Before each 2-thread
  run, the machine's two-core capacity (benchmarks/two_core_gauge.py): the scaling a loop of
  AVX2 arithmetic gets at that moment, an upper bound of any 2-thread figure here. After the
  reference rounds, benchmarks/engine_pair.py in a child process: 2 threads on one model against
  two 1-thread trainings of their own models at once, which tells what the two cores give this
  workload from what sharing the model costs.
Each figure comes with the best validation logloss of the same runs. Ratios > 1 mean ctrflow
is faster (or, for memory, smaller). Without --libffm (or $LIBFFM_DIR) LIBFFM is not run and no
ratio is printed: figures recorded earlier are shown as such, never as measured now.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmarks.timing import seconds
from benchmarks.two_core_gauge import GaugeUnavailableError, TwoCoreGauge

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYNTH = ROOT / "benchmarks" / "synth_ctr.py"
K, ETA, LAM = 4, 0.2, 2e-5
SMALL_ROWS, SMALL_FIELDS = 70_000, 10
PAIR_ROUNDS = 10  # engine_pair rounds: about 3 s each on the reference workload

#: LIBFFM on the reference workload as recorded in docs/performance.md: shown for orientation
#: when LIBFFM is not run, and never turned into a ratio.
RECORDED = {
    "epoch difference, 1 thread (s)": "0.80-1.05 (quiet) to 1.73 (slow phase)",
    "whole auto-stop job (s)": "23.5",
    "peak RSS of the job (MB)": "842",
    "best validation logloss": "0.4300 at epoch 13",
}


@dataclass
class Run:
    """One finished process: wall seconds, peak RSS, validation losses by epoch."""

    seconds: float
    rss_mb: float
    valid: list[float]
    anon_mb: float = float("nan")  # peak anonymous RSS: rss_mb without file-backed pages
    epoch_timer: list[float] = field(default_factory=list)  # LIBFFM's own per-epoch seconds

    @property
    def best(self) -> float:
        return min(self.valid) if self.valid else float("nan")


def run_process(
    args: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None
) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MB, from the kernel), peak anonymous RSS (MB, sampled every
    50 ms) and stdout of one child process. Peak RSS counts the pages of a memory-mapped
    dataset (file-backed page cache, which the kernel may drop and read again); the anonymous
    peak is the memory the process itself holds, as a program that read()s its data has it.
    The kernel's peak is NaN when it may be this process's own (below)."""
    # exec keeps the larger of the parent's and the child's peak as the child's ru_maxrss, so
    # a child's figure is only its own when it is above this process's peak.
    own_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(args, stdout=out, stderr=err, cwd=cwd, env=env)
        anon_kb = 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            anon_kb = max(anon_kb, _anonymous_rss_kb(child.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({child.returncode}): {stderr.strip()[-500:]}")
    peak_mb = usage.ru_maxrss / 1024 if usage.ru_maxrss > own_peak_kb else float("nan")
    return seconds, peak_mb, anon_kb / 1024, stdout


def engine_pair_summary(data: pathlib.Path) -> str:
    """benchmarks/engine_pair.py's summary line, run in a child process: its three engines
    (~1.2 GB) must not raise this process's peak RSS, which every later child inherits."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine_pair", "--dir", str(data),
         "--rounds", str(PAIR_ROUNDS)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"benchmarks.engine_pair failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def _anonymous_rss_kb(pid: int) -> int:
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:  # exited meanwhile, or not Linux
        return 0
    found = re.search(r"^RssAnon:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) if found else 0


class Libffm:
    """ffm-train on text files; it keeps its binary caches (*.bin) in its working directory."""

    def __init__(self, directory: pathlib.Path, data: pathlib.Path, work: pathlib.Path) -> None:
        self.train_bin = directory / "ffm-train"
        if not os.access(self.train_bin, os.X_OK):
            sys.exit(f"{self.train_bin} is not an executable: build LIBFFM there with `make`")
        self.directory, self.data, self.work = directory, data, work
        work.mkdir(parents=True, exist_ok=True)

    def build_info(self) -> str:
        makefile = self.directory / "Makefile"
        flags = ""
        if makefile.exists():
            text = makefile.read_text()
            assignments = re.finditer(r"^(?:CXXFLAGS|DFLAG)\s*\+?=(.*)$", text, re.M)
            flags = " ".join(m.group(1).strip() for m in assignments)
        compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=False)
        first = compiler.stdout.splitlines()[0] if compiler.stdout else "g++ not found"
        return f"{self.directory}, its own Makefile: {flags or '(no Makefile found)'}; {first}"

    def train(self, epochs: int, threads: int, auto_stop: bool) -> Run:
        args = [str(self.train_bin), "-k", str(K), "-r", str(ETA), "-l", str(LAM), "-t",
                str(epochs), "-s", str(threads), "-p", str(self.data / "valid.ffm")]  # fmt: skip
        if auto_stop:
            args.append("--auto-stop")
        args += [str(self.data / "train.ffm"), str(self.work / "model")]
        seconds, rss, anon, stdout = run_process(args, self.work)
        rows = [line.split() for line in stdout.splitlines()]
        epochs_rows = [f for f in rows if len(f) >= 4 and f[0].isdigit()]
        stamps = [float(f[-1]) for f in epochs_rows]
        valid = [float(f[2]) for f in epochs_rows]
        return Run(seconds, rss, valid, anon, np.diff([0.0, *stamps]).tolist())


class Ctrflow:
    """`ctrflow ffm train` on binary dataset directories (converted once, untimed)."""

    def __init__(self, data: pathlib.Path, work: pathlib.Path) -> None:
        self.data, self.work = data, work
        work.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid"):
            if not (data / f"{name}.bin" / "meta.json").exists():
                self._cli(["convert", str(data / f"{name}.ffm"), str(data / f"{name}.bin")])

    def _cli(self, args: list[str]) -> tuple[float, float, float, str]:
        return run_process([sys.executable, "-m", "ctrflow.pipelines.cli", "ffm", *args], self.work)

    def train(self, epochs: int, threads: int, auto_stop: bool) -> Run:
        seconds, rss, anon, stdout = self._cli([
            "train", str(self.data / "train.bin"), "--valid", str(self.data / "valid.bin"),
            "-k", str(K), "--eta", str(ETA), "--lam", str(LAM), "--epochs", str(epochs),
            "--threads", str(threads), "--patience", "1" if auto_stop else str(epochs + 1),
            "-o", str(self.work / "model"),
        ])  # fmt: skip
        valid = [float(m) for m in re.findall(r"valid (\d+\.\d+)", stdout)]
        return Run(seconds, rss, valid, anon)


def workload(directory: pathlib.Path, rows: int) -> pathlib.Path:
    out = directory / f"synth-{rows}-seed0"
    if not (out / "test.ffm").exists():
        subprocess.run(
            [sys.executable, str(SYNTH), str(out), "--rows", str(rows), "--seed", "0"], check=True
        )
    return out


def small_workload(reference: pathlib.Path) -> pathlib.Path:
    """First 70,000 rows (valid: 7,000) and first 10 fields of the reference workload: the 10
    binned numeric fields, 400 features. Small and low-dimensional: the case where threads
    collide most on the same weights."""
    out = reference.parent / f"{reference.name}-small"
    if not (out / "valid.ffm").exists():
        out.mkdir(exist_ok=True)
        for name, rows in (("train", SMALL_ROWS), ("valid", SMALL_ROWS // 10)):
            with (reference / f"{name}.ffm").open() as src, (out / f"{name}.ffm").open("w") as dst:
                for _, line in zip(range(rows), src, strict=False):
                    dst.write(" ".join(line.split()[: SMALL_FIELDS + 1]) + "\n")
    return out


def machine_state() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    return f"load average {load} (1/5/15 min), {os.cpu_count()} CPUs, {cpu}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def ratio(baseline: float, ours: float) -> str:
    return f"x{baseline / ours:.2f}"


def alternating(rounds: int, jobs: dict[str, object]) -> dict[str, list[Run]]:
    """Each job once per round, the order rotated every round (jobs: name -> callable)."""
    names = list(jobs)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(jobs[name]())  # type: ignore[operator]
        print(f"  round {r + 1}/{rounds} done; {machine_state()}", flush=True)
    return runs


def epoch_difference(short: list[Run], long: list[Run], extra: int) -> float:
    """Median over rounds of (wall(long) - wall(short)) / extra epochs."""
    return med([(b.seconds - a.seconds) / extra for a, b in zip(short, long, strict=True)])


def _gauged(job: Callable[[], Run], gauge: TwoCoreGauge | None, capacities: list[float]
            ) -> Callable[[], Run]:  # fmt: skip
    """The job, after a reading of the machine's two-core capacity (when the gauge runs here)."""

    def run() -> Run:
        if gauge is not None:
            capacities.append(gauge.capacity())
        return job()

    return run


def _capacity_line(capacities: list[float], scaling: float) -> str:
    if not capacities:
        return "  two-core capacity: not measured (no C compiler or no AVX2 here)"
    cap = med(capacities)
    return (
        f"  two-core capacity of the machine before each 2-thread run: x{cap:.2f} median"
        f" (x{min(capacities):.2f}-{max(capacities):.2f}; benchmarks/two_core_gauge.py: no"
        f" 2-thread program of AVX2 code scales beyond it): ctrflow's x{scaling:.2f} is"
        f" {scaling / cap:.0%} of it"
    )


def bench_training(args: argparse.Namespace, data: pathlib.Path, tag: str, lib: Libffm | None,
                   gauge: TwoCoreGauge | None, threads_only: bool = False,
                   rounds: int | None = None) -> None:  # fmt: skip
    rounds = args.rounds if rounds is None else rounds
    ours = Ctrflow(data, args.dir / "work" / f"ctrflow-{tag}")
    short, long = args.short_epochs, args.small_long_epochs if threads_only else args.long_epochs
    extra = long - short
    jobs: dict[str, object] = {}
    if lib is not None and not threads_only:
        jobs["lib 1t short"] = lambda: lib.train(short, 1, False)
        jobs["lib 1t long"] = lambda: lib.train(long, 1, False)
    capacities: list[float] = []
    for t in (1, 2):
        jobs[f"ours {t}t short"] = lambda t=t: ours.train(short, t, False)
        jobs[f"ours {t}t long"] = lambda t=t: ours.train(long, t, False)
    for name in ("ours 2t short", "ours 2t long"):
        jobs[name] = _gauged(jobs[name], gauge, capacities)  # type: ignore[arg-type]
    if not threads_only:
        if lib is not None:
            jobs["lib job"] = lambda: lib.train(args.max_epochs, 1, True)
        jobs["ours job"] = lambda: ours.train(args.max_epochs, 1, True)
    print(f"\n== {tag}: {data.name}, k={K}, eta={ETA}, lambda={LAM}; {rounds} rounds")
    runs = alternating(rounds, jobs)

    o1 = epoch_difference(runs["ours 1t short"], runs["ours 1t long"], extra)
    o2 = epoch_difference(runs["ours 2t short"], runs["ours 2t long"], extra)
    best1 = med([r.best for r in runs["ours 1t long"]])
    best2 = med([r.best for r in runs["ours 2t long"]])
    target = "1.6" if threads_only else "1.85"
    print(f"epoch difference (wall({long}) - wall({short})) / {extra}, median of rounds:")
    if lib is not None and not threads_only:
        l1 = epoch_difference(runs["lib 1t short"], runs["lib 1t long"], extra)
        lbest = med([r.best for r in runs["lib 1t long"]])
        phase = med([med(r.epoch_timer) for r in runs["lib 1t long"]])
        print(
            f"  1 thread:  LIBFFM {l1:.3f} s (best valid logloss {lbest:.4f})   ctrflow {o1:.3f} s"
            f" (best valid logloss {best1:.4f}): {ratio(l1, o1)} (target >= 2.0)"
        )
        print(
            f"  phase gauge: LIBFFM's own epoch timer {phase:.3f} s (on the 200k reference"
            " workload: about 0.80 in a quiet phase, 1.05 and more in slow ones)"
        )
    else:
        print(f"  1 thread:  ctrflow {o1:.3f} s (best valid logloss {best1:.4f})")
    print(
        f"  2 threads: ctrflow {o2:.3f} s (best valid logloss {best2:.4f}, {best2 - best1:+.4f}"
        f" vs 1 thread; target within 0.002): scaling x{o1 / o2:.2f} (target >= {target})"
    )
    print(_capacity_line(capacities, o1 / o2))
    if threads_only:
        return
    ojob = runs["ours job"]
    print("whole job (auto-stop on validation, save; one process), median of rounds:")
    oj, orss = med([r.seconds for r in ojob]), med([r.rss_mb for r in ojob])
    obest = med([r.best for r in ojob])
    oep = med([float(len(r.valid)) for r in ojob])
    if lib is not None:
        ljob = runs["lib job"]
        lj, lrss = med([r.seconds for r in ljob]), med([r.rss_mb for r in ljob])
        lbest, lep = med([r.best for r in ljob]), med([float(len(r.valid)) for r in ljob])
        print(
            f"  LIBFFM {lj:.2f} s, {lep:.0f} epochs, best valid logloss {lbest:.4f},"
            f" {_memory(ljob)}"
        )
        print(
            f"  ctrflow {oj:.2f} s, {oep:.0f} epochs, best valid logloss {obest:.4f},"
            f" {_memory(ojob)}"
        )
        print(
            f"  time {ratio(lj, oj)} (target >= 2.0); peak RSS ctrflow/LIBFFM {orss / lrss:.2f}"
            f" (target <= 1.00); logloss difference {obest - lbest:+.4f}"
        )
    else:
        print(
            f"  ctrflow {oj:.2f} s, {oep:.0f} epochs, best valid logloss {obest:.4f},"
            f" {_memory(ojob)}"
        )


def bench_scale(args: argparse.Namespace, lib: Libffm | None) -> None:
    """Seconds per epoch (epoch difference of 2 and 4 epochs: both runs pay ctrflow's first
    snapshot of the best weights, a one-off cost) and peak RSS as rows grow, median of rounds.
    Every round runs every size, jobs taking turns: sizes measured one after the other would
    each get another phase of the VM, and the drift would read as growth. Then ctrflow's CPU
    time per row at each size in one process, the sizes' epochs taking turns."""
    print(
        f"\n== scale: seconds per epoch (wall(4) - wall(2)) / 2 and peak RSS, 1 thread;"
        f" {args.rounds} rounds, every size in every round"
    )
    jobs: dict[str, object] = {}
    for rows in args.scale:
        data = workload(args.dir, rows)
        ours = Ctrflow(data, args.dir / "work" / f"ctrflow-{rows}")
        jobs[f"ours 2 {rows}"] = lambda ours=ours: ours.train(2, 1, False)
        jobs[f"ours 4 {rows}"] = lambda ours=ours: ours.train(4, 1, False)
        if lib is not None:
            l_ = Libffm(lib.directory, data, args.dir / "work" / f"libffm-{rows}")
            l_.train(1, 1, False)  # builds its binary caches, untimed
            jobs[f"lib 2 {rows}"] = lambda l_=l_: l_.train(2, 1, False)
            jobs[f"lib 4 {rows}"] = lambda l_=l_: l_.train(4, 1, False)
    runs = alternating(args.rounds, jobs)
    per_epoch: dict[str, list[tuple[int, float]]] = {"ctrflow": [], "LIBFFM": []}
    for rows in args.scale:
        short, long = runs[f"ours 2 {rows}"], runs[f"ours 4 {rows}"]
        o = epoch_difference(short, long, 2)
        per_epoch["ctrflow"].append((rows, o))
        line = f"  {rows:>9,} rows: ctrflow {o:.2f} s/epoch, {_memory(long)}"
        line += f" (valid logloss {med([r.valid[-1] for r in long]):.4f})"
        if lib is not None:
            lshort, llong = runs[f"lib 2 {rows}"], runs[f"lib 4 {rows}"]
            lt = epoch_difference(lshort, llong, 2)
            per_epoch["LIBFFM"].append((rows, lt))
            line += (
                f"; LIBFFM {lt:.2f} s/epoch, {_memory(llong)}"
                f" (valid logloss {med([r.valid[-1] for r in llong]):.4f}): {ratio(lt, o)}"
            )
        print(line, flush=True)
    for program, points in per_epoch.items():
        if len(points) > 1:
            (r0, t0), (r1, t1) = points[0], points[-1]
            costs = ", ".join(f"{t / rows * 1e5:.3f}" for rows, t in points)
            print(
                f"  {program}: x{t1 / t0:.1f} the time per epoch for x{r1 / r0:.0f} the rows;"
                f" seconds per 100k rows {costs}"
            )
    _cpu_per_row(args)


def _memory(runs: list[Run]) -> str:
    total, anon = med([r.rss_mb for r in runs]), med([r.anon_mb for r in runs])
    return f"peak RSS {total:.0f} MB (anonymous {anon:.0f} MB)"


def _cpu_per_row(args: argparse.Namespace) -> None:
    """ctrflow's CPU seconds per 100k rows of a 1-thread epoch at each size, in this process:
    one engine per size, their epochs taking turns, so every size sees the same phases."""
    import resource

    import ffm_ext
    from ffm_ext import _core
    from ffm_ext._epoch_rows import EpochRows

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    sizes: list[tuple[int, ffm_ext.Dataset, _core.Engine, EpochRows, list[float]]] = []
    for rows in args.scale:
        train = ffm_ext.Dataset.load(workload(args.dir, rows) / "train.bin")
        engine = _core.Engine(train.n_features, train.n_fields, K, training=True)
        engine.initialize(0)
        engine.start_training()
        sizes.append((rows, train, engine, EpochRows(train), []))
    for epoch in range(1, 5):
        for rows, _, engine, epoch_rows, costs in sizes:
            arrays, order = epoch_rows.epoch(epoch)
            began = cpu()
            engine.train_epoch(*arrays, order, ETA, LAM, True, 1)
            if epoch > 1:  # the first epoch also pays the model's first touch
                costs.append((cpu() - began) / rows * 1e5)
    figures = ", ".join(f"{rows:,}: {med(costs):.3f}" for rows, _, _, _, costs in sizes)
    print(
        f"  ctrflow CPU seconds per 100k rows (one process, sizes in turn, epochs 2-4): {figures}"
    )


def bench_predict(data: pathlib.Path) -> None:
    """Batch throughput and one-row latency in this process (no LIBFFM counterpart run)."""
    import ffm_ext

    parse = min(seconds(lambda: ffm_ext.read_libffm(data / "train.ffm")) for _ in range(3))
    load = min(seconds(lambda: ffm_ext.Dataset.load(data / "train.bin")) for _ in range(5))
    print(
        f"\n== data: text parse (validating) {parse:.3f} s, binary load (mmap, validating)"
        f" {load * 1e3:.1f} ms: x{parse / load:.0f} (target >= 20)"
    )
    train = ffm_ext.Dataset.load(data / "train.bin")
    test = ffm_ext.read_libffm(data / "test.ffm")
    model = ffm_ext.FFM(k=K, eta=ETA, lam=LAM, epochs=2, progress=False)
    model.fit(train)
    print(f"\n== prediction (model after 2 epochs; test logloss {model.logloss(test):.4f})")
    for threads in (1, 2):
        model.n_threads = threads
        best = min(seconds(lambda: model.predict(train)) for _ in range(3))
        print(f"batch from memory, {threads} thread(s): {train.n_rows / best / 1e6:.2f} M rows/s")
    model.n_threads = 1
    rows = []
    for i in range(min(20_000, test.n_rows)):
        lo, hi = test.indptr[i], test.indptr[i + 1]
        rows.append((test.fields[lo:hi], test.features[lo:hi], test.values[lo:hi]))
    latencies = np.empty(len(rows))
    clock, predict_one = time.perf_counter_ns, model.predict_one
    for i, (f, j, v) in enumerate(rows):
        started = clock()
        predict_one(f, j, v)
        latencies[i] = clock() - started
    p50, p99 = np.percentile(latencies[len(latencies) // 20 :], [50, 99]) / 1e3
    print(f"one row from Python (FFM.predict_one): p50 {p50:.2f} us, p99 {p99:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    default_dir = pathlib.Path(tempfile.gettempdir()) / "ctrflow-bench"
    parser.add_argument("--dir", type=pathlib.Path, default=default_dir)
    parser.add_argument("--libffm", type=pathlib.Path, default=os.environ.get("LIBFFM_DIR"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (>= 3)")
    parser.add_argument("--short-epochs", type=int, default=5)
    parser.add_argument("--long-epochs", type=int, default=15)
    parser.add_argument("--max-epochs", type=int, default=30, help="whole job, with auto-stop")
    parser.add_argument(
        "--small-long-epochs", type=int, default=125,
        help="the small set's long run: its epochs take 10-25 ms, and a process's start varies"
        " by +-0.1 s (with 45, the 2-thread scaling read x1.28-1.87 within minutes)",
    )  # fmt: skip
    parser.add_argument(
        "--small-rounds", type=int, default=5, help="the small set's rounds (a round is ~10 s)"
    )
    parser.add_argument(
        "--scale",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[],
        help="row counts for the scaling table, e.g. 200000,1000000,2000000",
    )
    parser.add_argument("--no-small", action="store_true", help="skip the 70k x 10-field set")
    parser.add_argument("--no-predict", action="store_true")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference workload")
    args = parser.parse_args()
    if min(args.rounds, args.small_rounds) < 3:
        parser.error("--rounds must be >= 3: a median of fewer rounds is not a figure")

    from ffm_ext import _core

    data = workload(args.dir, args.rows)
    print(f"machine: {machine_state()}; ctrflow hot loops: {_core.isa()}")
    lib = None
    if args.libffm is not None:
        lib = Libffm(args.libffm.resolve(), data, args.dir / "work" / f"libffm-{args.rows}")
        print(f"LIBFFM: {lib.build_info()}")
        lib.train(1, 1, False)  # builds its binary caches, untimed
    else:
        print("LIBFFM: not run (pass --libffm DIR or set $LIBFFM_DIR); no ratio is printed.")
        print("  recorded earlier on this machine kind (NOT measured now):")
        for key, value in RECORDED.items():
            print(f"    {key}: {value}")
    try:
        gauge: TwoCoreGauge | None = TwoCoreGauge(args.dir / "two-core-gauge")
    except GaugeUnavailableError:
        gauge = None
    if not args.no_reference:
        bench_training(args, data, "reference", lib, gauge)
        print(f"  epochs in one process: {engine_pair_summary(data)}")
    if not args.no_small:
        bench_training(args, small_workload(data), "small", None, gauge, threads_only=True,
                       rounds=args.small_rounds)  # fmt: skip
    if args.scale:
        bench_scale(args, lib)
    if not args.no_predict:
        bench_predict(data)
    print(f"\nmachine at the end: {machine_state()}")


if __name__ == "__main__":
    main()
