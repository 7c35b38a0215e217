"""What prepare_data reports: split sizes, features per field and bad rows with examples."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ctrflow.components.data._chunk_reader import RawChunk
from ctrflow.components.data._schema import ParsedTable


class BadInputError(ValueError):
    """Too many bad rows; the message gives counts and examples with file and line."""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str


@dataclass(frozen=True)
class SplitStats:
    rows: int
    positives: int
    positive_rate: float


@dataclass(frozen=True)
class PrepareResult:
    output_dir: str
    input_files: list[str]
    input_rows: int  # every data row read, bad ones included
    bad_rows: int
    bad_fraction: float
    bad_examples: list[BadRow]
    split_method: str  # "time" or "ratio"
    split_detail: dict[str, Any]
    splits: dict[str, SplitStats]
    n_fields: int
    n_features: int
    features_per_field: dict[str, int]
    test_raw_path: str = ""  # the test split's raw rows (Parquet), for the promotion gate
    timestamp_unit: str = ""  # time split: the unit the epoch numbers were read in
    timestamp_window: list[str] = field(default_factory=list)  # time split: [earliest, latest]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for KFP/MLflow metrics."""
        out: dict[str, float] = {
            "input_rows": float(self.input_rows),
            "bad_rows": float(self.bad_rows),
            "n_features": float(self.n_features),
        }
        for name, split in self.splits.items():
            out[f"{name}_rows"] = float(split.rows)
            out[f"{name}_positive_rate"] = split.positive_rate
        return out

    def summary(self) -> str:
        lines = [f"prepared {self.output_dir} from {len(self.input_files)} file(s)"]
        lines.append(
            f"  input rows {self.input_rows:,}, bad rows {self.bad_rows:,} "
            f"({100 * self.bad_fraction:.3f}%), split by {self.split_method}"
        )
        for name, split in self.splits.items():
            detail = self.split_detail.get(name)
            when = f"  days {', '.join(detail)}" if isinstance(detail, list) and detail else ""
            lines.append(
                f"  {name:5s} {split.rows:>12,} rows  positive rate {split.positive_rate:.4f}{when}"
            )
        if self.timestamp_window:
            earliest, latest = self.timestamp_window
            unit = self.timestamp_unit or "none seen"
            lines.append(f"  timestamps in {unit} (detected), kept within {earliest} .. {latest}")
        lines.append(f"  {self.n_fields} fields, {self.n_features:,} features")
        if self.test_raw_path:
            lines.append(f"  raw test rows (for the promotion gate): {self.test_raw_path}")
        for example in self.bad_examples[:5]:
            lines.append(f"  bad row {example.file}:{example.line}: {example.reason}")
        return "\n".join(lines)


class BadRowLog:
    """Counts bad rows and keeps the first examples; can tell early that the limit is exceeded."""

    def __init__(self, max_fraction: float, max_examples: int) -> None:
        self.max_fraction = max_fraction
        self.max_examples = max_examples
        self.rows = 0
        self.bad = 0
        self.examples: list[BadRow] = []

    def record(self, chunk: RawChunk, parsed: ParsedTable) -> None:
        bad_values = int(parsed.problems.bad.sum())
        self.rows += chunk.table.num_rows + chunk.n_invalid
        self.bad += bad_values + chunk.n_invalid
        found = [(line, why) for line, why in chunk.invalid]
        found += [(int(chunk.lines[row]), why) for row, why in parsed.problems.examples]
        for line, why in sorted(found)[: max(self.max_examples - len(self.examples), 0)]:
            self.examples.append(BadRow(chunk.file.name, line, why))

    def fraction(self) -> float:
        return self.bad / self.rows if self.rows else 0.0

    def check(self, *, final: bool, total_rows_bound: float | None = None) -> None:
        """Raise when the limit is exceeded; before the end only when it certainly will be."""
        limit_rows = self.rows if final else total_rows_bound
        if limit_rows is None or self.bad <= self.max_fraction * limit_rows:
            return
        shown = "\n".join(f"  {e.file}:{e.line}: {e.reason}" for e in self.examples[:10])
        where = (
            f"{self.bad:,} of {self.rows:,} rows are bad ({100 * self.fraction():.3f}%)"
            if final
            else f"stopped early: {self.bad:,} bad rows in the first {self.rows:,} already exceed "
            f"the limit for the whole input (at most about {limit_rows:,.0f} rows)"
        )
        raise BadInputError(
            f"{where}; max_bad_fraction is {100 * self.max_fraction:.3f}%. Examples:\n{shown}"
        )
