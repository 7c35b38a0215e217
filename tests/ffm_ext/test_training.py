"""Training behaviour: accuracy on real Criteo rows, early stopping, callbacks, threads,
determinism, divergence."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import ffm_ext
from ffm_ext import _core
from tests.testkit.isa_builds import run_under_isa

LIBFFM_TINY_VALID_LOGLOSS = 0.5571  # ffm-train -k 4 -r 0.2 -l 0.00002 -t 15 on criteo_tiny


@pytest.fixture(scope="module")
def tiny(criteo_tiny_dir: pathlib.Path) -> tuple[ffm_ext.Dataset, ffm_ext.Dataset]:
    """xLearn's Criteo sample beside the checkout: an extra case, LIBFFM's figure is known for it
    (the exact algorithm is checked on generated data against tests/testkit/ffm_reference.py)."""
    train, valid = criteo_tiny_dir / "train.ffm", criteo_tiny_dir / "valid.ffm"
    return ffm_ext.read_libffm(train), ffm_ext.read_libffm(valid)


def synthetic(seed: int, rows: int = 3000) -> ffm_ext.Dataset:
    """One token per field, labels from a planted field-aware interaction."""
    rng = np.random.default_rng(seed)
    n_fields, per_field = 6, 20
    ids = rng.integers(0, per_field, size=(rows, n_fields))
    latent = np.random.default_rng(99).normal(size=(n_fields * per_field, n_fields, 2))
    features = ids + np.arange(n_fields) * per_field
    logit = sum(
        np.einsum("ij,ij->i", latent[features[:, a], b], latent[features[:, b], a])
        for a in range(n_fields) for b in range(a + 1, n_fields)
    )  # fmt: skip
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    indptr = np.arange(rows + 1, dtype=np.int64) * n_fields
    fields = np.tile(np.arange(n_fields, dtype=np.int32), rows)
    return ffm_ext.Dataset(
        indptr, fields, features.ravel().astype(np.int32), np.ones(rows * n_fields, np.float32),
        labels, n_features=n_fields * per_field, n_fields=n_fields,
    )  # fmt: skip


def test_criteo_tiny_matches_libffm(tiny: tuple[ffm_ext.Dataset, ffm_ext.Dataset]) -> None:
    train, valid = tiny
    model = ffm_ext.FFM(k=4, eta=0.2, lam=2e-5, epochs=15, patience=15)
    history = model.fit(train, valid)
    final = history.valid_logloss[-1]
    assert len(history.valid_logloss) == 15
    assert abs(final - LIBFFM_TINY_VALID_LOGLOSS) / LIBFFM_TINY_VALID_LOGLOSS < 0.02
    # +-2% of the logloss would pass a model with 40% of LIBFFM's gain over the constant
    # predictor (0.0286 here); most of that gain is required too (measured: 121%).
    constant = constant_logloss(train, valid)
    assert constant - final >= 0.9 * (constant - LIBFFM_TINY_VALID_LOGLOSS), (constant, final)
    assert model.logloss(valid) == pytest.approx(final, rel=1e-6)


def test_learns_a_planted_signal() -> None:
    train, valid = synthetic(1), synthetic(2, rows=1000)
    constant = constant_logloss(train, valid)
    model = ffm_ext.FFM(k=4, eta=0.1, lam=1e-5, epochs=30, patience=3)
    history = model.fit(train, valid)
    assert history.best_valid_logloss is not None
    assert history.best_valid_logloss < constant - 0.05


def test_early_stopping_keeps_best_epoch_weights() -> None:
    # A large eta overfits fast on a small set: validation loss turns up, training stops.
    train, valid = synthetic(3, rows=400), synthetic(4, rows=400)
    model = ffm_ext.FFM(k=8, eta=0.5, lam=0.0, epochs=40, patience=2)
    history = model.fit(train, valid)
    assert history.stopped_early and history.stop_reason == "early_stopping"
    assert history.best_epoch == len(history.valid_logloss) - 2
    assert history.best_valid_logloss == min(history.valid_logloss)
    assert model.logloss(valid) == pytest.approx(history.best_valid_logloss, rel=1e-6)
    assert model.weights.flags.c_contiguous and model.weights.shape == (120, 6, 8)


def test_callback_sees_every_epoch_and_can_stop() -> None:
    seen: list[tuple[int, float, float | None]] = []

    def callback(epoch: int, train_loss: float, valid_loss: float | None) -> bool:
        seen.append((epoch, train_loss, valid_loss))
        return epoch == 3

    train, valid = synthetic(5, rows=500), synthetic(6, rows=200)
    history = ffm_ext.FFM(epochs=10, patience=10).fit(train, valid, callback=callback)
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert history.stop_reason == "callback" and len(history.train_logloss) == 3
    assert [v for _, _, v in seen] == history.valid_logloss


def test_callback_exception_propagates_and_model_stays_usable() -> None:
    class Pruned(Exception):
        pass

    def callback(epoch: int, train_loss: float, valid_loss: float | None) -> None:
        if epoch == 2:
            raise Pruned

    model = ffm_ext.FFM(epochs=10)
    data = synthetic(7, rows=300)
    with pytest.raises(Pruned):
        model.fit(data, callback=callback)
    assert model.predict(data).shape == (300,)


def test_one_thread_is_deterministic_and_seed_matters() -> None:
    data = synthetic(8, rows=800)
    runs = []
    for seed in (0, 0, 1):
        model = ffm_ext.FFM(epochs=3, seed=seed)
        model.fit(data)
        runs.append(model.weights.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def constant_logloss(train: ffm_ext.Dataset, valid: ffm_ext.Dataset) -> float:
    """Validation logloss of the constant predictor: the training click rate for every row."""
    base = float(np.mean(train.labels))
    labels = np.asarray(valid.labels, dtype=np.float64)
    return float(-np.mean(labels * np.log(base) + (1 - labels) * np.log(1 - base)))


def test_two_threads_reach_the_same_quality() -> None:
    """Measured as the gain over the constant predictor (0.21 here with one thread): a bound on
    the logloss itself would be loose against a gain of that size. 20,000 rows make ~80 windows
    an epoch, so both threads take windows even on a busy machine."""
    train, valid = synthetic(9, rows=20_000), synthetic(10, rows=2000)
    constant = constant_logloss(train, valid)
    gains = []
    for threads in (1, 2):
        model = ffm_ext.FFM(k=4, eta=0.1, epochs=4, n_threads=threads, patience=4)
        best = model.fit(train, valid).best_valid_logloss
        assert best is not None
        gains.append(constant - best)
    assert gains[0] > 0.15, gains
    assert gains[1] >= 0.9 * gains[0], gains


_BEST_LOGLOSS = """
import json
from ffm_ext import FFM, _core
from tests.ffm_ext.test_training import synthetic
model = FFM(k=4, eta=0.2, lam=2e-5, epochs=8, patience=1, seed=5)
history = model.fit(synthetic(9, rows=20_000), synthetic(10, rows=4000))
print(json.dumps({"isa": _core.isa(), "best": history.best_valid_logloss}))
"""


@pytest.mark.parametrize("isa", ["avx2_lanes", "avx2", "avx512"])
def test_estimated_step_sizes_reach_the_exact_algorithms_logloss(isa: str) -> None:
    """The SIMD builds take AdaGrad's eta / sqrt(G) from the CPU's reciprocal square root
    estimate (12 or 14 bits); the generic build computes it exactly. The issue's bound is 0.001;
    on the reference workload the two agreed in the fifth decimal (docs/performance.md)."""
    estimated = run_under_isa(isa, _BEST_LOGLOSS)["best"]
    exact = run_under_isa("generic", _BEST_LOGLOSS)["best"]
    assert abs(estimated - exact) < 2e-4, (estimated, exact)


def zipf_rows(
    seed: int, rows: int = 20000, n_fields: int = 5, per_field: int = 3000
) -> ffm_ext.Dataset:
    """Field values drawn by Zipf's law, as categorical CTR features are; every label 1 but the
    last row's (fit refuses a set with one label)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, per_field + 1) ** 1.1
    ids = rng.choice(per_field, size=(rows, n_fields), p=weights / weights.sum())
    return ffm_ext.Dataset(
        np.arange(rows + 1, dtype=np.int64) * n_fields,
        np.tile(np.arange(n_fields, dtype=np.int32), rows),
        (ids + np.arange(n_fields) * per_field).astype(np.int32).ravel(),
        np.ones(rows * n_fields, np.float32), (np.arange(rows) < rows - 1).astype(np.float32),
        n_features=n_fields * per_field, n_fields=n_fields,
    )  # fmt: skip


