"""prepare_data on bad input (issue #13): each case is generated here from a synthetic log, and
each must end either with the bad rows counted and reported (file, line, token) or with a clear
error naming the file and line, and never with output left behind.

Cases that fail assert that no output directory (and no `.partial` staging file) remains; a few
run `ctrflow data prepare` in a child process, to see what a user sees on stderr.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ctrflow.components.data.prepare_data import BadInputError, SplitError, prepare_data
from ctrflow.components.data.synth_data import write_synth
from tests.testkit.cli import run_ctrflow

ROWS, DAYS = 4000, 4  # 1,000 rows a day: train 2 days, valid 1, test 1
FUTURE = 99_999_999_999  # year 5138 in epoch seconds


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "log.csv"
    write_synth(str(path), rows=ROWS, days=DAYS, seed=7)
    return path


def _frame(log: Path) -> pd.DataFrame:
    """The log's cells as text, exactly as written (empty stays empty)."""
    return pd.read_csv(log, dtype=str, keep_default_na=False)


def _day(frame: pd.DataFrame) -> pd.Series:
    return frame["timestamp"].astype("int64") // 86_400


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# ---- inputs: each writes a file (or directory) under `folder` and returns what to prepare ----


def far_future(log: Path, folder: Path) -> Path:
    frame = _frame(log)
    frame.loc[[0, 1, 2, 3, 4], "timestamp"] = str(FUTURE)  # data lines 2..6
    return _write(frame, folder / "future.csv")


def in_unit(scale: int) -> Callable[[Path, Path], Path]:
    def make(log: Path, folder: Path) -> Path:
        frame = _frame(log)
        frame["timestamp"] = (frame["timestamp"].astype("int64") * scale).astype(str)
        return _write(frame, folder / f"stamps-x{scale}.csv")

    return make


def single_label(log: Path, folder: Path) -> Path:
    frame = _frame(log)
    frame["label"] = "0"
    return _write(frame, folder / "zeros.csv")


def small_test_day(log: Path, folder: Path) -> Path:
    frame = _frame(log)
    day = _day(frame)
    last = frame[day == day.max()]
    return _write(frame.drop(last.index[20:]), folder / "small-test.csv")  # 20 test rows


def one_label_test_day(log: Path, folder: Path) -> Path:
    frame = _frame(log)
    day = _day(frame)
    frame.loc[day == day.max(), "label"] = "1"
    return _write(frame, folder / "clicks-only-test.csv")


def truncated_gzip(log: Path, folder: Path) -> Path:
    packed = gzip.compress(log.read_bytes())
    path = folder / "log.csv.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    return path


