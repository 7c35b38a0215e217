"""The worker's storage and sampler shortcuts return what Optuna's own reads would: real storages.

WorkerStorage skips two reads per ``ask`` (the WAITING scan when no trial waits, the read-back of
the trial just inserted) and SnapshotCmaEsSampler one (the second trials read of CMA-ES). Each
test compares with Optuna's unshortened path, and counts the SQL it saves on PostgreSQL.
"""

from __future__ import annotations

import math
import pathlib
import time
import uuid

import optuna
import pytest
import sqlalchemy
from optuna.samplers import CmaEsSampler
from optuna.trial import TrialState

from ctrflow.components.hpo._study_config import SnapshotCmaEsSampler
from ctrflow.components.hpo._worker_storage import WorkerStorage
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage
from tests.testkit.study_locks import lock_connection

pytestmark = pytest.mark.integration
SETTINGS = StorageSettings(heartbeat_interval=None, grace_period=None, connect_attempts=2)


def bowl(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -4.0, 4.0)
    y = trial.suggest_float("y", 1e-3, 1.0, log=True)
    n = trial.suggest_int("n", 1, 16)
    return (x - 1) ** 2 + math.log(y) ** 2 + (n - 5) ** 2


def _name() -> str:
    return f"ws-{uuid.uuid4().hex[:8]}"


def test_snapshot_cmaes_proposes_exactly_what_cmaes_proposes() -> None:
    studies = [
        optuna.create_study(sampler=cls(seed=3, n_startup_trials=2))
        for cls in (CmaEsSampler, SnapshotCmaEsSampler)
    ]
    for study in studies:
        study.optimize(bowl, n_trials=25)
    plain, snapshot = ([t.params for t in s.trials] for s in studies)
    assert plain == snapshot
    # CMA-ES really sampled (generations recorded), not the random fallback.
    assert any(k.endswith("generation") for k in studies[1].trials[-1].system_attrs)


def test_worker_storage_runs_the_same_study_as_optunas_cached_storage(
    rdb: optuna.storages.RDBStorage,
) -> None:
    runs = []
    for storage in (rdb, WorkerStorage(rdb)):
        study = optuna.create_study(
            storage=storage, study_name=_name(), sampler=SnapshotCmaEsSampler(seed=0)
        )
        study.enqueue_trial({"x": 0.5, "y": 0.1, "n": 3})
        study.optimize(bowl, n_trials=12)
        trials = optuna.load_study(study_name=study.study_name, storage=rdb.url).trials
        runs.append([(t.number, t.state, t.params, t.value, t.system_attrs) for t in trials])
    assert runs[0] == runs[1]
    assert runs[1][0][2] == {"x": 0.5, "y": 0.1, "n": 3}  # the enqueued trial came first


def test_a_trial_enqueued_between_asks_is_still_popped(rdb: optuna.storages.RDBStorage) -> None:
    study = optuna.create_study(storage=WorkerStorage(rdb), study_name=_name())
    study.optimize(bowl, n_trials=2)
    # Enqueued by "another process": a second storage object on the same database.
    optuna.load_study(study_name=study.study_name, storage=rdb.url).enqueue_trial(
        {"x": 2.0, "y": 0.5, "n": 7}
    )
    trial = study.ask()
    study.tell(trial, bowl(trial))
    assert trial.params == {"x": 2.0, "y": 0.5, "n": 7}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


def test_the_fresh_trial_is_served_once_and_equals_the_database_row(
    rdb: optuna.storages.RDBStorage,
) -> None:
    storage = WorkerStorage(rdb)
    study = optuna.create_study(storage=storage, study_name=_name())
    trial = study.ask()
    served = trial._cached_frozen_trial
    assert served == rdb.get_trial(trial._trial_id)
    assert served.datetime_start == rdb.get_trial(trial._trial_id).datetime_start
    trial.suggest_float("x", -4.0, 4.0)
    again = storage.get_trial(trial._trial_id)  # from the database now, with the param
    assert "x" in again.params and again is not served


