"""PostgreSQL goes away under running workers: they wait for it and finish the exact budget, or,
past the outage limit, exit 3 with one line.

Real `ctrflow hpo worker` processes against a PostgreSQL of their own, which the test stops and
starts again on the same port and data directory (tests.testkit.servers.postgres_control).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from ctrflow.components.names import STORAGE_OUTAGE_LIMIT_ENV
from tests.testkit.cli import CTRFLOW
from tests.testkit.hpo_data import tiny_dataset
from tests.testkit.servers import PostgresControl, postgres_control

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# No worker dies here, so none may be taken for dead: the grace outlasts the outage.
LIVENESS = ("--heartbeat-interval", "2", "--grace-period", "60")
BUDGET = 16


@pytest.fixture
def server() -> Iterator[PostgresControl]:
    with postgres_control() as control:
        yield control


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    base = tmp_path_factory.mktemp("outage-data")
    # Big enough that a trial takes a moment, so the outage meets trials in flight.
    return tiny_dataset(base / "train", 20000, seed=1), tiny_dataset(base / "valid", 4000, seed=2)


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
    limit: str | None = None,
) -> subprocess.Popen[str]:
    env = _env(url, fast_path)
    if limit is not None:
        env[STORAGE_OUTAGE_LIMIT_ENV] = limit
    return subprocess.Popen(
        [*CTRFLOW, "hpo", "worker", "--study", name, "--train", str(data[0]), "--valid",
         str(data[1]), "--seed", str(seed), "--progress", "off", "--out", str(out), *LIVENESS],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finished(url: str, name: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT COUNT(*) FROM trials t JOIN studies s USING (study_id)"
                        " WHERE s.study_name = :name AND t.state IN ('COMPLETE', 'PRUNED')"
                    ),
                    {"name": name},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _wait_for_trials(url: str, name: str, count: int) -> int:
    while (finished := _finished(url, name)) < count:
        time.sleep(0.05)
    return finished


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
    server.stop("fast")  # every session is cut, mid-trial or mid-write
    time.sleep(12)
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
    proc = _worker(server.url, name, data, tmp_path / "w.json", 0, "1", limit="3")
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
