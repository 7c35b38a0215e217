"""Storage, study lock, dead-worker recovery, create/finalize steps: real PostgreSQL and SQLite."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from ctrflow.components.hpo._dead_peer import dead_peer_server_options
from ctrflow.components.hpo._trial_budget import _PG_LOCK_CLASS, StudyLock
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.finalize_study import finalize_study
from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.search_space import default_params, get_space
from ctrflow.components.hpo.storage import (
    StorageSettings,
    StorageUnavailableError,
    make_storage,
)
from ctrflow.components.names import ATTR_DEFAULT_TRIAL as DEFAULT_TRIAL_ATTR
from tests.testkit.cli import CTRFLOW
from tests.testkit.hpo_data import tiny_dataset
from tests.testkit.reports import read_page

pytestmark = pytest.mark.integration
FAST = StorageSettings(heartbeat_interval=1, grace_period=1, connect_attempts=3)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_unreachable_postgres_fails_after_the_retry_budget_naming_host_not_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://ctrflow:s3cret-pw@127.0.0.1:{port}/optuna_db"
    settings = StorageSettings(connect_attempts=3, backoff_initial=0.05)
    with caplog.at_level(logging.WARNING), pytest.raises(StorageUnavailableError) as err:
        make_storage(url, settings)
    message = str(err.value)
    assert f"host 127.0.0.1 port {port} database optuna_db user ctrflow" in message
    assert "after 3 attempts" in message
    assert "s3cret-pw" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert [m.split("(attempt ")[1][:3] for m in retries] == ["1/3", "2/3"]
    assert not any("s3cret-pw" in r.getMessage() for r in caplog.records)


def test_cli_worker_exits_3_with_a_clear_one_line_error_when_postgres_is_down(
    tmp_path: pathlib.Path,
) -> None:
    port = _closed_port()
    env = dict(
        os.environ,
        CTRFLOW_STORAGE_URL=f"postgresql+psycopg://ctrflow:s3cret-pw@127.0.0.1:{port}/ctrflow",
    )
    proc = subprocess.run(
        [*CTRFLOW, "hpo", "worker", "--study", "s",
         "--train", str(tmp_path), "--valid", str(tmp_path), "--connect-attempts", "2",
         "--backoff", "0.05"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ctrflow hpo worker: cannot reach the Optuna storage (postgresql host")
    assert f"port {port} database ctrflow" in last
    assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_wrong_password_on_a_live_server_never_echoes_either_password(postgres_url: str) -> None:
    url = sqlalchemy.make_url(postgres_url)
    wrong = url.set(password="not-the-" + str(url.password)).render_as_string(hide_password=False)
    with pytest.raises(StorageUnavailableError) as err:
        make_storage(wrong, StorageSettings(connect_attempts=2, backoff_initial=0.05))
    assert "password authentication failed" in str(err.value)
    assert str(url.password) not in str(err.value)


def test_postgres_study_lock_excludes_others_and_dies_with_its_holder(postgres_url: str) -> None:
    storage = make_storage(postgres_url, FAST)
    probe = sqlalchemy.create_engine(postgres_url)

    def try_lock() -> bool:
        with probe.connect() as conn:
            got = bool(
                conn.execute(
                    sqlalchemy.text("SELECT pg_try_advisory_lock(:c, 4242)"), {"c": _PG_LOCK_CLASS}
                ).scalar()
            )
            if got:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:c, 4242)"), {"c": _PG_LOCK_CLASS}
                )
            return got  # fmt: skip

    lock = StudyLock(storage, 4242)
    with lock.held():
        assert not try_lock()
    assert try_lock()
    lock.release()  # idempotent

    # A holder killed with SIGKILL: the server drops its session and with it the lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from ctrflow.components.hpo.storage import make_storage
            from ctrflow.components.hpo._trial_budget import StudyLock
            StudyLock(make_storage({postgres_url!r}), 4242).acquire()
            print("locked", flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert not try_lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 30
    while not try_lock():
        assert time.monotonic() < deadline, "the killed holder's lock was never released"
        time.sleep(0.1)
    probe.dispose()


def test_postgres_sessions_end_when_idle_as_long_as_a_dead_worker(postgres_url: str) -> None:
    """Inside a transaction always, and between statements while holding the study lock (the
    frozen-worker stalls these prevent run in test_workers); the URL's own options stay."""
    url = f"{postgres_url}?options=-c%20statement_timeout%3D12345"
    storage = make_storage(url, StorageSettings(heartbeat_interval=2, grace_period=12))
    show = sqlalchemy.text(
        "SELECT current_setting('idle_in_transaction_session_timeout'),"
        " current_setting('idle_session_timeout'), current_setting('statement_timeout'),"
        " pg_backend_pid()"
    )
    try:
        with storage.engine.connect() as conn:
            assert tuple(conn.execute(show).one())[:3] == ("12s", "0", "12345ms")
        lock = StudyLock(storage, 4343)
        with lock.held():
            assert lock.connection is not None
            held = lock.connection.execute(show).one()
            assert held[1] == "12s"
        # The pool's next checkout is that same session, back without the limit.
        with storage.engine.connect() as conn:
            assert tuple(conn.execute(show).one()) == ("12s", "0", "12345ms", held[3])
    finally:
        storage.engine.dispose()
    # Never below 10 s, which no live process idles, even starved of CPU.
    storage = make_storage(postgres_url, StorageSettings(heartbeat_interval=1, grace_period=1))
    try:
        with storage.engine.connect() as conn:
            assert conn.execute(show).one()[0] == "10s"
        lock = StudyLock(storage, 4343)
        with lock.held():
            assert lock.connection is not None and lock.connection.execute(show).one()[1] == "10s"
    finally:
        storage.engine.dispose()


