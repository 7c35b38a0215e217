"""The Optuna fast path is fenced: used only on the Optuna it was written for, and switchable off.

A changed Optuna is simulated with monkeypatch (another version, a private name deleted, a
parameter renamed, a column gone); the worker then runs on Optuna's stock storage, warns once
naming the mismatch, and still ends with exactly its budget of COMPLETE trials. Real PostgreSQL
and SQLite, no mocked database.
"""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Callable

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo import _fast_path
from ctrflow.components.hpo._fast_path import fast_path_setting, worker_storage
from ctrflow.components.hpo._worker_storage import WorkerStorage
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.hpo_worker import WorkerResult, run_worker
from ctrflow.components.hpo.search_space import default_params
from ctrflow.components.hpo.storage import StorageSettings
from ctrflow.components.names import ATTR_DEFAULT_TRIAL as DEFAULT_TRIAL_ATTR
from ctrflow.components.names import OPTUNA_FAST_PATH_ENV
from tests.testkit.cli import CTRFLOW

pytestmark = pytest.mark.integration
Change = Callable[[pytest.MonkeyPatch], None]


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new worker process: no warning given yet, and no setting from the environment."""
    monkeypatch.setattr(_fast_path, "_warned", False)
    monkeypatch.delenv(OPTUNA_FAST_PATH_ENV, raising=False)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == _fast_path.__name__ and r.levelno >= logging.WARNING
    ]


def _renamed_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_add_trials_to_cache(study_id, trials)`` becomes ``(study_id, frozen_trials)``: Optuna's
    own positional calls still work, a keyword call of the old name would not."""
    original = _CachedStorage._add_trials_to_cache

    def renamed(self: _CachedStorage, study_id: int, frozen_trials: list[FrozenTrial]) -> None:
        original(self, study_id, frozen_trials)

    monkeypatch.setattr(_CachedStorage, "_add_trials_to_cache", renamed)


# Each leaves Optuna's own storage working for the worker below (whose objective reports no
# intermediate value), and each is something the fast path relies on.
WORKER_CHANGES: dict[str, tuple[Change, str]] = {
    "version": (
        lambda mp: mp.setattr(optuna, "__version__", "5.1.0"),
        "optuna 5.1.0 is installed, the fast path was written for 5.0",
    ),
    "deleted": (
        lambda mp: mp.delattr(
            models.TrialIntermediateValueModel, "intermediate_value_to_stored_repr"
        ),
        "TrialIntermediateValueModel.intermediate_value_to_stored_repr is missing",
    ),
    "renamed": (_renamed_parameter, "_CachedStorage._add_trials_to_cache"),
}


@pytest.mark.slow
@pytest.mark.parametrize("change", sorted(WORKER_CHANGES))
def test_a_changed_optuna_falls_back_warns_once_and_the_budget_is_still_exact(
    change: str,
    storage_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, budget = f"fence-{uuid.uuid4().hex[:8]}", 8
    create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=budget)
    simulate, expected = WORKER_CHANGES[change]
    simulate(monkeypatch)
    results: list[WorkerResult] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            results.append(
                run_worker(
                    storage_url=storage_url,
                    study_name=name,
                    seed=seed,
                    settings=StorageSettings(heartbeat_interval=1, grace_period=4),
                    objective=lambda trial: trial.suggest_float("eta", 0.02, 1.0, log=True),
                    poll_interval=0.05,
                    progress=False,
                )
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    # Two workers in one process: one warning between them.
    with caplog.at_level(logging.WARNING, logger=_fast_path.__name__):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors
    assert [r.fast_path for r in results] == [False, False]
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and expected in warnings[0], warnings
    assert OPTUNA_FAST_PATH_ENV in warnings[0]  # how to silence it on purpose
    trials = optuna.load_study(study_name=name, storage=storage_url).trials
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: budget}
    # The defaults trial the study enqueued was popped from WAITING by Optuna's own read.
    assert trials[0].user_attrs[DEFAULT_TRIAL_ATTR] is True
    assert trials[0].params["eta"] == default_params("ffm")["eta"]
    assert sum(r.trials_run for r in results) == budget


