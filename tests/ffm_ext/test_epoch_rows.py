"""Shuffled epochs without a copy of the dataset: the order the rows are trained in, what it
costs in memory, and block-shuffled epochs for data beyond memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import ffm_ext
from ffm_ext import _core
from ffm_ext._epoch_rows import EpochRows, block_order
from tests.ffm_ext.test_reference import TOLERANCE, random_dataset, reference
from tests.testkit.paths import REPO_ROOT


def take_rows(data: ffm_ext.Dataset, order: np.ndarray) -> ffm_ext.Dataset:
    """The rows of `data` in `order`, as a new dataset (NumPy, independent of the engine)."""
    parts = [np.arange(data.indptr[i], data.indptr[i + 1]) for i in order]
    tokens = np.concatenate(parts)
    lengths = np.diff(data.indptr)[order]
    return ffm_ext.Dataset(
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        data.fields[tokens], data.features[tokens], data.values[tokens], data.labels[order],
        n_features=data.n_features, n_fields=data.n_fields,
    )  # fmt: skip


def test_a_shuffled_epoch_trains_the_rows_in_the_permutations_order() -> None:
    """700 rows: the engine stages 256 rows at a time (two full stages and a short one)."""
    rng = np.random.default_rng(5)
    data = random_dataset(rng, rows=700, n_features=60, n_fields=9, repeat_fields=False)
    model = ffm_ext.FFM(k=4, eta=0.1, lam=1e-3, epochs=1, seed=3)
    model.init_weights(data.n_features, data.n_fields)
    w0 = model.weights.copy()
    model.fit(data, warm_start=True)  # epoch 1 visits permutation(n, seed * 1_000_003 + 1)
    order = _core.permutation(data.n_rows, 3 * 1_000_003 + 1)
    shuffled = take_rows(data, order)
    expected = reference(shuffled, w0, 1, True)
    np.testing.assert_allclose(model.weights, expected, **TOLERANCE)


# The peak is the process's VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
# exec, so a child of a large pytest process would report the parent's peak as its own.
_PEAK = """
import json
import numpy as np
import ffm_ext
rows, width = {rows}, 8
rng = np.random.default_rng(0)
data = ffm_ext.Dataset(
    np.arange(rows + 1, dtype=np.int64) * width,
    np.tile(np.arange(width, dtype=np.int32), rows),
    rng.integers(0, {n_features}, rows * width, dtype=np.int32),
    np.ones(rows * width, np.float32),
    (rng.random(rows) < 0.3).astype(np.float32),
    n_features={n_features},
)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
before_peak = hwm()
before = rss()
ffm_ext.FFM(k=4, epochs=2, seed=1).fit(data)
print(json.dumps({{"data": sum(a.nbytes for a in (data.indptr, data.fields, data.features,
    data.values, data.labels)), "before": before, "before_peak": before_peak,
    "peak": hwm(), "after": rss()}}))
"""


def peak_of_fit(rows: int, n_features: int) -> dict[str, int]:
    """Memory figures of one fit in a fresh process (its peak RSS is this fit's alone)."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK.format(rows=rows, n_features=n_features)],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    figures: dict[str, int] = json.loads(out.stdout)
    return figures


def test_an_epoch_makes_no_copy_of_the_dataset() -> None:
    """192 MB of rows and a 0.3 MB model: a per-epoch shuffled copy would add 192 MB."""
    m = peak_of_fit(rows=2_000_000, n_features=1000)
    grown = m["peak"] - max(m["before"], m["before_peak"])
    assert grown < m["data"] // 4, f"a fit grew the peak by {grown / 2**20:.0f} MiB"


def test_stopping_training_needs_no_second_copy_of_the_weights() -> None:
    """500k features x 8 fields x k=4: 64 MB of weights, 128 MB while training. Leaving the
    training layout must neither allocate another 64 MB nor keep the accumulators' 64 MB."""
    m = peak_of_fit(rows=4000, n_features=500_000)
    weights = 500_000 * 8 * 4 * 4
    assert m["peak"] - m["before"] < 2 * weights + weights // 4, m
    assert m["after"] - m["before"] < weights + weights // 4, m


def test_block_order_is_a_permutation_of_whole_shuffled_blocks() -> None:
    order = block_order(10_000, seed=4, block_rows=1000)
    assert sorted(order.tolist()) == list(range(10_000))
    blocks = order.reshape(10, 1000) // 1000
    assert (blocks == blocks[:, :1]).all(), "a block's rows must come together"
    assert blocks[:, 0].tolist() != list(range(10)), "blocks must be shuffled"
    assert order[:1000].tolist() != sorted(order[:1000].tolist()), "rows within a block too"
    short = block_order(2500, seed=4, block_rows=1000)  # a short last block
    assert sorted(short.tolist()) == list(range(2500))
    assert not np.array_equal(short, block_order(2500, seed=5, block_rows=1000))


def test_data_beyond_the_memory_budget_goes_block_by_block() -> None:
    rng = np.random.default_rng(2)
    data = random_dataset(rng, rows=20_000, n_features=60, n_fields=9, repeat_fields=False)
    assert not EpochRows(data).by_blocks
    beyond = EpochRows(data, budget_bytes=1000)
    assert beyond.by_blocks
    arrays, order = beyond.epoch(seed=1)
    assert arrays[0] is data.indptr, "the epoch must train on the dataset itself, not a copy"
    np.testing.assert_array_equal(order, block_order(data.n_rows, 1))
