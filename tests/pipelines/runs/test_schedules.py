"""`ctrflow schedule apply|list` (issue #16): one recurring run per name, created, replaced when
anything differs (also after an upgrade to a new pipeline version), left alone otherwise; nothing
deployed changes when a command fails.

A contract test, like test_remote.py and on its stand-in server: no Kubeflow Pipelines API
server can run here (it needs Kubernetes, Argo and MySQL). The real `kfp.Client` talks to it,
and every recurring run the commands send and every one the stand-in answers is checked against
the installed kfp_server_api models (tests/testkit/kfp_models.py), the OpenAPI-generated types of
the v2beta1 API.
"""

from __future__ import annotations

import datetime
import json

import pytest

import ctrflow
from ctrflow.pipelines.runs.cron import next_run
from tests.pipelines.runs.test_remote import API, SUBMIT, TOKEN, FakeKfp, _cli, cli_exit
from tests.testkit.kfp_models import check_model


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRFLOW_KFP_TOKEN", TOKEN)


WEEKLY = ("schedule", "apply", "--name", "weekly ctr", "--cron", "0 3 * * 1")


def _apply(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> tuple[int, str, str]:
    return _cli(capsys, *WEEKLY, "--host", url, *SUBMIT, *extra)


def _check_contract(fake: FakeKfp) -> None:
    for request in fake.called("POST", f"{API}/recurringruns"):
        check_model(request.body, "V2beta1RecurringRun")
    for job in fake.recurring.values():
        check_model(job, "V2beta1RecurringRun")


def test_apply_creates_then_leaves_alone_then_replaces(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    code, out, err = _apply(capsys, url)
    assert code == 0, err
    assert out.startswith("created recurring run ") and "'0 0 3 * * 1' UTC" in out
    (first,) = fake.recurring

    code, out, err = _apply(capsys, url)
    assert code == 0, err
    assert out.startswith(f"unchanged: recurring run {first} (weekly ctr)")
    assert list(fake.recurring) == [first]
    assert len(fake.called("POST", f"{API}/recurringruns")) == 1
    assert not [r for r in fake.requests if r.method == "DELETE"]

    code, out, err = _apply(capsys, url, "--workers", "5", "--cron", "0 4 * * 1")
    assert code == 0, err
    (second,) = fake.recurring
    assert second != first
    assert out.strip() == (
        f"replaced recurring run {first} with {second} (weekly ctr): "
        "cron '0 0 3 * * 1' -> '0 0 4 * * 1'; parameter n_workers 3 -> 5"
    )
    job = fake.recurring[second]
    assert job["runtime_config"]["parameters"]["n_workers"] == 5
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 1"
    # The new one was created before the old one was deleted.
    order = [(r.method, r.path) for r in fake.requests if r.path.startswith(f"{API}/recurringruns")]
    assert order.index(("POST", f"{API}/recurringruns")) < order.index(
        ("DELETE", f"{API}/recurringruns/{first}")
    )
    _check_contract(fake)


def test_apply_after_an_upgrade_follows_the_new_pipeline_version(
    kfp_api: tuple[FakeKfp, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = kfp_api
    assert _apply(capsys, url, "--json")[0] == 0
    (old_job,) = fake.recurring
    old_version = fake.recurring[old_job]["pipeline_version_reference"]["pipeline_version_id"]

    monkeypatch.setattr(ctrflow, "__version__", "99.0.0")  # the upgrade: a new ctrflow
    # A submit of the new version alone leaves the schedule on the old one, and list says so.
    assert _cli(capsys, "submit", "--host", url, *SUBMIT)[0] == 0
    code, out, err = _cli(capsys, "schedule", "list", "--host", url, "--json")
    assert code == 0, err
    (listed,) = json.loads(out)
    assert listed["pipeline_version_id"] == old_version and listed["latest_version"] is False
    code, out, _ = _cli(capsys, "schedule", "list", "--host", url)
    assert "NOT latest" in out

    code, out, err = _apply(capsys, url, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["action"] == "replaced" and result["replaced_id"] == old_job
    new_version = result["version_id"]
    assert result["changes"][0] == f"pipeline version {old_version} -> 99.0.0 ({new_version})"
    (job,) = fake.recurring.values()
    assert job["pipeline_version_reference"]["pipeline_version_id"] == new_version
    code, out, _ = _cli(capsys, "schedule", "list", "--host", url, "--json")
    (listed,) = json.loads(out)
    assert listed["pipeline_version_name"] == "99.0.0" and listed["latest_version"] is True
    _check_contract(fake)


@pytest.mark.parametrize(
    "bad",
    [
        ("--cron", "0 3 * * 8"),
        ("--workers", "0"),
        ("--model-type", "lightgbm"),
        ("--name", " "),
    ],
)
def test_bad_input_changes_nothing(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str], bad: tuple[str, str]
) -> None:
    fake, url = kfp_api
    assert _apply(capsys, url)[0] == 0
    before = json.dumps(fake.recurring, sort_keys=True)
    fake.requests.clear()
    code, _, err = _apply(capsys, url, *bad)
    assert code == cli_exit("EXIT_BAD_INPUT") == 2
    assert err.startswith("ctrflow schedule apply: ") and len(err.strip().splitlines()) == 1
    assert fake.requests == []  # refused before the first request
    assert json.dumps(fake.recurring, sort_keys=True) == before


def test_a_failed_replacement_keeps_the_old_schedule(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    assert _apply(capsys, url)[0] == 0
    before = json.dumps(fake.recurring, sort_keys=True)
    fake.fail[("POST", f"{API}/recurringruns")] = 500
    code, _, err = _apply(capsys, url, "--budget", "60")
    assert code == cli_exit("EXIT_API")
    assert "creating the recurring run failed: HTTP 500" in err
    assert json.dumps(fake.recurring, sort_keys=True) == before
    assert not [r for r in fake.requests if r.method == "DELETE"]


def test_duplicate_names_are_refused_without_changes(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """What the old `ctrflow schedule`, run twice, left behind: apply names both, changes none."""
    fake, url = kfp_api
    assert _apply(capsys, url)[0] == 0
    (first,) = fake.recurring
    fake.recurring["recurring-dup"] = {**fake.recurring[first], "recurring_run_id": "recurring-dup"}
    before = json.dumps(fake.recurring, sort_keys=True)
    code, _, err = _apply(capsys, url, "--budget", "60")
    assert code == cli_exit("EXIT_API")
    assert f"2 recurring runs are named 'weekly ctr' ({first}, recurring-dup)" in err
    assert json.dumps(fake.recurring, sort_keys=True) == before


def test_list_shows_next_run_in_utc(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = kfp_api
    assert _apply(capsys, url)[0] == 0
    before = datetime.datetime.now(datetime.UTC)
    code, out, err = _cli(capsys, "schedule", "list", "--host", url, "--json")
    assert code == 0, err
    (listed,) = json.loads(out)
    upcoming = datetime.datetime.fromisoformat(listed["next_run_utc"].replace("Z", "+00:00"))
    assert upcoming.weekday() == 0 and (upcoming.hour, upcoming.minute) == (3, 0)  # Monday 03:00
    assert before < upcoming <= before + datetime.timedelta(days=7)
    out = _cli(capsys, "schedule", "list", "--host", url)[1]
    assert "NEXT RUN (UTC)" in out and listed["next_run_utc"] in out


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("0 0 3 * * 1", "2026-12-02T08:40:00", "2026-12-07T03:00:00"),  # Wednesday -> Monday
        ("0 0 3 * * 1", "2026-12-07T03:00:00", "2026-12-14T03:00:00"),  # strictly after
        ("0 */15 * * * *", "2026-12-02T08:40:00", "2026-12-02T08:45:00"),
        ("@weekly", "2026-12-02T08:40:00", "2026-12-06T00:00:00"),  # Sunday midnight
        ("0 0 0 29 2 *", "2026-12-02T00:00:00", "2028-02-29T00:00:00"),
        ("0 0 0 1 * 1", "2026-12-02T00:00:00", "2026-12-07T00:00:00"),  # either day field
        ("0 0 0 1 * *", "2026-12-31T23:59:59", "2027-01-01T00:00:00"),
        ("0 30 2 * jan-mar sun", "2026-12-02T00:00:00", "2027-01-03T02:30:00"),
    ],
)
def test_next_run(cron: str, after: str, expected: str) -> None:
    at = datetime.datetime.fromisoformat(after).replace(tzinfo=datetime.UTC)
    assert next_run(cron, at) == datetime.datetime.fromisoformat(expected).replace(
        tzinfo=datetime.UTC
    )
    assert next_run("0 0 0 30 2 *", at) is None  # 30 February never comes
