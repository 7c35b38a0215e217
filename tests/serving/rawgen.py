"""Generated raw rows as a client sends them (JSON values) and as a log file carries them (CSV
text): frequent, rare and one-off values, nulls, empty strings, numeric strings, integers in
categorical columns, large integers, unicode and CSV-quoting characters.

Column C26 holds a unique row id ("row-<i>"), so rows can be found again after prepare_data's
split; as a value seen once it is always rare or unseen, like any one-off value.
"""

from __future__ import annotations

import csv
import io
import random
from typing import Any

NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = ("label", *NUMERIC, *CATEGORICAL)
_WORDS = ("a9f3", "0b1e", "ffff", "x", "None", "null", "NaN", " pad ", "é中", 'q"t', "c,d")


def numeric_value(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.12:
        return None
    if kind < 0.5:
        return rng.randint(0, 20)  # frequent small counts
    if kind < 0.6:
        return rng.randint(-50, -3)
    if kind < 0.7:
        return rng.choice((10**6, 10**12, 2**53 + 1, 10**30, 123456789))
    if kind < 0.8:
        return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
    if kind < 0.85:
        return rng.choice((1e-05, 0.1, 2.5e16, 3.0, -2.0, 0.0))
    # Numbers as text, as a client that quotes everything sends them; "" and "nan" are missing.
    return rng.choice(("12", "-3.5", "1e3", "0012", "7.0", "", "nan", "2", "1e-05"))


def categorical_value(rng: random.Random, column: int) -> Any:
    kind = rng.random()
    if kind < 0.1:
        return None
    if kind < 0.13:
        return ""
    if kind < 0.6:
        return f"{column:02d}{rng.randint(0, 12):04x}"  # frequent
    if kind < 0.75:
        return f"r{rng.randint(0, 400)}"  # rare: seen a few times at most
    if kind < 0.85:
        return rng.choice(_WORDS)
    if kind < 0.92:
        return rng.randint(0, 30)  # an integer category: its decimal text
    return f"once-{rng.getrandbits(40):x}"  # one-off: rare in training or unseen


def raw_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"label": rng.randint(0, 1)}
        row.update((name, numeric_value(rng)) for name in NUMERIC)
        row.update((name, categorical_value(rng, j)) for j, name in enumerate(CATEGORICAL[:-1]))
        row["C26"] = f"row-{i}"
        rows.append(row)
    return rows


def cell(value: Any) -> str:
    """A value as a CSV cell: what a log writer puts in the file."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row[c]) for c in columns])
    return out.getvalue()
