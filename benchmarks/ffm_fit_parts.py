"""Where a fit's time goes outside its epochs: one fresh process, the steps of FFM.fit timed apart.

    python -m benchmarks.ffm_fit_parts DATA_DIR [--epochs 3]

DATA_DIR holds train.bin and valid.bin (`ctrflow ffm convert`), e.g. the reference workload
that benchmarks/ffm_bench.py caches. The steps are those FFM.fit runs (ffm_ext/_model.py), in
its order. The last lines touch the same amount of memory twice, fresh from the kernel and
just freed: on this VM the first touch of fresh memory costs several times the second, and a
fit's one-off allocations (model, snapshot of the best weights) pay it.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

started_process = time.perf_counter()
import ffm_ext  # noqa: E402  (its import time is one of the figures)
from ffm_ext import _core  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=pathlib.Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--no-prefault", action="store_true",
        help="allocate the snapshot at the first snapshot, as before its pages were touched in"
        " the background during epoch 1",
    )  # fmt: skip
    args = parser.parse_args()
    clock = time.perf_counter
    parts: list[tuple[str, float]] = [("import ffm_ext", IMPORT_SECONDS)]

    def step(name: str, fn):  # type: ignore[no-untyped-def]
        began = clock()
        result = fn()
        parts.append((name, clock() - began))
        return result

    train = step("load train.bin (mmap)", lambda: ffm_ext.Dataset.load(args.data / "train.bin"))
    valid = step("load valid.bin (mmap)", lambda: ffm_ext.Dataset.load(args.data / "valid.bin"))
    n, m = max(train.n_features, valid.n_features), max(train.n_fields, valid.n_fields)
    engine = step("allocate model (training layout)", lambda: _core.Engine(n, m, 4, training=True))
    step("initialise weights (first touch)", lambda: engine.initialize(0))
    best = None
    if not args.no_prefault:  # as FFM.fit does
        best = step("snapshot buffer (touched in background)", engine.snapshot_buffer)
    for epoch in range(1, args.epochs + 1):
        order = step(
            f"epoch {epoch}: permutation", lambda e=epoch: _core.permutation(train.n_rows, e)
        )
        step(
            f"epoch {epoch}: train",
            lambda o=order: engine.train_epoch(
                train.indptr, train.fields, train.features, train.values, train.labels, o,
                0.2, 2e-5, True, 1,
            ),
        )  # fmt: skip
        step(
            f"epoch {epoch}: validation margins",
            lambda: engine.margins(valid.indptr, valid.fields, valid.features, valid.values,
                                   True, 1),
        )  # fmt: skip
        best = step(f"epoch {epoch}: snapshot of best weights", lambda b=best: engine.snapshot(b))
    step("stop training (compact in place)", lambda: engine.stop_training(None))
    step("weights finite check", engine.weights_finite)
    total = sum(seconds for _, seconds in parts)
    for name, seconds in parts:
        print(f"{name:<40} {seconds:7.3f} s")
    print(f"{'total':<40} {total:7.3f} s")

    size = engine.shape[0] * engine.shape[1] * 4
    fresh = clock()
    a = np.empty(size, np.float32)
    a.fill(1.0)
    fresh = clock() - fresh
    del a
    again = clock()
    b = np.empty(size, np.float32)
    b.fill(1.0)
    again = clock() - again
    del b
    mb = size * 4 / 2**20
    print(f"touch {mb:.0f} MB fresh from the kernel: {fresh:.3f} s; just freed: {again:.3f} s")


if __name__ == "__main__":
    main()
