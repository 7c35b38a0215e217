"""The programs the manifests run, run here as the dev overlay configures them, on a real
PostgreSQL initialised by the manifests' own init script and a real MLflow server with its
basic-auth app: who may connect where, who may write, and what an anonymous caller gets.

Commands, arguments and environment come from the rendered pod specs (Secrets filled with test
passwords, the Service names `ctrflow-postgres:5432` and `ctrflow-mlflow:5000` remapped to this
machine's ports, the mounted auth config written to a temporary file). What only a cluster can
show (NetworkPolicies, admission) is in test_manifests.py and test_admission.py.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import sqlalchemy

from tests.manifests.render import (
    BIN,
    container_env,
    docs,
    get,
    http_status,
    kubelet_expand,
    wait_ok,
)
from tests.testkit.servers import free_port, pg_tool, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

ROLE_PASSWORDS = {
    "CTRFLOW_OPTUNA_DB_PASSWORD": "optuna-pw-" + os.urandom(4).hex(),
    "CTRFLOW_MLFLOW_DB_PASSWORD": "mlflow-pw-" + os.urandom(4).hex(),
    "CTRFLOW_DASHBOARD_DB_PASSWORD": "dash-pw-" + os.urandom(4).hex(),
}
ROLES = {
    "ctrflow_optuna": ROLE_PASSWORDS["CTRFLOW_OPTUNA_DB_PASSWORD"],
    "ctrflow_mlflow": ROLE_PASSWORDS["CTRFLOW_MLFLOW_DB_PASSWORD"],
    "ctrflow_dashboard": ROLE_PASSWORDS["CTRFLOW_DASHBOARD_DB_PASSWORD"],
}
ADMIN = ("admin", "admin-pw-" + os.urandom(6).hex())
REGISTER = ("ctrflow-register", "register-pw-" + os.urandom(6).hex())
READER = ("ctrflow-reader", "reader-pw-" + os.urandom(6).hex())


@dataclass(frozen=True)
class Database:
    port: int
    superuser_url: str

    def connect(self, role: str, dbname: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=role,
            password=ROLES[role],
            dbname=dbname,
            autocommit=True,
        )

    def url(self, role: str, dbname: str) -> str:
        return f"postgresql+psycopg://{role}:{ROLES[role]}@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="module")
def database(manifests_copy: pathlib.Path) -> Iterator[Database]:
    """A fresh server with the StatefulSet's POSTGRES_DB, then the init script run the way the
    image's entrypoint runs it: as POSTGRES_USER, with the Secret's passwords in the env."""
    with postgres_server(databases=("optuna",)) as url:
        parsed = sqlalchemy.make_url(url)
        assert parsed.port is not None and parsed.password is not None
        init = manifests_copy / "base" / "postgres-init"
        env = {
            **os.environ,
            **ROLE_PASSWORDS,
            "PATH": f"{pathlib.Path(pg_tool('psql')).parent}{os.pathsep}{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(parsed.port),
            "PGPASSWORD": parsed.password,
            "POSTGRES_USER": str(parsed.username),
            "POSTGRES_DB": "optuna",
            "CTRFLOW_INITDB_DIR": str(init),
        }
        done = subprocess.run(
            ["sh", "-c", f'set -e; . "{init}/10-ctrflow-roles.sh"'],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        yield Database(parsed.port, url)


def _denied(db: Database, role: str, dbname: str) -> bool:
    try:
        with db.connect(role, dbname):
            return False
    except psycopg.OperationalError as exc:
        assert "permission denied for database" in str(exc), exc
        return True


def test_each_role_is_no_superuser_and_reaches_only_its_database(database: Database) -> None:
    with psycopg.connect(
        sqlalchemy.make_url(database.superuser_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    ) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolbypassrls "
            "FROM pg_roles WHERE rolname LIKE 'ctrflow\\_%'"
        ).fetchall()
    assert {r[0]: r[1:] for r in rows} == {
        role: (False, False, False, True, False) for role in ROLES
    }
    allowed = {
        "ctrflow_optuna": {"optuna"},
        "ctrflow_mlflow": {"mlflow", "mlflow_auth"},
        "ctrflow_dashboard": {"optuna"},
    }
    for role, databases in allowed.items():
        for dbname in ("optuna", "mlflow", "mlflow_auth", "postgres"):
            assert _denied(database, role, dbname) == (dbname not in databases), (role, dbname)


def test_optuna_and_mlflow_roles_own_their_schema_and_the_dashboard_only_reads(
    database: Database,
) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(database.url("ctrflow_optuna", "optuna"))
    study = optuna.create_study(storage=storage, study_name="roles-check")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()

    with database.connect("ctrflow_mlflow", "mlflow") as conn:
        conn.execute("CREATE TABLE probe (x int)")
        conn.execute("DROP TABLE probe")
    with database.connect("ctrflow_mlflow", "mlflow_auth") as conn:
        conn.execute("CREATE TABLE probe (x int)")

    with database.connect("ctrflow_dashboard", "optuna") as conn:
        (count,) = conn.execute("SELECT count(*) FROM trials").fetchone() or (0,)
        assert count == 2
        for statement in (
            "DELETE FROM studies",
            "UPDATE trials SET state = 'FAIL'",
            "INSERT INTO study_user_attributes (study_id, key, value_json) VALUES (1, 'k', '1')",
            "CREATE TABLE probe (x int)",
            "TRUNCATE trials CASCADE",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert optuna.load_study(
        study_name="roles-check", storage=database.url("ctrflow_optuna", "optuna")
    )


# -- the services -------------------------------------------------------------------------------
def _secrets() -> dict[tuple[str, str], str]:
    return {
        **{("ctrflow-postgres", key): value for key, value in ROLE_PASSWORDS.items()},
        ("ctrflow-mlflow-admin", "MLFLOW_AUTH_ADMIN_USERNAME"): ADMIN[0],
        ("ctrflow-mlflow-admin", "MLFLOW_AUTH_ADMIN_PASSWORD"): ADMIN[1],
        ("ctrflow-mlflow-admin", "MLFLOW_FLASK_SERVER_SECRET_KEY"): os.urandom(16).hex(),
        ("ctrflow-mlflow-auth", "MLFLOW_TRACKING_USERNAME"): REGISTER[0],
        ("ctrflow-mlflow-auth", "MLFLOW_TRACKING_PASSWORD"): REGISTER[1],
        ("ctrflow-mlflow-reader", "MLFLOW_TRACKING_USERNAME"): READER[0],
        ("ctrflow-mlflow-reader", "MLFLOW_TRACKING_PASSWORD"): READER[1],
    }


def _local(value: str, database: Database, mlflow_url: str = "") -> str:
    """The cluster's Service addresses, as this machine's."""
    value = value.replace("ctrflow-postgres:5432", f"127.0.0.1:{database.port}")
    return value.replace("http://ctrflow-mlflow:5000", mlflow_url) if mlflow_url else value


def _env(
    container: dict[str, Any],
    pod_docs: list[dict[str, Any]],
    database: Database,
    home: pathlib.Path,
    mlflow_url: str = "",
    secrets: dict[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    env = container_env(container, pod_docs, secrets or _secrets())
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
    return {
        **clean,
        **{k: _local(v, database, mlflow_url) for k, v in env.items()},
        "HOME": str(home),
    }


def _command(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    argv = [
        kubelet_expand(a, env) for a in container.get("command", []) + container.get("args", [])
    ]
    if not container.get("command"):
        argv = ["ctrflow", *argv]  # the image's entrypoint
    return [str(BIN / argv[0]), *argv[1:]]


def _run(container: dict[str, Any], env: dict[str, str], cwd: pathlib.Path) -> str:
    done = subprocess.run(
        _command(container, env),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@contextlib.contextmanager
def _serving(
    argv: list[str], env: dict[str, str], log: pathlib.Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _request(
    url: str, method: str = "GET", body: bytes | None = None, user: tuple[str, str] | None = None
) -> int:
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def mlflow_as_configured(
    rendered: dict[str, str], database: Database, tmp_path: pathlib.Path
) -> Iterator[str]:
    """The dev overlay's MLflow: schema migration (init container), then the server with the
    basic-auth app and its mounted config; yields its URL."""
    pod_docs = docs(rendered["dev"])
    pod = get(pod_docs, "Deployment", "ctrflow-mlflow")["spec"]["template"]["spec"]
    home = tmp_path / "home"
    home.mkdir()
    (init,) = pod["initContainers"]
    _run(init, _env(init, pod_docs, database, home), tmp_path)

    (server,) = pod["containers"]
    env = _env(server, pod_docs, database, home)
    assert "--app-name" in server["command"] and "basic-auth" in server["command"]
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == "auth-config"]
    config_map = get(pod_docs, "ConfigMap", config_volume["configMap"]["name"])
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == "auth-config"]
    config_dir = tmp_path / "auth-config"
    config_dir.mkdir()
    for name, text in config_map["data"].items():
        (config_dir / name).write_text(_local(text, database))
    assert env["MLFLOW_AUTH_CONFIG_PATH"].startswith(mount["mountPath"] + "/")
    env["MLFLOW_AUTH_CONFIG_PATH"] = env["MLFLOW_AUTH_CONFIG_PATH"].replace(
        mount["mountPath"], str(config_dir)
    )
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlflow/artifacts"
    env["MLFLOW_ARTIFACTS_DESTINATION"] = str(tmp_path / "artifacts")
    argv = _command(server, env)
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    assert not [a for a in argv if any(pw in a for pw in ROLES.values())]
    with _serving(argv, env, tmp_path / "mlflow.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_ok(url + server["readinessProbe"]["httpGet"]["path"], proc)
        yield url


def _bootstrap(rendered: dict[str, str], database: Database, url: str, home: pathlib.Path) -> str:
    """The Job ctrflow-mlflow-bootstrap's container, as configured."""
    pod_docs = docs(rendered["dev"])
    (container,) = get(pod_docs, "Job", "ctrflow-mlflow-bootstrap")["spec"]["template"]["spec"][
        "containers"
    ]
    return _run(container, _env(container, pod_docs, database, home, mlflow_url=url), home)


