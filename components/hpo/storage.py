"""Build Optuna's RDBStorage from a URL: capped pools, heartbeat, retries, password-free errors.

PostgreSQL on a cluster: a worker keeps ``pool_size`` = 1 connection open and may open
``max_overflow`` = 1 more for a moment, so 50 workers hold about 50 of PostgreSQL's default 100
(97 for non-superusers). One is enough because everything a worker does while it holds the
study lock (the budget count, the stale-trial search, the new trial's creation with its first
heartbeat) runs on the lock's own connection, and the lock is released as soon as the trial is
committed (see ``WorkerStorage.use_lock``); after that one thread at a time uses the database
but for Optuna's heartbeat thread, every ``heartbeat_interval`` seconds. The overflow
connection is closed again when given back, and a new PostgreSQL connection with SCRAM auth
costs more than a trial's storage work, so it must stay rare (``hpo_bench`` counts them). With
the fast path off (``_fast_path``: Optuna's stock storage) a worker uses both for a moment per
trial while it asks under the lock, and reopens the second: correct, slower.
``pool_pre_ping`` drops connections the server or a proxy closed while a trial ran. SQLite
locally: a long busy timeout, since several worker processes write the same file.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from typing import Any

import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import URL, make_url

from ctrflow.components.hpo._dead_peer import dead_peer_connect_args, dead_peer_server_options
from ctrflow.components.hpo._outage import Outage, StorageOutageError, limit_setting
from ctrflow.components.hpo._trial_budget import idle_session_limit
from ctrflow.components.names import STORAGE_URL_ENV as STORAGE_ENV

__all__ = [
    "STORAGE_ENV",
    "StorageOutageError",
    "StorageSettings",
    "StorageUnavailableError",
    "describe_url",
    "outage_of",
    "dispose",
    "make_storage",
    "redact_url",
    "storage_url_from_env",
]

_log = logging.getLogger(__name__)


class StorageUnavailableError(RuntimeError):
    """The storage database could not be reached within the retry budget."""


@dataclass(frozen=True)
class StorageSettings:
    """Connection and liveness settings for one process (a worker, the create step, ...)."""

    # Heartbeat: a running trial writes a heartbeat every `heartbeat_interval` s; a trial whose
    # last heartbeat is older than the grace period (`stale_after()`) is failed by the next
    # worker that looks, and RetryHeartbeatStaleTrialCallback enqueues it again (WAITING) with
    # the same parameters. `grace_period` None: derived from the outage limit (101 s with the
    # defaults), so a worker riding out an outage is never taken for dead.
    heartbeat_interval: int | None = 10
    grace_period: int | None = None
    max_retry: int | None = 3
    pool_size: int = 1
    max_overflow: int = 1
    connect_attempts: int = 6
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    connect_timeout: int = 10  # seconds, per PostgreSQL connection attempt
    # A PostgreSQL connection whose other end has been silent this long is taken for lost (a
    # server pod rescheduled, a node lost: see _dead_peer); the worker then rides it out.
    dead_server_after: int = 20
    # A worker rides out a storage outage this long before it stops (None: $CTRFLOW_STORAGE_
    # OUTAGE_LIMIT, else 60 s); the retries back off from backoff_initial to backoff_max.
    outage_limit: float | None = None
    sqlite_busy_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.connect_attempts < 1:
            raise ValueError("connect_attempts must be >= 1")
        if self.heartbeat_interval is None and self.grace_period is not None:
            raise ValueError("grace_period needs heartbeat_interval")
        if self.dead_server_after < 2:
            raise ValueError("dead_server_after must be >= 2 seconds")

    def stale_after(self) -> int | None:
        """Seconds without a heartbeat after which a RUNNING trial is taken for a dead worker's:
        ``grace_period`` if given, else longer than any outage a live worker rides out (its
        last heartbeat can be one interval older than the outage, which it may take
        ``dead_server_after`` to notice and then rides out up to the limit, and its first one
        after comes up to one backoff step, +20% jitter, later). None without heartbeats."""
        if self.heartbeat_interval is None:
            return None
        if self.grace_period is not None:
            return self.grace_period
        noticed = self.dead_server_after + limit_setting(self.outage_limit)
        silent = noticed + self.heartbeat_interval
        return math.ceil(silent + 1.2 * self.backoff_max) + 1


def storage_url_from_env(value: str | None = None) -> str:
    """``value`` if given, else $CTRFLOW_STORAGE_URL (a Kubernetes Secret on a cluster)."""
    url = value or os.environ.get(STORAGE_ENV, "")
    if not url:
        raise ValueError(f"no Optuna storage URL: pass --storage or set {STORAGE_ENV}")
    return url


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparseable storage URL>"


def describe_url(url: str | URL) -> str:
    """Host, port, database and user of a URL, for an error message; never the password."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite database {u.database or ':memory:'}"
    port = u.port or ("5432" if u.get_backend_name() == "postgresql" else "default port")
    return (
        f"{u.get_backend_name()} host {u.host} port {port} database {u.database} user {u.username}"
    )


