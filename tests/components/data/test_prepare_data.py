"""prepare_data on the Criteo sample and on generated logs: splits, parity between the batch
(CSV/Parquet) path and the serving (DataFrame) path, bad rows with line numbers, inputs of every
kind, user spec files, and the KFP component run through KFP's own local runner."""

from __future__ import annotations

import gzip
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import ffm_ext
from ctrflow.components.data._schema import SpecError
from ctrflow.components.data.feature_spec import FeatureSpec, FittedFeatureSpec
from ctrflow.components.data.prepare_data import (
    BadInputError,
    prepare_data,
)
from ctrflow.components.data.synth_data import write_synth
from ctrflow.components.kfp_components import prepare_data_component
from ctrflow.pipelines.cli import main

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 days, 12,000 rows of generated Criteo-format logs."""
    path = tmp_path_factory.mktemp("synth") / "log.csv"
    write_synth(str(path), rows=12_000, days=6, seed=3)
    return path


def _load(out: Path, split: str) -> ffm_ext.Dataset:
    return ffm_ext.Dataset.load(out / split)


def _rows(ds: ffm_ext.Dataset) -> np.ndarray:
    return np.asarray(ds.features).reshape(ds.n_rows, ds.n_fields)


def _sorted_rows(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    table = np.column_stack([labels.astype(np.int64), features.astype(np.int64)])
    return table[np.lexsort(table.T[::-1])]


def test_criteo_sample_matches_the_serving_transform(criteo_csv: Path, tmp_path: Path) -> None:
    sample = criteo_csv
    result = prepare_data(
        input_uri=str(sample), output_dir=str(tmp_path), rare_threshold=2, min_split_rows=5
    )
    assert result.split_method == "ratio"  # the sample has no timestamp column
    assert result.input_rows == 200 and result.bad_rows == 0
    assert sum(s.rows for s in result.splits.values()) == 200
    assert json.loads((tmp_path / "stats.json").read_text()) == json.loads(
        json.dumps(result.to_dict())
    )
    datasets = {s: _load(tmp_path, s) for s in SPLITS}
    assert all(d.n_fields == 39 and d.n_features == result.n_features for d in datasets.values())
    for name, ds in datasets.items():
        assert ds.n_rows == result.splits[name].rows
        assert int(ds.labels.sum()) == result.splits[name].positives
    # Every prepared row is what serving makes of its raw row (same saved spec).
    fitted = FittedFeatureSpec.load(str(tmp_path / "feature_spec.json"))
    frame = pd.read_csv(sample, dtype={f"C{i}": str for i in range(1, 27)})
    served = fitted.transform(frame)
    prepared = np.concatenate([_rows(d) for d in datasets.values()])
    labels = np.concatenate([d.labels for d in datasets.values()])
    assert np.array_equal(
        _sorted_rows(prepared, labels), _sorted_rows(_rows(served), served.labels)
    )


def test_time_split_puts_the_last_days_in_valid_and_test(synth_csv: Path, tmp_path: Path) -> None:
    result = prepare_data(input_uri=str(synth_csv), output_dir=str(tmp_path), valid_days=2)
    raw = pacsv.read_csv(synth_csv).to_pandas()
    day = pd.to_datetime(raw["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    days = sorted(day.unique())
    assert result.split_method == "time"
    assert result.split_detail == {"train": days[:3], "valid": days[3:5], "test": days[5:]}
    for name, chosen in result.split_detail.items():
        rows = day.isin(chosen)
        ds = _load(tmp_path, name)
        assert ds.n_rows == int(rows.sum())
        assert ds.labels.sum() == raw.loc[rows, "label"].sum()


def test_vocabulary_comes_from_training_days_only(tmp_path: Path) -> None:
    # "late" appears 30 times, but only on the last (test) day: it must map to the rare bucket.
    days = np.repeat(np.arange(4), 30)
    frame = pd.DataFrame(
        {
            "y": np.arange(120) % 2,
            "ts": 1_700_000_000 + days * 86_400 + np.arange(120),
            "c": np.where(days == 3, "late", "early"),
        }
    )
    frame.to_csv(tmp_path / "log.csv", index=False)
    spec = FeatureSpec(label="y", categorical=("c",), timestamp="ts", rare_threshold=5)
    spec.save(str(tmp_path / "spec.json"))
    out = tmp_path / "out"
    result = prepare_data(
        input_uri=str(tmp_path / "log.csv"),
        output_dir=str(out),
        spec_path=str(tmp_path / "spec.json"),
        min_split_rows=30,
    )
    assert result.features_per_field == {"c": 3}  # missing, rare, "early"
    assert set(_load(out, "test").features.tolist()) == {1}  # all rare
    assert set(_load(out, "train").features.tolist()) == {2}


@pytest.mark.parametrize("threads", [1, 2])
def test_ratio_split_vocabulary_comes_from_training_rows_only(tmp_path: Path, threads: int) -> None:
    # Every row has a value of its own, kept from a single occurrence (rare_threshold=1): the
    # vocabulary must be exactly the training rows' values, and every valid/test value unseen.
    n = 2_000
    frame = pd.DataFrame({"y": np.arange(n) % 2, "c": [f"v{i}" for i in range(n)]})
    frame.to_csv(tmp_path / "log.csv", index=False)
    spec = FeatureSpec(label="y", categorical=("c",), rare_threshold=1)
    spec.save(str(tmp_path / "spec.json"))
    out = tmp_path / "out"
    result = prepare_data(
        input_uri=str(tmp_path / "log.csv"), output_dir=str(out),
        spec_path=str(tmp_path / "spec.json"), split="ratio", chunk_rows=300, threads=threads,
        min_split_rows=50,
    )  # fmt: skip
    assert result.split_method == "ratio"
    rows = {name: result.splits[name].rows for name in SPLITS}
    assert sum(rows.values()) == n and min(rows.values()) >= 100
    assert result.features_per_field == {"c": 2 + rows["train"]}  # missing, unseen, train values
    train = _load(out, "train").features
    assert np.unique(train).size == rows["train"] and train.min() >= 2  # each its own feature
    for name in ("valid", "test"):
        assert set(_load(out, name).features.tolist()) == {1}, name  # all unseen
    # The raw test rows through the saved spec: their values are unseen too.
    fitted = FittedFeatureSpec.load(str(out / "feature_spec.json"))
    test_raw = pd.read_parquet(result.test_raw_path)
    assert len(test_raw) == rows["test"]
    assert set(fitted.transform(test_raw).features.tolist()) == {1}


def test_ratio_split_depends_on_rows_not_on_chunks_or_threads(
    synth_csv: Path, tmp_path: Path
) -> None:
    a = prepare_data(
        input_uri=str(synth_csv), output_dir=str(tmp_path / "a"), split="ratio", chunk_rows=700,
        threads=2, cache_memory_mb=0,  # every chunk goes through the on-disk cache
    )  # fmt: skip
    b = prepare_data(
        input_uri=str(synth_csv), output_dir=str(tmp_path / "b"), split="ratio",
        chunk_rows=100_000, threads=1,
    )  # fmt: skip
    assert a.splits == b.splits
    for name in SPLITS:
        da, db = _load(tmp_path / "a", name), _load(tmp_path / "b", name)
        assert np.array_equal(da.features, db.features)
        assert np.array_equal(da.labels, db.labels)
    assert abs(a.splits["valid"].rows / 12_000 - 0.1) < 0.015
    assert abs(a.splits["test"].rows / 12_000 - 0.1) < 0.015
    prepare_data(input_uri=str(synth_csv), output_dir=str(tmp_path / "c"), split="ratio", seed=1)
    assert not np.array_equal(
        _load(tmp_path / "c", "test").labels, _load(tmp_path / "a", "test").labels
    )


CATEGORICAL = {f"C{i}": "str" for i in range(1, 27)}


def _read_raw(path: Path) -> pd.DataFrame:
    """A generated log as plain pandas: categoricals as text, missing values as NaN."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype(CATEGORICAL)
    return pd.read_csv(path, dtype=CATEGORICAL)