@pytest.mark.minutes
def test_mlflow_needs_a_user_and_only_the_registering_user_moves_champion(
    rendered: dict[str, str],
    database: Database,
    mlflow_as_configured: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    url = mlflow_as_configured
    home = tmp_path / "home"
    out = _bootstrap(rendered, database, url, home)
    assert f"{REGISTER[0]}: created, not admin" in out and f"{READER[0]}: created, not admin" in out
    out = _bootstrap(rendered, database, url, home)  # idempotent: a re-apply runs it again
    assert f"{REGISTER[0]}: password set, not admin" in out

    search = url + "/api/2.0/mlflow/experiments/search?max_results=1"
    alias = url + "/api/2.0/mlflow/registered-models/alias"
    body = b'{"name": "ctr-ffm", "alias": "champion", "version": "1"}'
    assert _request(url + "/health") == 200  # the probes need no user
    assert _request(search) == 401
    assert _request(alias, "POST", body) == 401  # the tester's unauthenticated POST
    assert _request(search, user=(READER[0], "wrong-password")) == 401
    # The Service's names pass MLflow's Host check; another host does not.
    auth = {"Authorization": "Basic " + b64encode(f"{READER[0]}:{READER[1]}".encode()).decode()}
    for host, status in (
        (f"ctrflow-mlflow:{url.rsplit(':', 1)[1]}", 200),
        ("ctrflow-mlflow.team-ns.svc.cluster.local:5000", 200),
        ("attacker.example", 403),
    ):
        assert http_status(search, host, auth) == status, host

    # The register path, as the pipeline's register step drives it, with its Secret's user.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", REGISTER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", REGISTER[1])
    client = mlflow.MlflowClient(tracking_uri=url)
    run = client.create_run(client.create_experiment("ctr-ffm"))
    client.log_text(run.info.run_id, "weights", "model/model.ffm")
    assert list((tmp_path / "artifacts").rglob("model.ffm"))
    client.set_terminated(run.info.run_id)
    client.create_registered_model("ctr-ffm")
    for _ in range(2):
        client.create_model_version("ctr-ffm", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("ctr-ffm", "champion", "1")

    # The read-only user (serving, people in the UI) reads all of it and changes none of it.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    assert client.get_model_version_by_alias("ctr-ffm", "champion").version == "1"
    assert client.download_artifacts(run.info.run_id, "model/model.ffm", str(tmp_path / "dl"))
    for attempt in (
        lambda: client.set_registered_model_alias("ctr-ffm", "champion", "2"),
        lambda: client.create_model_version("ctr-ffm", f"runs:/{run.info.run_id}/model"),
        lambda: client.delete_registered_model_alias("ctr-ffm", "champion"),
        lambda: client.log_text(run.info.run_id, "code", "model/loader.py"),
        lambda: client.set_experiment_tag(run.info.experiment_id, "k", "v"),
    ):
        # The REST API answers PERMISSION_DENIED, the artifact proxy a plain HTTP 403.
        with pytest.raises((MlflowException, requests.HTTPError)) as denied:
            attempt()
        if isinstance(denied.value, MlflowException):
            assert denied.value.error_code == "PERMISSION_DENIED"
        else:
            assert denied.value.response.status_code == 403
    assert _request(alias, "POST", body.replace(b'"1"', b'"2"'), user=READER) == 403
    with pytest.raises(MlflowException):
        get_app_client("basic-auth", tracking_uri=url).create_user("mallory", "x" * 16)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", REGISTER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", REGISTER[1])
    assert client.get_model_version_by_alias("ctr-ffm", "champion").version == "1"
    client.set_registered_model_alias("ctr-ffm", "champion", "2")  # the registering user may


def test_dashboard_reads_the_study_without_a_password_in_argv_and_cannot_delete_it(
    rendered: dict[str, str], database: Database, tmp_path: pathlib.Path
) -> None:
    import optuna

    pod_docs = docs(rendered["dev"])
    home = tmp_path / "home"
    home.mkdir()
    secrets = {
        **_secrets(),
        ("ctrflow-storage", "CTRFLOW_STORAGE_URL"): database.url("ctrflow_optuna", "optuna"),
    }
    # The Job that creates Optuna's tables, as the Optuna role; then a study to look at.
    (schema,) = get(pod_docs, "Job", "ctrflow-optuna-schema")["spec"]["template"]["spec"][
        "containers"
    ]
    _run(schema, _env(schema, pod_docs, database, home, secrets=secrets), tmp_path)
    study = optuna.create_study(
        storage=database.url("ctrflow_optuna", "optuna"), study_name="dashboard-check"
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)

    pod = get(pod_docs, "Deployment", "ctrflow-optuna-dashboard")["spec"]["template"]["spec"]
    (wait,) = pod["initContainers"]
    _run(wait, _env(wait, pod_docs, database, home, secrets=secrets), tmp_path)
    (dashboard,) = pod["containers"]
    env = _env(dashboard, pod_docs, database, home, secrets=secrets)
    assert env["PGPASSWORD"] == ROLES["ctrflow_dashboard"]
    argv = _command(dashboard, env)
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    with _serving(argv, env, tmp_path / "dashboard.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_ok(base + dashboard["readinessProbe"]["httpGet"]["path"], proc)
        wait_ok(base + dashboard["livenessProbe"]["httpGet"]["path"], proc)
        cmdline = pathlib.Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "ctrflow_dashboard@127.0.0.1" in cmdline  # the URL is there, its password is not
        assert not [pw for pw in ROLES.values() if pw in cmdline]
        with urllib.request.urlopen(base + "/api/studies", timeout=20) as response:
            assert b"dashboard-check" in response.read()
        study_id = study._study_id
        assert _request(f"{base}/api/studies/{study_id}", "DELETE") >= 400
        assert (
            _request(f"{base}/api/studies/{study_id}/note", "PUT", b'{"version": 1, "body": "x"}')
            >= 400
        )
    assert optuna.load_study(
        study_name="dashboard-check", storage=database.url("ctrflow_optuna", "optuna")
    )
    assert (
        len(
            optuna.load_study(
                study_name="dashboard-check", storage=database.url("ctrflow_optuna", "optuna")
            ).trials
        )
        == 3
    )