def _server_version(url: URL, settings: StorageSettings) -> tuple[int, ...]:
    """The PostgreSQL server's version, from a connection of its own before the pool's: the
    pool's sessions name version-dependent settings in their startup options. One connection
    per process, not per trial."""
    timeout = (
        {} if "connect_timeout" in url.query else {"connect_timeout": settings.connect_timeout}
    )
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=timeout)
    try:
        with engine.connect() as conn:
            info = conn.dialect.server_version_info or ()
            return tuple(part for part in info if isinstance(part, int))
    finally:
        engine.dispose()


def _engine_kwargs(
    url: URL, settings: StorageSettings, server_version: tuple[int, ...] = ()
) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": settings.sqlite_busy_timeout}}
    kwargs: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }
    connect_args = dead_peer_connect_args(url, settings.dead_server_after)
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = settings.connect_timeout
    # Given here, the URL's own `options` would be replaced: they are kept, after the defaults
    # they may override and before the idle limit, which the study's liveness relies on.
    given = url.query.get("options", ())
    options = dead_peer_server_options(settings.dead_server_after, server_version)
    options += [given] if isinstance(given, str) else given
    idle_limit = idle_session_limit(settings.stale_after())
    if idle_limit is not None:
        # A process frozen inside a transaction (a stopped container, a paused VM) keeps its
        # row locks while its session lives, and the worker failing its stale trial would
        # wait on them for ever, holding the study lock. The server ends such a session once
        # it has been as silent as a dead worker, which rolls the transaction back.
        options.append(f"-c idle_in_transaction_session_timeout={idle_limit * 1000}")
    connect_args["options"] = " ".join(options)
    kwargs["connect_args"] = connect_args
    return kwargs


def _scrub(message: str, url: URL) -> str:
    if url.password:
        message = message.replace(str(url.password), "***")
    return message.splitlines()[0] if message else message


def make_storage(
    url: str, settings: StorageSettings | None = None, *, existing: bool = False
) -> RDBStorage:
    """RDBStorage for ``url``, retrying an unreachable database with exponential backoff.

    ``existing``: the study's step (create_study) made and checked the tables already, so
    Optuna's table creation and schema check are skipped; the check holds two connections at
    once, which 50 workers starting together would all want. Raises StorageUnavailableError
    naming host, port, database and user (not the password) once ``settings.connect_attempts``
    attempts failed; ValueError for a malformed URL.
    """
    settings = settings or StorageSettings()
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError("the Optuna storage URL is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ValueError(
            f"unsupported Optuna storage backend {parsed.get_backend_name()!r} in "
            f"{redact_url(parsed)}: use postgresql (cluster) or sqlite (local)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # stable for years; used on purpose
        callback = (
            RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
            if settings.heartbeat_interval is not None
            else None
        )
    # SQLite has no pool to spare; a database without Optuna's tables is checked the full way,
    # so a worker started before create_study hears that its study does not exist.
    existing = existing and parsed.get_backend_name() == "postgresql"
    delay = settings.backoff_initial
    last_error = ""
    started = time.monotonic()
    for attempt in range(1, settings.connect_attempts + 1):
        try:
            postgres = parsed.get_backend_name() == "postgresql"
            version = _server_version(parsed, settings) if postgres else ()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(parsed, settings, version),
                    skip_compatibility_check=existing,
                    skip_table_creation=existing,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.stale_after(),
                    heartbeat_stale_trial_callback=callback,
                )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            last_error = _scrub(str(exc.orig) if exc.orig is not None else str(exc), parsed)
        except StorageInternalError as exc:  # Optuna's wrapping of the same, in some paths
            cause = exc.__cause__
            if existing and isinstance(cause, sqlalchemy.exc.ProgrammingError):
                return make_storage(url, settings)  # no tables yet: Optuna makes and checks them
            if not isinstance(
                cause, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
            ):
                raise
            last_error = _scrub(str(cause.orig) if cause.orig is not None else str(cause), parsed)
        if attempt < settings.connect_attempts:
            sleep = min(delay, settings.backoff_max) * random.uniform(0.8, 1.2)
            _log.warning(
                "cannot reach %s (attempt %d/%d): %s; retrying in %.1f s",
                describe_url(parsed),
                attempt,
                settings.connect_attempts,
                last_error,
                sleep,
            )
            time.sleep(sleep)
            delay *= 2
    # `from None`: the driver's exception text is replaced by the scrubbed one above.
    raise StorageUnavailableError(
        f"cannot reach the Optuna storage ({describe_url(parsed)}) after "
        f"{settings.connect_attempts} attempts in {time.monotonic() - started:.1f} s: {last_error}"
    ) from None


def outage_of(url: str, settings: StorageSettings) -> Outage:
    """The outage clock a worker rides out losses of ``url``'s database with; its messages name
    the database, never the password. An invalid limit is a ValueError before anything runs."""
    parsed = make_url(url)
    return Outage(
        describe_url(parsed),
        limit_setting(settings.outage_limit),
        settings.backoff_initial,
        settings.backoff_max,
        scrub=lambda message: _scrub(message, parsed),
    )


def dispose(storage: RDBStorage) -> None:
    """Close pooled connections (the heartbeat thread and sessions are done by now)."""
    storage.remove_session()
    storage.engine.dispose()
