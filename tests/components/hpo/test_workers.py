"""Many workers, one study: the budget is exact, and a killed worker's trial is retried once.

Workers are real processes running `ctrflow hpo worker` (the CLI a Kubernetes Job runs) against
the real PostgreSQL fixture and against a SQLite file, on a tiny generated dataset.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from ctrflow.components.hpo.hpo_worker import WorkerResult, run_worker
from ctrflow.components.hpo.search_space import default_params
from ctrflow.components.hpo.storage import StorageSettings
from ctrflow.components.names import ATTR_DEFAULT_TRIAL as DEFAULT_TRIAL_ATTR
from tests.testkit.cli import CTRFLOW
from tests.testkit.hpo_data import tiny_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Where a worker is killed: a 4 s grace lets the others take its trial over quickly.
QUICK_TAKEOVER = ("--heartbeat-interval", "1", "--grace-period", "4")
# Everywhere else no worker dies, so none may be taken for dead, even CPU-starved on a busy
# 2-core machine with SQLite's lock waits (4 s once failed two live trials there).
NO_DEATHS = ("--heartbeat-interval", "2", "--grace-period", "60")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    base = tmp_path_factory.mktemp("hpo-data")
    return tiny_dataset(base / "train", 300, seed=1), tiny_dataset(base / "valid", 150, seed=2)


def _env(storage_url: str, fast_path: str = "1") -> dict[str, str]:
    # The URL (with its password) goes through the environment, as from a Kubernetes Secret.
    # The fast path is pinned: tests of what it saves must not follow the caller's environment.
    return dict(os.environ, CTRFLOW_STORAGE_URL=storage_url, CTRFLOW_OPTUNA_FAST_PATH=fast_path)


def _create(storage_url: str, name: str, budget: int, tmp_path: pathlib.Path) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [*CTRFLOW, "hpo", "create", "--study", name, "--model-type", "ffm", "--budget", str(budget),
         "--out", str(out)],
        env=_env(storage_url), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info: dict[str, Any] = json.loads(out.read_text())
    return info


def _worker(
    storage_url: str,
    name: str,
    data: tuple[pathlib.Path, pathlib.Path],
    out: pathlib.Path,
    seed: int,
    fast_path: str = "1",
    extra: tuple[str, ...] = (),
    liveness: tuple[str, ...] = NO_DEATHS,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CTRFLOW, "hpo", "worker", "--study", name, "--train", str(data[0]), "--valid",
         str(data[1]), "--seed", str(seed), "--progress", "off", "--out", str(out), *liveness,
         *extra],
        env=_env(storage_url, fast_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.mark.parametrize("fast_path", ["on", "off"])
def test_four_worker_processes_end_with_exactly_the_budget(
    fast_path: str,
    storage_url: str,
    data: tuple[pathlib.Path, pathlib.Path],
    tmp_path: pathlib.Path,
) -> None:
    """On Optuna's fast path and on its stock storage (off: two workers by the environment
    variable, two by the CLI flag, which wins over the variable)."""
    name = f"budget-{uuid.uuid4().hex[:8]}"
    info = _create(storage_url, name, budget=20, tmp_path=tmp_path)
    assert info["created"] and info["sampler"] == "tpe" and info["budget"] == 20
    assert "***" in info["storage"] or info["storage"].startswith("sqlite")

    outs = [tmp_path / f"w{i}.json" for i in range(4)]
    off = [
        ("0", ()),
        ("0", ()),
        ("1", ("--optuna-fast-path", "off")),
        ("", ("--optuna-fast-path", "off")),
    ]
    how = [("1", ())] * 4 if fast_path == "on" else off
    workers = [
        _worker(storage_url, name, data, outs[i], seed=i, fast_path=how[i][0], extra=how[i][1])
        for i in range(4)
    ]
    for proc in workers:
        _finish(proc)

    study = optuna.load_study(study_name=name, storage=storage_url)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 20
    # Not a single extra trial was even started: no FAIL, RUNNING or WAITING leftovers.
    assert len(trials) == 20, states
    assert trials[0].params == default_params("ffm")
    assert trials[0].user_attrs[DEFAULT_TRIAL_ATTR] is True
    assert [t.number for t in trials if t.user_attrs.get(DEFAULT_TRIAL_ATTR)] == [0]
    results = [json.loads(out.read_text()) for out in outs]
    assert sum(r["trials_run"] for r in results) == 20
    assert all(r["finished"] == 20 for r in results)
    assert [r["fast_path"] for r in results] == [fast_path == "on"] * 4


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "stock"])
def test_threads_hammering_one_study_never_overshoot(postgres_url: str, fast_path: bool) -> None:
    """8 workers (threads, each with its own pool and lock session) and a trial costing ~nothing:
    the tightest race between the budget check and the start of a trial; on the fast path and
    on Optuna's stock storage."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    from ctrflow.components.hpo.create_study import create_study

    create_study(storage_url=postgres_url, study_name=name, model_type="ffm", budget=40)
    errors: list[BaseException] = []
    results: list[WorkerResult] = []

    def work(seed: int) -> None:
        try:
            result = run_worker(
                storage_url=postgres_url,
                study_name=name,
                seed=seed,
                settings=StorageSettings(heartbeat_interval=2, grace_period=60),
                objective=lambda trial: trial.suggest_float("eta", 0.02, 1.0, log=True),
                poll_interval=0.05,
                progress=False,
                fast_path=fast_path,
            )
            results.append(result)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert [r.fast_path for r in results] == [fast_path] * 8
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 40}


