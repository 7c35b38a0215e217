"""2 threads on one model against two 1-thread trainings at once: what sharing the model costs.

    python -m benchmarks.engine_pair [--dir DIR] [--rounds 12]

In one process, on ffm_bench's reference workload, every round times in turn: a 1-thread epoch
of engine A, a 2-thread epoch of A, two more engines (B and C, each its own model) training a
1-thread epoch each at the same moment (two Python threads: an epoch runs without the GIL),
and A's 1-thread epoch again (the faster of the two is kept, as in two_core_gauge.py).

- pair capacity = t(1 thread) / t(B) + t(1 thread) / t(C): the cores' worth of this workload
  that the machine gives two trainings sharing nothing, right now. Unlike the FMA loop of
  two_core_gauge.py it also feels what the trainings' memory traffic costs on two vCPUs.
- sharing efficiency = the 2-thread scaling / the pair capacity = (harmonic mean of t(B) and
  t(C)) / (2 t(2 threads)): 1.0 when two threads on one model run as fast as two trainings on
  two models. It does not depend on the 1-thread epochs, so it is the steadiest figure here.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import threading
from dataclasses import dataclass

from benchmarks.timing import seconds
from ffm_ext import _core
from ffm_ext._dataset import Dataset
from ffm_ext._epoch_rows import EpochRows

K, ETA, LAM = 4, 0.2, 2e-5


@dataclass(frozen=True)
class PairRound:
    alone: float  # seconds of a 1-thread epoch: the faster of the two in the round
    two_threads: float  # seconds of a 2-thread epoch of the same engine
    pair: tuple[float, float]  # seconds of each of the two 1-thread epochs run at once

    @property
    def scaling(self) -> float:
        return self.alone / self.two_threads

    @property
    def capacity(self) -> float:
        return sum(self.alone / seconds for seconds in self.pair)

    @property
    def efficiency(self) -> float:
        return self.scaling / self.capacity


class EnginePair:
    """Three engines on one training set, each past its first epoch (first touch) already."""

    def __init__(self, train: Dataset) -> None:
        arrays, order = EpochRows(train).epoch(1)
        self._rows = (*arrays, order)
        self._engines = []
        for _ in range(3):
            engine = _core.Engine(train.n_features, train.n_fields, K, training=True)
            engine.initialize(0)
            engine.start_training()
            self._engines.append(engine)
            self._epoch(engine, 1)

    def _epoch(self, engine: _core.Engine, threads: int) -> None:
        engine.train_epoch(*self._rows, ETA, LAM, True, threads)

    def _pair(self) -> tuple[float, float]:
        took = [0.0, 0.0]

        def train(i: int) -> None:
            took[i] = seconds(lambda: self._epoch(self._engines[1 + i], 1))

        workers = [threading.Thread(target=train, args=(i,)) for i in (0, 1)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return took[0], took[1]

    def round(self) -> PairRound:
        a = self._engines[0]
        before = seconds(lambda: self._epoch(a, 1))
        two = seconds(lambda: self._epoch(a, 2))
        pair = self._pair()
        after = seconds(lambda: self._epoch(a, 1))
        return PairRound(min(before, after), two, pair)


def summary(rounds: list[PairRound]) -> str:
    def spread(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    return (
        f"2 threads on one model x{spread([r.scaling for r in rounds], '.2f')}; two 1-thread"
        f" trainings at once (pair capacity) x{spread([r.capacity for r in rounds], '.2f')};"
        f" sharing efficiency {spread([r.efficiency for r in rounds], '.2f')}"
        f" (medians of {len(rounds)} rounds in one process)"
    )


def measure(train_dir: pathlib.Path, rounds: int) -> list[PairRound]:
    pair = EnginePair(Dataset.load(train_dir))
    return [pair.round() for _ in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = pathlib.Path(tempfile.gettempdir()) / "ctrflow-bench" / "synth-200000-seed0"
    parser.add_argument("--dir", type=pathlib.Path, default=default, help="ffm_bench's workload")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    rounds = measure(args.dir / "train.bin", args.rounds)
    for r in rounds:
        print(
            f"  1 thread {r.alone:.3f} s, 2 threads {r.two_threads:.3f} s (x{r.scaling:.2f}),"
            f" pair {r.pair[0]:.3f} / {r.pair[1]:.3f} s (x{r.capacity:.2f}):"
            f" efficiency {r.efficiency:.2f}"
        )
    print(summary(rounds))


if __name__ == "__main__":
    main()