def test_two_threads_fold_every_update_of_replicated_features_once() -> None:
    """With several threads the most frequent features train on per-thread replicas that are
    folded into the model at intervals by frequency. A small step and labels all 1 (but one)
    make one epoch's change of each feature nearly independent of the row interleaving, so a fold
    lost (the feature moves a fraction as far as with one thread) or applied twice shows."""
    data = zipf_rows(12)
    changes = []
    for threads in (1, 2):
        model = ffm_ext.FFM(k=4, eta=0.01, lam=0.0, epochs=1, normalize=False, n_threads=threads)
        model.init_weights(data.n_features, data.n_fields)
        start = model.weights.copy()
        model.fit(data, shuffle=False, warm_start=True)
        changes.append((model.weights - start).reshape(data.n_features, -1))
    counts = np.bincount(data.features, minlength=data.n_features)
    seen = counts >= 20  # from the hottest (a fold every window) to the rarest replicated tiers
    assert seen.sum() > 500 and counts.max() > data.n_rows // 10
    one, two = changes[0][seen], changes[1][seen]
    ratio = np.linalg.norm(two, axis=1) / np.linalg.norm(one, axis=1)
    # Here (80 runs, idle and loaded) 0.94-1.07; in CI's parallel suite one feature of ~600 once
    # moved 0.87 as far. A lost or halved fold gives 0.5 or less, a doubled one 1.5 or more.
    assert ratio.min() > 0.8 and ratio.max() < 1.25, (ratio.min(), ratio.max())
    # The direction too: a fold with the wrong sign or mixing in stale values moves as far.
    cosine = np.sum(one * two, axis=1) / (np.linalg.norm(one, axis=1) * np.linalg.norm(two, axis=1))
    assert cosine.min() > 0.99, cosine.min()


