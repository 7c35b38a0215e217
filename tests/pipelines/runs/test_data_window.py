"""Each run reads its own week (issue #16): `--data` as a template of the run's date, filled by
the pipeline's data-window step from KFP's schedule time, or from `--data-date` locally."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest
from mlflow.tracking import MlflowClient

from ctrflow.components.registry.register import DATA_WINDOW_ARTIFACT
from ctrflow.pipelines._data_window_step import data_window_component
from ctrflow.pipelines.runs.data_window import TemplateError, render
from tests.pipelines.cli.test_cli_usage import ctrflow, usage_error
from tests.pipelines.runs.test_remote import TOKEN, FakeKfp, _cli
from tests.testkit.cli import run_ctrflow

MONDAY = datetime.date(2026, 12, 7)


@pytest.mark.parametrize(
    ("template", "uris", "start", "end"),
    [
        ("gs://b/{date}.parquet", ["gs://b/2026-12-07.parquet"], "2026-12-07", "2026-12-08"),
        ("gs://ads-logs/{date-7d:%G-w%V}/*.parquet", ["gs://ads-logs/2026-w49/*.parquet"],
         "2026-11-30", "2026-12-01"),
        ("s3://l/{date-1w:%Y/%m/%d}/", ["s3://l/2026/11/30/"], "2026-11-30", "2026-12-01"),
        ("x/{date+1d}", ["x/2026-12-08"], "2026-12-08", "2026-12-09"),
        ("x/{date-3d..date:%m%d}/*.csv", ["x/1204/*.csv", "x/1205/*.csv", "x/1206/*.csv"],
         "2026-12-04", "2026-12-07"),  # the end excluded
        ("x/{{literal}}/{date}", ["x/{literal}/2026-12-07"], "2026-12-07", "2026-12-08"),
        ("plain/*.csv", ["plain/*.csv"], "2026-12-07", "2026-12-07"),
    ],
)  # fmt: skip
def test_render(template: str, uris: list[str], start: str, end: str) -> None:
    window = render(template, MONDAY)
    assert list(window.uris) == uris
    assert (window.start.isoformat(), window.end.isoformat()) == (start, end)


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("x/{dat}", "position 2: 'dat' is not date, date-Nd"),
        ("x/{date-7x}", "position 2: 'date-7x' is not date"),
        ("x/{date", "position 2: unmatched '{'"),
        ("x/date}", "position 6: unmatched '}'"),
        ("x/{date..date-2d}", "covers -2 days; it must run forwards"),
        ("{date-1d..date}/{date-2d..date}", "position 16: one range per template"),
    ],
)
def test_bad_templates_name_position_and_token(template: str, words: str) -> None:
    with pytest.raises(TemplateError) as error:
        render(template, MONDAY)
    assert f"data template {template!r}" in str(error.value) and words in str(error.value)


def test_step_fills_the_template_from_the_schedule_time() -> None:
    uris, window = data_window_component(
        "gs://l/{date-7d:%G-w%V}/*.parquet", "", "2026-12-07T03:00:00Z"
    )
    assert uris == ["gs://l/2026-w49/*.parquet"]
    assert window == {
        "data_uri": "gs://l/{date-7d:%G-w%V}/*.parquet",
        "data_date": "2026-12-07",
        "data_window_start": "2026-11-30",
        "data_window_end": "2026-12-01",
        "data_uri_count": "1",
    }
    # A late evening in UTC-5 is the next day in UTC.
    assert data_window_component("l/{date}", "", "2026-12-06T22:00:00-05:00")[0] == ["l/2026-12-07"]
    # data_date wins over the schedule time.
    assert data_window_component("l/{date}", "2026-01-05", "2026-12-07T03:00:00Z")[0] == [
        "l/2026-01-05"
    ]
    # A URI without a template passes through, whatever the time.
    assert data_window_component("l/*.csv", "", "{{$.pipeline_job_schedule_time_utc}}") == (
        ["l/*.csv"],
        {"data_uri": "l/*.csv", "data_uri_count": "1"},
    )


def test_step_names_one_uri_per_day_of_a_range() -> None:
    uris, window = data_window_component(
        "gs://logs/{date-7d..date:%Y/%m/%d}/*.parquet", "", "2026-12-07T03:00:00Z"
    )
    days = ["11/30", "12/01", "12/02", "12/03", "12/04", "12/05", "12/06"]  # the end excluded
    assert uris == [f"gs://logs/2026/{day}/*.parquet" for day in days]
    assert (window["data_window_start"], window["data_window_end"]) == ("2026-11-30", "2026-12-07")
    assert window["data_uri_count"] == "7"


def test_step_without_a_date_says_how_to_give_one() -> None:
    # kfp.local leaves the placeholder as it is.
    with pytest.raises(ValueError, match="set the run parameter data_date"):
        data_window_component("l/{date}", "", "{{$.pipeline_job_schedule_time_utc}}")
    with pytest.raises(ValueError, match="neither YYYY-MM-DD nor an RFC 3339 time"):
        data_window_component("l/{date}", "7 Dec", "")


def test_local_run_fills_the_template_from_data_date_before_any_step(
    tmp_path: pathlib.Path,
) -> None:
    work = tmp_path / "work"
    template = f"{tmp_path}/logs/{{date-7d:%G-w%V}}/*.csv"
    proc = ctrflow("run", "--data", template, "--data-date", "2026-12-07", "--workdir", work)
    assert usage_error(proc, "run") == f"--data {tmp_path}/logs/2026-w49/*.csv: no file matches"
    message = usage_error(ctrflow("run", "--data", "logs/{dat}", "--workdir", work), "run")
    assert message.startswith("data template 'logs/{dat}', position 5")
    message = usage_error(
        ctrflow("run", "--data", "logs/*.csv", "--data-date", "2026-12-07", "--workdir", work),
        "run",
    )
    assert "has no {date} template to fill" in message
    # A range: every day must hold data; the first without names its URI.
    for day in ("2026-12-04", "2026-12-06"):
        (tmp_path / "days" / day).mkdir(parents=True)
        (tmp_path / "days" / day / "part.csv").write_text("label\n")
    days = f"{tmp_path}/days/{{date-3d..date}}/*.csv"
    proc = ctrflow("run", "--data", days, "--data-date", "2026-12-07", "--workdir", work)
    assert usage_error(proc, "run") == f"--data {tmp_path}/days/2026-12-05/*.csv: no file matches"
    assert not work.exists()


def test_run_summary_shows_the_uris_a_range_named() -> None:
    from ctrflow.pipelines.cli.pipeline import summary_text
    from ctrflow.pipelines.runs.local import LocalRunResult

    template = "/l/{date-7d..date}/*.parquet"
    result = LocalRunResult(
        outputs={}, workdir="/w", data_uri=template,
        data_uris=[f"/l/2026-11-{day}/*.parquet" for day in range(23, 30)], data_generated=False,
        storage_url="sqlite:///o.db", mlflow_uri="sqlite:///m.db", mlflow_ui=None, run_dir=None,
        log_file=None, seconds=1.0,
    )  # fmt: skip
    lines = summary_text(result, "ctr-ffm").splitlines()
    at = lines.index(f"  data          {template}")
    assert [line.strip() for line in lines[at + 1 : at + 4]] == [
        "/l/2026-11-23/*.parquet", "... (5 more)", "/l/2026-11-29/*.parquet"
    ]  # fmt: skip
    assert lines[at + 4].startswith("  study")


def test_submit_and_schedule_send_the_template_and_refuse_a_bad_one(
    kfp_api: tuple[FakeKfp, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against test_remote.py's KFP API stand-in (no KFP server can run here)."""
    fake, url = kfp_api
    monkeypatch.setenv("CTRFLOW_KFP_TOKEN", TOKEN)
    weekly = "gs://ads-logs/{date-7d:%G-w%V}/*.parquet"
    code, _, err = _cli(
        capsys, "schedule", "apply", "--name", "w", "--cron", "0 3 * * 1", "--host", url,
        "--data", weekly,
    )  # fmt: skip
    assert code == 0, err
    (job,) = fake.recurring.values()
    # The template itself: each scheduled run fills it from its own schedule time.
    assert job["runtime_config"]["parameters"] == {"data_uri": weekly}
    code, _, err = _cli(
        capsys, "submit", "--host", url, "--data", weekly, "--data-date", "2026-12-07"
    )
    assert code == 0, err
    (run,) = fake.runs.values()
    assert run["runtime_config"]["parameters"] == {"data_uri": weekly, "data_date": "2026-12-07"}
    # A range too: the cluster's prepare-data reads one URI per day.
    days = "gs://ads-logs/{date-7d..date}/*.parquet"
    code, _, err = _cli(capsys, "submit", "--host", url, "--data", days)
    assert code == 0, err
    assert [r["runtime_config"]["parameters"] for r in fake.runs.values()][-1] == {"data_uri": days}

    fake.requests.clear()
    for argv in (
        ("submit", "--data", "gs://l/{date..date-7d}/"),
        ("submit", "--data", weekly, "--data-date", "last monday"),
        ("schedule", "apply", "--name", "w", "--cron", "0 3 * * 1", "--data", "gs://l/{week}/"),
        ("schedule", "apply", "--name", "w", "--cron", "0 3 * * 1", "--data", weekly,
         "--data-date", "2026-12-07"),
    ):  # fmt: skip
        code, _, err = _cli(capsys, *argv, "--host", url)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fake.requests == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.minutes