def _client_tcp_settings(conn: sqlalchemy.Connection) -> tuple[int, ...]:
    """Keepalive on, idle, interval, count and user timeout of the connection's own socket."""
    fd = conn.connection.dbapi_connection.pgconn.socket  # type: ignore[union-attr]
    with socket.socket(fileno=os.dup(fd)) as sock:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            *(
                sock.getsockopt(socket.IPPROTO_TCP, option)
                for option in (
                    socket.TCP_KEEPIDLE,
                    socket.TCP_KEEPINTVL,
                    socket.TCP_KEEPCNT,
                    socket.TCP_USER_TIMEOUT,
                )
            ),
        )


_SERVER_TCP_SETTINGS = sqlalchemy.text(
    "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'),"
    " current_setting('tcp_keepalives_count'), current_setting('tcp_user_timeout'),"
    " current_setting('client_connection_check_interval')"
)


def _tcp_settings(url: str, settings: StorageSettings) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The client's socket options and the server's session settings of a pooled connection."""
    storage = make_storage(url, settings)
    try:
        with storage.engine.connect() as conn:
            return _client_tcp_settings(conn), tuple(conn.execute(_SERVER_TCP_SETTINGS).one())
    finally:
        storage.engine.dispose()


def test_postgres_connections_end_at_both_ends_when_the_other_is_silent(postgres_url: str) -> None:
    """A vanished server or worker: the socket settings, read back from the kernel and the
    server (what they do to a blackholed connection runs in test_outage); the URL's own win."""
    assert _tcp_settings(postgres_url, StorageSettings(dead_server_after=16)) == (
        (1, 8, 2, 4, 16000),
        ("8", "2", "4", "16000", "2s"),
    )
    url = f"{postgres_url}?keepalives_idle=5&options=-c%20tcp_keepalives_count%3D7"
    assert _tcp_settings(url, StorageSettings()) == (  # 20 s by default
        (1, 5, 2, 4, 20000),
        ("10", "2", "7", "20000", "2s"),
    )
    with pytest.raises(ValueError, match="dead_server_after"):
        StorageSettings(dead_server_after=1)


