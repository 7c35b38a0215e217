"""The study lock and budget counts on PostgreSQL: an advisory lock per study held on its own
autocommit connection, the counts and the orphan search run on that connection, and a release
that reports a lock lost with its session.

Checks that `make mutation` runs against every mutant of `_trial_budget.py` (with
test_trial_budget_invariants.py, the SQLite side)."""

from __future__ import annotations

import datetime
import threading
import uuid

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from ctrflow.components.hpo._trial_budget import _PG_LOCK_CLASS, StudyLock, TrialBudget
from tests.testkit.study_locks import lock_connection

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def storage(postgres_url: str) -> RDBStorage:
    return RDBStorage(
        postgres_url,
        heartbeat_interval=10,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def _locks_held(engine: sqlalchemy.Engine, study_id: int) -> int:
    with engine.connect() as conn:
        count = conn.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = :cls AND objid = :sid"
            ),
            {"cls": _PG_LOCK_CLASS, "sid": study_id},
        ).scalar()
        assert count is not None
        return int(count)


def test_an_advisory_lock_per_study_on_its_own_connection(storage: RDBStorage) -> None:
    study = optuna.create_study(study_name=f"s-{uuid.uuid4().hex}", storage=storage)
    sid = study._study_id
    budget = TrialBudget(storage, sid, 3)
    first, second, other = budget.lock(), budget.lock(), StudyLock(storage, sid + 1000)
    first.acquire()
    assert first.connection is not None and _locks_held(storage.engine, sid) == 1
    got = threading.Event()

    def take() -> None:
        second.acquire()
        got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not got.wait(0.5)
    with other.held():  # another study: no wait
        pass
    study.ask()
    assert budget.counts(first).by_state == {"RUNNING": 1}
    assert first.release() is True and lock_connection(first) is None
    assert got.wait(20)
    assert second.release() is True
    assert second.release() is True
    assert _locks_held(storage.engine, sid) == 0


def test_the_orphan_search_runs_on_the_locks_connection(storage: RDBStorage) -> None:
    study = optuna.create_study(study_name=f"s-{uuid.uuid4().hex}", storage=storage)
    budget = TrialBudget(storage, study._study_id, 3)
    trial = study.ask()
    old = datetime.datetime.now() - datetime.timedelta(seconds=3600)
    with storage.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :id"),
            {"t": old, "id": trial._trial_id},
        )
    with budget.lock().held() as lock:
        budget.reclaim(study, lock)
        assert budget.counts(lock).by_state == {"FAIL": 1, "WAITING": 1}


def test_a_lock_lost_with_its_session_is_reported_by_release(storage: RDBStorage) -> None:
    study = optuna.create_study(study_name=f"s-{uuid.uuid4().hex}", storage=storage)
    lock = StudyLock(storage, study._study_id)
    lock.acquire()
    assert lock.connection is not None
    pid = lock.connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert lock.release() is False
    assert lock.release() is False  # a repeated call says what the first one found
    assert _locks_held(storage.engine, study._study_id) == 0
    with StudyLock(storage, study._study_id).held() as again:  # free for the next worker
        assert again.held_here


def test_a_failed_lock_request_closes_its_connection(storage: RDBStorage) -> None:
    study = optuna.create_study(study_name=f"s-{uuid.uuid4().hex}", storage=storage)
    holder = StudyLock(storage, study._study_id)
    holder.acquire()
    waiter = StudyLock(storage, study._study_id)
    before = _checked_out(storage.engine)
    timer = threading.Timer(0.5, lambda: _cancel_waits(storage.engine, study._study_id))
    timer.start()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        waiter.acquire()  # canceled while waiting for the lock
    timer.join()
    assert _checked_out(storage.engine) == before
    assert not waiter.held_here and waiter.connection is None
    assert holder.release() is True


def _checked_out(engine: sqlalchemy.Engine) -> int:
    """The connections the engine's pool has lent out (QueuePool, PostgreSQL's default)."""
    pool = engine.pool
    assert isinstance(pool, sqlalchemy.pool.QueuePool)  # the Pool base has no checkedout()
    return pool.checkedout()


def _cancel_waits(engine: sqlalchemy.Engine, study_id: int) -> None:
    with engine.connect() as conn:
        conn.execute(
            sqlalchemy.text(
                "SELECT pg_cancel_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND NOT granted AND objid = :sid"
            ),
            {"sid": study_id},
        )
