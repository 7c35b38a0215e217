"""A peer that vanishes without a word, as a rescheduled pod or a lost node does: iptables drops
one TCP connection's packets both ways on the loopback interface; no FIN, no RST reaches
either end. Root only (CAP_NET_ADMIN): CI runs as root, and .ci/run installs iptables."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def require_blackhole() -> None:
    """Skip on a developer's machine without root: nothing else makes a peer vanish here."""
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("dropping a connection's packets needs root and iptables (CI has both)")


def _rules(server_port: int, client_port: int) -> list[list[str]]:
    one_way = ["-i", "lo", "-p", "tcp", "-j", "DROP"]
    return [
        [*one_way, "--sport", str(client_port), "--dport", str(server_port)],
        [*one_way, "--sport", str(server_port), "--dport", str(client_port)],
    ]


@contextlib.contextmanager
def blackholed(server_port: int, client_ports: list[int]) -> Iterator[None]:
    """The connections from ``client_ports`` to ``server_port`` go silent until the block ends;
    other connections to the server (a new one, a test's probe) work."""
    added: list[list[str]] = []
    try:
        for client_port in client_ports:
            for rule in _rules(server_port, client_port):
                subprocess.run(["iptables", "-I", "INPUT", *rule], check=True, timeout=30)
                added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-D", "INPUT", *rule], check=True, timeout=30)