def test_an_older_server_is_not_sent_settings_it_does_not_know(postgres_url: str) -> None:
    """A server refuses a connection whose startup options name a setting it lacks: shown on
    this one with a made-up name; the versions are PostgreSQL's release notes (tcp_user_timeout
    12, client_connection_check_interval 14), as no older server runs here."""
    engine = sqlalchemy.create_engine(
        postgres_url, connect_args={"options": "-c no_such_setting_here=1"}
    )
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no_such_setting_here"):
        engine.connect()
    engine.dispose()
    names = {
        version: [option.split("=")[0][3:] for option in dead_peer_server_options(20, version)]
        for version in ((11, 22), (13, 18), (14, 0), (17, 6))
    }
    keepalives = ["tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"]
    assert names[(11, 22)] == keepalives
    assert names[(13, 18)] == [*keepalives, "tcp_user_timeout"]
    assert (
        names[(14, 0)]
        == names[(17, 6)]
        == [
            *keepalives,
            "tcp_user_timeout",
            "client_connection_check_interval",
        ]
    )


def test_sqlite_study_lock_is_an_flock_beside_the_database(tmp_path: pathlib.Path) -> None:
    import fcntl

    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}", FAST)
    lock = StudyLock(storage, 7)
    with lock.held():
        fd = os.open(tmp_path / "o.db.budget-7.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


def test_trial_of_a_worker_killed_before_its_first_heartbeat_is_reclaimed(
    storage_url: str,
) -> None:
    """Optuna never fails a RUNNING trial without any heartbeat row; the worker does."""
    name = f"orphan-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=3)
    storage = make_storage(storage_url, FAST)
    study = optuna.load_study(study_name=name, storage=storage)
    with pytest.warns(UserWarning, match="Heartbeat"):
        orphan = study.ask()  # pops the defaults trial: RUNNING, no heartbeat, owner "dead"
    space = get_space("ffm")

    result = run_worker(
        storage_url=storage_url,
        study_name=name,
        settings=FAST,
        objective=lambda trial: float(space.suggest(trial)["eta"]),
        poll_interval=0.2,
        progress=False,
    )
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    assert result.finished == 3
    assert states == {TrialState.COMPLETE: 3, TrialState.FAIL: 1}
    assert study.trials[orphan.number].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == default_params("ffm")
    assert retried[0].user_attrs[DEFAULT_TRIAL_ATTR] is True


def test_create_is_idempotent_and_refuses_a_different_setup(storage_url: str) -> None:
    name = f"idem-{uuid.uuid4().hex[:8]}"
    first = create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=5)
    again = create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=5)
    assert first.created and not again.created
    assert first.to_dict() | {"created": False} == again.to_dict()
    assert "@" not in first.storage or "***" in first.storage
    study = optuna.load_study(study_name=name, storage=storage_url)
    assert len(study.trials) == 1  # the defaults, enqueued once
    with pytest.raises(ValueError, match="already exists for ffm"):
        create_study(storage_url=storage_url, study_name=name, model_type="xgboost", budget=5)
    with pytest.raises(ValueError, match="budget 5; asked for ffm .* budget 6"):
        create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=6)


def test_half_made_study_is_rebuilt_rather_than_reused(storage_url: str) -> None:
    name = f"half-{uuid.uuid4().hex[:8]}"
    half = optuna.create_study(storage=storage_url, study_name=name)
    half.enqueue_trial({"k": 4, "eta": 0.2, "lam": 2e-5})
    half.enqueue_trial({"k": 4, "eta": 0.2, "lam": 2e-5})
    info = create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=4)
    assert info.created
    study = optuna.load_study(study_name=name, storage=storage_url)
    assert len(study.trials) == 1