def test_divergence_raises_instead_of_returning_nan_model() -> None:
    data = synthetic(11, rows=500)
    data.values[:] = 1e19  # products overflow float32
    model = ffm_ext.FFM(normalize=False, epochs=3)
    with pytest.raises(ffm_ext.FFMDivergenceError, match="diverged at epoch 1") as raised:
        model.fit(data)
    assert not model.is_fitted
    advice = str(raised.value).split("; ", 1)[1]
    assert advice == (
        "the training values reach 1e+19 and normalize is off: normalize the rows or scale the"
        " values"
    )


def test_divergence_with_a_huge_eta_advises_a_lower_eta_only() -> None:
    with pytest.raises(
        ffm_ext.FFMDivergenceError, match=r"is (inf|nan); lower eta \(now 1e\+30\)$"
    ):
        ffm_ext.FFM(eta=1e30, epochs=3, progress=False).fit(synthetic(13, rows=500))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_weights_scan_finds_one_bad_value_anywhere_in_weights_or_accumulators(
    bad: float,
) -> None:
    """The scan fit() trusts to call a model sane: one non-finite float in a 1,001-feature
    training layout, wherever it is: first float, middle, accumulators, last float."""
    engine = _core.Engine(1001, 3, 4, training=True)
    engine.initialize(0)
    layout = engine.weights.base  # (features, weights | accumulators, fields, k), no copy
    assert isinstance(layout, np.ndarray) and layout.shape == (1001, 2, 3, 4)
    assert engine.weights_finite()
    layout[7, 0, 1, 2] = np.finfo(np.float32).max  # large is still finite
    assert engine.weights_finite()
    for spot in [(0, 0, 0, 0), (500, 0, 2, 3), (640, 1, 1, 1), (1000, 1, 2, 3)]:
        kept = layout[spot]
        layout[spot] = bad
        assert not engine.weights_finite(), spot
        layout[spot] = kept
    assert engine.weights_finite()


