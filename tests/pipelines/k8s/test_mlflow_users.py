"""`ctrflow cluster mlflow-users` (the bootstrap Job's command): its errors name what is missing.
The path that creates users runs against a real MLflow server with basic-auth in
tests/manifests/test_services_as_configured.py."""

from __future__ import annotations

import pytest

from ctrflow.pipelines import cli
from tests.testkit.servers import free_port

USERS = {
    "CTRFLOW_MLFLOW_REGISTER_USERNAME": "ctrflow-register",
    "CTRFLOW_MLFLOW_REGISTER_PASSWORD": "register-password-1",
    "CTRFLOW_MLFLOW_READER_USERNAME": "ctrflow-reader",
    "CTRFLOW_MLFLOW_READER_PASSWORD": "reader-password-1",
}


def test_missing_tracking_uri_or_user_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in USERS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["cluster", "mlflow-users"]) == 1
    assert "ctrflow cluster mlflow-users: MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.delenv("CTRFLOW_MLFLOW_READER_PASSWORD")
    assert cli.main(["cluster", "mlflow-users"]) == 1
    err = capsys.readouterr().err
    assert (
        "CTRFLOW_MLFLOW_READER_USERNAME and CTRFLOW_MLFLOW_READER_PASSWORD must both be set" in err
    )
    assert "register-password-1" not in err


def test_unreachable_server_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in USERS.items():
        monkeypatch.setenv(key, value)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert cli.main(["cluster", "mlflow-users"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ctrflow cluster mlflow-users: MLflow at {url}: user 'ctrflow-register'")
    assert "Traceback" not in err and "register-password-1" not in err
