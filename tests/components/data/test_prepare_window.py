"""prepare_data over a data window: several URIs (one per day), each a glob, read in the order
given; a day without data or a file named twice is an error, never a silently different input."""

from __future__ import annotations

import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ctrflow.components.data.prepare_data import prepare_data
from ctrflow.components.data.synth_data import write_synth
from ctrflow.pipelines.cli import main

DAYS = ("2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29")
ROWS = {"2026-11-26": 700, "2026-11-27": 800, "2026-11-28": 900, "2026-11-29": 1000}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per day, each day's rows timestamped within it (the synth generator)."""
    root = tmp_path_factory.mktemp("logs")
    for seed, day in enumerate(DAYS):
        write_synth(
            str(root / day / "part-0.parquet"),
            rows=ROWS[day],
            days=1,
            seed=seed,
            start=datetime.date.fromisoformat(day),
        )
    return root


def _day_globs(root: Path, days: tuple[str, ...]) -> list[str]:
    return [str(root / day / "*.parquet") for day in days]


def test_reads_exactly_the_days_named_in_their_order(logs: Path, tmp_path: Path) -> None:
    window = ("2026-11-27", "2026-11-28", "2026-11-29")  # 2026-11-26 sits beside them
    result = prepare_data(input_uri=_day_globs(logs, window), output_dir=str(tmp_path / "o"))
    assert result.input_files == [str(logs / day / "part-0.parquet") for day in window]
    assert result.input_rows == sum(ROWS[day] for day in window) == 2700
    assert sum(s.rows for s in result.splits.values()) == 2700 and result.bad_rows == 0
    # A time split over the three days: one each for train, valid and test.
    assert result.split_method == "time"
    assert [result.split_detail[name] for name in ("train", "valid", "test")] == [
        ["2026-11-27"], ["2026-11-28"], ["2026-11-29"]
    ]  # fmt: skip
    test_raw = pq.read_table(tmp_path / "o" / "test_raw.parquet")
    assert test_raw.num_rows == result.splits["test"].rows == ROWS["2026-11-29"]

    # The order given is the order read; the datasets do not depend on it.
    backwards = prepare_data(
        input_uri=_day_globs(logs, window[::-1]), output_dir=str(tmp_path / "b")
    )
    assert backwards.input_files == result.input_files[::-1]
    assert backwards.splits == result.splits


def test_a_day_without_data_names_its_uri_and_writes_nothing(logs: Path, tmp_path: Path) -> None:
    (logs / "2026-11-30").mkdir(exist_ok=True)  # the partition exists, but holds no file yet
    uris = _day_globs(logs, ("2026-11-28", "2026-11-29", "2026-11-30"))
    with pytest.raises(FileNotFoundError) as error:
        prepare_data(input_uri=uris, output_dir=str(tmp_path / "o"))
    assert str(error.value) == f"{uris[2]}: no data files match this pattern"
    missing = str(logs / "2026-12-01")
    with pytest.raises(FileNotFoundError, match=f"^{missing}: no such file or directory$"):
        prepare_data(input_uri=[uris[0], missing], output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_a_file_two_uris_name_is_refused(logs: Path, tmp_path: Path) -> None:
    day = str(logs / "2026-11-27")
    with pytest.raises(ValueError, match=r"part-0.parquet is named by both .* read twice"):
        prepare_data(input_uri=[day, f"{day}/*.parquet"], output_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="no input URI given"):
        prepare_data(input_uri=[], output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_cli_prepares_several_inputs(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    days = _day_globs(logs, ("2026-11-26", "2026-11-27", "2026-11-28"))
    assert main(["data", "prepare", *days, str(tmp_path / "o"), "--json"]) == 0
    assert '"input_rows": 2400' in capsys.readouterr().out
    assert main(["data", "prepare", *days[:2], str(logs / "2026-12-05"), str(tmp_path / "e")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"ctrflow data prepare: {logs / '2026-12-05'}: no such file or directory"
    )
