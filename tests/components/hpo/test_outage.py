"""PostgreSQL goes away under running workers: they wait for it and finish the exact budget, or,
past the outage limit, exit 3 with one line.

Real `ctrflow hpo worker` processes against a PostgreSQL of their own, which the test stops and
starts again on the same port and data directory (tests.testkit.servers.postgres_control); and
the rules the workers rely on, one by one, on that storage: a trial's writes wait for the
database, work under the study lock does not, and a trial started under a lost lock is handed
back. And a server that vanishes without closing its connections (tests.testkit.blackhole).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy
import sqlalchemy.exc
from optuna.trial import TrialState

from ctrflow.components.hpo._fast_path import ChosenStorage, worker_storage
from ctrflow.components.hpo._outage import (
    Outage,
    StorageOutageError,
    is_connection_loss,
    limit_setting,
)
from ctrflow.components.hpo._outage_storage import StudyLockLostError
from ctrflow.components.hpo._trial_budget import TrialBudget
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage, outage_of
from ctrflow.components.names import STORAGE_OUTAGE_LIMIT_ENV
from tests.testkit.blackhole import blackholed, require_blackhole
from tests.testkit.cli import CTRFLOW
from tests.testkit.hpo_data import tiny_dataset
from tests.testkit.servers import PostgresControl, postgres_control
from tests.testkit.study_locks import lock_connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# No worker dies here, so none may be taken for dead: the grace outlasts the outage.
LIVENESS = ("--heartbeat-interval", "2", "--grace-period", "60")
BUDGET = 16


@pytest.fixture(scope="module")
def _server() -> Iterator[PostgresControl]:
    with postgres_control() as control:
        yield control


@pytest.fixture
def server(_server: PostgresControl) -> PostgresControl:
    """The module's own PostgreSQL, running (a test before may have left it stopped)."""
    if not _server.running:
        _server.start()
    return _server


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    base = tmp_path_factory.mktemp("outage-data")
    # Big enough that a trial takes a moment, so the outage meets trials in flight.
    return tiny_dataset(base / "train", 20000, seed=1), tiny_dataset(base / "valid", 2000, seed=2)


def _env(url: str, fast_path: str) -> dict[str, str]:
    return dict(os.environ, CTRFLOW_STORAGE_URL=url, CTRFLOW_OPTUNA_FAST_PATH=fast_path)


