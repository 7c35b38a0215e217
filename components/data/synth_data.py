"""Synthetic raw impression logs in the Criteo schema, with a planted signal and timestamps.

Columns: label, I1..I13 (integer counts, some negative in I2, with Criteo-like missing rates),
C1..C26 (8-digit hex strings, Zipf-skewed, cardinalities from 4 to 300,000, some often missing),
then `timestamp` (UTC epoch seconds, increasing, spanning `days` days from `start`, by default
2024-01-01: one file per day of a data window is `days=1` and that day as `start`).

Labels come from a planted model: per-value effects of categorical values, smooth effects of the
log of numeric values and of their missingness, latent interactions between a few categorical
field pairs (what an FFM is for), and a small per-day drift; the bias is set for a ~25% positive
rate. The same (rows, days, seed) always give the same rows, whatever the output format.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ctrflow.components.data import _fs
from ctrflow.components.data._hashing import mix64

N_NUMERIC = 13
N_CATEGORICAL = 26
START_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
CHUNK_ROWS = 500_000  # rows generated at a time: bounded memory for any --rows
POSITIVE_RATE = 0.25
LATENT_K = 4
N_PAIRS = 8
NUMERIC_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22)
CATEGORICAL_MISSING = (
    *(0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0),
    *(0.0, 0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44),
)
Format = Literal["csv", "tsv", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet")


def column_names() -> list[str]:
    return [
        "label",
        *(f"I{i}" for i in range(1, N_NUMERIC + 1)),
        *(f"C{i}" for i in range(1, N_CATEGORICAL + 1)),
        "timestamp",
    ]


@dataclass(frozen=True)
class _PlantedModel:
    cardinality: npt.NDArray[np.int64]
    zipf_a: npt.NDArray[np.float64]
    hex_values: list[pa.Array]
    value_effects: list[npt.NDArray[np.float64]]
    numeric_mu: npt.NDArray[np.float64]
    numeric_sigma: npt.NDArray[np.float64]
    numeric_weight: npt.NDArray[np.float64]
    missing_weight: npt.NDArray[np.float64]
    pairs: list[tuple[int, int, npt.NDArray[np.float32], npt.NDArray[np.float32]]]
    day_drift: npt.NDArray[np.float64]
    bias: float


def _hex_strings(n: int, salt: int) -> pa.Array:
    codes = mix64(np.arange(n, dtype=np.uint64) + np.uint64(salt << 32)) & np.uint64(0xFFFFFFFF)
    return pa.array([f"{c:08x}" for c in codes.tolist()], type=pa.string())


def _build_model(seed: int, days: int) -> _PlantedModel:
    rng = np.random.default_rng([seed, 1])
    cardinality = np.geomspace(4, 300_000, N_CATEGORICAL).astype(np.int64)
    rng.shuffle(cardinality)
    strength = rng.choice([0.0, 0.2, 0.5, 0.8], size=N_CATEGORICAL, p=[0.2, 0.3, 0.3, 0.2])
    pair_ids = rng.choice(N_CATEGORICAL * N_CATEGORICAL, size=4 * N_PAIRS, replace=False)
    pairs: list[tuple[int, int, npt.NDArray[np.float32], npt.NDArray[np.float32]]] = []
    for p in pair_ids.tolist():
        a, b = divmod(p, N_CATEGORICAL)
        if a < b and len(pairs) < N_PAIRS:
            pairs.append(
                (
                    a,
                    b,
                    rng.normal(0.0, 0.6, size=(int(cardinality[a]), LATENT_K)).astype(np.float32),
                    rng.normal(0.0, 0.6, size=(int(cardinality[b]), LATENT_K)).astype(np.float32),
                )
            )
    model = _PlantedModel(
        cardinality=cardinality,
        zipf_a=rng.uniform(1.1, 1.6, size=N_CATEGORICAL),
        hex_values=[_hex_strings(int(c), salt=j + 1) for j, c in enumerate(cardinality)],
        value_effects=[
            rng.normal(0.0, s, size=int(c)) for s, c in zip(strength, cardinality, strict=True)
        ],
        numeric_mu=rng.uniform(0.5, 6.0, size=N_NUMERIC),
        numeric_sigma=rng.uniform(0.5, 2.0, size=N_NUMERIC),
        numeric_weight=rng.normal(0.0, 0.5, size=N_NUMERIC),
        missing_weight=rng.normal(0.0, 0.3, size=N_NUMERIC),
        pairs=pairs,
        day_drift=rng.normal(0.0, 0.1, size=max(days, 1)),
        bias=0.0,
    )
    # Bias for the target positive rate, solved by Newton steps on a calibration sample.
    _, _, _, _, logits = _draw(model, np.random.default_rng([seed, 2]), 20_000, np.zeros(20_000))
    bias = 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-(logits + bias)))
        bias -= (p.mean() - POSITIVE_RATE) / max(float((p * (1 - p)).mean()), 1e-6)
    return _PlantedModel(**{**model.__dict__, "bias": bias})


def _draw(
    model: _PlantedModel, rng: np.random.Generator, n: int, day: npt.NDArray[np.float64]
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
    npt.NDArray[np.int32],
    npt.NDArray[np.bool_],
    npt.NDArray[np.float64],
]:
    """Raw values (categorical ones as (field, row)) and the logit (without bias) of `n` rows."""
    normal = rng.normal(size=(n, N_NUMERIC))
    log_value = model.numeric_mu + model.numeric_sigma * normal
    numeric = np.floor(np.exp(log_value)) - 1.0
    numeric[:, 1] -= 3.0 * (rng.random(n) < 0.1)  # I2 has small negative values, as in Criteo
    numeric_missing = rng.random((n, N_NUMERIC)) < np.asarray(NUMERIC_MISSING)
    logits = (np.tanh(normal) * model.numeric_weight * ~numeric_missing).sum(axis=1)
    logits += (model.missing_weight * numeric_missing).sum(axis=1)
    values = np.empty((N_CATEGORICAL, n), dtype=np.int32)  # one contiguous row per field
    for j in range(N_CATEGORICAL):
        # Zipf-like ranks by inverting a Pareto CDF (numpy's zipf sampler is ~10x slower).
        tail = (1.0 - rng.random(n)) ** (-1.0 / (model.zipf_a[j] - 1.0))
        ranks = np.minimum(tail, 1e18).astype(np.int64) - 1
        values[j] = ranks % model.cardinality[j]
        logits += model.value_effects[j][values[j]]
    categorical_missing = rng.random((n, N_CATEGORICAL)) < np.asarray(CATEGORICAL_MISSING)
    for a, b, latent_a, latent_b in model.pairs:
        both = ~categorical_missing[:, a] & ~categorical_missing[:, b]
        dot = np.einsum("ik,ik->i", latent_a[values[a]], latent_b[values[b]])
        logits += np.where(both, dot, 0.0)
    logits += model.day_drift[np.minimum(day.astype(np.int64), model.day_drift.size - 1)]
    return numeric, numeric_missing, values, categorical_missing, logits


def _start_epoch(start: datetime.date | None) -> int:
    if start is None:
        return START_EPOCH
    return int(
        datetime.datetime(start.year, start.month, start.day, tzinfo=datetime.UTC).timestamp()
    )


def iter_tables(
    *,
    rows: int,
    days: int = 7,
    seed: int = 0,
    start: datetime.date | None = None,
    model_seed: int | None = None,
) -> Iterator[pa.Table]:
    """The synthetic log as Arrow tables of up to CHUNK_ROWS rows (categoricals as dictionaries).
    ``start`` only moves the timestamps: the rows are those of (rows, days, seed).
    ``model_seed`` (default ``seed``) picks the planted click model: files of one log, e.g. one per
    day, share it and differ in ``seed``; with different models they would be unrelated logs."""
    if rows < 1 or days < 1:
        raise ValueError(f"rows and days must be >= 1, got rows={rows}, days={days}")
    origin = _start_epoch(start)
    model = _build_model(seed if model_seed is None else model_seed, days)
    for chunk, first in enumerate(range(0, rows, CHUNK_ROWS)):
        n = min(CHUNK_ROWS, rows - first)
        rng = np.random.default_rng([seed, 3, chunk])
        # Rows are spread evenly over the days, in time order, as logs are.
        position = (np.arange(first, first + n) + rng.random(n)) / rows
        stamps = origin + np.floor(position * days * 86_400).astype(np.int64)
        day = ((stamps - origin) // 86_400).astype(np.float64)
        numeric, numeric_missing, values, categorical_missing, logits = _draw(model, rng, n, day)
        labels = rng.random(n) < 1.0 / (1.0 + np.exp(-(logits + model.bias)))
        columns: dict[str, pa.Array] = {"label": pa.array(labels.astype(np.int8))}
        for j in range(N_NUMERIC):
            columns[f"I{j + 1}"] = pa.array(
                numeric[:, j].astype(np.int64), mask=numeric_missing[:, j]
            )
        for j in range(N_CATEGORICAL):
            indices = pa.array(values[j], mask=categorical_missing[:, j])
            columns[f"C{j + 1}"] = pa.DictionaryArray.from_arrays(indices, model.hex_values[j])
        columns["timestamp"] = pa.array(stamps)
        yield pa.table(columns)


def synth_table(*, rows: int, days: int = 7, seed: int = 0) -> pa.Table:
    """The whole synthetic log in memory (for tests and small demos)."""
    return pa.concat_tables(iter_tables(rows=rows, days=days, seed=seed))


def format_of(path: str) -> str:
    """Output format from the file name: .parquet/.pq, .tsv/.tab, otherwise CSV."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return "tsv" if suffix in (".tsv", ".tab") else "csv"