def _last_days(raw: pd.DataFrame, n: int) -> pd.DataFrame:
    day = raw["timestamp"] // 86_400
    return raw[day.isin(sorted(day.unique())[-n:])].drop(columns="timestamp")


@pytest.mark.parametrize(
    ("source", "options"),
    [
        # Days in order: each new day drops kept rows of older days, chunks across two days
        # are filtered at the end; all spilled.
        ("csv", {"test_days": 2, "chunk_rows": 700, "cache_memory_mb": 0, "threads": 2}),
        # Days shuffled, two test days: chunks are kept in part and filtered at the end.
        ("shuffled", {"test_days": 2, "chunk_rows": 500, "cache_memory_mb": 0}),
        ("shuffled", {"test_days": 2, "threads": 1}),
        ("parquet", {}),
    ],
)
def test_raw_test_rows_are_the_test_dataset_rows_as_read(
    synth_csv: Path, tmp_path: Path, source: str, options: dict[str, typing.Any]
) -> None:
    path = synth_csv
    if source == "shuffled":
        path = tmp_path / "shuffled.csv"
        _read_raw(synth_csv).sample(frac=1.0, random_state=0).to_csv(path, index=False)
    elif source == "parquet":
        path = tmp_path / "log.parquet"
        write_synth(str(path), rows=12_000, days=6, seed=3)
    out = tmp_path / "out"
    result = prepare_data(input_uri=str(path), output_dir=str(out), **options)
    assert result.split_method == "time"
    assert result.test_raw_path == str(out / "test_raw.parquet")
    assert sorted(p.name for p in out.iterdir()) == [
        "feature_spec.json",
        "stats.json",
        "test",
        "test_raw.parquet",
        "train",
        "valid",
    ]  # fmt: skip  (no partial file, no spilled rows left behind)
    table = pq.read_table(out / "test_raw.parquet")
    fitted = FittedFeatureSpec.load(str(out / "feature_spec.json"))
    assert table.schema == pa.schema(
        [pa.field("label", pa.int8())]
        + [pa.field(c, pa.float64()) for c in fitted.spec.numeric]
        + [pa.field(c, pa.string()) for c in fitted.spec.categorical]
    )
    got = table.to_pandas()
    # The rows of the test days, in input order, the values as read; missing is null.
    expected = _last_days(_read_raw(path), options.get("test_days", 1)).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert table.column("C3").null_count == expected["C3"].isna().sum() > 0
    # Through the fitted spec they are exactly the prepared test Dataset.
    served, test = fitted.transform(got), _load(out, "test")
    assert np.array_equal(served.features, test.features)
    assert np.array_equal(served.labels, test.labels)


