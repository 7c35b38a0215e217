"""Throwaway servers on free loopback ports: PostgreSQL (initdb in a temporary directory) and a
real `mlflow server`. Used by the test fixtures (tests/conftest.py) and by the benchmarks.

As root, PostgreSQL runs as the `postgres` user (it refuses root), so its directory is made under
the system temp dir, which that user can reach. `.ci/run` installs PostgreSQL when `pg_ctl` is
missing.
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
from collections.abc import Callable, Iterator

__all__ = [
    "PostgresControl",
    "ServerError",
    "free_port",
    "mlflow_server",
    "pg_tool",
    "postgres_control",
    "postgres_server",
]


class ServerError(RuntimeError):
    """A server could not be started; the message says why (binary missing, log tail)."""


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
    raise ServerError(f"{name} not found: install the postgresql package (.ci/run does)")


def pg_tool(name: str) -> str:
    """A PostgreSQL client or server program (psql, pg_ctl...), also where it is not on PATH."""
    return _pg_bin(name)


def _demote_to_postgres(base: pathlib.Path) -> Callable[[], None] | None:
    """As root: hand `base` to the postgres user and return a preexec_fn that becomes it."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("postgres")
    os.chown(base, user.pw_uid, user.pw_gid)

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return demote


class PostgresControl:
    """A throwaway PostgreSQL that a test can stop and start again on the same port and data
    directory, e.g. to cut the database off under running workers."""

    def __init__(self, url: str, data: pathlib.Path, log: pathlib.Path, options: str,
                 demote: Callable[[], None] | None) -> None:  # fmt: skip
        self.url = url
        self._data, self._log, self._options, self._demote = data, log, options, demote
        self.running = False

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self._data), *args],
            check=check, capture_output=True, preexec_fn=self._demote,
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("-l", str(self._log), "-w", "-t", "60", "start", "-o", self._options)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: the server ends every session (clients see their connections drop);
        ``immediate``: it quits without a clean shutdown, as on a crash."""
        self.running = False
        self._pg_ctl("-m", mode, "-w", "stop")


@contextlib.contextmanager
def postgres_control(
    databases: tuple[str, ...] = ("ctrflow",), max_connections: int = 200
) -> Iterator[PostgresControl]:
    """A started server as a PostgresControl; its ``url`` is what ``postgres_server`` yields."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="ctrflow-pg-"))
    demote = _demote_to_postgres(base)
    password = "pw-" + os.urandom(6).hex()
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if demote is not None:
        shutil.chown(pwfile, "postgres", "postgres")
    data = base / "data"
    port = free_port()
    options = f"-p {port} -h 127.0.0.1 -k {base} -c fsync=off -c max_connections={max_connections}"
    url = f"postgresql+psycopg://ctrflow:{password}@127.0.0.1:{port}/{databases[0]}"
    server = PostgresControl(url, data, base / "postgres.log", options, demote)
    try:
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(data), "-U", "ctrflow", "--pwfile", str(pwfile),
             "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, preexec_fn=demote,
        )  # fmt: skip
        server.start()
        try:
            creates = [arg for name in databases for arg in ("-c", f"CREATE DATABASE {name}")]
            subprocess.run(
                [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "ctrflow",
                 "-d", "postgres", *creates],
                check=True, capture_output=True, env=dict(os.environ, PGPASSWORD=password),
            )  # fmt: skip
            yield server
        finally:
            server._pg_ctl("-m", "immediate", "stop", check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(
    databases: tuple[str, ...] = ("ctrflow",), max_connections: int = 200
) -> Iterator[str]:
    """Yield ``postgresql+psycopg://ctrflow:<pw>@127.0.0.1:<port>/<first database>``; the other
    databases exist on the same server. fsync is off: the data is thrown away."""
    with postgres_control(databases, max_connections) as server:
        yield server.url


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: pathlib.Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ServerError(f"server at {url} not ready in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: pathlib.Path) -> Iterator[str]:
    """Start `mlflow server` on a free port with its artifacts under ``workdir``; yield its
    tracking URI."""
    port = free_port()
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    mlflow_bin = pathlib.Path(sys.executable).with_name("mlflow")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
             "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
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