def gzip_in_directory(log: Path, folder: Path) -> Path:
    parts = folder / "parts"
    parts.mkdir()
    (parts / "a.csv").write_bytes(log.read_bytes())
    packed = gzip.compress(log.read_bytes())
    (parts / "b.csv.gz").write_bytes(packed[: len(packed) * 2 // 3])
    return parts


def utf16(log: Path, folder: Path) -> Path:
    path = folder / "utf16.csv"
    path.write_bytes(log.read_text().encode("utf-16"))
    return path


def stray_byte(log: Path, folder: Path) -> Path:
    lines = log.read_bytes().split(b"\n")
    lines[41] = lines[41].replace(b",", b",caf\xe9", 1)  # line 42: one Latin-1 character
    path = folder / "latin1-byte.csv"
    path.write_bytes(b"\n".join(lines))
    return path


def wrong_columns(log: Path, folder: Path) -> Path:
    lines = log.read_bytes().split(b"\n")
    lines[9] += b",extra"  # line 10
    lines[19] += b",\xff\xfe"  # line 20: also not UTF-8 (Arrow's handler printed a traceback)
    path = folder / "columns.csv"
    path.write_bytes(b"\n".join(lines))
    return path


def huge_token(log: Path, folder: Path) -> Path:
    frame = _frame(log)
    frame.loc[10, "I3"] = "9" * 5_000_000  # line 12: 5 MB in a numeric column
    return _write(frame, folder / "huge.csv")


# ---- cases that keep going: bad rows counted and reported --------------------------------------


@dataclass(frozen=True)
class Reported:
    make: Callable[[Path, Path], Path]
    bad_rows: int
    lines: list[int]
    reason: str  # a regular expression every example's reason matches
    unit: str = "seconds"


REPORTED = {
    "far-future timestamps": Reported(
        far_future,
        5,
        [2, 3, 4, 5, 6],
        rf"timestamp: {FUTURE} is outside 2000-01-01T00:00:00Z \.\. 20\d\d-\d\d-\d\dT[\d:]+Z "
        r"\(read as seconds\)",
    ),
    "stray non-UTF-8 byte": Reported(
        stray_byte, 1, [42], r"not UTF-8 text: byte 0xe9 at character \d+"
    ),
    "wrong column count": Reported(
        wrong_columns, 2, [10, 20], r"expected 41 columns, got 42: '0?[01],.*|not UTF-8 text"
    ),
    "5 MB token": Reported(
        huge_token,
        1,
        [12],
        r"I3: cannot parse '9{60}'\.\.\. \(5,000,000 characters\) as a finite number",
    ),
}


@pytest.mark.parametrize("case", REPORTED.values(), ids=list(REPORTED))
def test_bad_rows_are_counted_and_reported(log_csv: Path, tmp_path: Path, case: Reported) -> None:
    source = case.make(log_csv, tmp_path)
    out = tmp_path / "out"
    result = prepare_data(input_uri=str(source), output_dir=str(out), max_bad_fraction=0.01)
    assert result.bad_rows == case.bad_rows
    assert result.input_rows == ROWS
    assert [e.line for e in result.bad_examples] == case.lines
    for example in result.bad_examples:
        assert example.file == str(source)
        assert re.fullmatch(case.reason, example.reason), example.reason
    stats_text = (out / "stats.json").read_text()
    stats = json.loads(stats_text)
    assert stats["bad_rows"] == case.bad_rows and stats["timestamp_unit"] == case.unit
    assert len(stats_text) < 20_000  # no 5 MB token in the report
    assert result.split_detail["test"] == ["2024-01-04"]  # never the year 5138
    assert all(result.splits[name].rows > 900 for name in ("valid", "test"))
    assert not list(tmp_path.glob("**/.*partial*"))
    # The same input with no tolerance for bad rows: refused, with the examples, nothing written.
    with pytest.raises(BadInputError, match=rf"{re.escape(str(source))}:{case.lines[0]}: "):
        prepare_data(input_uri=str(source), output_dir=str(tmp_path / "o2"), max_bad_fraction=0)
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    ("scale", "unit"),
    [(1, "seconds"), (1000, "milliseconds"), (10**6, "microseconds"), (10**9, "nanoseconds")],
)
def test_the_timestamp_unit_is_detected_and_stated(
    log_csv: Path, tmp_path: Path, scale: int, unit: str
) -> None:
    source = in_unit(scale)(log_csv, tmp_path)
    result = prepare_data(input_uri=str(source), output_dir=str(tmp_path / "out"))
    assert result.timestamp_unit == unit and result.bad_rows == 0
    assert result.split_detail == {
        "train": ["2024-01-01", "2024-01-02"], "valid": ["2024-01-03"], "test": ["2024-01-04"],
    }  # fmt: skip
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["timestamp_unit"] == unit
    assert f"timestamps in {unit} (detected)" in result.summary()


def test_the_time_window_is_configurable(log_csv: Path, tmp_path: Path) -> None:
    # Rows of the first day fall before a window that starts on the second day: bad rows.
    result = prepare_data(
        input_uri=str(log_csv), output_dir=str(tmp_path / "out"), max_bad_fraction=0.3,
        earliest_time="2024-01-02", latest_time="2024-01-05T00:00:00Z",
    )  # fmt: skip
    assert result.bad_rows == 1000
    assert result.timestamp_window == ["2024-01-02T00:00:00Z", "2024-01-05T00:00:00Z"]
    with pytest.raises(ValueError, match=r"the time window .* is empty"):
        prepare_data(
            input_uri=str(log_csv), output_dir=str(tmp_path / "o2"),
            earliest_time="2024-01-05", latest_time="2024-01-02",
        )  # fmt: skip
    assert not (tmp_path / "o2").exists()


def lone_carriage_returns(log: Path, folder: Path) -> Path:
    """Lines whose cells hold lone \r: Arrow breaks rows there, so its row numbers run past the
    chunk's lines (this was an IndexError reported as a bug in ctrflow)."""
    lines = log.read_bytes().split(b"\n")
    lines[5:40] = [b"\r".join([b"x,y"] * 3) for _ in lines[5:40]]
    path = folder / "carriage.csv"
    path.write_bytes(b"\n".join(lines))
    return path


# ---- cases that stop: a clear error, nothing written --------------------------------------------

REFUSED: dict[str, tuple[Callable[[Path, Path], Path], type[Exception], str]] = {
    "single label": (
        single_label,
        SplitError,
        r"all 4,000 good rows have label 0: a click model needs rows of both labels",
    ),
    "too few test rows": (
        small_test_day,
        SplitError,
        r"the test split \(days 2024-01-04\) has 20 rows, fewer than 100\. ",
    ),
    "one label in a split": (
        one_label_test_day,
        SplitError,
        r"the test split \(days 2024-01-04\) has only label 1 in 1,000 rows",
    ),
    "truncated gzip": (
        truncated_gzip,
        ValueError,
        r"log\.csv\.gz: line [1-9]\d+: cannot read the file from here on \(.+\); "
        r"is it cut short or corrupt\?",
    ),
    "truncated gzip in a directory": (
        gzip_in_directory,
        ValueError,
        r"parts/b\.csv\.gz: line [1-9]\d+: cannot read the file from here on",
    ),
    "lone carriage returns": (
        lone_carriage_returns,
        ValueError,
        r"carriage\.csv: lines 2-\d+: \d+ rows parsed from \d+ lines; line breaks inside quoted "
        r"values and lone carriage returns are not supported",
    ),
    "UTF-16": (
        utf16,
        ValueError,
        r"utf16\.csv: line 1: the file is UTF-16 text; ctrflow reads UTF-8",
    ),
}


@pytest.mark.parametrize(("make", "error", "message"), REFUSED.values(), ids=list(REFUSED))
def test_bad_input_is_refused_and_leaves_nothing(
    log_csv: Path, tmp_path: Path, make: Callable[[Path, Path], Path], error: type, message: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = make(log_csv, inputs)
    with pytest.raises(error, match=message):
        prepare_data(input_uri=str(source), output_dir=str(tmp_path / "out"), threads=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no staging files
    # Into an output directory that exists already (a KFP artifact, a rerun): left as it was.
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "stats.json").write_text("{}")
    split_dirs = {"test": str(tmp_path / "artifacts" / "test")}
    with pytest.raises(error, match=message):
        prepare_data(
            input_uri=str(source), output_dir=str(existing), split_dirs=split_dirs, threads=1
        )
    assert [p.name for p in existing.iterdir()] == ["stats.json"]
    assert (existing / "stats.json").read_text() == "{}"
    assert list(tmp_path.glob("artifacts/**/*")) == []


def test_an_output_that_would_replace_an_input_is_refused(log_csv: Path, tmp_path: Path) -> None:
    """`prepare log.csv log.csv` once replaced the user's log by the prepared directory."""
    log = tmp_path / "log.csv"
    log.write_bytes(log_csv.read_bytes())
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "part.csv").write_bytes(log_csv.read_bytes())
    with pytest.raises(ValueError, match=r"output .*log\.csv would replace the input .*: write "):
        prepare_data(input_uri=str(log), output_dir=str(log), threads=1)
    with pytest.raises(ValueError, match=r"would replace the input"):
        prepare_data(input_uri=str(folder), output_dir=str(tmp_path / "o"),
                     split_dirs={"train": str(folder)}, threads=1)  # fmt: skip
    assert log.read_bytes() == log_csv.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["part.csv"]
    # Into the input's own existing directory: allowed, the input stays.
    prepare_data(input_uri=str(folder / "part.csv"), output_dir=str(folder), threads=1)
    assert (folder / "part.csv").read_bytes() == log_csv.read_bytes()
    assert (folder / "train").is_dir()


def test_a_rerun_replaces_the_outputs_whole(log_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare_data(input_uri=str(log_csv), output_dir=str(out))
    second = prepare_data(input_uri=str(log_csv), output_dir=str(out), split="ratio")
    assert first.split_method == "time" and second.split_method == "ratio"
    assert json.loads((out / "stats.json").read_text())["split_method"] == "ratio"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "feature_spec.json",
        "stats.json",
        "test",
        "test_raw.parquet",
        "train",
        "valid",
    ]


# ---- what a user of the CLI sees ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "args", "code", "expected"),
    [
        (wrong_columns, ["--max-bad-fraction", "0"], 1, r"columns\.csv:10: expected 41 columns"),
        (utf16, [], 1, r"utf16\.csv: line 1: the file is UTF-16 text"),
        (truncated_gzip, [], 1, r"log\.csv\.gz: line \d+: cannot read the file from here on"),
        (small_test_day, [], 1, r"the test split \(days 2024-01-04\) has 20 rows"),
        (in_unit(1000), [], 0, r"timestamps in milliseconds \(detected\)"),
    ],
    ids=["wrong-columns", "utf16", "truncated-gzip", "small-split", "milliseconds"],
)
def test_cli_prints_one_clear_message_and_no_traceback(
    log_csv: Path,
    tmp_path: Path,
    make: Callable[[Path, Path], Path],
    args: list[str],
    code: int,
    expected: str,
) -> None:
    source = make(log_csv, tmp_path)
    proc = run_ctrflow("data", "prepare", str(source), str(tmp_path / "out"), *args)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert re.search(expected, proc.stdout + proc.stderr), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert (tmp_path / "out").exists() == (code == 0)
    assert not list(tmp_path.glob(".*partial*"))