def test_raw_test_rows_of_a_ratio_split_leave_bad_rows_out(synth_csv: Path, tmp_path: Path) -> None:
    _corrupt(synth_csv, tmp_path / "bad.csv")
    result = prepare_data(
        input_uri=str(tmp_path / "bad.csv"), output_dir=str(tmp_path / "out"), split="ratio",
        max_bad_fraction=0.01, chunk_rows=300,
    )  # fmt: skip
    assert result.bad_rows == 5
    got = pd.read_parquet(result.test_raw_path)
    test = _load(tmp_path / "out", "test")
    assert len(got) == test.n_rows == result.splits["test"].rows > 1000
    fitted = FittedFeatureSpec.load(str(tmp_path / "out" / "feature_spec.json"))
    served = fitted.transform(got)  # a bad row here would raise BadRowsError
    assert np.array_equal(served.features, test.features)
    assert np.array_equal(served.labels, test.labels)
    # Each row is a row of the input, as read (the split is a hash of file name and line).
    raw = _read_raw(synth_csv).drop(columns="timestamp")
    keys = list(raw.columns)
    found = got.merge(raw.drop_duplicates(), on=keys, how="left", indicator=True)
    assert (found["_merge"] == "both").all()


def _corrupt(src: Path, dst: Path) -> dict[int, str]:
    """Copy `src`, breaking some lines; returns {line number: expected reason fragment}."""
    lines = src.read_text().splitlines()
    broken = {
        10: ("drop", "expected 41 columns, got 40"),
        20: ("label", "label: label 2 is not 0 or 1"),
        30: ("number", "I3: cannot parse 'abc' as a finite number"),
        40: ("empty", "label: label is missing"),
        50: ("xlabel", "label: cannot parse 'x' as a finite number"),
    }
    for number, (kind, _) in broken.items():
        cells = lines[number - 1].split(",")
        if kind == "drop":
            cells = cells[:-1]
        elif kind == "label":
            cells[0] = "2"
        elif kind == "number":
            cells[3] = "abc"
        elif kind == "xlabel":
            cells[0] = "x"
        lines[number - 1] = "" if kind == "empty" else ",".join(cells)
    dst.write_text("\n".join(lines) + "\n")
    return {number: why for number, (_, why) in broken.items()}


