"""Each run reads its own week (issue #16): `--data` as a template of the run's date, filled by
the pipeline's data-window step from KFP's schedule time, or from `--data-date` locally."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest
from mlflow.tracking import MlflowClient

from ctrflow.pipelines._data_window_step import data_window_component
from ctrflow.pipelines.runs.data_window import TemplateError, one_uri, render
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


def test_a_range_of_several_uris_is_refused_with_the_way_out() -> None:
    with pytest.raises(TemplateError, match=r"names 7 URIs \(x/2026-11-30 \.\.\. x/2026-12-06\)"):
        one_uri("x/{date-7d..date}", MONDAY)


def test_step_fills_the_template_from_the_schedule_time() -> None:
    uri, start, end = data_window_component(
        "gs://l/{date-7d:%G-w%V}/*.parquet", "", "2026-12-07T03:00:00Z"
    )
    assert (uri, start, end) == ("gs://l/2026-w49/*.parquet", "2026-11-30", "2026-12-01")
    # A late evening in UTC-5 is the next day in UTC.
    assert data_window_component("l/{date}", "", "2026-12-06T22:00:00-05:00")[0] == "l/2026-12-07"
    # data_date wins over the schedule time.
    assert data_window_component("l/{date}", "2026-01-05", "2026-12-07T03:00:00Z")[0] == (
        "l/2026-01-05"
    )
    # A URI without a template passes through, whatever the time.
    assert data_window_component("l/*.csv", "", "{{$.pipeline_job_schedule_time_utc}}") == (
        "l/*.csv",
        "",
        "",
    )


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
    assert not work.exists()


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

    fake.requests.clear()
    for argv in (
        ("submit", "--data", "gs://l/{date-7d..date}/"),
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
def test_local_run_reads_the_week_its_date_names(tmp_path: pathlib.Path) -> None:
    """The whole pipeline through kfp.local on a templated --data: only the week the date names
    is read (another week's file, with another row count, sits beside it)."""
    for week, rows in (("2026-w49", "3000"), ("2026-w48", "4000")):
        synth = run_ctrflow("data", "synth", f"{tmp_path}/logs/{week}/part.csv", "--rows", rows)
        assert synth.returncode == 0, synth.stderr
    template = f"{tmp_path}/logs/{{date-7d:%G-w%V}}/*.csv"
    proc = run_ctrflow(
        "run", "--data", template, "--data-date", "2026-12-07", "--workdir", tmp_path / "work",
        "--workers", "1", "--budget", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"data {template} -> {tmp_path}/logs/2026-w49/*.csv" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["data_uri"] == f"{tmp_path}/logs/2026-w49/*.csv"
    client = MlflowClient(tracking_uri=result["mlflow_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name(result["model_name"]).experiment_id])
    rows = sum(int(run.data.params[f"{split}_rows"]) for split in ("train", "valid", "test"))
    assert rows == 3000  # week 49's file alone (week 48's has 4000 rows)