def test_local_run_reads_the_days_of_a_range_and_records_the_window(tmp_path: pathlib.Path) -> None:
    """The whole pipeline through kfp.local on `{date-3d..date}`: the data-window step fills it
    from --data-date, prepare-data reads exactly those three days (the days just before and on
    the date sit beside them, with other row counts), and the MLflow run records the window."""
    rows = {"2026-11-26": 700, "2026-11-27": 800, "2026-11-28": 900, "2026-11-29": 1000,
            "2026-11-30": 1100}  # fmt: skip
    for seed, (day, n) in enumerate(rows.items()):
        synth = run_ctrflow(
            "data", "synth", f"{tmp_path}/logs/{day}/part-0.parquet", "--rows", str(n),
            "--days", "1", "--start", day, "--seed", str(seed), "--model-seed", "0",
        )  # fmt: skip
        assert synth.returncode == 0, synth.stderr
    window = ["2026-11-27", "2026-11-28", "2026-11-29"]
    uris = [f"{tmp_path}/logs/{day}/*.parquet" for day in window]
    template = f"{tmp_path}/logs/{{date-3d..date}}/*.parquet"
    proc = run_ctrflow(
        "run", "--data", template, "--data-date", "2026-11-30", "--workdir", str(tmp_path / "work"),
        "--workers", "1", "--budget", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (
        f"data {template} -> 3 URIs, {uris[0]} ... {uris[-1]} "
        "(days 2026-11-27..2026-11-30, end excluded)"
    ) in proc.stderr
    result = json.loads(proc.stdout)
    assert (result["data_uri"], result["data_uris"]) == (template, uris)

    # What prepare-data read, from its stats.json in the run's artifacts.
    (stats_file,) = pathlib.Path(result["run_dir"]).glob("prepare-data/**/stats.json")
    stats = json.loads(stats_file.read_text())
    assert stats["input_files"] == [f"{tmp_path}/logs/{day}/part-0.parquet" for day in window]
    assert stats["input_rows"] == sum(rows[day] for day in window) == 2700
    assert sum(split["rows"] for split in stats["splits"].values()) == 2700

    client = MlflowClient(tracking_uri=result["mlflow_uri"])
    experiment = client.get_experiment_by_name(result["model_name"])
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    params = run.data.params
    assert sum(int(params[f"{split}_rows"]) for split in ("train", "valid", "test")) == 2700
    assert {k: v for k, v in params.items() if k.startswith("data_")} == {
        "data_uri": template,
        "data_date": "2026-11-30",
        "data_window_start": "2026-11-27",
        "data_window_end": "2026-11-30",
        "data_uri_count": "3",
    }
    path = client.download_artifacts(run.info.run_id, DATA_WINDOW_ARTIFACT, str(tmp_path))
    assert json.loads(pathlib.Path(path).read_text())["data_uris"] == uris
