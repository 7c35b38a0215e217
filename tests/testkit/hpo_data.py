"""Tiny datasets for the HPO tests: they train in milliseconds, so the tests measure the
coordination (budget, retries, warm start), not the model."""

from __future__ import annotations

import pathlib

import numpy as np

import ffm_ext


def tiny_dataset(path: pathlib.Path, rows: int, seed: int) -> pathlib.Path:
    """4 fields x 10 values, labels from a planted linear model: trains in milliseconds."""
    rng = np.random.default_rng(seed)
    n_fields, per_field = 4, 10
    fields = np.tile(np.arange(n_fields, dtype=np.int32), rows)
    features = (rng.integers(0, per_field, rows * n_fields) + fields * per_field).astype(np.int32)
    weights = np.random.default_rng(0).normal(size=n_fields * per_field)
    logits = weights[features].reshape(rows, n_fields).sum(axis=1)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    indptr = np.arange(0, rows * n_fields + 1, n_fields, dtype=np.int64)
    values = np.ones(rows * n_fields, dtype=np.float32)
    ffm_ext.Dataset(indptr, fields, features, values, labels, n_features=40, n_fields=4).save(path)
    return path
