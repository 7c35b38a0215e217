"""TCP settings that end a PostgreSQL connection whose other end vanished without a word.

A server pod rescheduled to another node, or a lost node, closes nothing: its packets just stop.
Linux then gives up on a connection after about 15 minutes of unanswered retransmissions, or,
for one that waits for a reply (a worker queued on the study lock), after the 2-hour keepalive;
the worker hangs that long, and the pipeline's HPO step with it. Both ends get limits:
- the client (libpq): keepalive probes and ``tcp_user_timeout`` end the connection once the
  server has been silent ``seconds``; the worker sees a lost connection and rides it out;
- the server (the same values as session settings, in the startup ``options``): a backend
  whose worker vanished ends too, and ``client_connection_check_interval`` notices it while the
  backend waits on a lock, which would otherwise hand the lock to a session nobody reads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

__all__ = ["dead_peer_connect_args", "dead_peer_server_options"]

_PROBES = 4


def _timing(seconds: int) -> tuple[int, int]:
    """Keepalive idle time and probe interval: half the limit silent, then 4 probes within
    the other half (``tcp_user_timeout`` ends it at ``seconds`` in any case); ``seconds`` >= 2."""
    return seconds // 2, max(1, seconds // (2 * _PROBES))


def dead_peer_connect_args(url: URL, seconds: int) -> dict[str, Any]:
    """libpq parameters for the client's end; the URL's own values win."""
    idle, interval = _timing(seconds)
    wanted: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": _PROBES,
        "tcp_user_timeout": seconds * 1000,
    }
    return {name: value for name, value in wanted.items() if name not in url.query}


def dead_peer_server_options(seconds: int, server_version: tuple[int, ...]) -> list[str]:
    """``-c`` settings for the server's end of each session, those ``server_version`` has: a
    server refuses a connection whose startup options name a setting it does not know."""
    idle, interval = _timing(seconds)
    options = [
        f"-c tcp_keepalives_idle={idle}",
        f"-c tcp_keepalives_interval={interval}",
        f"-c tcp_keepalives_count={_PROBES}",
    ]
    if server_version >= (12,):
        options.append(f"-c tcp_user_timeout={seconds * 1000}")
    if server_version >= (14,):
        options.append(f"-c client_connection_check_interval={interval * 1000}")
    return options
