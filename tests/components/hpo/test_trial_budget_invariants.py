"""The trial budget's parts one by one, on SQLite storages (file and in-memory): the counts, the
study lock, and the reclaiming of dead workers' trials with their single retry.

Fast checks that `make mutation` runs against every mutant of `_trial_budget.py`; the
multi-process and PostgreSQL runs are in test_workers.py."""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import shutil
import threading
import types
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ctrflow.components.hpo._trial_budget import BudgetCounts, StudyLock, TrialBudget
from tests.testkit.study_locks import lock_held_here

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage:UserWarning"
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """An empty Optuna database, made once: creating the tables takes most of a test's time."""
    path = tmp_path_factory.mktemp("template") / "db.sqlite"
    RDBStorage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture
def db(template: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copy(template, tmp_path / "db.sqlite"))


def _storage(
    path: pathlib.Path | None, interval: int | None = 60, grace: int | None = None
) -> RDBStorage:
    url = f"sqlite:///{path}" if path else "sqlite:///:memory:"
    kwargs: dict[str, Any] = (
        {"skip_table_creation": True, "skip_compatibility_check": True} if path else {}
    )
    if interval is None:
        return RDBStorage(url, **kwargs)
    return RDBStorage(
        url,
        **kwargs,
        heartbeat_interval=interval,
        grace_period=grace,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def _study(storage: RDBStorage, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage)


def _age(storage: RDBStorage, trial_id: int, seconds: float) -> None:
    """Move a trial's start (as Optuna writes it: local time) back by ``seconds``."""
    start = datetime.datetime.now() - datetime.timedelta(seconds=seconds)
    with storage.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :id"),
            {"t": start, "id": trial_id},
        )


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_counts_finished_running_done_and_full() -> None:
    c = BudgetCounts({"COMPLETE": 2, "PRUNED": 1, "RUNNING": 1, "FAIL": 5, "WAITING": 2}, 5)
    assert (c.finished, c.running, c.done, c.full) == (3, 1, False, False)
    assert BudgetCounts({"COMPLETE": 2, "PRUNED": 1, "RUNNING": 2}, 5).full
    assert not BudgetCounts({"COMPLETE": 2, "PRUNED": 1, "RUNNING": 2}, 5).done
    done = BudgetCounts({"COMPLETE": 4, "PRUNED": 1}, 5)
    assert done.done and done.full
    empty = BudgetCounts({}, 1)
    assert (empty.finished, empty.running, empty.done, empty.full) == (0, 0, False, False)
    assert BudgetCounts({"PRUNED": 1}, 1).done
    assert BudgetCounts({"RUNNING": 1}, 1).full


@pytest.mark.parametrize("budget", [0, -3])
def test_the_budget_must_be_at_least_one(db: pathlib.Path, budget: int) -> None:
    storage = _storage(db)
    with pytest.raises(ValueError, match=f"must be >= 1, got {budget}"):
        TrialBudget(storage, 1, budget)
    assert TrialBudget(storage, 1, 1).budget == 1


def test_counts_read_the_study_trials_by_state(db: pathlib.Path) -> None:
    storage = _storage(db)
    study, other = _study(storage), _study(storage, "other")
    budget = TrialBudget(storage, study._study_id, 4)
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.ask()
    other.ask()
    counts = budget.counts()
    assert counts.by_state == {"COMPLETE": 1, "PRUNED": 1, "RUNNING": 1}
    assert counts.budget == 4
    with budget.lock().held() as lock:
        assert budget.counts(lock).by_state == counts.by_state


def test_a_file_lock_excludes_another_holder_until_released(db: pathlib.Path) -> None:
    storage = _storage(db)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 3)
    first, second = budget.lock(), budget.lock()
    got = threading.Event()

    def take() -> None:
        second.acquire()
        got.set()

    first.acquire()
    assert first.held_here and first.connection is None
    assert pathlib.Path(f"{db}.budget-{study._study_id}.lock").exists()
    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not got.wait(0.3), "a second holder got the lock while it was held"
    assert first.release() is True
    assert got.wait(10)
    thread.join()
    assert not lock_held_here(first)
    assert second.release() is True
    assert second.release() is True  # idempotent, and says what the first release found


def test_a_lock_belongs_to_its_study_and_is_not_reentrant(db: pathlib.Path) -> None:
    storage = _storage(db)
    a, b = StudyLock(storage, 1), StudyLock(storage, 2)
    with a.held():
        with b.held():  # another study's lock: no wait
            assert a.held_here and b.held_here
        with pytest.raises(RuntimeError, match="not reentrant"):
            a.acquire()
    assert not a.held_here


def test_held_here_is_false_in_another_thread() -> None:
    storage = _storage(None)
    lock = StudyLock(storage, 1)
    assert lock.release() is False  # never held
    seen: list[bool] = []
    with lock.held():
        thread = threading.Thread(target=lambda: seen.append(lock.held_here), daemon=True)
        thread.start()
        thread.join()
        assert lock.held_here
    assert seen == [False]


