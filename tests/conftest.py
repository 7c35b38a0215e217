"""Shared fixtures: real servers started on free loopback ports, torn down after the session.

PostgreSQL: initdb in a temporary directory, run as the `postgres` user when the tests run as root
(PostgreSQL refuses to run as root). MLflow: a real `mlflow server` with a SQLite backend store and
a local artifact root (optionally a PostgreSQL backend store).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> pathlib.Path:
    """A file under ../shared/data, or skip the test with a reason when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared test data lives beside the project checkout)")
    return path


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    installed = sorted(pathlib.Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if installed:
        return str(installed[0])
    pytest.fail(f"{name} not found: install the postgresql package (.ci/run does)")


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """Prefix and ids to run PostgreSQL binaries: as root, drop to the `postgres` user."""
    if os.geteuid() != 0:
        return [], None, None
    user = pwd.getpwnam("postgres")
    return [], user.pw_uid, user.pw_gid


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway PostgreSQL server: postgresql+psycopg://ctrflow:<pw>@127.0.0.1:PORT/ctrflow."""
    base = tmp_path_factory.mktemp("pg")
    if os.geteuid() == 0:
        # pytest's base temp dir is 0700 root: the `postgres` user could not reach its data dir.
        base = pathlib.Path(tempfile.mkdtemp(prefix="ctrflow-pg-"))
    data_dir = base / "data"
    _, uid, gid = _as_postgres_user()

    def demote() -> None:
        if gid is not None and uid is not None:
            os.setgid(gid)
            os.setuid(uid)

    if uid is not None:
        os.chown(base, uid, gid or -1)
    password = "pw-" + os.urandom(6).hex()
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if uid is not None:
        os.chown(pwfile, uid, gid or -1)
    subprocess.run(
        [
            _pg_bin("initdb"),
            "-D",
            str(data_dir),
            "-U",
            "ctrflow",
            "--pwfile",
            str(pwfile),
            "-A",
            "scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        preexec_fn=demote,
    )
    port = free_port()
    log = base / "postgres.log"
    subprocess.run(
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {port} -h 127.0.0.1 -k {base} -c fsync=off -c max_connections=200",
        ],
        check=True,
        capture_output=True,
        preexec_fn=demote,
    )
    try:
        env = dict(os.environ, PGPASSWORD=password)
        subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "ctrflow",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE ctrflow",
                "-c",
                "CREATE DATABASE mlflow",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        yield f"postgresql+psycopg://ctrflow:{password}@127.0.0.1:{port}/ctrflow"
    finally:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            preexec_fn=demote,
        )
        if base.parent == pathlib.Path(tempfile.gettempdir()):
            shutil.rmtree(base, ignore_errors=True)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: pathlib.Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} not ready in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def run_mlflow_server(backend_uri: str, workdir: pathlib.Path) -> Iterator[str]:
    """Start `mlflow server` on a free port; yield its tracking URI."""
    port = free_port()
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    mlflow_bin = pathlib.Path(sys.executable).with_name("mlflow")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                backend_uri,
                "--artifacts-destination",
                str(artifacts),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/health", proc, log, timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tracking URI of a real MLflow server (SQLite backend, local artifact root)."""
    workdir = tmp_path_factory.mktemp("mlflow")
    with run_mlflow_server(f"sqlite:///{workdir / 'mlflow.db'}", workdir) as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_server_postgres(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[str]:
    """Tracking URI of a real MLflow server whose backend store is the PostgreSQL fixture."""
    workdir = tmp_path_factory.mktemp("mlflow-pg")
    backend = postgres_url.rsplit("/", 1)[0] + "/mlflow"
    with run_mlflow_server(backend, workdir) as url:
        yield url