def test_an_ask_on_postgres_reads_less_and_nothing_stale(postgres_url: str) -> None:
    rdb = make_storage(postgres_url, SETTINGS)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    try:
        per_ask = []
        for storage, sampler in (
            (rdb, CmaEsSampler(seed=0)),
            (WorkerStorage(rdb), SnapshotCmaEsSampler(seed=0)),
        ):
            study = optuna.create_study(storage=storage, study_name=_name(), sampler=sampler)
            study.optimize(bowl, n_trials=10)
            sqlalchemy.event.listen(rdb.engine, "before_cursor_execute", count)
            statements.clear()
            study.optimize(bowl, n_trials=10)
            sqlalchemy.event.remove(rdb.engine, "before_cursor_execute", count)
            per_ask.append(len(statements) / 10)
        # Three reads of 6-7 statements each are gone; one LIMIT 1 query is added.
        assert per_ask[1] <= per_ask[0] - 18, per_ask
    finally:
        dispose(rdb)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")  # the dead ask
def test_a_count_with_a_running_trial_still_fails_it_as_stale_and_pops_its_retry(
    rdb: optuna.storages.RDBStorage, tmp_path: pathlib.Path
) -> None:
    """The hint from the budget count skips the stale scan only when nothing ran; here one trial
    runs (its worker died after a heartbeat): the scan fails it and the same ask pops its retry,
    although the count saw nothing WAITING."""
    settings = StorageSettings(heartbeat_interval=1, grace_period=1, connect_attempts=2)
    storage = make_storage(str(rdb.url), settings)
    try:
        cached = WorkerStorage(storage)
        study = optuna.create_study(storage=cached, study_name=_name())
        dead = study.ask({"x": optuna.distributions.FloatDistribution(-4.0, 4.0)})
        storage.record_heartbeat(dead._trial_id)
        time.sleep(2.5)  # older than the grace period
        with cached.counted(running=1, waiting=0):
            study.optimize(bowl, n_trials=1)
        trials = study.trials
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
        assert trials[1].params["x"] == dead.params["x"]  # the retry, not a new trial
        # With nothing RUNNING counted, a stale trial cannot exist: no scan, nothing popped.
        with cached.counted(running=0, waiting=0):
            study.optimize(bowl, n_trials=1)
        assert len(study.trials) == 3 and study.trials[2].state == TrialState.COMPLETE
    finally:
        dispose(storage)


def test_complete_trials_for_a_pruner_are_the_stored_ones_after_another_worker_adds_one(
    rdb: optuna.storages.RDBStorage,
) -> None:
    storage = WorkerStorage(rdb)
    study = optuna.create_study(storage=storage, study_name=_name())
    study.optimize(bowl, n_trials=3)
    study.tell(study.ask(), state=TrialState.PRUNED)
    complete = (TrialState.COMPLETE,)
    assert [t.number for t in storage.get_all_trials(study._study_id, states=complete)] == [
        0,
        1,
        2,
    ]
    # Another worker completes a trial: the count differs, so the read goes to the database.
    optuna.load_study(study_name=study.study_name, storage=rdb.url).optimize(bowl, n_trials=1)
    seen = storage.get_all_trials(study._study_id, states=complete)
    stored = rdb.get_all_trials(study._study_id, states=complete)
    assert [t.number for t in seen] == [0, 1, 2, 4]
    assert [(t.params, t.value) for t in seen] == [(t.params, t.value) for t in stored]


