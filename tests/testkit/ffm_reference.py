"""A small pure-NumPy FFM trainer, written straight from the paper's algorithm (LIBFFM's
variant: AdaGrad with accumulators starting at 1, L2 on the touched weights, instance
normalisation), to check the C kernels against. Sequential and slow on purpose."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

import ffm_ext


def row_tokens(data: ffm_ext.Dataset, row: int, n: int, m: int) -> list[tuple[int, int, float]]:
    """The row's (field, feature, value) tokens, dropping ids beyond the model."""
    lo, hi = int(data.indptr[row]), int(data.indptr[row + 1])
    return [
        (int(f), int(j), float(v))
        for f, j, v in zip(
            data.fields[lo:hi], data.features[lo:hi], data.values[lo:hi], strict=True
        )
        if j < n and f < m
    ]


def margin(
    w: npt.NDArray[np.float64], tokens: list[tuple[int, int, float]], normalize: bool
) -> float:
    r = 1.0 / sum(v * v for _, _, v in tokens) if normalize and tokens else 1.0
    total = 0.0
    for a, (fa, ja, va) in enumerate(tokens):
        for fb, jb, vb in tokens[a + 1 :]:
            total += float(np.dot(w[ja, fb], w[jb, fa])) * va * vb * r
    return total


def train(
    data: ffm_ext.Dataset,
    w0: npt.NDArray[np.float32],
    *,
    eta: float,
    lam: float,
    epochs: int,
    normalize: bool,
    step: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None = None,
) -> npt.NDArray[np.float64]:
    """Epochs over the rows in order; returns the weights (float64 arithmetic). `step(s)` is
    AdaGrad's step sizes for a vector of accumulated squares: eta / sqrt(s) unless given (the C
    kernels' SIMD builds take the CPU's reciprocal square root estimate there)."""

    def exact(s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return eta / np.sqrt(s)

    step = step or exact
    w = w0.astype(np.float64)
    g = np.ones_like(w)
    n, m, _ = w.shape
    for _ in range(epochs):
        for row in range(data.n_rows):
            tokens = row_tokens(data, row, n, m)
            r = 1.0 / sum(v * v for _, _, v in tokens) if normalize and tokens else 1.0
            y = 1.0 if data.labels[row] > 0.5 else -1.0
            t = margin(w, tokens, normalize)
            kappa = -y / (1.0 + np.exp(y * t))
            for a, (fa, ja, va) in enumerate(tokens):
                for fb, jb, vb in tokens[a + 1 :]:
                    w1, w2 = w[ja, fb].copy(), w[jb, fa].copy()
                    kv = kappa * va * vb * r
                    g1 = lam * w1 + kv * w2
                    g2 = lam * w2 + kv * w1
                    s1 = g[ja, fb] + g1 * g1
                    s2 = g[jb, fa] + g2 * g2
                    g[ja, fb] = s1
                    g[jb, fa] = s2
                    w[ja, fb] = w1 - g1 * step(s1)
                    w[jb, fa] = w2 - g2 * step(s2)
    return w
