"""`ctrflow submit --wait` and `ctrflow status RUN_ID` (issue #16): a CI job gates on the run.

A contract test on test_remote.py's stand-in of the KFP v2beta1 API: no KFP API server can run
here (it needs Kubernetes, Argo and MySQL). The real `kfp.Client` reads the runs; every run the
stand-in answers, including the task details of a failed run, is checked against the installed
kfp_server_api models (tests/testkit/kfp_models.py), the OpenAPI-generated types of the API.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.pipelines.runs.test_remote import API, SUBMIT, TOKEN, FakeKfp, _cli, cli_exit
from tests.testkit.kfp_models import check_model

WORKER_ERROR = "exit status 3: KFP step hpo-worker: storage unreachable for 60 s"
FAILED: dict[str, Any] = {
    "state": "FAILED",
    "error": {"code": 2, "message": "pipeline failed"},
    "finished_at": "2026-12-02T09:30:00Z",
    "run_details": {
        "task_details": [
            {"task_id": "t-root", "display_name": "ctrflow", "state": "FAILED"},
            {"task_id": "t-prep", "display_name": "prepare-data", "state": "SUCCEEDED",
             "parent_task_id": "t-root"},
            {"task_id": "t-loop", "display_name": "for-loop-2", "state": "FAILED",
             "parent_task_id": "t-root"},
            {"task_id": "t-w0", "display_name": "hpo-worker", "state": "SUCCEEDED",
             "parent_task_id": "t-loop"},
            {"task_id": "t-w1", "display_name": "hpo-worker", "state": "FAILED",
             "parent_task_id": "t-loop", "error": {"code": 2, "message": WORKER_ERROR}},
        ]
    },
}  # fmt: skip
RUNNING = {"state": "RUNNING"}
SUCCEEDED = {"state": "SUCCEEDED", "finished_at": "2026-12-02T09:30:00Z"}


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRFLOW_KFP_TOKEN", TOKEN)


def _check_contract(fake: FakeKfp) -> None:
    for request in fake.called("POST", f"{API}/runs"):
        check_model(request.body, "V2beta1Run")
    for run in fake.runs.values():
        check_model(run, "V2beta1Run")


def test_submit_wait_follows_a_failing_run_and_names_the_failed_task(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    fake.progress_of_new_runs = [RUNNING, RUNNING, FAILED]
    code, out, err = _cli(capsys, "submit", "--host", url, *SUBMIT, "--wait", "--poll", "0.01")
    assert code == cli_exit("EXIT_PIPELINE_FAILED") == 4
    assert "task hpo-worker failed" in out.strip().splitlines()[-1]
    (run_id,) = fake.runs
    assert f"run {run_id}: RUNNING" in err and f"run {run_id}: FAILED" in err
    assert err.count(f"run {run_id}: RUNNING") == 1  # each new state once
    assert f"task hpo-worker failed: {WORKER_ERROR}" in err.strip().splitlines()[-1]
    assert "for-loop-2" not in err and "prepare-data" not in err  # the failed leaf, only
    assert len(fake.called("GET", f"{API}/runs/{run_id}")) == 3
    _check_contract(fake)


def test_submit_wait_succeeds_with_exit_0_and_one_json_document(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    fake.progress_of_new_runs = [RUNNING, SUCCEEDED]
    code, out, err = _cli(
        capsys, "submit", "--host", url, *SUBMIT, "--wait", "--poll", "0.01", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["run_id"] in fake.runs
    assert result["outcome"]["state"] == "SUCCEEDED" and result["outcome"]["failed_tasks"] == []
    _check_contract(fake)


def test_status_once_exit_codes(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    assert _cli(capsys, "submit", "--host", url, *SUBMIT)[0] == 0
    (run_id,) = fake.runs
    fake.runs[run_id].update(RUNNING)
    code, out, _ = _cli(capsys, "status", run_id, "--host", url)
    assert code == 5 and out.strip().endswith(": RUNNING")
    assert len(fake.called("GET", f"{API}/runs/{run_id}")) == 1  # once, no waiting

    fake.runs[run_id].update(FAILED)
    code, out, err = _cli(capsys, "status", run_id, "--host", url, "--json")
    assert code == 4
    outcome = json.loads(out)
    assert outcome["failed_tasks"] == [{"name": "hpo-worker", "error": WORKER_ERROR}]
    assert "task hpo-worker failed" in err

    fake.runs[run_id].update({**SUCCEEDED, "run_details": None, "error": None})
    code, out, _ = _cli(capsys, "status", run_id, "--host", url)
    assert code == 0 and out.strip().endswith(": SUCCEEDED")
    _check_contract(fake)


def test_status_bad_input_is_one_line(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    code, _, err = _cli(capsys, "status", "run-9999", "--host", url)
    assert code == cli_exit("EXIT_API")
    assert err.strip().startswith("ctrflow status: KFP API at") and "HTTP 404" in err
    assert "run run-9999 not found" in err and len(err.strip().splitlines()) == 1
    fake.requests.clear()
    code, _, err = _cli(capsys, "status", "run-1", "--host", url, "--wait", "--poll", "0")
    assert code == 2 and err.strip() == "ctrflow status: --poll must be > 0 seconds, got 0.0"
    code, _, err = _cli(capsys, "submit", "--host", url, *SUBMIT, "--wait", "--poll", "-1")
    assert code == 2 and "--poll must be > 0" in err
    assert fake.requests == [] and fake.runs == {}  # no run started