@pytest.mark.parametrize("chunk_rows", [7, 100_000])
def test_bad_rows_are_reported_with_line_numbers(
    synth_csv: Path, tmp_path: Path, chunk_rows: int
) -> None:
    expected = _corrupt(synth_csv, tmp_path / "bad.csv")
    result = prepare_data(
        input_uri=str(tmp_path / "bad.csv"), output_dir=str(tmp_path / "out"),
        max_bad_fraction=0.01, chunk_rows=chunk_rows,
    )  # fmt: skip
    assert result.bad_rows == 5 and result.input_rows == 12_000
    assert sum(s.rows for s in result.splits.values()) == 12_000 - 5
    found = {e.line: e.reason for e in result.bad_examples}
    assert sorted(found) == sorted(expected)
    for line, fragment in expected.items():
        assert fragment in found[line], (line, found[line])
    assert all(e.file == str(tmp_path / "bad.csv") for e in result.bad_examples)


class _Paths(typing.TypedDict):
    input_uri: str
    output_dir: str


def test_too_many_bad_rows_fail_before_writing(synth_csv: Path, tmp_path: Path) -> None:
    _corrupt(synth_csv, tmp_path / "bad.csv")
    # 5 bad rows of 12,000 pass the default limit (0.1%), not a stricter one.
    limit: _Paths = {"input_uri": str(tmp_path / "bad.csv"), "output_dir": str(tmp_path / "out")}
    assert prepare_data(**limit, split="ratio").bad_rows == 5
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(BadInputError, match=r"5 of 12,000 rows are bad \(0\.042%\)") as info:
        prepare_data(**limit, max_bad_fraction=0.0002, cache_memory_mb=0)
    assert f"{tmp_path / 'bad.csv'}:30: I3: cannot parse 'abc'" in str(info.value)
    assert not (tmp_path / "out").exists()  # no cache, no partial raw test rows, nothing
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.csv"]


