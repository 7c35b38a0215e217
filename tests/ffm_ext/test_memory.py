"""C-allocated weights are freed with their last Python reference."""

from __future__ import annotations

import gc
import os
import pathlib
from collections.abc import Callable

import numpy as np

import ffm_ext
from ffm_ext import _core


def rss_bytes() -> int:
    with pathlib.Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_growth(cycle: Callable[[], None], times: int = 50) -> int:
    """RSS bytes gained over `times` cycles, after 5 that warm up the allocator's pools."""
    for _ in range(5):
        cycle()
    gc.collect()
    before = rss_bytes()
    for _ in range(times):
        cycle()
    gc.collect()
    return rss_bytes() - before


def random_dataset(
    rng: np.random.Generator, rows: int, n_fields: int, n_features: int, *, ids: int
) -> ffm_ext.Dataset:
    """`rows` rows with every field once, feature ids drawn from [0, ids), ~30% positive."""
    return ffm_ext.Dataset(
        np.arange(rows + 1, dtype=np.int64) * n_fields,
        np.tile(np.arange(n_fields, dtype=np.int32), rows),
        rng.integers(0, ids, rows * n_fields).astype(np.int32),
        np.ones(rows * n_fields, np.float32),
        (rng.random(rows) < 0.3).astype(np.float32),
        n_features=n_features,
    )


def test_train_and_delete_fifty_times_does_not_grow() -> None:
    rng = np.random.default_rng(0)
    rows, n_fields, n_features = 2000, 10, 20_000  # 20k x 10 x 4 floats = 3.2 MB of weights
    data = random_dataset(rng, rows, n_fields, n_features, ids=n_features)

    def cycle() -> None:
        model = ffm_ext.FFM(k=4, epochs=2)
        model.fit(data, data)
        view = model.weights  # a view outliving the model must keep, then free, the memory
        del model
        assert float(view.sum()) != 0.0

    grown = rss_growth(cycle)
    # One leaked model is 3.2 MB of weights (+6.4 MB training state): 50 would be >150 MB.
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 50 train/delete cycles"


def test_what_threads_keep_between_epochs_is_freed() -> None:
    """With several threads the model keeps its replicated-feature set (a slot per feature)
    from epoch to epoch: it must go when training stops."""
    rng = np.random.default_rng(1)
    rows, n_fields, n_features = 2000, 2, 600_000  # the kept slot table: 1.2 MB per model
    data = random_dataset(rng, rows, n_fields, n_features, ids=50)  # hot enough to replicate

    def cycle() -> None:
        ffm_ext.FFM(k=4, epochs=2, n_threads=2).fit(data)

    grown = rss_growth(cycle)
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 50 two-thread fits"


def test_replicas_kept_between_epochs_are_freed_also_when_the_thread_count_grows() -> None:
    """Each thread's replica of the replicated features stays with the model from epoch to
    epoch and is allocated again when more threads come: 2,000 replicated features of 40 fields
    make 2 x 3 threads x 2,000 x 40 x 4 x 2 floats = 15 MB a model, so a leak shows."""
    rng = np.random.default_rng(2)
    rows, n_fields, n_features = 2000, 40, 2000
    data = random_dataset(rng, rows, n_fields, n_features, ids=n_features)
    order = np.arange(rows, dtype=np.int64)
    arrays = (data.indptr, data.fields, data.features, data.values, data.labels)

    def cycle() -> None:
        engine = _core.Engine(n_features, n_fields, 4, training=True)
        engine.initialize(0)
        engine.start_training()
        losses = [
            engine.train_epoch(*arrays, order, 0.2, 2e-5, True, threads) for threads in (2, 3, 2)
        ]
        assert losses[0] > losses[1] > losses[2], losses  # all-positive initial weights: ~3.2
        engine.stop_training()
        assert engine.weights_finite()

    grown = rss_growth(cycle, times=30)
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 30 engines"
