"""pandas DataFrame of raw rows -> Arrow table, column by column (the serving entry point)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from ctrflow.components.data._schema import FeatureSpec


def _column(series: pd.Series) -> pa.Array:
    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed Python types in one object column (say ints and strings): compare them as text,
        # which is also what the numeric parser and the categorical hash work on.
        return pa.array(series.astype("string"), from_pandas=True)


def frame_to_table(frame: pd.DataFrame, spec: FeatureSpec) -> pa.Table:
    """The spec's columns that the frame has (absent ones are reported by `FeatureSpec.parse`)."""
    names = [spec.label, *spec.fields]
    if spec.timestamp is not None:
        names.append(spec.timestamp)
    present = [n for n in names if n in frame.columns]
    return pa.table({n: _column(frame[n]) for n in present})
