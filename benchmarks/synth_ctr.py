#!/usr/bin/env python3
"""Write a synthetic, Criteo-shaped CTR dataset in LIBFFM text format, for benchmarks.

Shape: 39 fields per row (13 binned numeric + 26 categorical with Zipf-skewed values and
cardinalities from 4 to 100,000), one feature per field, value 1. Labels come from a planted
field-aware model (linear terms plus latent interactions on a random subset of field pairs),
so an FFM can learn real signal. Positive rate is about 25%.

The same --rows and --seed always give byte-identical files, so a benchmark run here and one
run anywhere else measure the same work. `--rows 200000 --seed 0` is the reference workload of
docs/performance.md (39 fields, 300,743 features).

Usage:
    synth_ctr.py OUT_DIR [--rows 200000] [--seed 0]
writes OUT_DIR/train.ffm (rows), OUT_DIR/valid.ffm and OUT_DIR/test.ffm (rows/10 each).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

N_NUMERIC = 13
N_CATEGORICAL = 26
N_FIELDS = N_NUMERIC + N_CATEGORICAL
K_TRUE = 4
N_PLANTED_PAIRS = 80


def _cardinalities(rng: np.random.Generator) -> np.ndarray:
    numeric = np.full(N_NUMERIC, 40)
    categorical = np.unique(np.geomspace(4, 100_000, N_CATEGORICAL).astype(int))
    categorical = np.resize(categorical, N_CATEGORICAL)
    rng.shuffle(categorical)
    return np.concatenate([numeric, categorical])


def _draw_values(rng: np.random.Generator, card: np.ndarray, rows: int) -> np.ndarray:
    """Per field, value indices in [0, card): Zipf-skewed for categorical, binomial for numeric."""
    values = np.empty((rows, N_FIELDS), dtype=np.int64)
    for f in range(N_FIELDS):
        if f < N_NUMERIC:
            values[:, f] = rng.binomial(card[f] - 1, 0.2 + 0.04 * f, size=rows)
        else:
            ranks = rng.zipf(1.3, size=rows) - 1
            values[:, f] = ranks % card[f]
    return values


def _planted_logits(rng: np.random.Generator, ids: np.ndarray, n_features: int) -> np.ndarray:
    linear = rng.normal(0.0, 0.3, size=n_features).astype(np.float32)
    latent = rng.normal(0.0, 0.45, size=(n_features, N_FIELDS, K_TRUE)).astype(np.float32)
    pairs = [(a, b) for a in range(N_FIELDS) for b in range(a + 1, N_FIELDS)]
    chosen = rng.choice(len(pairs), size=N_PLANTED_PAIRS, replace=False)
    logits: np.ndarray = linear[ids].sum(axis=1) / np.sqrt(N_FIELDS)
    for p in chosen:
        a, b = pairs[p]
        logits += np.einsum("ij,ij->i", latent[ids[:, a], b], latent[ids[:, b], a])
    return logits


def _write(path: pathlib.Path, labels: np.ndarray, ids: np.ndarray, chunk: int = 50_000) -> None:
    """The rows as text, `chunk` rows at a time: NumPy string arrays of all rows at once took
    about 10 GB at 1M rows."""
    with path.open("w") as out:
        for start in range(0, len(labels), chunk):
            rows = slice(start, start + chunk)
            line = labels[rows].astype(str)
            for f in range(N_FIELDS):
                col = np.char.add(f"{f}:", ids[rows, f].astype(str))
                line = np.char.add(np.char.add(line, " "), np.char.add(col, ":1"))
            out.write("\n".join(line.tolist()) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    card = _cardinalities(rng)
    offsets = np.concatenate([[0], np.cumsum(card)[:-1]])
    n_features = int(card.sum())
    total = args.rows + 2 * (args.rows // 10)
    ids = _draw_values(rng, card, total) + offsets
    logits = _planted_logits(rng, ids, n_features)
    bias = -np.quantile(logits, 0.75)
    labels = (rng.random(total) < 1.0 / (1.0 + np.exp(-(logits + bias)))).astype(np.int8)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    cut = [args.rows, args.rows + args.rows // 10]
    for name, part in zip(("train", "valid", "test"), np.split(np.arange(total), cut), strict=True):
        _write(args.out_dir / f"{name}.ffm", labels[part], ids[part])
    print(
        f"{args.out_dir}: {args.rows} train rows, {N_FIELDS} fields, {n_features} features, "
        f"positive rate {labels.mean():.3f}"
    )


if __name__ == "__main__":
    main()
