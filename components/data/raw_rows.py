"""Raw test rows (label + the spec's feature columns) as a pandas DataFrame, from a file.

The promotion gate scores the champion on them when its feature spec differs from the
challenger's. Parquet keeps its types; for CSV/TSV the categorical columns are read as strings
(pandas would turn a column of hex values such as "12e4" into floats).
"""

from __future__ import annotations

import pathlib

import pandas as pd

from ctrflow.components.data.feature_spec import FittedFeatureSpec

__all__ = ["load_raw_rows"]

# prepare_data's file of raw test rows (in its output directory, or in the KFP step's test_raw
# artifact directory).


def load_raw_rows(path: str | pathlib.Path, spec: FittedFeatureSpec) -> pd.DataFrame:
    """The label and feature columns of a Parquet, CSV or TSV file with a header line."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"raw test rows {file} do not exist")
    columns = [spec.spec.label, *spec.raw_columns]
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(file)
    elif suffix in (".csv", ".tsv", ".tab", ".txt"):
        frame = pd.read_csv(
            file,
            sep="," if suffix == ".csv" else "\t",
            dtype={name: "string" for name in spec.spec.categorical},
            keep_default_na=False,
            na_values=[""],
        )
    else:
        raise ValueError(f"{file}: raw test rows must be .parquet, .csv or .tsv")
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"{file}: column(s) {', '.join(absent)} missing")
    if frame.empty:
        raise ValueError(f"{file}: no rows")
    return frame[columns]