def _create(url: str, name: str, budget: int) -> None:
    proc = subprocess.run(
        [*CTRFLOW, "hpo", "create", "--study", name, "--model-type", "ffm", "--budget",
         str(budget)],
        env=_env(url, "1"), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _worker(
    url: str,
    name: str,
    data: tuple[pathlib.Path, pathlib.Path],
    out: pathlib.Path,
    seed: int,
    fast_path: str,
    extra: tuple[str, ...] = (),
    env_limit: str | None = None,
) -> subprocess.Popen[str]:
    env = _env(url, fast_path)
    if env_limit is not None:
        env[STORAGE_OUTAGE_LIMIT_ENV] = env_limit
    return subprocess.Popen(
        [*CTRFLOW, "hpo", "worker", "--study", name, "--train", str(data[0]), "--valid",
         str(data[1]), "--seed", str(seed), "--progress", "off", "--out", str(out), *LIVENESS,
         *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _trial_ids(url: str, name: str, where: str) -> list[int]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sqlalchemy.text(
                "SELECT t.trial_id FROM trials t JOIN studies s USING (study_id)"
                f" WHERE s.study_name = :name AND {where}"
            )
            return [int(tid) for (tid,) in conn.execute(query, {"name": name})]
    finally:
        engine.dispose()


def _wait_for_trials(url: str, name: str, count: int) -> int:
    while len(finished := _trial_ids(url, name, "t.state IN ('COMPLETE', 'PRUNED')")) < count:
        time.sleep(0.05)
    return len(finished)


def _wait_for_a_trial_in_flight(url: str, name: str) -> list[int]:
    """RUNNING trials that reported an epoch: their objective runs, more writes will follow."""
    where = (
        "t.state = 'RUNNING' AND EXISTS (SELECT 1 FROM trial_intermediate_values v"
        " WHERE v.trial_id = t.trial_id)"
    )
    while not (running := _trial_ids(url, name, where)):
        time.sleep(0.02)
    return running


@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["fast", "stock"])
def test_workers_ride_out_a_restart_and_finish_the_exact_budget(
    fast_path: str,
    server: PostgresControl,
    data: tuple[pathlib.Path, pathlib.Path],
    tmp_path: pathlib.Path,
) -> None:
    name = f"outage-{uuid.uuid4().hex[:8]}"
    _create(server.url, name, BUDGET)
    outs = [tmp_path / f"w{i}.json" for i in range(2)]
    workers = [_worker(server.url, name, data, outs[i], i, fast_path) for i in range(2)]

    before = _wait_for_trials(server.url, name, 2)
    in_flight = _wait_for_a_trial_in_flight(server.url, name)
    server.stop("fast")  # every session is cut, mid-trial or mid-write
    time.sleep(10)
    assert all(proc.poll() is None for proc in workers), "a worker quit during the outage"
    server.start()

    errs = []
    for proc in workers:
        _, err = proc.communicate(timeout=600)
        errs.append(err)
        assert proc.returncode == 0, err[-3000:]
    assert before < BUDGET, "the run ended before the outage"
    for err in errs:
        assert "Traceback" not in err, err[-3000:]
        assert server.url.split(":")[2].split("@")[0] not in err  # the password
    assert any("lost the Optuna storage" in err for err in errs)
    assert any("is back after" in err for err in errs)

    trials = optuna.load_study(study_name=name, storage=server.url).get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == BUDGET, states
    # The trials in flight went on after the restart: their last writes and tell were retried.
    by_id = {t._trial_id: t for t in trials}
    assert all(by_id[tid].state in (TrialState.COMPLETE, TrialState.PRUNED) for tid in in_flight)
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    # A trial failed on the way (given back under a lost lock) was retried, and that retry
    # finished: nothing was lost, and a retry counts once like any trial.
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.number in retried, trial
    results = [json.loads(out.read_text()) for out in outs]
    assert all(r["finished"] == BUDGET for r in results)


def test_an_outage_past_the_limit_exits_3_with_one_line(
    server: PostgresControl, data: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    name = f"outage-{uuid.uuid4().hex[:8]}"
    _create(server.url, name, 1000)
    # The flag wins over the environment variable.
    extra = ("--storage-outage-limit", "3")
    proc = _worker(server.url, name, data, tmp_path / "w.json", 0, "1", extra, env_limit="600")
    _wait_for_trials(server.url, name, 1)
    server.stop("immediate")  # as on a crash: no goodbye to the sessions

    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    password = server.url.split(":")[2].split("@")[0]
    assert password not in err
    last = err.strip().splitlines()[-1]
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    assert last.startswith("ctrflow hpo worker: the Optuna storage (postgresql host 127.0.0.1 ")
    assert f"port {port} database ctrflow user ctrflow) has been unreachable for " in last
    assert "longer than the 3 s limit" in last


def _riding(url: str, fast: bool, limit: float) -> tuple[optuna.Study, ChosenStorage, TrialBudget]:
    """A worker's storage, study and budget guard, as run_worker makes them."""
    name = f"rules-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=url, study_name=name, model_type="ffm", budget=10)
    settings = StorageSettings(heartbeat_interval=1, grace_period=60, outage_limit=limit)
    backend = make_storage(url, settings, existing=True)
    chosen = worker_storage(backend, fast_path=fast, outage=outage_of(url, settings))
    study = optuna.load_study(study_name=name, storage=chosen.storage)
    guard = TrialBudget(backend, backend.get_study_id_from_name(name), 10)
    return study, chosen, guard


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")  # ask/tell
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
def test_a_trial_write_waits_for_the_database_and_lands_once(
    fast: bool, server: PostgresControl
) -> None:
    study, _, guard = _riding(server.url, fast, limit=120)
    trial = study.ask()  # no study lock here: a trial's own writes
    server.stop("fast")
    restart = threading.Timer(2.0, server.start)
    restart.start()
    try:
        trial.suggest_float("eta", 0.01, 1.0)  # waits for the restart
        study.tell(trial, 0.25)
    finally:
        restart.join()
    stored = guard._storage.get_trial(trial._trial_id)
    assert stored.state == TrialState.COMPLETE and stored.values == [0.25]
    assert "eta" in stored.params
    assert len(study.get_trials()) == 1  # the enqueued default trial, asked for: no duplicate
    dispose(guard._storage)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
def test_under_the_study_lock_a_loss_is_raised_at_once_then_the_limit_ends_the_wait(
    fast: bool, server: PostgresControl
) -> None:
    study, chosen, guard = _riding(server.url, fast, limit=1)
    lock = guard.lock()
    chosen.hints.use_lock(lock)
    lock.acquire()
    server.stop("fast")
    # Under the lock: the loss itself comes out (the worker starts its iteration over).
    with pytest.raises(Exception) as lost:
        study.ask()
    assert is_connection_loss(lost.value)
    assert lock.release() is False  # the server dropped the lock with its session
    # Without the lock: waited for, up to the limit.
    with pytest.raises(StorageOutageError) as gave_up:
        study.get_trials()
    message = str(gave_up.value)
    assert "longer than the 1 s limit" in message and "host 127.0.0.1" in message
    assert server.url.split(":")[2].split("@")[0] not in message  # the password


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
def test_a_trial_started_after_the_lock_was_lost_is_handed_back_and_retried(
    fast: bool, server: PostgresControl
) -> None:
    study, chosen, guard = _riding(server.url, fast, limit=30)
    storage: Any = chosen.storage
    study_id = guard._study_id
    lock = guard.lock()
    chosen.hints.use_lock(lock)
    lock.acquire()
    assert lock.connection is not None
    pid = lock.connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one()
    engine = sqlalchemy.create_engine(server.url)
    with engine.connect() as conn:  # the server ends the lock's session, as on a restart
        conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    engine.dispose()
    with pytest.raises(StudyLockLostError) as err:
        storage.create_new_trial(study_id)
    lost = err.value.trial_id
    assert study._storage.get_trial(lost).state == TrialState.RUNNING
    guard.give_back(study, lost)
    trials = {t._trial_id: t for t in study.get_trials()}
    assert trials[lost].state == TrialState.FAIL
    retries = [
        t for t in trials.values() if t.system_attrs.get("failed_trial") == trials[lost].number
    ]
    assert [t.state for t in retries] == [TrialState.WAITING]

    # With the lock kept, the same start just releases it.
    lock.acquire()
    storage.create_new_trial(study_id)
    assert lock_connection(lock) is None and lock.release() is True
    dispose(guard._storage)


def test_an_outage_ends_when_the_database_answers_and_a_later_one_gets_a_new_clock() -> None:
    outage = Outage("the test database", limit=0.2, backoff_initial=0.01, backoff_max=0.01)
    loss = OSError("connection refused")
    outage.lost(loss)
    time.sleep(0.3)
    outage.recovered()
    outage.lost(loss)  # a new outage: its clock starts now
    time.sleep(0.3)
    with pytest.raises(StorageOutageError, match=r"the test database\) has been unreachable"):
        outage.lost(loss)
    with pytest.raises(StorageOutageError):  # given up for every thread, for good
        outage.call(lambda: None)


def test_the_limit_comes_from_the_flag_else_the_environment_else_60(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(STORAGE_OUTAGE_LIMIT_ENV, raising=False)
    assert limit_setting() == 60
    monkeypatch.setenv(STORAGE_OUTAGE_LIMIT_ENV, "7.5")
    assert limit_setting() == 7.5 and limit_setting(3) == 3
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(STORAGE_OUTAGE_LIMIT_ENV, bad)
        with pytest.raises(ValueError, match=STORAGE_OUTAGE_LIMIT_ENV):
            limit_setting()


def test_only_a_lost_database_counts_as_an_outage(postgres_url: str) -> None:
    closed = sqlalchemy.create_engine(
        "postgresql+psycopg://nobody:pw@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
        closed.connect()
    assert is_connection_loss(refused.value)
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.ProgrammingError) as bad_sql:
        conn.execute(sqlalchemy.text("SELECT * FROM no_such_table"))
    assert not is_connection_loss(bad_sql.value)
    # A session the server ended for idling in a transaction: gone, as in an outage.
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.DBAPIError) as idled:
        conn.execute(sqlalchemy.text("SET idle_in_transaction_session_timeout = '100ms'"))
        time.sleep(0.5)
        conn.execute(sqlalchemy.text("SELECT 1"))
    engine.dispose()
    assert is_connection_loss(idled.value)


# A server that vanishes without a word (a pod rescheduled, a node lost): its packets stop, and
# without limits a worker waits for a reply for 2 hours (keepalive) or sends into the void for
# 15 minutes (retransmissions). The waits below are that long without the storage's limits.
VANISHED = StorageSettings(
    heartbeat_interval=1, grace_period=60, outage_limit=60, dead_server_after=4
)
WITHOUT_LIMITS = 120  # seconds a thread may take before the test calls it hung


def _sessions(probe: sqlalchemy.Connection, where: str) -> list[tuple[int, int]]:
    """(pid, client port) of the server's client sessions but the probe's own."""
    query = sqlalchemy.text(
        "SELECT pid, client_port FROM pg_stat_activity WHERE backend_type = 'client backend'"
        f" AND pid <> pg_backend_pid() AND {where}"
    )
    return [(int(pid), int(port)) for pid, port in probe.execute(query)]


def _port(url: str) -> int:
    port = sqlalchemy.engine.make_url(url).port
    assert port is not None
    return port


def _in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_worker_waiting_on_a_vanished_server_gives_up_and_so_does_the_server(
    server: PostgresControl,
) -> None:
    """Queued on the study lock when the server's end goes silent: the wait ends as a lost
    connection, and the server ends the queued session, which would otherwise be handed the
    lock once it is free and keep it from every worker until its idle limit."""
    require_blackhole()
    name = f"vanish-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=server.url, study_name=name, model_type="ffm", budget=10)
    backend = make_storage(server.url, VANISHED, existing=True)
    guard = TrialBudget(backend, backend.get_study_id_from_name(name), 10)
    holder, lock = guard.lock(), guard.lock()
    holder.acquire()
    # Autocommit: within a transaction pg_stat_activity would show one snapshot throughout.
    probe_engine = sqlalchemy.create_engine(
        server.url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with probe_engine.connect() as probe:
        thread, outcome = _in_thread(lock.acquire)
        while not (queued := _sessions(probe, "wait_event = 'advisory'")):
            time.sleep(0.05)
        [(pid, client_port)] = queued
        with blackholed(_port(server.url), [client_port]):
            thread.join(WITHOUT_LIMITS)
            assert not thread.is_alive(), "the worker still waits on a server that vanished"
            assert is_connection_loss(outcome["error"])
            gone_by = time.monotonic() + WITHOUT_LIMITS
            while _sessions(probe, f"pid = {pid}"):
                assert time.monotonic() < gone_by, "the server keeps the vanished worker's session"
                time.sleep(0.2)
        assert holder.release() is True
        # Nobody was handed the lock meanwhile: the worker takes it again, on a new connection.
        assert not _sessions(probe, "wait_event = 'advisory'")
        lock.acquire()
        assert lock.release() is True
    probe_engine.dispose()
    dispose(backend)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "stock"])
def test_a_read_sent_to_a_vanished_server_ends_and_is_retried_on_a_new_connection(
    fast: bool, server: PostgresControl
) -> None:
    """The worker's pooled connections go silent, as after the server's pod moved (the
    Service's address leads to the new one, the old connections lead nowhere)."""
    require_blackhole()
    name = f"vanish-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=server.url, study_name=name, model_type="ffm", budget=10)
    backend = make_storage(server.url, VANISHED, existing=True)
    chosen = worker_storage(backend, fast_path=fast, outage=outage_of(server.url, VANISHED))
    study = optuna.load_study(study_name=name, storage=chosen.storage)
    expected = [t.params for t in study.get_trials()]  # the enqueued default trial
    # Autocommit: within a transaction pg_stat_activity would show one snapshot throughout.
    probe_engine = sqlalchemy.create_engine(
        server.url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with probe_engine.connect() as probe:
        pooled = _sessions(probe, "state = 'idle'")
        assert pooled, "the worker's pool holds no connection"
        with blackholed(_port(server.url), [port for _, port in pooled]):
            thread, outcome = _in_thread(study.get_trials)
            thread.join(WITHOUT_LIMITS)
            assert not thread.is_alive(), "the read still waits on connections that lead nowhere"
        assert "error" not in outcome, outcome.get("error")
        assert [t.params for t in outcome["result"]] == expected
    probe_engine.dispose()
    dispose(backend)
