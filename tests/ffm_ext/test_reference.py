"""The C trainer against the NumPy reference (tests/testkit/ffm_reference.py): same initial
weights, same row order, every instruction-set build of the hot loops."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import TypedDict

import numpy as np
import numpy.typing as npt
import pytest

import ffm_ext
from ffm_ext import _core
from tests.testkit.ffm_reference import train as reference_train
from tests.testkit.isa_builds import run_under_isa
from tests.testkit.paths import REPO_ROOT


def random_dataset(
    rng: np.random.Generator,
    rows: int,
    n_features: int,
    n_fields: int,
    *,
    repeat_fields: bool,
    consecutive: bool = False,
) -> ffm_ext.Dataset:
    """Rows of 3..8 tokens; with repeat_fields a row may use a field (and a feature) twice.
    With consecutive, each row's fields are a run f, f+1, ... (the hot loops' `dense` rows, as
    in data that has every field), of odd and even lengths up to all n_fields."""
    lengths = rng.integers(3, (n_fields if consecutive else 8) + 1, size=rows)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    fields, features = [], []
    for length in lengths:
        if consecutive:
            start = rng.integers(0, n_fields - length + 1)
            f = np.arange(start, start + length)
        elif repeat_fields:
            f = rng.integers(0, n_fields, size=length)
        else:
            f = np.sort(rng.choice(n_fields, size=length, replace=False))
        fields.append(f)
        features.append(rng.integers(0, n_features, size=length))
    values = rng.uniform(0.2, 2.0, size=indptr[-1]).astype(np.float32)
    labels = (rng.random(rows) < 0.4).astype(np.float32)
    return ffm_ext.Dataset(
        indptr, np.concatenate(fields), np.concatenate(features), values, labels,
        n_features=n_features, n_fields=n_fields,
    )  # fmt: skip


def kernel_step(eta: float) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
    """AdaGrad's step sizes as this process's hot-loop build computes them (the SIMD builds
    take the CPU's reciprocal square root estimate, 12 or 14 bits, as LIBFFM does): with it the
    reference differs from the kernels by float32 rounding only, and the tolerances stay tight."""

    def step(s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return _core.eta_rsqrt(s.astype(np.float32), eta).astype(np.float64)

    return step


class Tolerance(TypedDict):
    """assert_allclose's keywords: typed so that **TOLERANCE matches its overloads."""

    rtol: float
    atol: float


#: float32 kernels against float64 arithmetic with the kernels' step sizes. atol: the reference
#: feeds the estimate its float64 accumulators rounded to float32, not the kernels' float32 sums,
#: which now and then picks the neighbouring estimate; the largest difference measured was
#: 2.8e-6 (a weight of 3.6e-4). A change to the algorithm moves weights by far more
#: (make mutation-c).
TOLERANCE: Tolerance = {"rtol": 2e-4, "atol": 5e-6}


def reference(
    data: ffm_ext.Dataset, w0: npt.NDArray[np.float32], epochs: int, normalize: bool
) -> npt.NDArray[np.float64]:
    """The NumPy reference with train_c's eta and lambda and this build's step sizes."""
    return reference_train(
        data, w0, eta=0.1, lam=1e-3, epochs=epochs, normalize=normalize, step=kernel_step(0.1)
    )


def train_c(
    data: ffm_ext.Dataset, k: int, epochs: int, normalize: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    model = ffm_ext.FFM(k=k, eta=0.1, lam=1e-3, epochs=epochs, normalize=normalize, seed=3)
    model.init_weights(data.n_features, data.n_fields)
    w0 = model.weights.copy()
    model.fit(data, shuffle=False, warm_start=True)
    return w0, model.weights.copy()


CASES = [
    # k, epochs, normalize, fields of a row: distinct, repeated, or a consecutive run
    (4, 1, True, "distinct"),
    (4, 4, True, "distinct"),
    (4, 3, False, "distinct"),
    (4, 3, True, "repeated"),
    (6, 2, True, "distinct"),  # k padded to 8 lanes
    (2, 2, False, "repeated"),
    (4, 3, True, "consecutive"),
    (4, 2, False, "consecutive"),
    (6, 2, True, "consecutive"),
]


@pytest.mark.parametrize(("k", "epochs", "normalize", "fields"), CASES)
def test_matches_reference(k: int, epochs: int, normalize: bool, fields: str) -> None:
    rng = np.random.default_rng(k * 100 + epochs)
    # Consecutive rows draw from few features, so that one repeats in neighbouring fields
    # (the batched updates must then fall back to one pair at a time).
    data = random_dataset(
        rng, rows=60, n_features=12 if fields == "consecutive" else 40, n_fields=9,
        repeat_fields=fields == "repeated", consecutive=fields == "consecutive",
    )  # fmt: skip
    w0, trained = train_c(data, k, epochs, normalize)
    expected = reference(data, w0, epochs, normalize)
    assert not np.array_equal(trained, w0), "training changed nothing"
    # float32 kernels against float64 arithmetic with the kernels' step sizes
    np.testing.assert_allclose(trained, expected, **TOLERANCE)


_SUBPROCESS = """
import json
import numpy as np
from tests.ffm_ext.test_reference import random_dataset, reference, train_c
from ffm_ext import _core
rng = np.random.default_rng(7)
data = random_dataset(rng, rows=80, n_features=50, n_fields=10, repeat_fields=False)
dense = random_dataset(rng, rows=80, n_features=12, n_fields=10, repeat_fields=False,
                       consecutive=True)
for name, rows in (("rows", data), ("dense", dense)):
    w0, trained = train_c(rows, 4, 3, True)
    np.save({out!r} + name + "-trained.npy", trained)
    np.save({out!r} + name + "-expected.npy", reference(rows, w0, 3, True))
print(json.dumps({{"isa": _core.isa()}}))
"""


@pytest.mark.parametrize("isa", ["generic", "avx2_lanes", "avx2", "avx512"])
def test_every_isa_build_matches(isa: str, tmp_path: pathlib.Path) -> None:
    """Each hot-loop build (forced with FFM_ISA) trains the same weights as the reference."""
    out = tmp_path / "w-"
    run_under_isa(isa, _SUBPROCESS.format(out=str(out)))
    for name in ("rows", "dense"):  # the reference ran in the subprocess, with its step sizes
        trained, expected = (
            np.load(f"{out}{name}-trained.npy"),
            np.load(f"{out}{name}-expected.npy"),
        )
        np.testing.assert_allclose(trained, expected, **TOLERANCE)


_STEP_ERROR = """
import json
import numpy as np
from ffm_ext import _core
x = np.geomspace(1.0, 1e6, 100_003).astype(np.float32)  # AdaGrad's accumulators start at 1
exact = 0.2 / np.sqrt(x.astype(np.float64))
error = np.abs(_core.eta_rsqrt(x, 0.2) / exact - 1.0)
print(json.dumps({"isa": _core.isa(), "max": float(error.max())}))
"""

#: The estimates' documented relative error bounds: rsqrtps 1.5 * 2^-12, rsqrt14 2^-14; the
#: generic build's float32 division and square root, a few ulps.
STEP_ERROR_BOUND = {
    "generic": 2**-22,
    "avx2_lanes": 1.5 * 2**-12,
    "avx2": 1.5 * 2**-12,
    "avx512": 2**-14,
}


@pytest.mark.parametrize("isa", ["generic", "avx2_lanes", "avx2", "avx512"])
def test_step_sizes_are_within_the_estimates_bound(isa: str) -> None:
    """The reference trains with the build's own step sizes, so a wrong estimate there (1/x,
    say) would pass test_matches_reference: checked on its own here."""
    result = run_under_isa(isa, _STEP_ERROR)
    assert result["max"] <= STEP_ERROR_BOUND[isa], result


@pytest.mark.parametrize("consecutive", [False, True])
def test_margins_match_reference(consecutive: bool) -> None:
    from tests.testkit.ffm_reference import margin, row_tokens

    rng = np.random.default_rng(11)
    data = random_dataset(rng, rows=30, n_features=25, n_fields=7, repeat_fields=not consecutive,
                          consecutive=consecutive)  # fmt: skip
    model = ffm_ext.FFM(k=4, seed=5)
    model.init_weights(data.n_features, data.n_fields)
    w = model.weights.astype(np.float64)
    expected = [margin(w, row_tokens(data, i, 25, 7), True) for i in range(data.n_rows)]
    np.testing.assert_allclose(model.decision_function(data), expected, rtol=1e-5, atol=1e-6)


def test_isa_is_reported() -> None:
    assert _core.isa() in {"generic", "avx2_lanes", "avx2", "avx512"}


def _cpuinfo() -> tuple[str, set[str], int, int]:
    """The first CPU's vendor, flags, family and model from /proc/cpuinfo (empty elsewhere)."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        first[key.strip()] = value.strip()
    family, model = first.get("cpu family", ""), first.get("model", "")
    return (
        first.get("vendor_id", ""),
        set(first.get("flags", "").split()),
        int(family) if family.isdigit() else -1,
        int(model) if model.isdigit() else -1,
    )


def _default_isa() -> str:
    env = {key: value for key, value in os.environ.items() if key != "FFM_ISA"}
    code = "from ffm_ext import _core; print(_core.isa())"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.split()[-1]


def test_amd_cpus_run_the_avx2_build_by_default() -> None:
    """On AMD's AVX-512 (Zen 4: 512-bit operations in two halves) the AVX2 build trained an
    epoch in 15-20% less CPU time (docs/performance.md), so it is the default there."""
    vendor, flags, _, _ = _cpuinfo()
    if vendor != "AuthenticAMD" or not {"avx512f", "avx512dq", "avx512vl", "fma"} <= flags:
        pytest.skip("not an AMD CPU with AVX-512")
    assert _default_isa() == "avx2"


def test_zen1_runs_the_lane_loads_build_by_default() -> None:
    """Zen 1 (family 23, models below 0x30) runs vperm2f128 as eight micro-ops; the build that
    moves lanes with loads and stores fitted in 8% less time there (docs/performance.md)."""
    vendor, flags, family, model = _cpuinfo()
    if vendor != "AuthenticAMD" or family != 23 or model >= 0x30 or not {"avx2", "fma"} <= flags:
        pytest.skip("not an AMD Zen 1 CPU with AVX2")
    assert _default_isa() == "avx2_lanes"