def test_pruning_decisions_are_the_same_as_with_optunas_cached_storage(
    rdb: optuna.storages.RDBStorage,
) -> None:
    def stepped(trial: optuna.Trial) -> float:
        value = bowl(trial)
        for step in range(1, 8):
            trial.report(value + 1.0 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    runs = []
    for storage in (rdb, WorkerStorage(rdb)):
        study = optuna.create_study(
            storage=storage,
            study_name=_name(),
            sampler=optuna.samplers.RandomSampler(seed=1),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        )
        study.optimize(stepped, n_trials=15)
        runs.append([(t.state, t.value, t.intermediate_values) for t in study.trials])
    assert runs[0] == runs[1]
    assert any(state == TrialState.PRUNED for state, _, _ in runs[1])


def test_tell_sees_what_the_database_holds_and_a_trial_failed_elsewhere_is_refused(
    rdb: optuna.storages.RDBStorage,
) -> None:
    storage = WorkerStorage(rdb)
    study = optuna.create_study(storage=storage, study_name=_name())
    trial = study.ask()
    trial.suggest_float("x", -4.0, 4.0)
    trial.suggest_float("y", 1e-3, 1.0, log=True)
    trial.suggest_int("n", 1, 16, step=3)
    trial.suggest_categorical("c", ["a", None, 2.5])
    trial.report(0.5, 1)
    trial.report(float("inf"), 2)
    trial.set_user_attr("pair", (1, "two"))
    storage.set_trial_system_attr(trial._trial_id, "nested", {"a": [1.5, None]})
    statements: list[object] = []
    sqlalchemy.event.listen(rdb.engine, "before_cursor_execute", lambda *a: statements.append(a))
    served = storage.get_trial(trial._trial_id)  # what tell reads: the copy, state checked
    assert len(statements) == 1  # the state, instead of the trial and its 5 child tables
    assert served == rdb.get_trial(trial._trial_id)
    study.tell(trial, 1.0)
    assert storage.get_trial(trial._trial_id).state == TrialState.COMPLETE

    # Failed as stale by another worker while it ran: tell refuses, as with Optuna's storage.
    trial = study.ask()
    trial.suggest_float("x", -4.0, 4.0)
    rdb.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):
        study.tell(trial, 1.0)


def test_on_the_study_lock_the_stale_search_and_creation_match_optunas(postgres_url: str) -> None:
    """While the worker loop holds the study lock, the stale-trial search and the new trial's
    creation (with its first heartbeat) run on the lock's connection, then the lock goes.
    The search finds what Optuna's finds: RUNNING trials whose heartbeat is older than the
    grace period (not a fresh one, not one without a heartbeat, not a finished one)."""
    from ctrflow.components.hpo._trial_budget import StudyLock

    settings = StorageSettings(heartbeat_interval=1, grace_period=3, connect_attempts=2)
    storage = make_storage(postgres_url, settings)
    try:
        cached = WorkerStorage(storage)
        study = optuna.create_study(storage=cached, study_name=_name())
        sid = study._study_id
        old, fresh, silent, done = (study.ask() for _ in range(4))
        for trial in (old, fresh, done):
            storage.record_heartbeat(trial._trial_id)
        study.tell(done, 1.0)
        with storage.engine.begin() as conn:  # two heartbeats from before the grace period
            conn.execute(
                sqlalchemy.text(
                    "UPDATE trial_heartbeats SET heartbeat = heartbeat - interval '10 seconds'"
                    " WHERE trial_id IN (:a, :b)"
                ),
                {"a": old._trial_id, "b": done._trial_id},
            )
        expected = storage._get_stale_trial_ids(sid)
        assert expected == [old._trial_id]

        lock = StudyLock(storage, sid)
        cached.use_lock(lock)
        lock.acquire()
        assert lock.connection is not None
        with cached.counted(running=3, waiting=0):
            assert cached._get_stale_trial_ids(sid) == expected
            created = cached.create_new_trial(sid)
        assert lock_connection(lock) is None  # released once the trial was committed
        with storage.engine.connect() as conn:
            beats = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :t"),
                {"t": created},
            ).scalar_one()
        assert beats == 1  # its first heartbeat came with it
        assert storage.get_trial(created).state == TrialState.RUNNING
        assert silent.number < storage.get_trial(created).number
    finally:
        dispose(storage)