def test_a_broken_input_stops_early(tmp_path: Path) -> None:
    frame = pd.DataFrame({"label": ["yes"] * 200_000, "I1": 1, "C1": "a"})
    frame.to_csv(tmp_path / "wrong.csv", index=False)
    spec = FeatureSpec(label="label", numeric=("I1",), categorical=("C1",))
    spec.save(str(tmp_path / "spec.json"))
    with pytest.raises(
        BadInputError, match=r"stopped early: ([\d,]+) bad rows in the first \1 "
    ) as info:
        prepare_data(
            input_uri=str(tmp_path / "wrong.csv"), output_dir=str(tmp_path / "out"),
            spec_path=str(tmp_path / "spec.json"), chunk_rows=1000, threads=1,
        )  # fmt: skip
    read = int(str(info.value).split(" bad rows")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert read < 200_000
    assert "wrong.csv:2: label: cannot parse 'yes' as a finite number" in str(info.value)


def test_directory_glob_and_compressed_inputs(synth_csv: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    write_synth(str(parts / "part-0.csv"), rows=3000, days=4, seed=1)
    write_synth(str(parts / "part-1.csv"), rows=2000, days=4, seed=2)
    (parts / "_SUCCESS").write_text("")
    (parts / "README.md").write_text("not data")
    by_dir = prepare_data(input_uri=str(parts), output_dir=str(tmp_path / "d"), split="ratio")
    assert [Path(f).name for f in by_dir.input_files] == ["part-0.csv", "part-1.csv"]
    assert by_dir.input_rows == 5000
    by_glob = prepare_data(
        input_uri=str(parts / "part-*.csv"), output_dir=str(tmp_path / "g"), split="ratio"
    )
    assert by_glob.splits == by_dir.splits
    with gzip.open(parts / "part-2.csv.gz", "wb") as out:
        out.write((parts / "part-1.csv").read_bytes())
    gz = prepare_data(input_uri=str(parts / "part-2.csv.gz"), output_dir=str(tmp_path / "z"))
    plain = prepare_data(input_uri=str(parts / "part-1.csv"), output_dir=str(tmp_path / "p"))
    assert gz.splits == plain.splits
    assert np.array_equal(
        _load(tmp_path / "z", "train").features, _load(tmp_path / "p", "train").features
    )
    with pytest.raises(FileNotFoundError, match=r"no data files match"):
        prepare_data(input_uri=str(parts / "nothing-*.csv"), output_dir=str(tmp_path / "n"))


def test_parquet_and_csv_give_the_same_datasets(tmp_path: Path) -> None:
    write_synth(str(tmp_path / "log.csv"), rows=6000, days=5, seed=4)
    write_synth(str(tmp_path / "log.parquet"), rows=6000, days=5, seed=4)
    from_csv = prepare_data(input_uri=str(tmp_path / "log.csv"), output_dir=str(tmp_path / "c"))
    from_pq = prepare_data(input_uri=str(tmp_path / "log.parquet"), output_dir=str(tmp_path / "p"))
    assert from_pq.split_method == from_csv.split_method == "time"
    assert from_pq.splits == from_csv.splits
    assert from_pq.features_per_field == from_csv.features_per_field
    for name in SPLITS:
        assert np.array_equal(
            _load(tmp_path / "c", name).features, _load(tmp_path / "p", name).features
        )
    spec_c = json.loads((tmp_path / "c" / "feature_spec.json").read_text())
    spec_p = json.loads((tmp_path / "p" / "feature_spec.json").read_text())
    assert spec_c["fields"] == spec_p["fields"]


def test_user_schema_tsv_with_iso_timestamps_and_headerless_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            "clicked": rng.integers(0, 2, n),
            "when": pd.date_range("2024-03-01", periods=n, freq="5min", tz="UTC").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "price": rng.exponential(30, n).round(2),
            "site": rng.choice(["news", "sport", "mail"], n),
            "app": rng.choice(["a1", "a2", ""], n),
        }
    )
    frame.to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    spec = {
        "label": "clicked", "numeric": ["price"], "categorical": ["site", "app"],
        "timestamp": "when", "rare_threshold": 1,
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = prepare_data(
        input_uri=str(tmp_path / "log.tsv"), output_dir=str(tmp_path / "out"),
        spec_path=str(tmp_path / "spec.json"),
    )  # fmt: skip
    assert result.split_method == "time"
    assert result.split_detail["test"] == ["2024-03-07"]
    assert result.features_per_field["site"] == 2 + 3
    assert result.features_per_field["app"] == 2 + 2  # "" is missing, not a value
    assert sum(s.rows for s in result.splits.values()) == n
    # The same rows without a header line, columns in the order the spec file gives.
    frame.to_csv(tmp_path / "noheader.tsv", sep="\t", index=False, header=False)
    spec_nh = {**spec, "header": False, "columns": list(frame.columns)}
    (tmp_path / "spec_nh.json").write_text(json.dumps(spec_nh))
    headerless = prepare_data(
        input_uri=str(tmp_path / "noheader.tsv"), output_dir=str(tmp_path / "nh"),
        spec_path=str(tmp_path / "spec_nh.json"),
    )  # fmt: skip
    assert headerless.splits == result.splits


def test_spec_and_schema_errors_name_file_and_key(synth_csv: Path, tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps({"label": "label", "categoricals": ["C1"]}))
    with pytest.raises(SpecError, match=r"spec\.json: unknown key 'categoricals'"):
        prepare_data(
            input_uri=str(synth_csv), output_dir=str(tmp_path / "o"),
            spec_path=str(tmp_path / "spec.json"),
        )  # fmt: skip
    (tmp_path / "spec2.json").write_text(json.dumps({"label": "label", "numeric": ["I99"]}))
    with pytest.raises(SpecError, match=r"log\.csv: column\(s\) I99 missing"):
        prepare_data(
            input_uri=str(synth_csv), output_dir=str(tmp_path / "o"),
            spec_path=str(tmp_path / "spec2.json"),
        )  # fmt: skip
    (tmp_path / "empty.csv").write_text(synth_csv.read_text().split("\n", 1)[0] + "\n")
    with pytest.raises(ValueError, match=r"empty\.csv: no data rows"):
        prepare_data(input_uri=str(tmp_path / "empty.csv"), output_dir=str(tmp_path / "o"))
    (tmp_path / "binary.csv").write_bytes(b'"unterminated\n1,2')
    with pytest.raises(ValueError, match=r"binary\.csv: line 1: cannot read the header"):
        prepare_data(input_uri=str(tmp_path / "binary.csv"), output_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match=r"time split needs at least 3 days"):
        small = tmp_path / "oneday.csv"
        write_synth(str(small), rows=100, days=1)
        prepare_data(input_uri=str(small), output_dir=str(tmp_path / "o"))


def test_cli_prepare_prints_stats_and_fails_cleanly(
    synth_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "prepare", str(synth_csv), str(tmp_path / "out"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["input_rows"] == 12_000 and stats["split_method"] == "time"
    _corrupt(synth_csv, tmp_path / "bad.csv")
    args = ["data", "prepare", str(tmp_path / "bad.csv"), str(tmp_path / "out2")]
    assert main([*args, "--max-bad-fraction", "0.0002"]) == 1
    err = capsys.readouterr().err
    assert "ctrflow data prepare: 5 of 12,000 rows are bad" in err and ":10: expected 41" in err


def _kfp_ready(func: typing.Any) -> typing.Any:
    """KFP reads annotations as objects; this module uses `from __future__ import annotations`."""
    hints = typing.get_type_hints(func, include_extras=True)
    if hints.get("return") is type(None):
        hints["return"] = None
    func.__annotations__ = hints
    return func


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # no image needed here
def test_component_runs_under_kfp_local_runner(
    synth_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfp import dsl, local

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the runner's step code dirs: not in /tmp
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        workspace_root=str(tmp_path),
    )
    component = dsl.component(
        func=_kfp_ready(prepare_data_component),
        base_image="ctrflow:test",
        install_kfp_package=False,
    )
    task = component(data_uris=[str(synth_csv)], valid_days=2)
    outputs = task.outputs
    for name in SPLITS:
        ds = ffm_ext.Dataset.load(outputs[name].path)
        assert ds.n_rows == outputs["metrics"].metadata[f"{name}_rows"] > 0
        assert outputs[name].metadata["n_features"] == ds.n_features
    spec_dir = Path(outputs["feature_spec"].path)
    fitted = FittedFeatureSpec.load(str(spec_dir / "feature_spec.json"))
    assert fitted.n_features == outputs["train"].metadata["n_features"]
    assert json.loads((spec_dir / "stats.json").read_text())["split_method"] == "time"
    raw = pd.read_parquet(Path(outputs["test_raw"].path) / "test_raw.parquet")
    assert len(raw) == outputs["test_raw"].metadata["rows"] == outputs["metrics"].metadata[
        "test_rows"
    ]  # fmt: skip
    served = fitted.transform(raw)
    assert np.array_equal(served.features, ffm_ext.Dataset.load(outputs["test"].path).features)
    shutil.rmtree(tmp_path / "root")


def test_result_columns_are_plain_python(tmp_path: Path) -> None:
    # stats.json must be readable by anything: no NumPy scalars leak into it.
    frame = pa.table({"label": [0, 1] * 1000, "I1": list(range(2000)), "C1": ["a", "b"] * 1000})
    pacsv.write_csv(frame, tmp_path / "t.csv")
    spec = FeatureSpec(label="label", numeric=("I1",), categorical=("C1",), rare_threshold=1)
    spec.save(str(tmp_path / "spec.json"))
    result = prepare_data(
        input_uri=str(tmp_path / "t.csv"), output_dir=str(tmp_path / "o"),
        spec_path=str(tmp_path / "spec.json"),
    )  # fmt: skip
    text = (tmp_path / "o" / "stats.json").read_text()
    assert json.loads(text)["features_per_field"] == result.features_per_field
    assert all(type(v) is int for v in result.features_per_field.values())


def test_parquet_bad_rows_name_the_row_and_uris_work(tmp_path: Path) -> None:
    table = pa.table(
        {
            "label": pa.array([0, 1, 2, 0, 1] * 40, pa.int64()),  # 2 is bad: rows 3, 8, ...
            "I1": pa.array([1.0, float("inf"), 3.0, None, 5.0] * 40),  # inf is bad: rows 2, 7, ...
            "C1": pa.array(["a", "b", None, "a", "b"] * 40),
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    spec = FeatureSpec(label="label", numeric=("I1",), categorical=("C1",), rare_threshold=1)
    spec.save(str(tmp_path / "spec.json"))
    result = prepare_data(
        input_uri=f"file://{tmp_path / 'log.parquet'}",  # through pyarrow.fs.FileSystem.from_uri
        output_dir=str(tmp_path / "out"),
        spec_path=f"file://{tmp_path / 'spec.json'}",
        max_bad_fraction=0.5,
        min_split_rows=5,
    )
    assert result.bad_rows == 80 and result.input_rows == 200
    found = {e.line: e.reason for e in result.bad_examples}
    assert found[2] == "I1: inf is not a finite number"
    assert found[3] == "label: label 2 is not 0 or 1"
    assert sum(s.rows for s in result.splits.values()) == 120
