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

from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.search_space import default_params
from ctrflow.components.hpo.storage import StorageSettings
from ctrflow.components.names import ATTR_DEFAULT_TRIAL as DEFAULT_TRIAL_ATTR
from tests.testkit.cli import CTRFLOW
from tests.testkit.hpo_data import tiny_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Grace 4 s: short enough for a quick test, long enough that a live but CPU-starved worker is
# never taken for dead on a busy 2-core machine.
LIVENESS = ["--heartbeat-interval", "1", "--grace-period", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    base = tmp_path_factory.mktemp("hpo-data")
    return tiny_dataset(base / "train", 300, seed=1), tiny_dataset(base / "valid", 150, seed=2)


def _env(storage_url: str) -> dict[str, str]:
    # The URL (with its password) goes through the environment, as from a Kubernetes Secret.
    return dict(os.environ, CTRFLOW_STORAGE_URL=storage_url)


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
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CTRFLOW, "hpo", "worker", "--study", name, "--train", str(data[0]), "--valid",
         str(data[1]), "--seed", str(seed), "--progress", "off", "--out", str(out), *LIVENESS],
        env=_env(storage_url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return err


def test_four_worker_processes_end_with_exactly_the_budget(
    storage_url: str, data: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    name = f"budget-{uuid.uuid4().hex[:8]}"
    info = _create(storage_url, name, budget=20, tmp_path=tmp_path)
    assert info["created"] and info["sampler"] == "tpe" and info["budget"] == 20
    assert "***" in info["storage"] or info["storage"].startswith("sqlite")

    outs = [tmp_path / f"w{i}.json" for i in range(4)]
    workers = [_worker(storage_url, name, data, outs[i], seed=i) for i in range(4)]
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


def test_threads_hammering_one_study_never_overshoot(postgres_url: str) -> None:
    """8 workers (threads, each with its own pool and lock session) and a trial costing ~nothing:
    the tightest race between the budget check and the start of a trial."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    from ctrflow.components.hpo.create_study import create_study

    create_study(storage_url=postgres_url, study_name=name, model_type="ffm", budget=40)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            run_worker(
                storage_url=postgres_url,
                study_name=name,
                seed=seed,
                settings=StorageSettings(heartbeat_interval=1, grace_period=4),
                objective=lambda trial: trial.suggest_float("eta", 0.02, 1.0, log=True),
                poll_interval=0.05,
                progress=False,
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 40}


def test_killed_worker_trial_fails_is_retried_once_and_budget_stays_exact(
    postgres_url: str, data: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
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
    victim = subprocess.Popen([sys.executable, "-c", victim_code], stderr=subprocess.PIPE)
    others = [_worker(postgres_url, name, data, tmp_path / f"w{i}.json", seed=i) for i in range(3)]
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
    # One per worker, and one more for a moment by the worker that pops the enqueued defaults
    # (Optuna's read of waiting trials); a pool that reopened its second connection per trial
    # would open at least one per trial (24 here).
    assert connections.opened <= 2 * workers, counted