def test_overflowing_accumulators_raise_though_the_logloss_stays_sane() -> None:
    """lam * w overflows the accumulators' squares; the step estimate then gives those weights a
    step of 0 instead of NaN, so the training logloss stays near 0.69 and only the scan of the
    weights and accumulators at the end of training can tell."""
    model = ffm_ext.FFM(lam=1e30, epochs=2, progress=False)
    with pytest.raises(ffm_ext.FFMDivergenceError, match="accumulator or weight is inf") as raised:
        model.fit(synthetic(12, rows=500))
    assert not model.is_fitted
    assert str(raised.value).endswith("; lam 1e+30 is far above the usual 1e-6 to 1e-3: lower it")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"k": 0}, "k must be"),
        ({"eta": -1.0}, "eta must be"),
        ({"eta": float("nan")}, "eta must be"),
        ({"lam": -1e-3}, "lam must be"),
        ({"epochs": 0}, "epochs must be"),
        ({"patience": 0}, "patience must be"),
        ({"n_threads": 0}, "n_threads must be"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ffm_ext.FFM(**kwargs)  # type: ignore[arg-type]


def test_fit_rejects_wrong_inputs() -> None:
    with pytest.raises(TypeError, match="ffm_ext.Dataset"):
        ffm_ext.FFM().fit(np.zeros(3))  # type: ignore[arg-type]
    empty = ffm_ext.Dataset([0], [], [], [], [])
    with pytest.raises(ValueError, match="no rows"):
        ffm_ext.FFM().fit(empty)


def test_progress_bar_renders(capsys: pytest.CaptureFixture[str]) -> None:
    ffm_ext.FFM(epochs=2, progress=True).fit(synthetic(12, rows=100))
    assert "FFM epochs" in capsys.readouterr().err


def test_fresh_fit_equals_init_weights_then_warm_start() -> None:
    """A fresh fit initialises straight into the training layout; the weights must be the
    ones init_weights() gives for the seed."""
    data = synthetic(15, rows=600)
    fresh = ffm_ext.FFM(epochs=2, seed=9)
    fresh.fit(data)
    staged = ffm_ext.FFM(epochs=2, seed=9)
    staged.init_weights(data.n_features, data.n_fields)
    staged.fit(data, warm_start=True)
    np.testing.assert_array_equal(fresh.weights, staged.weights)


@pytest.mark.parametrize("copy_threads", [1, 3])
def test_buffers_touched_in_the_background_keep_their_weights(copy_threads: int) -> None:
    """The training layout's and the snapshot's pages are faulted in by a background thread
    (buffers of 4 MiB and more) while the initialisation or training writes them: no value may
    change, and a snapshot into such a buffer restores exactly the weights it copied, also when
    several threads copy it (3 threads: slices of unequal size)."""
    from ffm_ext import _core

    n, m, k = 40_001, 10, 4  # 12.8 MB training layout, 6.4 MB snapshot
    compact = _core.Engine(n, m, k)
    compact.initialize(7)
    training = _core.Engine(n, m, k, training=True)
    training.initialize(7)
    np.testing.assert_array_equal(training.weights, compact.weights)
    buffer = training.snapshot_buffer()
    snap = training.snapshot(buffer, copy_threads)
    assert snap is buffer
    training.weights[...] = 0.5  # a strided view of the training layout: changes the weights
    with pytest.raises(ValueError, match="does not fit"):
        _core.Engine(n, m, 8, training=True).snapshot(buffer)
    training.stop_training(snap)
    np.testing.assert_array_equal(training.weights, compact.weights)
    assert _core.Engine(n, m, k, training=True).snapshot_buffer() is not None  # freed unused