@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["fast", "stock"])
def test_killed_worker_trial_fails_is_retried_once_and_budget_stays_exact(
    fast_path: str,
    postgres_url: str,
    data: tuple[pathlib.Path, pathlib.Path],
    tmp_path: pathlib.Path,
) -> None:
    name = f"kill-{uuid.uuid4().hex[:8]}"
    _create(postgres_url, name, budget=20, tmp_path=tmp_path)
    marker = tmp_path / "victim-trial"
    # The victim runs the same worker loop; its objective announces its trial and then hangs
    # (heartbeat still beating) until it is SIGKILLed: "in the middle of a trial", for sure.
    victim_code = textwrap.dedent(f"""
        import pathlib, threading
        from ctrflow.components.hpo.storage import StorageSettings
        from ctrflow.components.hpo.hpo_worker import run_worker
        from ctrflow.components.hpo.search_space import get_space

        def hang(trial):
            get_space("ffm").suggest(trial)
            pathlib.Path({str(marker)!r}).write_text(str(trial.number))
            threading.Event().wait()

        run_worker(storage_url={postgres_url!r}, study_name={name!r},
                   settings=StorageSettings(heartbeat_interval=1, grace_period=4),
                   objective=hang, progress=False)
    """)
    env = _env(postgres_url, fast_path)
    victim = subprocess.Popen([sys.executable, "-c", victim_code], stderr=subprocess.PIPE, env=env)
    others = [
        _worker(
            postgres_url,
            name,
            data,
            tmp_path / f"w{i}.json",
            seed=i,
            fast_path=fast_path,
            liveness=QUICK_TAKEOVER,
        )
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert victim.poll() is None, victim.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the victim never started a trial"
            time.sleep(0.05)
        victim_trial = int(marker.read_text())
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert study.trials[victim_trial].state == TrialState.RUNNING
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    for proc in others:
        _finish(proc)

    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 20
    assert states[TrialState.FAIL] == 1 and trials[victim_trial].state == TrialState.FAIL
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim_trial]
    assert len(retries) == 1
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == trials[victim_trial].params  # same point, run again
    assert set(retries[0].params) == {"k", "eta", "lam"}
    assert retries[0].system_attrs["retry_history"] == [victim_trial]
    results = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(3)]
    assert sum(r["trials_run"] for r in results) == 20  # 19 new trials + the retry
    assert [r["fast_path"] for r in results] == [fast_path == "1"] * 3


# A worker process that stops (SIGSTOP) right after one statement, as a stopped container or
# a paused VM would: inside a transaction writing its trial's end (Optuna's stock storage), or
# holding the study lock. Argv: storage URL, study, marker file, "write" or "lock".
_FREEZER = textwrap.dedent("""
    import os, pathlib, re, signal, sys, threading
    import sqlalchemy
    from ctrflow.components.hpo.hpo_worker import run_worker
    from ctrflow.components.hpo.search_space import get_space
    from ctrflow.components.hpo.storage import StorageSettings

    url, study, marker, where = sys.argv[1:]
    objective_ran = threading.Event()
    pattern = r"\\s*UPDATE trials\\b" if where == "write" else r"\\s*SELECT .*pg_advisory_lock\\("
    statement = re.compile(pattern)

    @sqlalchemy.event.listens_for(sqlalchemy.Engine, "after_cursor_execute")
    def freeze(conn, cursor, text, parameters, context, executemany):
        if (where == "lock" or objective_ran.is_set()) and statement.match(text):
            pathlib.Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)

    def objective(trial):
        get_space("ffm").suggest(trial)
        objective_ran.set()
        return 0.5

    run_worker(storage_url=url, study_name=study, objective=objective, progress=False,
               settings=StorageSettings(heartbeat_interval=1, grace_period=FROZEN_GRACE))
""")
# The frozen worker's grace period (its sessions' idle limit) is longer than the survivors' 4 s,
# so the test sees the stuck session before the server ends it.
FROZEN_GRACE = 10