def write_synth(
    out: str,
    *,
    rows: int,
    days: int = 7,
    seed: int = 0,
    fmt: str | None = None,
    start: datetime.date | None = None,
    model_seed: int | None = None,
) -> str:
    """Write the synthetic log to `out` (local path or pyarrow URI); returns `out`.

    fmt: "csv", "tsv" or "parquet"; default from the file name. CSV/TSV have a header line,
    empty fields for missing values and no quoting (no value needs it).
    """
    fmt = fmt or format_of(out)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    filesystem, path = _fs.resolve(out)
    parent = path.rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    tables = iter_tables(rows=rows, days=days, seed=seed, start=start, model_seed=model_seed)
    if fmt == "parquet":
        _write_parquet(filesystem, path, tables)
    else:
        _write_text(filesystem, path, tables, delimiter="\t" if fmt == "tsv" else ",")
    return out


def _write_parquet(filesystem: pafs.FileSystem, path: str, tables: Iterator[pa.Table]) -> None:
    first = next(tables)
    with pq.ParquetWriter(path, first.schema, filesystem=filesystem) as writer:
        writer.write_table(first)
        for table in tables:
            writer.write_table(table)


def _write_text(
    filesystem: pafs.FileSystem, path: str, tables: Iterator[pa.Table], *, delimiter: str
) -> None:
    options = pacsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
    with filesystem.open_output_stream(path) as stream:
        # Arrow quotes header names even with quoting_style="none"; write a plain header.
        stream.write((delimiter.join(column_names()) + "\n").encode("ascii"))
        first = next(tables)
        schema = _plain_schema(first.schema)
        with pacsv.CSVWriter(stream, schema, write_options=options) as writer:
            writer.write_table(first.cast(schema))
            for table in tables:
                writer.write_table(table.cast(schema))


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """Dictionary columns as plain strings (what the CSV writer renders)."""
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f for f in schema]
    )
