"""Riding out a PostgreSQL outage: retry with backoff until the database answers again, or stop
once the outage has lasted longer than a limit (``ctrflow hpo worker`` then exits 3).

What counts as "the database is away" is decided by the driver's and SQLAlchemy's own classes:
psycopg's ``OperationalError``/``InterfaceError`` (connection refused or reset, the server
shutting down or starting up, too many connections) or a SQLAlchemy error that invalidated its
connection. Anything else (bad SQL, a constraint, SQLite's errors) is not an outage and is raised
at once. Reconnecting is SQLAlchemy's: the pool drops connections of a dead server
(``pool_pre_ping``, invalidation on disconnect) and opens new ones on the next checkout.

One ``Outage`` is shared by a worker's threads (its loop and Optuna's heartbeat thread), so the
clock starts at the first failure any of them sees and stops at the first success.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import sqlalchemy.exc

from ctrflow.components.names import STORAGE_OUTAGE_LIMIT_ENV

__all__ = [
    "DEFAULT_LIMIT",
    "Outage",
    "StorageOutageError",
    "is_connection_loss",
    "limit_setting",
    "quiet_optuna_fallback",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_LIMIT = 60.0  # seconds a worker waits for its storage to come back
# The server ended the session for idling (see ``idle_session_limit``): the connection is gone,
# as in an outage, though psycopg files these under InternalError.
_IDLE_TIMEOUTS = psycopg.errors.IdleInTransactionSessionTimeout | psycopg.errors.IdleSessionTimeout


class StorageOutageError(BaseException):
    """The storage stayed unreachable longer than the limit: the worker stops (exit 3).

    A BaseException, like KeyboardInterrupt: Optuna's trial code catches Exception from the
    objective and would then record the trial as FAIL, log a traceback and touch the unreachable
    database again. Let through, the trial stays RUNNING and the heartbeat machinery retries it
    once the database is back."""


def _loss(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain that says the database went away, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, psycopg.OperationalError | psycopg.InterfaceError | _IDLE_TIMEOUTS):
            return current
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return current.orig or current
        current = current.__cause__ or current.__context__
    return None


def is_connection_loss(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it was raised from means the database went away."""
    return _loss(exc) is not None


class _LostConnectionFallback(logging.Filter):
    """Drops Optuna's "Caught an error from sqlalchemy: ... Falling back to a slower
    alternative" for a psycopg error: RDBStorage logs it (several lines, with the SQL parameters)
    for any OperationalError of its trial read, meant for SQLite's limit on IN variables. On
    PostgreSQL that is a lost connection, which ``Outage`` reports once in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Caught an error from sqlalchemy: (psycopg.")


def quiet_optuna_fallback() -> None:
    """Install the filter above on Optuna's RDB storage logger, once per process."""
    logger = logging.getLogger("optuna.storages._rdb.storage")
    if not any(isinstance(f, _LostConnectionFallback) for f in logger.filters):
        logger.addFilter(_LostConnectionFallback())


def limit_setting(explicit: float | None = None) -> float:
    """``explicit`` if given, else $CTRFLOW_STORAGE_OUTAGE_LIMIT, else 60 seconds."""
    if explicit is not None:
        value, source = explicit, "the storage outage limit"
    else:
        raw = os.environ.get(STORAGE_OUTAGE_LIMIT_ENV, "").strip()
        if not raw:
            return DEFAULT_LIMIT
        source = f"${STORAGE_OUTAGE_LIMIT_ENV}={raw!r}"
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{source} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{source} must be a number of seconds >= 0, got {value}")
    return float(value)


class Outage:
    """The outage clock and backoff of one process's storage."""

    def __init__(
        self,
        where: str,
        limit: float = DEFAULT_LIMIT,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.where = where  # the storage, for messages: host, port, database, user
        self.limit = limit
        self._initial = backoff_initial
        self._max = backoff_max
        self._scrub = scrub  # removes the password from a driver message
        self._lock = threading.Lock()
        self._since: float | None = None  # when the current outage was first seen
        self._delay = backoff_initial
        self._gave_up: str | None = None
        self._stopped = threading.Event()  # wakes every waiting thread once given up

    def _message(self, waited: float, error: str) -> str:
        return (
            f"the Optuna storage ({self.where}) has been unreachable for {waited:.0f} s, "
            f"longer than the {self.limit:g} s limit (--storage-outage-limit, "
            f"${STORAGE_OUTAGE_LIMIT_ENV}): {error}"
        )

    def check(self) -> None:
        """Raise StorageOutageError if any thread gave up already."""
        if self._gave_up is not None:
            raise StorageOutageError(self._gave_up)

    def lost(self, exc: BaseException) -> None:
        """A connection loss was seen: wait the next backoff step, or raise StorageOutageError
        once the outage has lasted longer than the limit."""
        self.check()
        # The driver's words ("connection refused"), not a wrapper's (Optuna's blames the data).
        cause = _loss(exc) or exc
        text = str(cause).strip()
        error = self._scrub(text.splitlines()[0] if text else type(cause).__name__)
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since, self._delay = now, self._initial
                _log.warning(
                    "lost the Optuna storage (%s): %s; reconnecting for up to %g s",
                    self.where,
                    error,
                    self.limit,
                )
            waited = now - self._since
            if waited >= self.limit:
                self._gave_up = self._message(waited, error)
                self._stopped.set()
                raise StorageOutageError(self._gave_up)
            pause = min(self._delay * random.uniform(0.8, 1.2), self.limit - waited + 0.05)
            self._delay = min(self._delay * 2, self._max)
        self._stopped.wait(pause)  # the loop and the heartbeat thread back off alike
        self.check()

    def recovered(self) -> None:
        """A database call succeeded: the outage, if any, is over."""
        with self._lock:
            since, self._since = self._since, None
        if since is None:
            return
        waited = time.monotonic() - since
        _log.warning("the Optuna storage (%s) is back after %.1f s", self.where, waited)

    def call(self, func: Callable[[], T]) -> T:
        """``func()``, retried after each connection loss until it succeeds or the outage
        outlasts the limit. Only for work that is safe to repeat."""
        while True:
            self.check()
            try:
                result = func()
            except Exception as exc:
                if not is_connection_loss(exc):
                    raise
                self.lost(exc)
                continue
            self.recovered()
            return result
