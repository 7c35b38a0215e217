"""Synthetic Criteo-format logs: schema, determinism, formats, the CLI, and a learnable signal."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import ffm_ext
from ctrflow.components.data.prepare_data import prepare_data
from ctrflow.components.data.synth_data import (
    CATEGORICAL_MISSING,
    NUMERIC_MISSING,
    START_EPOCH,
    column_names,
    synth_table,
    write_synth,
)
from ctrflow.pipelines.cli import main


def test_schema_missing_rates_and_time_span() -> None:
    table = synth_table(rows=20_000, days=5, seed=0)
    assert table.column_names == column_names()
    assert table.column_names[:40] == [
        "label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))
    ]  # fmt: skip
    labels = table["label"].to_numpy()
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert 0.2 < labels.mean() < 0.3
    for j, rate in enumerate(NUMERIC_MISSING):
        assert abs(table[f"I{j + 1}"].null_count / 20_000 - rate) < 0.02
    for j, rate in enumerate(CATEGORICAL_MISSING):
        assert abs(table[f"C{j + 1}"].null_count / 20_000 - rate) < 0.02
    assert pc.min(table["I2"]).as_py() < 0  # Criteo's I2 has negative values
    hexes = pc.drop_null(pc.cast(table["C3"], pa.string()))
    assert pc.all(pc.match_substring_regex(hexes, r"^[0-9a-f]{8}$")).as_py()
    stamps = table["timestamp"].to_numpy()
    assert np.all(np.diff(stamps) >= 0)
    assert START_EPOCH <= stamps.min() < START_EPOCH + 86_400
    assert START_EPOCH + 4 * 86_400 <= stamps.max() < START_EPOCH + 5 * 86_400


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = synth_table(rows=3000, days=3, seed=5)
    assert a.equals(synth_table(rows=3000, days=3, seed=5))
    assert not a.equals(synth_table(rows=3000, days=3, seed=6))


def test_csv_tsv_and_parquet_hold_the_same_rows(tmp_path: Path) -> None:
    for name in ("s.csv", "s.tsv", "s.parquet"):
        write_synth(str(tmp_path / name), rows=2500, days=3, seed=1)
    first_line = (tmp_path / "s.csv").read_text().split("\n", 1)[0]
    assert first_line == ",".join(column_names())  # plain header, no quotes
    types = {f"C{i}": pa.string() for i in range(1, 27)}
    options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    csv = pacsv.read_csv(tmp_path / "s.csv", convert_options=options)
    tsv = pacsv.read_csv(
        tmp_path / "s.tsv",
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=options,
    )
    parquet = pq.read_table(tmp_path / "s.parquet")
    expected = synth_table(rows=2500, days=3, seed=1)
    for column in expected.column_names:
        want = pc.cast(expected[column], csv.schema.field(column).type).to_pylist()
        assert csv[column].to_pylist() == want, column
        assert tsv[column].to_pylist() == want, column
        assert parquet[column].to_pylist() == expected[column].to_pylist(), column


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "log.parquet"
    assert main(["data", "synth", str(out), "--rows", "1234", "--days", "2", "--seed", "9"]) == 0
    assert "wrote 1,234 rows over 2 day(s)" in capsys.readouterr().out
    assert pq.read_metadata(out).num_rows == 1234
    assert main(["data", "synth", str(tmp_path / "x.csv"), "--rows", "0"]) == 1
    assert "rows and days must be >= 1" in capsys.readouterr().err


def test_start_moves_the_timestamps_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One file per day of a data window: --days 1 --start DAY."""
    out = tmp_path / "2026-11-27" / "part.parquet"
    args = ["data", "synth", str(out), "--rows", "1500", "--days", "1", "--start", "2026-11-27"]
    assert main(args) == 0
    day = pq.read_table(out)
    midnight = 1_795_737_600  # 2026-11-27T00:00:00Z
    stamps = day["timestamp"].to_numpy()
    assert midnight <= stamps.min() and stamps.max() < midnight + 86_400
    write_synth(str(tmp_path / "default.parquet"), rows=1500, days=1, seed=0)
    default = pq.read_table(tmp_path / "default.parquet")
    assert day.drop_columns(["timestamp"]).equals(default.drop_columns(["timestamp"]))
    assert np.array_equal(stamps - midnight, default["timestamp"].to_numpy() - START_EPOCH)
    assert main(["data", "synth", str(out), "--start", "27.11.2026"]) == 2
    assert "--start: '27.11.2026' is not a date YYYY-MM-DD" in capsys.readouterr().err


def test_planted_signal_is_learnable_after_prepare(tmp_path: Path) -> None:
    write_synth(str(tmp_path / "log.csv"), rows=30_000, days=4, seed=2)
    prepare_data(input_uri=str(tmp_path / "log.csv"), output_dir=str(tmp_path / "out"))
    train = ffm_ext.Dataset.load(tmp_path / "out" / "train")
    test = ffm_ext.Dataset.load(tmp_path / "out" / "test")
    model = LogisticRegression(C=0.5, max_iter=300).fit(train.to_csr_matrix(), train.labels)
    auc = roc_auc_score(test.labels, model.predict_proba(test.to_csr_matrix())[:, 1])
    assert auc > 0.7, auc  # a label independent of the features would give 0.5


@pytest.mark.parametrize("shared_model", [True, False])
def test_daily_files_of_one_log_share_the_planted_model(tmp_path: Path, shared_model: bool) -> None:
    """The README's data-window example: one file per day, other rows each day (--seed), one
    click model (--model-seed). What is learnt on three days predicts the fourth; with a model
    per day (the seed alone) the days are unrelated logs and the test day looks like noise."""
    days = ["2026-11-27", "2026-11-28", "2026-11-29", "2026-11-30"]
    for seed, day in enumerate(days, start=1):
        write_synth(
            str(tmp_path / "logs" / day / "part.parquet"), rows=8_000, days=1, seed=seed,
            start=datetime.date.fromisoformat(day), model_seed=0 if shared_model else None,
        )  # fmt: skip
    prepare_data(
        input_uri=[str(tmp_path / "logs" / day / "*.parquet") for day in days],
        output_dir=str(tmp_path / "out"),
    )
    train = ffm_ext.Dataset.load(tmp_path / "out" / "train")
    test = ffm_ext.Dataset.load(tmp_path / "out" / "test")
    model = LogisticRegression(C=0.5, max_iter=300).fit(train.to_csr_matrix(), train.labels)
    auc = roc_auc_score(test.labels, model.predict_proba(test.to_csr_matrix())[:, 1])
    if shared_model:
        assert auc > 0.65, auc
    else:
        assert auc < 0.6, auc
