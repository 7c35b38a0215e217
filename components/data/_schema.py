"""`FeatureSpec`: the raw schema (which column is what) and the options of the transform.

A spec is immutable; `fit` returns a separate `FittedFeatureSpec` (the vocabularies learnt from
training rows), so one spec can be fitted on several datasets and the unfitted part can be written
by hand as a JSON file (`FeatureSpec.from_file`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ctrflow.components.data import _fs, _raw_columns
from ctrflow.components.data._raw_columns import Coded, Problems

if TYPE_CHECKING:
    import pandas as pd

    from ctrflow.components.data._fitted import FittedFeatureSpec
    from ctrflow.components.data._fitting import SpecFitter

SPEC_FORMAT = "ctrflow.feature_spec"
SPEC_VERSION = 1
Binning = Literal["log_square", "quantile"]
BINNINGS: tuple[str, ...] = ("log_square", "quantile")


class SpecError(ValueError):
    """A spec (file or arguments) is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class ParsedTable:
    """One table of raw rows, parsed per field (numeric fields first, then categorical)."""

    n_rows: int
    fields: list[Coded]
    labels: npt.NDArray[np.float32] | None
    timestamps: npt.NDArray[np.float64] | None  # epoch numbers; see _time_window
    problems: Problems


@dataclass(frozen=True)
class FeatureSpec:
    """Raw schema plus transform options. One field per numeric or categorical column.

    label / numeric / categorical / timestamp: column names. `timestamp_optional`: when the input
    has no such column, split by ratio instead of failing (the Criteo default uses this).
    separator: CSV delimiter; None = from the file name (.tsv/.tab/.txt -> tab, otherwise comma).
    header: whether CSV files start with a header line; without one, columns are in the order
    `columns` (default: label, numeric, categorical, then timestamp if any).
    numeric_binning: "log_square" (Criteo winners' rule) or "quantile" (`quantile_bins`
    equal-frequency bins fitted on a seeded sample of `quantile_sample` training rows).
    rare_threshold: a value (or numeric bin) seen fewer times than this in training maps to its
    field's rare bucket. max_values_per_field: keep at most this many of the most frequent values.
    hash_seed: key of the stable categorical hash.
    """

    label: str = "label"
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    timestamp: str | None = None
    timestamp_optional: bool = False
    separator: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    numeric_binning: Binning = "log_square"
    quantile_bins: int = 32
    quantile_sample: int = 100_000
    rare_threshold: int = 10
    max_values_per_field: int | None = None
    hash_seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def criteo(cls, **overrides: Any) -> FeatureSpec:
        """Criteo's schema: label, I1..I13 numeric, C1..C26 categorical (hex), and an optional
        `timestamp` column (absent in Criteo's files, present in `ctrflow data synth` output)."""
        base: dict[str, Any] = {
            "label": "label",
            "numeric": tuple(f"I{i}" for i in range(1, 14)),
            "categorical": tuple(f"C{i}" for i in range(1, 27)),
            "timestamp": "timestamp",
            "timestamp_optional": True,
        }
        base.update(overrides)
        return cls.from_dict(base, source="FeatureSpec.criteo()")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "spec") -> FeatureSpec:
        """Build from a mapping (as in a spec file); errors name `source` and the key."""
        if not isinstance(data, Mapping):
            raise SpecError(
                f"{source}: a feature spec must be a JSON object, got {type(data).__name__}"
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("format", "version"):
                continue
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(
                    f"{source}: unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(source, key, value)
        if data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise SpecError(
                f"{source}: key 'format' must be {SPEC_FORMAT!r}, got {data['format']!r}"
            )
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise SpecError(
                f"{source}: key 'version' must be {SPEC_VERSION}, got {data['version']!r}"
            )
        try:
            return cls(**values)
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str) -> FeatureSpec:
        """Read a JSON spec file (local path or pyarrow URI); errors name the file and the key."""
        try:
            text = _fs.read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"{path}: cannot read the feature spec: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": SPEC_FORMAT, "version": SPEC_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def save(self, path: str) -> None:
        _fs.write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def validate(self) -> None:
        names = [self.label, *self.numeric, *self.categorical]
        if self.timestamp is not None:
            names.append(self.timestamp)
        for name in names:
            if not isinstance(name, str) or not name:
                raise SpecError(f"column names must be non-empty strings, got {name!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpecError(f"column(s) {', '.join(duplicates)} appear more than once")
        if not self.numeric and not self.categorical:
            raise SpecError("key 'numeric' or 'categorical' must name at least one column")
        if self.separator is not None and len(self.separator) != 1:
            raise SpecError(f"key 'separator' must be one character, got {self.separator!r}")
        if self.numeric_binning not in BINNINGS:
            raise SpecError(
                f"key 'numeric_binning' must be one of {', '.join(BINNINGS)}, "
                f"got {self.numeric_binning!r}"
            )
        for key, minimum in (("quantile_bins", 2), ("quantile_sample", 1), ("rare_threshold", 1)):
            if getattr(self, key) < minimum:
                raise SpecError(f"key {key!r} must be >= {minimum}, got {getattr(self, key)}")
        if self.max_values_per_field is not None and self.max_values_per_field < 1:
            raise SpecError(
                f"key 'max_values_per_field' must be >= 1, got {self.max_values_per_field}"
            )
        if self.columns is not None:
            missing = [n for n in names if n not in self.columns]
            if missing and not (missing == [self.timestamp] and self.timestamp_optional):
                raise SpecError(f"key 'columns' lacks {', '.join(missing)}")

    # ---- derived ---------------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """Field names in field order: numeric columns, then categorical ones."""
        return (*self.numeric, *self.categorical)

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """The feature columns a served model needs (no label, no timestamp)."""
        return self.fields

    def file_columns(self) -> tuple[str, ...]:
        """Column order of a header-less file."""
        if self.columns is not None:
            return self.columns
        tail = (self.timestamp,) if self.timestamp and not self.timestamp_optional else ()
        return (self.label, *self.fields, *tail)

    def with_options(self, **changes: Any) -> FeatureSpec:
        """A copy with some options changed (validated)."""
        return dataclasses.replace(self, **changes)

    # ---- parsing and fitting ---------------------------------------------------------------

    def parse(
        self, table: pa.Table, *, with_labels: bool = True, with_timestamps: bool = False
    ) -> ParsedTable:
        """Parse raw columns; bad rows are reported in `problems`, never raised."""
        wanted = list(self.fields)
        if with_labels:
            wanted.append(self.label)
        if with_timestamps and self.timestamp is not None:
            wanted.append(self.timestamp)
        absent = [c for c in wanted if c not in table.column_names]
        if absent:
            raise SpecError(
                f"column(s) {', '.join(absent)} missing from the input "
                f"(it has: {', '.join(table.column_names[:60])})"
            )
        problems = Problems.none(table.num_rows)
        fields = [_raw_columns.numeric(table.column(c), c, problems) for c in self.numeric]
        fields += [
            _raw_columns.categorical(table.column(c), seed=self.hash_seed) for c in self.categorical
        ]
        labels = (
            _raw_columns.labels(table.column(self.label), self.label, problems)
            if with_labels
            else None
        )
        stamps = None
        if with_timestamps and self.timestamp is not None:
            stamps = _raw_columns.timestamps(table.column(self.timestamp), self.timestamp, problems)
        return ParsedTable(table.num_rows, fields, labels, stamps, problems)

    def fitter(self) -> SpecFitter:
        """An incremental fitter: `update(...)` per chunk of training rows, then `finish()`."""
        from ctrflow.components.data._fitting import SpecFitter

        return SpecFitter(self)

    def fit(self, frames: Iterable[pd.DataFrame]) -> FittedFeatureSpec:
        """Fit on training frames (streamed, one at a time); a bad row raises ValueError."""
        from ctrflow.components.data._frames import frame_to_table

        fitter = self.fitter()
        for number, frame in enumerate(frames):
            parsed = self.parse(frame_to_table(frame, self), with_labels=False)
            if parsed.problems.bad.any():
                row, message = parsed.problems.examples[0]
                count = int(parsed.problems.bad.sum())
                raise ValueError(f"frame {number}: {count} bad row(s); first: row {row}: {message}")
            fitter.update(parsed)
        return fitter.finish()


def _coerce(source: str, key: str, value: Any) -> Any:
    """Check the JSON type of one spec key; tuples for lists so the spec stays hashable."""
    where = f"key {key!r}"
    if key in ("numeric", "categorical", "columns"):
        if value is None and key == "columns":
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise SpecError(f"{source}: {where} must be a list of column names, got {value!r}")
        return tuple(value)
    if key in ("label", "numeric_binning") or (
        key in ("timestamp", "separator") and value is not None
    ):
        if not isinstance(value, str):
            raise SpecError(f"{source}: {where} must be a string, got {value!r}")
        return value
    if key in ("header", "timestamp_optional"):
        if not isinstance(value, bool):
            raise SpecError(f"{source}: {where} must be true or false, got {value!r}")
        return value
    if key in ("quantile_bins", "quantile_sample", "rare_threshold", "hash_seed") or (
        key == "max_values_per_field" and value is not None
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(f"{source}: {where} must be an integer, got {value!r}")
        return value
    return value
