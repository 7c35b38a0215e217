"""`FittedFeatureSpec`: per-field vocabularies learnt on training rows; raw rows -> FFM features.

Feature layout: field j owns the feature range [offset_j, offset_j + 2 + len(vocabulary_j)):
offset_j + 0 is "missing", offset_j + 1 is "rare or unseen", offset_j + 2 + i is vocabulary
entry i (sorted keys: numeric bin keys, or stable 64-bit hashes of categorical values). Every row
has exactly one feature per field, value 1. Vocabularies hold hashes, not raw values, so a saved
spec carries no raw strings; lookups are exact (no bucket collisions beyond 64-bit hash ones).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ctrflow.components.data import _binning, _fs
from ctrflow.components.data._frames import frame_to_table
from ctrflow.components.data._schema import FeatureSpec, ParsedTable, SpecError

if TYPE_CHECKING:
    import pandas as pd

    import ffm_ext

FITTED_FORMAT = "ctrflow.fitted_feature_spec"
FITTED_VERSION = 1
MISSING, RARE, FIRST_VALUE = 0, 1, 2


class BadRowsError(ValueError):
    """Raw rows that cannot be transformed (unparsable number, label not 0/1, ...)."""


def _encode_keys(keys: npt.NDArray[np.int64]) -> str:
    return base64.b64encode(keys.astype("<i8").tobytes()).decode("ascii")


def _decode_keys(text: str) -> npt.NDArray[np.int64]:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<i8").astype(np.int64)


def lookup(vocabulary: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Feature index within a field for each key: FIRST_VALUE + rank, or RARE when absent."""
    if vocabulary.size == 0:
        return np.full(keys.size, RARE, dtype=np.int64)
    position = np.minimum(np.searchsorted(vocabulary, keys), vocabulary.size - 1)
    return np.where(vocabulary[position] == keys, position + FIRST_VALUE, RARE)


