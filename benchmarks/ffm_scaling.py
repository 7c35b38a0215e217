"""Why 2 threads do not train twice as fast here: a diagnosis of Hogwild scaling.

    python -m benchmarks.ffm_scaling [--dir DIR]

Trains one epoch at 1 and 2 threads on the reference workload twice: as it is (both threads
update the same hot features: the 13 numeric fields have 40 values each, so every row writes
blocks the other thread is writing too) and with the second half of the rows moved onto their
own copy of every feature (no weight is shared between the threads). The first ratio is what
training gets; the second shows what sharing costs. (With plain Hogwild this printed x0.90 and
x2.00; the engine now keeps per-thread replicas of the most frequent features, so both runs
also pay for folding those into the model. The second run's single thread works on twice the
model, so its ratio flatters: two independent 1-thread trainings side by side ran each epoch
about 5% slower than one alone here, which bounds 2 threads at about x1.9.)
Rows go in dataset order (the synthetic rows are i.i.d., so that is a fair order).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np

import ffm_ext
from ffm_ext import _core


def epoch_seconds(data: ffm_ext.Dataset, features: np.ndarray, n: int, threads: int) -> float:
    engine = _core.Engine(n, data.n_fields, 4, training=True)
    engine.initialize(0)
    order = np.arange(data.n_rows, dtype=np.int64)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        engine.train_epoch(
            data.indptr, data.fields, features, data.values, data.labels, order,
            0.2, 2e-5, True, threads,
        )  # fmt: skip
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = pathlib.Path(tempfile.gettempdir()) / "ctrflow-bench" / "synth-200000-seed0"
    parser.add_argument("--dir", type=pathlib.Path, default=default, help="ffm_bench's workload")
    args = parser.parse_args()
    data = ffm_ext.read_libffm(args.dir / "train.ffm")
    second_half = np.repeat(np.arange(data.n_rows) >= data.n_rows // 2, np.diff(data.indptr))
    disjoint = (data.features + second_half * data.n_features).astype(np.int32)
    n = 2 * data.n_features
    for name, features in (("shared weights", data.features), ("disjoint weights", disjoint)):
        one = epoch_seconds(data, features, n, 1)
        two = epoch_seconds(data, features, n, 2)
        print(f"{name:17s} 1 thread {one:.3f} s, 2 threads {two:.3f} s: scaling x{one / two:.2f}")


if __name__ == "__main__":
    main()
