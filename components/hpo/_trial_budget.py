"""An exact global trial budget for many workers sharing one study.

Optuna's ``MaxTrialsCallback`` counts finished trials *after* each trial, so N workers overshoot
by up to N-1. Here a worker decides to start a trial only under a study-wide lock, and keeps the
lock until ``study.ask()`` has committed the new RUNNING trial:

    lock; fail stale trials; count; if COMPLETE+PRUNED+RUNNING < budget: ask (RUNNING); unlock

Invariant: COMPLETE + PRUNED + RUNNING <= budget at every moment, because a trial becomes RUNNING
only inside the lock after the check, and the counted states only move RUNNING -> finished (or
RUNNING -> FAIL, which frees a slot). A trial failed by its heartbeat (its worker was killed) frees
its slot; its retry waits as WAITING and is popped by the next admitted ``ask``, so it counts once.
The lock is a PostgreSQL session advisory lock (released by the server when a killed worker's
connection drops) or, for SQLite, ``flock`` on a file beside the database (released by the
kernel when the process dies).
"""

from __future__ import annotations

import copy
import datetime
import fcntl
import os
import pathlib
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

__all__ = ["BudgetCounts", "StudyLock", "TrialBudget", "idle_session_limit"]

# Two-int advisory lock key: a constant for "ctrflow budget" and the study id.
_PG_LOCK_CLASS = 0x63747266
_LOCK = sqlalchemy.text("SELECT pg_advisory_lock(:cls, :sid)")
_UNLOCK = sqlalchemy.text("SELECT pg_advisory_unlock(:cls, :sid)")
# The idle limit is set and cleared in the lock's own round trips; the pool gets the connection
# back without it.
_LIMITED_LOCK = sqlalchemy.text(
    "SELECT set_config('idle_session_timeout', :ms, false), pg_advisory_lock(:cls, :sid)"
)
_LIMITED_UNLOCK = sqlalchemy.text(
    "SELECT pg_advisory_unlock(:cls, :sid), set_config('idle_session_timeout', '0', false)"
)
_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()

# A live process is never idle this long inside a transaction or holding the study lock, even
# starved of CPU; tests use grace periods of 1-4 s, which would be tighter than that.
_IDLE_FLOOR_S = 10


def idle_session_limit(grace_period: int | None) -> int | None:
    """Seconds a PostgreSQL session may stay idle inside a transaction, or holding the study
    lock, before the server ends it: as long as a dead worker is silent (None: no limit)."""
    return None if grace_period is None else max(grace_period, _IDLE_FLOOR_S)


@dataclass(frozen=True)
class BudgetCounts:
    by_state: dict[str, int]
    budget: int

    @property
    def finished(self) -> int:
        """Trials that count against the budget."""
        return self.by_state.get("COMPLETE", 0) + self.by_state.get("PRUNED", 0)

    @property
    def running(self) -> int:
        return self.by_state.get("RUNNING", 0)

    @property
    def done(self) -> bool:
        return self.finished >= self.budget

    @property
    def full(self) -> bool:
        """Every remaining slot is taken by a running trial: wait, do not start one."""
        return self.finished + self.running >= self.budget