@dataclass(frozen=True)
class FittedFeatureSpec:
    spec: FeatureSpec
    vocabularies: tuple[npt.NDArray[np.int64], ...]
    edges: tuple[npt.NDArray[np.float64] | None, ...]
    rows_fitted: int

    def __post_init__(self) -> None:
        if len(self.vocabularies) != len(self.spec.fields):
            raise ValueError(
                f"{len(self.vocabularies)} vocabularies for {len(self.spec.fields)} fields"
            )

    @property
    def n_fields(self) -> int:
        return len(self.spec.fields)

    @property
    def field_sizes(self) -> npt.NDArray[np.int64]:
        """Features per field: missing + rare + the vocabulary."""
        return np.array([FIRST_VALUE + v.size for v in self.vocabularies], dtype=np.int64)

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """First feature index of each field."""
        sizes = self.field_sizes
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    @property
    def n_features(self) -> int:
        return int(self.field_sizes.sum())

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Columns a served model needs in its input frame."""
        return self.spec.raw_columns

    def features_per_field(self) -> dict[str, int]:
        return dict(zip(self.spec.fields, self.field_sizes.tolist(), strict=True))

    # ---- transform ------------------------------------------------------------------------

    def encode(self, parsed: ParsedTable) -> npt.NDArray[np.int32]:
        """Global feature ids, shape (rows, n_fields), for parsed rows (bad rows included)."""
        out = np.empty((parsed.n_rows, self.n_fields), dtype=np.int32)
        n_numeric = len(self.spec.numeric)
        for j, (coded, vocabulary, offset) in enumerate(
            zip(parsed.fields, self.vocabularies, self.offsets.tolist(), strict=True)
        ):
            if j < n_numeric:
                values = np.asarray(coded.uniq, dtype=np.float64)
                field_edges = self.edges[j]
                keys = (
                    _binning.quantile_bins(values, field_edges)
                    if field_edges is not None
                    else _binning.log_square_bins(values)
                )
            else:
                keys = np.asarray(coded.uniq, dtype=np.int64)
            # One extra slot at the end for code -1 (missing), so each row costs one `take`.
            ids = np.append(lookup(vocabulary, keys), MISSING) + offset
            out[:, j] = ids[coded.codes]
        return out

    def transform(self, frame: pd.DataFrame, *, with_labels: bool = True) -> ffm_ext.Dataset:
        """Raw rows (the columns in `raw_columns`, plus the label if `with_labels`) -> Dataset.

        Without labels the Dataset's labels are zeros. Bad rows raise BadRowsError naming the
        frame row and the column.
        """
        import ffm_ext

        parsed = self.spec.parse(frame_to_table(frame, self.spec), with_labels=with_labels)
        problems = parsed.problems
        if problems.bad.any():
            shown = "; ".join(f"row {frame.index[r]}: {m}" for r, m in problems.examples[:5])
            raise BadRowsError(f"{int(problems.bad.sum())} bad row(s): {shown}")
        features = self.encode(parsed)
        n, m = features.shape
        labels = parsed.labels if parsed.labels is not None else np.zeros(n, dtype=np.float32)
        return ffm_ext.Dataset(
            np.arange(n + 1, dtype=np.int64) * m,
            np.tile(np.arange(m, dtype=np.int32), n),
            features.reshape(-1),
            np.ones(n * m, dtype=np.float32),
            labels,
            n_features=self.n_features,
            n_fields=m,
        )

    # ---- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        fields = []
        for j, name in enumerate(self.spec.fields):
            entry: dict[str, Any] = {
                "name": name,
                "kind": "numeric" if j < len(self.spec.numeric) else "categorical",
                "offset": int(self.offsets[j]),
                "size": int(self.field_sizes[j]),
                "vocabulary": _encode_keys(self.vocabularies[j]),
            }
            field_edges = self.edges[j]
            if field_edges is not None:
                entry["edges"] = field_edges.tolist()
            fields.append(entry)
        return {
            "format": FITTED_FORMAT,
            "version": FITTED_VERSION,
            "spec": self.spec.to_dict(),
            "rows_fitted": self.rows_fitted,
            "n_fields": self.n_fields,
            "n_features": self.n_features,
            "fields": fields,
        }

    def save(self, path: str) -> None:
        """Write as JSON (local path or pyarrow URI)."""
        _fs.write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "fitted spec") -> FittedFeatureSpec:
        if not isinstance(data, dict) or data.get("format") != FITTED_FORMAT:
            raise SpecError(
                f"{source}: not a fitted feature spec (key 'format' != {FITTED_FORMAT!r})"
            )
        if data.get("version") != FITTED_VERSION:
            raise SpecError(
                f"{source}: key 'version' is {data.get('version')!r}; this ctrflow reads "
                f"version {FITTED_VERSION}"
            )
        spec = FeatureSpec.from_dict(data.get("spec", {}), source=f"{source} key 'spec'")
        fields = data.get("fields")
        if not isinstance(fields, list) or [f.get("name") for f in fields] != list(spec.fields):
            raise SpecError(f"{source}: key 'fields' does not list the spec's fields in order")
        vocabularies, edges = [], []
        for entry in fields:
            try:
                vocabularies.append(_decode_keys(entry["vocabulary"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise SpecError(
                    f"{source}: field {entry['name']!r} key 'vocabulary': {exc}"
                ) from None
            raw_edges = entry.get("edges")
            edges.append(None if raw_edges is None else np.asarray(raw_edges, dtype=np.float64))
        fitted = cls(spec, tuple(vocabularies), tuple(edges), int(data.get("rows_fitted", 0)))
        if data.get("n_features") != fitted.n_features:
            raise SpecError(
                f"{source}: key 'n_features' is {data.get('n_features')!r} but the "
                f"vocabularies give {fitted.n_features}"
            )
        return fitted

    @classmethod
    def load(cls, path: str) -> FittedFeatureSpec:
        try:
            data = json.loads(_fs.read_text(path))
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data, source=path)