def test_an_in_memory_lock_is_shared_per_engine_and_study() -> None:
    storage = _storage(None)
    first, same, other_study = StudyLock(storage, 1), StudyLock(storage, 1), StudyLock(storage, 2)
    other_engine = StudyLock(_storage(None), 1)
    first.acquire()
    blocked = threading.Event()

    def take() -> None:
        same.acquire()
        blocked.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not blocked.wait(0.3)
    with other_study.held(), other_engine.held():
        pass
    assert first.release() is True
    assert blocked.wait(10)
    thread.join()
    assert same.release() is True


def test_a_backend_without_a_lock_is_refused() -> None:
    url = sqlalchemy.engine.make_url("mysql://user@host/db")
    storage = types.SimpleNamespace(engine=types.SimpleNamespace(url=url))
    with pytest.raises(ValueError, match="no study lock for storage backend 'mysql'"):
        StudyLock(storage, 1)  # type: ignore[arg-type]


def test_an_orphan_running_trial_is_failed_once_and_retried(db: pathlib.Path) -> None:
    # interval 10 s, no grace period: Optuna's default 2 intervals, so stale after 30 s.
    storage = _storage(db, interval=10)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 5)
    young, old = study.ask(), study.ask()
    _age(storage, young._trial_id, 25)
    _age(storage, old._trial_id, 35)
    with budget.lock().held() as lock:
        budget.reclaim(study, lock)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials[:2]] == ["RUNNING", "FAIL"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == old.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert budget.counts().by_state == {"RUNNING": 1, "FAIL": 1, "WAITING": 1}
    budget.reclaim(study)  # a second pass finds nothing more to fail
    assert budget.counts().by_state == {"RUNNING": 1, "FAIL": 1, "WAITING": 1}


def test_the_orphan_cutoff_is_grace_plus_one_interval(db: pathlib.Path) -> None:
    storage = _storage(db, interval=10, grace=5)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 5)
    young, old = study.ask(), study.ask()
    _age(storage, young._trial_id, 12)
    _age(storage, old._trial_id, 18)
    budget.reclaim(study)
    assert _states(study)[:2] == ["RUNNING", "FAIL"]


def test_a_trial_with_a_fresh_heartbeat_is_left_alone(db: pathlib.Path) -> None:
    storage = _storage(db, interval=10)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 5)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    _age(storage, trial._trial_id, 3600)  # started long ago, but its worker is alive
    budget.reclaim(study)
    assert _states(study) == ["RUNNING"]


def test_a_stale_heartbeat_fails_the_trial_and_enqueues_its_retry(db: pathlib.Path) -> None:
    storage = _storage(db, interval=1, grace=1)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 5)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t"),
            {
                "t": datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                - datetime.timedelta(hours=1)
            },
        )
    budget.reclaim(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].params == trials[0].params


def test_without_heartbeats_no_trial_is_reclaimed(db: pathlib.Path) -> None:
    storage = _storage(db, interval=None)
    study = _study(storage)
    trial = study.ask()
    _age(storage, trial._trial_id, 10**6)
    TrialBudget(storage, study._study_id, 5).reclaim(study)
    assert _states(study) == ["RUNNING"]


def test_give_back_frees_the_slot_and_retries_with_the_same_parameters(
    db: pathlib.Path,
) -> None:
    storage = _storage(db)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 2)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    budget.give_back(study, trial._trial_id)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == trial.number
    assert budget.counts().finished + budget.counts().running == 0
    budget.give_back(study, trial._trial_id)  # already failed: no second retry
    assert len(study.get_trials(deepcopy=False)) == 2


def test_give_back_of_a_finished_trial_changes_nothing(db: pathlib.Path) -> None:
    storage = _storage(db)
    study = _study(storage)
    budget = TrialBudget(storage, study._study_id, 2)
    trial = study.ask()
    study.tell(trial, 0.5)
    budget.give_back(study, trial._trial_id)
    assert _states(study) == ["COMPLETE"]


def test_give_back_without_a_retry_callback_only_fails(db: pathlib.Path) -> None:
    storage = _storage(db, interval=None)
    study = _study(storage)
    trial = study.ask()
    TrialBudget(storage, study._study_id, 2).give_back(study, trial._trial_id)
    assert _states(study) == ["FAIL"]


def test_counts_are_frozen() -> None:
    counts = BudgetCounts({"COMPLETE": 1}, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        counts.budget = 3  # type: ignore[misc]


def test_the_lock_file_is_readable_by_all_writable_by_its_owner(db: pathlib.Path) -> None:
    storage = _storage(db)
    umask = os.umask(0)
    os.umask(umask)
    with StudyLock(storage, 1).held():
        mode = pathlib.Path(f"{db}.budget-1.lock").stat().st_mode & 0o777
    assert mode == 0o644 & ~umask