class StudyLock:
    """A study-wide mutex across processes and machines; ``release`` is idempotent."""

    def __init__(self, storage: RDBStorage, study_id: int) -> None:
        self._engine = storage.engine
        self._study_id = study_id
        self._backend = self._engine.url.get_backend_name()
        self._conn: sqlalchemy.Connection | None = None
        self._fd: int | None = None
        self._mem: threading.Lock | None = None
        if self._backend == "sqlite":
            database = self._engine.url.database
            if not database or database == ":memory:":
                key = f"{id(self._engine)}:{study_id}"
                with _MEMORY_LOCKS_GUARD:
                    self._mem = _MEMORY_LOCKS.setdefault(key, threading.Lock())
            else:
                self._lock_path = f"{pathlib.Path(database).resolve()}.budget-{study_id}.lock"
        elif self._backend != "postgresql":
            raise ValueError(f"no study lock for storage backend {self._backend!r}")
        # While held, the lock's session ends once idle as long as a dead worker is silent: a
        # frozen holder (a stopped container, a paused VM) would keep every worker waiting.
        limit = idle_session_limit(storage.grace_period if storage.heartbeat_interval else None)
        self._idle_limit_ms = None if limit is None else limit * 1000
        self._held = False
        self._owner: int | None = None  # the thread holding it
        self._confirmed = False

    @property
    def held_here(self) -> bool:
        """Held, by the calling thread."""
        return self._held and self._owner == threading.get_ident()

    def acquire(self) -> None:
        if self._held:
            raise RuntimeError("StudyLock is not reentrant")
        if self._mem is not None:
            self._mem.acquire()
        elif self._backend == "sqlite":
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        else:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                key = {"cls": _PG_LOCK_CLASS, "sid": self._study_id}
                if self._limits_idle(conn):
                    conn.execute(_LIMITED_LOCK, key | {"ms": str(self._idle_limit_ms)})
                else:
                    conn.execute(_LOCK, key)
            except BaseException:
                conn.invalidate()
                conn.close()
                raise
            self._conn = conn
        self._held, self._owner, self._confirmed = True, threading.get_ident(), False

    @property
    def connection(self) -> sqlalchemy.Connection | None:
        """The autocommit connection holding a PostgreSQL lock, while held."""
        return self._conn

    def release(self) -> bool:
        """Release the lock; True when it was surely held until now. False on PostgreSQL when
        its session was lost meanwhile (the server dropped the lock with it, e.g. a restart):
        then what was done since may have raced another worker. A repeated call returns what
        the first one found."""
        if not self._held:
            return self._confirmed
        self._held = False
        if self._mem is not None:
            self._mem.release()
            self._confirmed = True
        elif self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
            self._confirmed = True
        elif self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                self._confirmed = bool(
                    conn.execute(
                        _LIMITED_UNLOCK if self._limits_idle(conn) else _UNLOCK,
                        {"cls": _PG_LOCK_CLASS, "sid": self._study_id},
                    ).scalar()
                )
            except Exception:
                conn.invalidate()  # closing the session releases the lock server-side
            finally:
                conn.close()
        return self._confirmed

    def _limits_idle(self, conn: sqlalchemy.Connection) -> bool:
        version = conn.dialect.server_version_info or ()
        return self._idle_limit_ms is not None and version >= (14,)  # idle_session_timeout: 14

    @contextmanager
    def held(self) -> Iterator[StudyLock]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()


class TrialBudget:
    """Counts a study's trials and frees the slots of dead workers' trials."""

    def __init__(self, storage: RDBStorage, study_id: int, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"the trial budget must be >= 1, got {budget}")
        self._storage = storage
        self._study_id = study_id
        self.budget = budget

    def lock(self) -> StudyLock:
        return StudyLock(self._storage, self._study_id)

    def counts(self, lock: StudyLock | None = None) -> BudgetCounts:
        """Trials by state; on the held lock's own connection when it has one (PostgreSQL),
        which saves a pool checkout and its pre-ping."""
        query = sqlalchemy.text(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state"
        )
        if lock is not None and lock.connection is not None:
            rows = lock.connection.execute(query, {"sid": self._study_id}).all()
        else:
            with self._storage.engine.connect() as conn:
                rows = conn.execute(query, {"sid": self._study_id}).all()
        return BudgetCounts({str(state): int(n) for state, n in rows}, self.budget)

    def reclaim(self, study: optuna.Study, lock: StudyLock | None = None) -> None:
        """Fail trials whose worker died (stale heartbeat, or none ever written) and retry them;
        the search for them runs on the held ``lock``'s connection when it has one."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        self._fail_orphans(study, lock)

    def _fail_orphans(self, study: optuna.Study, lock: StudyLock | None) -> None:
        # Optuna never fails a RUNNING trial that has no heartbeat row at all: a worker killed
        # between `ask` and its first heartbeat would hold a budget slot forever. Such a trial is
        # treated as stale once it is older than the grace period plus one heartbeat interval.
        interval = self._storage.heartbeat_interval
        if interval is None:
            return
        grace = self._storage.grace_period or 2 * interval
        # datetime_start is the creating client's local time, as Optuna writes it.
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace + interval)
        query = sqlalchemy.text(
            "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h"
            " ON h.trial_id = t.trial_id WHERE t.study_id = :sid"
            " AND t.state = 'RUNNING' AND h.trial_id IS NULL"
            " AND t.datetime_start < :cutoff"
        )
        params = {"sid": self._study_id, "cutoff": cutoff}
        if lock is not None and lock.connection is not None:
            orphans = lock.connection.execute(query, params).all()
        else:
            with self._storage.engine.connect() as conn:
                orphans = conn.execute(query, params).all()
        for (trial_id,) in orphans:
            self.give_back(study, trial_id)

    def give_back(self, study: optuna.Study, trial_id: int) -> None:
        """Fail a RUNNING trial that will not be run and enqueue its retry (WAITING, the same
        parameters), as the heartbeat machinery does for a dead worker's trial: its budget slot
        is free at once and the retry is started, under the lock, by the next worker to ask."""
        try:
            if not self._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return
        except UpdateFinishedTrialError:
            return  # another worker got there first
        callback = self._storage.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(study, copy.deepcopy(self._storage.get_trial(trial_id)))