def _stopped(pid: int) -> bool:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize(
    ("where", "fast_path"),
    [("write", "0"), ("lock", "1")],
    ids=["inside-a-write", "holding-the-lock"],
)
def test_a_worker_frozen_inside_a_transaction_or_holding_the_study_lock_stalls_no_one(
    where: str,
    fast_path: str,
    postgres_url: str,
    data: tuple[pathlib.Path, pathlib.Path],
    tmp_path: pathlib.Path,
) -> None:
    """A frozen worker's session lives on: its row locks would keep the survivor that fails its
    stale trial waiting, with the study lock held, and a frozen holder of the study lock would
    keep everyone waiting. The server ends such a session after the grace period."""
    name = f"frozen-{where}-{uuid.uuid4().hex[:8]}"
    _create(postgres_url, name, budget=6, tmp_path=tmp_path)
    marker = tmp_path / "frozen"
    code = _FREEZER.replace("FROZEN_GRACE", str(FROZEN_GRACE))
    frozen = subprocess.Popen(
        [sys.executable, "-c", code, postgres_url, name, str(marker), where],
        stderr=subprocess.PIPE, text=True, env=_env(postgres_url, fast_path),
    )  # fmt: skip
    survivors: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 120
        while not (marker.exists() and _stopped(frozen.pid)):
            assert frozen.poll() is None, frozen.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker never reached the statement"
            time.sleep(0.02)
        # What the survivors are up against: the frozen session, idle in its transaction or
        # idle holding the advisory lock.
        with sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.NullPool).connect() as c:
            stuck = c.execute(
                sqlalchemy.text(
                    "SELECT a.state, bool_or(l.locktype = 'advisory') FROM pg_stat_activity a"
                    " LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted"
                    " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
                    " AND a.state LIKE 'idle%' GROUP BY a.pid, a.state"
                )
            ).all()
        expected = ("idle in transaction", False) if where == "write" else ("idle", True)
        assert expected in stuck, stuck
        survivors = [
            _worker(postgres_url, name, data, tmp_path / f"w{i}.json", seed=i,
                    fast_path=fast_path, liveness=QUICK_TAKEOVER)
            for i in range(2)
        ]  # fmt: skip
        for proc in survivors:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in [frozen, *survivors]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 6, states
    if where == "write":  # its trial's end was rolled back: failed as stale and run again
        (failed,) = [t for t in trials if t.state == TrialState.FAIL]
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
        assert len(retries) == 1 and retries[0].params == failed.params
        assert len(trials) == 7
    else:  # frozen before it started a trial
        assert len(trials) == 6, states


class _Connections:
    """Samples the study database's client connections (pg_stat_activity) while workers run,
    and counts the sessions opened (pg_stat_database.sessions, PostgreSQL >= 14)."""

    def __init__(self, url: str) -> None:
        self._url, self.peak, self._stop = url, 0, threading.Event()
        self._started = threading.Event()
        self.failure: Exception | None = None
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.opened = -self._sessions()

    def _sessions(self) -> int:
        with sqlalchemy.create_engine(self._url, poolclass=sqlalchemy.NullPool).connect() as conn:
            return int(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                    )
                ).scalar_one()
            )

    def _sample(self) -> None:
        query = sqlalchemy.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        engine = sqlalchemy.create_engine(
            self._url, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
        )  # statistics views answer from one snapshot per transaction
        try:
            with engine.connect() as conn:
                # Connections from before (other tests' pools in this process) are not counted.
                before = set(conn.execute(query).scalars())
                self._started.set()
                while not self._stop.wait(0.01):
                    now = set(conn.execute(query).scalars()) - before
                    self.peak = max(self.peak, len(now))
        except Exception as exc:
            self.failure = exc

    def __enter__(self) -> _Connections:
        self._thread.start()
        self._started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.failure is not None:
            raise self.failure
        self.opened += self._sessions() - 2  # this sampler's two own sessions


def test_a_worker_holds_one_connection_so_fifty_fit_in_postgres_default_limit(
    postgres_url: str, data: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """The default pool keeps one connection per worker open (one more for a moment at most):
    what a worker does under the study lock runs on the lock's connection. 50 workers then
    hold about 50 of PostgreSQL's default 100 connections (97 for non-superusers). Sessions
    opened are counted too: a pool that kept closing and reopening its second connection
    would fit, and pay a connection set-up per trial."""
    name = f"pool-{uuid.uuid4().hex[:8]}"
    budget, workers = 24, 4
    _create(postgres_url, name, budget=budget, tmp_path=tmp_path)
    with _Connections(postgres_url) as connections:
        procs = [
            _worker(postgres_url, name, data, tmp_path / f"p{i}.json", seed=i)
            for i in range(workers)
        ]
        for proc in procs:
            _finish(proc)
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) == budget
    counted = (connections.peak, connections.opened)
    assert connections.peak <= workers + 1, counted  # 2 per worker before: 8
    # One per worker, one more for a moment by the worker that pops the enqueued defaults
    # (Optuna's read of waiting trials), and each worker's look at the server's version
    # before its pool (storage._server_version); a pool that reopened its second connection
    # per trial would open at least one per trial (24 here).
    assert connections.opened <= 3 * workers, counted
