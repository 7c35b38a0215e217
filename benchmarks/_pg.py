"""Start a throwaway PostgreSQL server for a benchmark (the same recipe as tests/conftest.py).

    with postgres_server() as url:   # postgresql+psycopg://ctrflow:<pw>@127.0.0.1:<port>/ctrflow
        ...

initdb in a fresh temporary directory on a free loopback port, password auth, fsync off. As root
the server runs as the `postgres` user (PostgreSQL refuses root), so the directory is made under
the system temp dir, which that user can reach.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

__all__ = ["postgres_server"]


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(
        pathlib.Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True
    ):
        return str(candidate)
    raise SystemExit(f"{name} not found: install the postgresql package")


@contextlib.contextmanager
def postgres_server(max_connections: int = 200) -> Iterator[str]:
    base = pathlib.Path(tempfile.mkdtemp(prefix="ctrflow-bench-pg-"))
    uid = gid = None
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        uid, gid = user.pw_uid, user.pw_gid
        os.chown(base, uid, gid)

    def demote() -> None:
        if uid is not None and gid is not None:
            os.setgid(gid)
            os.setuid(uid)

    password = "pw-" + os.urandom(6).hex()
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if uid is not None and gid is not None:
        os.chown(pwfile, uid, gid)
    data = base / "data"
    port = _free_port()
    try:
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(data), "-U", "ctrflow", "--pwfile", str(pwfile),
             "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, preexec_fn=demote,
        )  # fmt: skip
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-w",
             "-t", "60", "start", "-o",
             f"-p {port} -h 127.0.0.1 -k {base} -c fsync=off "
             f"-c max_connections={max_connections}"],
            check=True, capture_output=True, preexec_fn=demote,
        )  # fmt: skip
        try:
            subprocess.run(
                [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "ctrflow",
                 "-d", "postgres", "-c", "CREATE DATABASE ctrflow"],
                check=True, capture_output=True, env=dict(os.environ, PGPASSWORD=password),
            )  # fmt: skip
            yield f"postgresql+psycopg://ctrflow:{password}@127.0.0.1:{port}/ctrflow"
        finally:
            subprocess.run(
                [_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                check=False, capture_output=True, preexec_fn=demote,
            )  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