def _stand_in_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """trial_heartbeats.heartbeat renamed to beat_at."""
    table = sqlalchemy.Table(
        "trial_heartbeats",
        sqlalchemy.MetaData(),
        sqlalchemy.Column("trial_heartbeat_id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("trial_id", sqlalchemy.Integer, unique=True),
        sqlalchemy.Column("beat_at", sqlalchemy.DateTime),
    )
    monkeypatch.setattr(models, "TrialHeartbeatModel", type("Model", (), {"__table__": table}))


def _no_unique_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """trial_intermediate_values without its (trial_id, step) unique constraint."""
    original = models.TrialIntermediateValueModel.__table__
    columns = (sqlalchemy.Column(c.name, c.type, primary_key=c.primary_key) for c in original.c)
    table = sqlalchemy.Table(original.name, sqlalchemy.MetaData(), *columns)
    monkeypatch.setattr(
        models, "TrialIntermediateValueModel", type("Model", (), {"__table__": table})
    )


def _renamed_study_info_field(monkeypatch: pytest.MonkeyPatch) -> None:
    original = _StudyInfo.__init__

    def init(self: _StudyInfo) -> None:
        original(self)
        # through the instance dict: _StudyInfo declares no such attribute (Optuna never had it)
        vars(self)["param_distributions"] = vars(self).pop("param_distribution")

    monkeypatch.setattr(_StudyInfo, "__init__", init)


# Checked without running a worker: some of these would break Optuna's own storage as well.
CHECK_CHANGES: dict[str, tuple[Change, str]] = {
    "major version": (
        lambda mp: mp.setattr(optuna, "__version__", "6.0.0"),
        "optuna 6.0.0 is installed",
    ),
    "unparseable version": (
        lambda mp: mp.setattr(optuna, "__version__", "dev"),
        "optuna dev is installed",
    ),
    "cached storage method": (
        lambda mp: mp.delattr(_CachedStorage, "_read_trials_from_remote_storage"),
        "_CachedStorage._read_trials_from_remote_storage is missing",
    ),
    "cached storage getstate": (
        lambda mp: mp.delattr(_CachedStorage, "__getstate__"),
        "_CachedStorage.__getstate__ is missing",
    ),
    "study info field": (_renamed_study_info_field, "_StudyInfo().param_distribution is missing"),
    "rdb method": (
        lambda mp: mp.delattr(RDBStorage, "_get_stale_trial_ids"),
        "RDBStorage._get_stale_trial_ids is missing",
    ),
    "study method": (
        lambda mp: mp.delattr(optuna.study.Study, "_pop_waiting_trial_id"),
        "Study._pop_waiting_trial_id is missing",
    ),
    "model": (
        lambda mp: mp.delattr(models, "TrialValueModel"),
        "models.TrialValueModel is missing",
    ),
    "column": (_stand_in_heartbeats, "TrialHeartbeatModel has no column heartbeat"),
    "unique constraint": (
        _no_unique_step,
        "trial_intermediate_values has no unique constraint on (trial_id, step)",
    ),
}


@pytest.mark.parametrize("change", sorted(CHECK_CHANGES))
def test_each_relied_on_internal_is_checked(
    change: str,
    rdb: RDBStorage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    simulate, expected = CHECK_CHANGES[change]
    simulate(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=_fast_path.__name__):
        chosen = worker_storage(rdb)
        worker_storage(rdb)  # a second worker in this process: no second warning
    assert chosen.storage is rdb and not chosen.fast
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and expected in warnings[0], warnings


def test_on_the_optuna_it_was_written_for_the_fast_path_is_used_silently(
    rdb: RDBStorage, caplog: pytest.LogCaptureFixture
) -> None:
    assert _fast_path.mismatches(rdb) == []
    chosen = worker_storage(rdb)
    assert chosen.fast and isinstance(chosen.storage, WorkerStorage)
    assert chosen.hints is chosen.storage and chosen.storage.backend is rdb
    assert _warnings(caplog) == []


@pytest.mark.parametrize("value", ["0", "off", "False", " no "])
def test_the_environment_variable_turns_the_fast_path_off(
    value: str, rdb: RDBStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(OPTUNA_FAST_PATH_ENV, value)
    chosen = worker_storage(rdb)
    assert chosen.storage is rdb and not chosen.fast
    assert _warnings(caplog) == []  # chosen on purpose: nothing to warn about
    assert worker_storage(rdb, fast_path=True).fast  # an explicit keyword (the CLI flag) wins


@pytest.mark.parametrize("value", ["1", "on", "TRUE", "yes", ""])
def test_the_environment_variable_leaves_it_on(
    value: str, rdb: RDBStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTUNA_FAST_PATH_ENV, value)
    assert worker_storage(rdb).fast
    assert not worker_storage(rdb, fast_path=False).fast


@pytest.mark.parametrize("value", ["2", "maybe", "of"])
def test_an_invalid_value_is_an_error_before_anything_connects(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTUNA_FAST_PATH_ENV, value)
    match = f"\\${OPTUNA_FAST_PATH_ENV}='{value}' is not a valid setting"
    with pytest.raises(ValueError, match=match):
        fast_path_setting()
    with pytest.raises(ValueError, match=match):
        fast_path_setting(True)  # not silently ignored when the flag is given either
    # Nothing listens on port 1: had it tried to connect, this would fail differently.
    unreachable = "postgresql+psycopg://u:p@127.0.0.1:1/db"
    with pytest.raises(ValueError, match=match):
        run_worker(storage_url=unreachable, study_name="x", budget=1)


def test_the_cli_reports_an_invalid_value_and_checks_the_flag(tmp_path: pathlib.Path) -> None:
    cli = [*CTRFLOW, "hpo", "worker", "--study", "s"]
    data = ["--train", str(tmp_path), "--valid", str(tmp_path)]
    env = dict(os.environ, CTRFLOW_STORAGE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    proc = subprocess.run(
        [*cli, *data],
        env=env | {OPTUNA_FAST_PATH_ENV: "maybe"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"${OPTUNA_FAST_PATH_ENV}='maybe' is not a valid setting" in proc.stderr
    proc = subprocess.run(
        [*cli, *data, "--optuna-fast-path", "sometimes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "--optuna-fast-path" in proc.stderr