def test_worker_refuses_unknown_study_and_conflicting_budget(storage_url: str) -> None:
    with pytest.raises(ValueError, match="study 'nope' does not exist: run `ctrflow hpo create`"):
        run_worker(storage_url=storage_url, study_name="nope", budget=3, settings=FAST)
    name = f"conf-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=4)
    with pytest.raises(ValueError, match="budget 7 differs from the 4"):
        run_worker(storage_url=storage_url, study_name=name, budget=7, settings=FAST)


@pytest.mark.parametrize("model_type", ["ffm", "xgboost"])
def test_finalize_reports_best_default_counts_and_writes_export_plots_summary(
    tmp_path: pathlib.Path, model_type: str
) -> None:
    train = tiny_dataset(tmp_path / "train", 300, seed=1)
    valid = tiny_dataset(tmp_path / "valid", 150, seed=2)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(storage_url=url, study_name="s", model_type=model_type, budget=6)
    run_worker(
        storage_url=url, study_name="s", train_dir=train, valid_dir=valid, settings=FAST, seed=3
    )
    out = tmp_path / "final"
    result = finalize_study(storage_url=url, study_name="s", out_dir=out)

    study = optuna.load_study(study_name="s", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert result.best_value == min(t.value for t in complete if t.value is not None)
    assert result.best_params == study.best_params
    assert study.trials[0].user_attrs[DEFAULT_TRIAL_ATTR]
    assert result.default_value == study.trials[0].value
    assert result.default_params == default_params(model_type)
    assert result.best_value <= result.default_value  # type: ignore[operator]
    assert 0.5 < result.best_auc <= 1.0  # type: ignore[operator]
    assert sum(result.counts.values()) == result.n_trials == 6
    for png in result.plots.values():
        assert pathlib.Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result.plots) | set(result.plot_notes) == {
        "optimization_history",
        "param_importances",
    }
    exported = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    assert [(t.params, t.value, t.state) for t in exported.trials] == [
        (t.params, t.value, t.state) for t in study.trials
    ]
    assert json.loads((out / "summary.json").read_text()) == json.loads(
        json.dumps(result.to_dict())
    )
    # The page the KFP UI shows: best against defaults, the history plot inline.
    page = read_page(result.report)
    assert page.title == f"HPO study s ({model_type})"
    history = "Trial logloss over trials, and the best so far"
    assert page.images[history] == pathlib.Path(result.plots["optimization_history"]).read_bytes()
    assert f"{result.best_value:.6g}" in page.cells and "best trial" in page.cells
    assert set(result.best_params) <= set(page.cells)


