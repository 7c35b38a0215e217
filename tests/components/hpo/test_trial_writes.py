"""WorkerStorage's fast writes store what Optuna's RDBStorage stores, and refuse what it refuses.

The same trials run through WorkerStorage (the worker's path, with the budget-count hint that
enables the snapshot shortcut) and through Optuna's own storage, on real PostgreSQL and SQLite;
the stored trials are read back with a separate plain RDBStorage and compared field by field.
A trial failed by another connection refuses every later write, including the final COMPLETE
when the failure commits while that write waits on the row (PostgreSQL row lock).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo._study_config import SnapshotCmaEsSampler
from ctrflow.components.hpo._trial_writes import TrialWrites
from ctrflow.components.hpo._worker_storage import WorkerStorage
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage

pytestmark = pytest.mark.integration


def _name() -> str:
    return f"tw-{uuid.uuid4().hex[:8]}"


def busy(trial: optuna.Trial) -> float:
    """Every kind of write, and every end: COMPLETE (finite and inf), PRUNED, FAIL (NaN)."""
    x = trial.suggest_float("x", -4.0, 4.0)
    y = trial.suggest_float("y", 1e-3, 1.0, log=True)
    n = trial.suggest_int("n", 1, 16, step=3)
    c = trial.suggest_categorical("c", ["a", None, 2.5])
    trial.set_user_attr("pair", (trial.number, "two"))
    trial.storage.set_trial_system_attr(trial._trial_id, "nested", {"a": [1.5, None]})
    trial.storage.set_trial_system_attr(trial._trial_id, "nested", {"a": "overwritten"})
    value = (x - 1) ** 2 + math.log(y) ** 2 + (n - 5) ** 2 + (c == "a")
    kind = trial.number % 5
    trial.report(value + 1.0, 0)
    trial.report(float("inf") if kind == 1 else value + 0.5, 1)
    trial.report(float("nan") if kind == 1 else value + 0.25, 2)
    if kind == 3:
        raise optuna.TrialPruned()
    if kind == 4:
        return float("nan")
    return float("inf") if kind == 2 else value


def _comparable(t: FrozenTrial) -> tuple[Any, ...]:
    def nan_safe(v: float) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return (
        t.number,
        t.state,
        t.values,
        t.params,
        t.distributions,
        t.user_attrs,
        t.system_attrs,
        {k: nan_safe(v) for k, v in t.intermediate_values.items()},
        t.datetime_start is not None,
        t.datetime_complete is not None,
    )


def _run(storage: optuna.storages.BaseStorage, n: int) -> str:
    study = optuna.create_study(
        storage=storage,
        study_name=_name(),
        sampler=SnapshotCmaEsSampler(seed=0, n_startup_trials=3, warn_independent_sampling=False),
    )
    for _ in range(n):
        if isinstance(storage, WorkerStorage):
            with storage.counted(running=0, waiting=0):  # as the worker loop runs a trial
                study.optimize(busy, n_trials=1)
        else:
            study.optimize(busy, n_trials=1)
    return study.study_name


def test_worker_writes_store_exactly_what_optunas_storage_stores(rdb: RDBStorage) -> None:
    worker = WorkerStorage(rdb)
    names = [_run(rdb, 12), _run(worker, 12)]
    reader = RDBStorage(str(rdb.url))  # a fresh reader: no cache shared with either run
    try:
        stored = [optuna.load_study(study_name=n, storage=reader).get_trials() for n in names]
    finally:
        reader.engine.dispose()
    assert [_comparable(t) for t in stored[0]] == [_comparable(t) for t in stored[1]]
    states = {t.state for t in stored[1]}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert stored[1][2].values == [math.inf] and math.isnan(stored[1][1].intermediate_values[2])
    for t in stored[1]:
        assert t.datetime_complete is not None and t.datetime_start is not None
        assert t.datetime_start <= t.datetime_complete
    # What the worker's cache holds (partly built from its own writes) is what the database holds.
    study_id = rdb.get_study_id_from_name(names[1])
    cached = worker.get_all_trials(study_id, deepcopy=False)
    assert [_comparable(t) for t in cached] == [_comparable(t) for t in stored[1]]
    assert [(t.datetime_start, t.datetime_complete) for t in cached] == [
        (t.datetime_start, t.datetime_complete) for t in stored[1]
    ]


def test_several_objectives_are_stored_as_optuna_stores_them(rdb: RDBStorage) -> None:
    def two(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", -4.0, 4.0)
        return x**2, math.inf if trial.number == 1 else -x

    names = []
    for storage in (rdb, WorkerStorage(rdb)):
        study = optuna.create_study(
            storage=storage,
            study_name=_name(),
            directions=["minimize", "maximize"],
            sampler=optuna.samplers.RandomSampler(seed=5),
        )
        study.optimize(two, n_trials=3)
        names.append(study.study_name)
    stored = [optuna.load_study(study_name=n, storage=str(rdb.url)).trials for n in names]
    assert [_comparable(t) for t in stored[0]] == [_comparable(t) for t in stored[1]]
    assert stored[1][1].values is not None and stored[1][1].values[1] == math.inf


def test_each_write_to_the_own_trial_is_one_statement(rdb: RDBStorage) -> None:
    worker = WorkerStorage(rdb)
    sampler = optuna.samplers.RandomSampler(seed=0)  # samples without reading the study
    study = optuna.create_study(storage=worker, study_name=_name(), sampler=sampler)
    study.optimize(busy, n_trials=1)  # the first write of each name is checked by Optuna
    trial = study.ask()
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    sqlalchemy.event.listen(rdb.engine, "before_cursor_execute", count)
    try:
        trial.suggest_float("x", -4.0, 4.0)
        trial.report(1.0, 0)
        trial.set_user_attr("k", 1)
        worker.set_trial_system_attr(trial._trial_id, "s", [1])
        writes = len(statements)
        worker.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [2.0])
    finally:
        sqlalchemy.event.remove(rdb.engine, "before_cursor_execute", count)
    assert writes == 4, statements
    # The final state and its value: one statement on PostgreSQL, a transaction of two on SQLite.
    assert len(statements) - writes == (1 if rdb.engine.name == "postgresql" else 2), statements
    assert rdb.get_trial(trial._trial_id).values == [2.0]


def _failed_elsewhere(rdb: RDBStorage, trial_id: int) -> None:
    other = RDBStorage(str(rdb.url))  # another worker's connection
    try:
        assert other.set_trial_state_values(trial_id, TrialState.FAIL)
    finally:
        other.engine.dispose()


def test_a_trial_failed_elsewhere_refuses_every_write_as_optuna_does(rdb: RDBStorage) -> None:
    worker = WorkerStorage(rdb)
    study = optuna.create_study(storage=worker, study_name=_name())
    study.optimize(busy, n_trials=1)
    trial = study.ask()
    trial.suggest_float("x", -4.0, 4.0)
    _failed_elsewhere(rdb, trial._trial_id)
    writes: list[Callable[[], object]] = [
        lambda: trial.suggest_float("y", 1e-3, 1.0, log=True),
        lambda: trial.report(1.0, 0),
        lambda: trial.set_user_attr("k", 1),
        lambda: worker.set_trial_system_attr(trial._trial_id, "s", 1),
        lambda: worker.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0]),
    ]
    for write in writes:
        with pytest.raises(UpdateFinishedTrialError):
            write()
    stored = rdb.get_trial(trial._trial_id)
    assert stored.state == TrialState.FAIL and stored.values is None
    assert list(stored.params) == ["x"] and not stored.intermediate_values
    assert not stored.user_attrs and not stored.system_attrs


@pytest.mark.parametrize("write", ["complete", "param"])
def test_a_write_waiting_on_a_failure_elsewhere_is_refused(postgres_url: str, write: str) -> None:
    """PostgreSQL: another worker fails the trial in a transaction that holds its row and
    commits half a second later. The write waits for it (row lock: UPDATE, or FOR SHARE in the
    guarded INSERT), then finds the trial FAIL and is refused; had it not waited, it would have
    seen RUNNING and been applied."""
    rdb = make_storage(postgres_url, StorageSettings(heartbeat_interval=None, grace_period=None))
    other = sqlalchemy.create_engine(postgres_url)
    try:
        worker = WorkerStorage(rdb)
        study = optuna.create_study(storage=worker, study_name=_name())
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), 1)
        trial = study.ask()  # x and y are cached now: their writes take the fast path
        trial.suggest_float("x", 0, 1)
        assert worker.get_trial(trial._trial_id).state == TrialState.RUNNING  # tell's check
        with other.connect() as conn:
            failing = conn.begin()
            conn.execute(
                sqlalchemy.text(
                    "UPDATE trials SET state = 'FAIL', datetime_complete = now()"
                    " WHERE trial_id = :tid"
                ),
                {"tid": trial._trial_id},
            )
            commit = threading.Timer(0.5, failing.commit)
            commit.start()
            try:
                with pytest.raises(UpdateFinishedTrialError):
                    if write == "complete":
                        worker.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0])
                    else:
                        trial.suggest_float("y", 0, 1)
            finally:
                commit.join()
        stored = rdb.get_trial(trial._trial_id)
        assert stored.state == TrialState.FAIL and stored.values is None
        assert list(stored.params) == ["x"]
    finally:
        other.dispose()
        dispose(rdb)


def test_a_distribution_incompatible_with_the_stored_one_is_refused(rdb: RDBStorage) -> None:
    optuna.create_study(storage=rdb, study_name=(name := _name())).optimize(
        lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1
    )
    worker = WorkerStorage(rdb)
    study = optuna.load_study(study_name=name, storage=worker)
    with pytest.raises(ValueError, match="different distribution kind"):
        study.ask().suggest_categorical("x", ["a", "b"])  # checked against the stored one
    study.optimize(lambda t: t.suggest_float("x", 0.0, 2.0), n_trials=2)  # cached from here
    trial = study.ask()
    with pytest.raises(ValueError, match="different distribution kind"):
        trial.suggest_categorical("x", ["a", "b"])
    assert "x" not in rdb.get_trial(trial._trial_id).params


def test_a_snapshot_after_another_worker_finished_a_trial_reads_it(rdb: RDBStorage) -> None:
    worker = WorkerStorage(rdb)
    name = _run(worker, 3)
    optuna.load_study(study_name=name, storage=str(rdb.url)).optimize(busy, n_trials=1)
    study = optuna.load_study(study_name=name, storage=worker)
    with worker.counted(running=0, waiting=0):
        study.optimize(busy, n_trials=1)
    study_id = rdb.get_study_id_from_name(name)
    cached = worker.get_all_trials(study_id, deepcopy=False)
    stored = rdb.get_all_trials(study_id, deepcopy=False)
    assert [t.number for t in cached] == [0, 1, 2, 3, 4]
    assert [_comparable(t) for t in cached] == [_comparable(t) for t in stored]


def test_a_snapshot_does_not_serve_the_own_trial_once_it_was_failed_elsewhere(
    rdb: RDBStorage,
) -> None:
    worker = WorkerStorage(rdb)
    name = _run(worker, 2)
    study = optuna.load_study(study_name=name, storage=worker)
    study_id = rdb.get_study_id_from_name(name)
    with worker.counted(running=0, waiting=0):
        trial = study.ask()  # this thread's RUNNING trial, as it wrote it
        _failed_elsewhere(rdb, trial._trial_id)
        cached = worker.get_all_trials(study_id, deepcopy=False)
    assert cached[-1].number == trial.number and cached[-1].state == TrialState.FAIL
    stored = rdb.get_all_trials(study_id, deepcopy=False)
    assert [_comparable(t) for t in cached] == [_comparable(t) for t in stored]


def test_the_heartbeat_upsert_keeps_one_row_at_the_servers_time(rdb: RDBStorage) -> None:
    worker = WorkerStorage(rdb)
    study = optuna.create_study(storage=worker, study_name=_name())
    trial = study.ask()
    beats = []
    for _ in range(2):
        worker.record_heartbeat(trial._trial_id)
        # Read as Optuna's stale check (_get_stale_trial_ids) reads it, clock included.
        session = rdb.scoped_session()
        try:
            now = session.execute(sqlalchemy.func.now()).scalar()
            rows = session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial._trial_id)
            assert rows.count() == 1
            beat = rows.one().heartbeat
        finally:
            session.close()
        assert now is not None
        assert abs((now.replace(tzinfo=None) - beat).total_seconds()) < 5
        beats.append(beat)
        time.sleep(1.1)  # CURRENT_TIMESTAMP on SQLite has whole seconds
    assert beats[1] > beats[0]
    assert TrialWrites.supported(rdb.engine)