def test_finalize_without_a_completed_trial_says_so(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(storage_url=url, study_name="empty", model_type="ffm", budget=2)
    with pytest.raises(ValueError, match="'empty' has no completed trial .*'WAITING': 1"):
        finalize_study(storage_url=url, study_name="empty", out_dir=tmp_path / "out")


def test_kfp_step_functions_run_the_steps_with_the_storage_url_from_the_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfp import dsl

    from ctrflow.components.kfp_components import (
        create_study_component,
        finalize_study_component,
        hpo_worker_component,
    )

    monkeypatch.setenv("CTRFLOW_STORAGE_URL", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    info = dsl.Artifact(uri=str(tmp_path / "info.json"))
    created = create_study_component(
        study_name="kfp", model_type="ffm", model_name="", budget=4, space_tag="", seed=0,
        study_info=info,
    )  # fmt: skip
    assert created.study_name == "kfp" and created.sampler == "tpe"
    assert json.loads(pathlib.Path(info.path).read_text())["budget"] == 4

    train = dsl.Dataset(uri=str(tiny_dataset(tmp_path / "train", 300, seed=1)))
    valid = dsl.Dataset(uri=str(tiny_dataset(tmp_path / "valid", 150, seed=2)))
    ran = hpo_worker_component(
        study_name="kfp", budget=4, worker_index=0, n_threads=1, train=train, valid=valid
    )
    assert ran == 4

    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    final = finalize_study_component(
        study_name="kfp",
        study_db=dsl.Artifact(uri=str(tmp_path / "export" / "study.db")),
        plots=dsl.Artifact(uri=str(tmp_path / "plots")),
        metrics=metrics,
        hpo_report=dsl.HTML(uri=str(tmp_path / "hpo_report")),
    )
    assert read_page(tmp_path / "hpo_report").title == "HPO study kfp (ffm)"
    assert final.search_space_version == created.search_space_version
    assert final.summary["study_db"] == str(tmp_path / "export" / "study.db")
    assert (tmp_path / "plots" / "optimization_history.png").exists()
    exported = optuna.load_study(study_name="kfp", storage=f"sqlite:///{final.summary['study_db']}")
    assert len(exported.trials) == 4 and exported.best_value == final.best_value
    assert metrics.metadata["best_trial_logloss"] == final.best_value


def test_warm_start_from_an_exported_study_file_checks_the_version_in_the_file(
    tmp_path: pathlib.Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = get_space("ffm")
    create_study(storage_url=url, study_name="last-week", model_type="ffm", budget=12)
    run_worker(
        storage_url=url,
        study_name="last-week",
        settings=FAST,
        seed=0,
        objective=lambda t: (np.log(space.suggest(t)["eta"]) + 2.0) ** 2,
    )
    db = finalize_study(storage_url=url, study_name="last-week", out_dir=tmp_path / "f").study_db

    proc = subprocess.run(
        [*CTRFLOW, "hpo", "create", "--storage", url,
         "--study", "this-week", "--model-type", "ffm", "--budget", "5", "--warm-start-db", db],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["sampler"] == "cmaes"
    assert info["warm_start"]["found_via"] == f"file:{db}"
    assert info["warm_start"]["n_source_trials"] == 12
    assert info["warm_start"]["source_space_version"] == space.version()

    tagged = create_study(
        storage_url=url,
        study_name="this-week-tagged",
        model_type="ffm",
        space_tag="new-features",
        warm_start_db=db,
    )
    assert tagged.sampler == "tpe"
    assert tagged.warm_start["reason"] == (
        f"search space changed: study 'last-week' in {db} used {space.version()}, this study "
        f"uses {space.version('new-features')}"
    )
    missing = create_study(
        storage_url=url, study_name="m", model_type="ffm", warm_start_db=str(tmp_path / "no.db")
    )
    assert missing.warm_start["reason"] == f"warm-start file {tmp_path / 'no.db'} does not exist"


def test_sampler_choice_is_recorded_and_rebuilt_by_workers(tmp_path: pathlib.Path) -> None:
    from optuna.samplers import CmaEsSampler, TPESampler

    from ctrflow.components.hpo._study_config import StudyConfig, build_sampler

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    plain = create_study(storage_url=url, study_name="cma", model_type="ffm", sampler="cmaes")
    assert plain.sampler == "cmaes" and plain.warm_start["reason"]
    config = StudyConfig.from_study(optuna.load_study(study_name="cma", storage=url))
    assert isinstance(build_sampler(config.sampler, url, seed=0), CmaEsSampler)
    tpe = create_study(storage_url=url, study_name="tpe", model_type="ffm", sampler="tpe")
    config = StudyConfig.from_study(optuna.load_study(study_name="tpe", storage=url))
    assert tpe.sampler == "tpe" and isinstance(build_sampler(config.sampler, url, 0), TPESampler)
    with pytest.raises(ValueError, match="unknown sampler 'grid'; known: auto, tpe, cmaes"):
        create_study(storage_url=url, study_name="g", model_type="ffm", sampler="grid")


@pytest.mark.parametrize("progress", [True, False])
def test_worker_shows_a_bar_or_log_lines_of_the_study_wide_budget(
    tmp_path: pathlib.Path,
    progress: bool,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(storage_url=url, study_name="p", model_type="ffm", budget=3)
    space = get_space("ffm")
    with caplog.at_level(logging.INFO, logger="ctrflow.components.hpo.hpo_worker"):
        run_worker(
            storage_url=url,
            study_name="p",
            settings=FAST,
            objective=lambda t: float(space.suggest(t)["eta"]),
            progress=progress,
        )
    err = capsys.readouterr().err
    lines = [
        r.getMessage() for r in caplog.records if r.name == "ctrflow.components.hpo.hpo_worker"
    ]
    if progress:
        assert "p: 100%" in err and "3/3" in err
        assert not [line for line in lines if line.startswith("trial ")]
    else:
        assert "3/3" not in err
        assert [line.split(" value=")[0] for line in lines[:3]] == [
            "trial 0 COMPLETE",
            "trial 1 COMPLETE",
            "trial 2 COMPLETE",
        ]
        assert lines[2].endswith("study 3/3 finished")


def test_a_trial_started_under_the_lock_fills_the_slot_for_the_next_worker(
    postgres_url: str,
) -> None:
    """The step the exact budget rests on, played out by hand for two workers, budget 2."""
    from ctrflow.components.hpo._trial_budget import TrialBudget

    name = f"slots-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=postgres_url, study_name=name, model_type="ffm", budget=2)
    storage = make_storage(postgres_url, FAST)
    study = optuna.load_study(study_name=name, storage=storage)
    budget = TrialBudget(storage, storage.get_study_id_from_name(name), 2)
    a, b = budget.lock(), budget.lock()

    a.acquire()
    assert not budget.counts().full
    with pytest.warns(UserWarning, match="Heartbeat"):
        first = study.ask()  # worker A starts its trial while it holds the lock
    blocked = threading.Thread(target=b.acquire)
    blocked.start()
    blocked.join(timeout=0.5)
    assert blocked.is_alive()  # worker B waits for A's decision to be committed
    a.release()
    blocked.join(timeout=30)
    assert not blocked.is_alive()
    assert budget.counts().by_state == {"RUNNING": 1}
    with pytest.warns(UserWarning, match="Heartbeat"):
        second = study.ask()
    b.release()
    counts = budget.counts()
    assert counts.full and not counts.done  # a third worker would wait, not start
    study.tell(first, 0.5)
    study.tell(second, state=TrialState.PRUNED)
    assert budget.counts().done


def test_worker_goes_on_when_its_running_trial_was_failed_as_stale_by_another(
    storage_url: str,
) -> None:
    """A worker frozen past the grace period (GC pause, throttled pod) finds its trial failed
    and retried by another worker; its own result is refused and it simply continues."""
    name = f"stalled-{uuid.uuid4().hex[:8]}"
    create_study(storage_url=storage_url, study_name=name, model_type="ffm", budget=3)
    other = optuna.load_study(study_name=name, storage=storage_url)
    space = get_space("ffm")
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        calls.append(trial.number)
        if len(calls) == 1:
            other.tell(trial.number, state=TrialState.FAIL)  # what the stale sweep does
        return float(params["eta"])

    result = run_worker(
        storage_url=storage_url, study_name=name, settings=FAST, objective=objective
    )
    trials = other.get_trials(deepcopy=False)
    assert result.finished == 3 and result.trials_run == 4
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3


def test_objective_error_fails_the_trial_and_stops_the_worker_with_it(
    tmp_path: pathlib.Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(storage_url=url, study_name="e", model_type="ffm", budget=3)

    def broken(trial: optuna.Trial) -> float:
        raise FileNotFoundError("valid/meta.json is missing")

    with pytest.raises(FileNotFoundError, match="valid/meta.json"):
        run_worker(storage_url=url, study_name="e", settings=FAST, objective=broken)
    trials = optuna.load_study(study_name="e", storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL]
