"""The stale-trial grace period outlasts the storage outage a worker rides out.

A worker that survives an outage (shorter than its limit) writes no heartbeat meanwhile; once
the database is back, another worker's stale-trial scan must not take its running trial for a
dead worker's. Its last heartbeat can be one interval older than the outage it sees, and its
first heartbeat after it comes up to one backoff step later."""

from __future__ import annotations

import pathlib

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from ctrflow.components.hpo._outage import limit_setting
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage
from ctrflow.components.names import STORAGE_OUTAGE_LIMIT_ENV


@pytest.mark.parametrize(
    ("settings", "env_limit"),
    [
        # 20 s to notice a vanished server, 60 s limit, 10 s beats, 8 s backoff: 101 s
        (StorageSettings(), None),
        (StorageSettings(outage_limit=300, dead_server_after=60), None),
        (StorageSettings(heartbeat_interval=2, backoff_max=1.0), "5"),
    ],
)
def test_the_default_grace_outlasts_an_outage_ridden_out(
    settings: StorageSettings, env_limit: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env_limit is not None:
        monkeypatch.setenv(STORAGE_OUTAGE_LIMIT_ENV, env_limit)
    limit = limit_setting(settings.outage_limit)
    assert settings.heartbeat_interval is not None
    grace = settings.stale_after()
    assert grace is not None
    noticed = settings.dead_server_after + limit
    assert grace > noticed + settings.heartbeat_interval + 1.2 * settings.backoff_max


def test_an_explicit_grace_period_wins_and_none_without_heartbeats() -> None:
    assert StorageSettings(heartbeat_interval=1, grace_period=4).stale_after() == 4
    assert StorageSettings(heartbeat_interval=None, grace_period=None).stale_after() is None


def test_a_trial_silent_for_50_s_is_not_taken_for_dead(tmp_path: pathlib.Path) -> None:
    """On a real storage: a RUNNING trial whose last heartbeat is 50 s old (its worker rides
    out a 50 s outage, within the 60 s limit) survives another worker's stale-trial scan; one
    silent for longer than the grace period is failed and retried."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(storage_url=url, study_name="s", model_type="ffm", budget=4)
    storage = make_storage(url)  # the defaults a worker runs with
    study = optuna.load_study(study_name="s", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)  # as the worker's heartbeat thread does
    engine = sqlalchemy.create_engine(url)

    def silent_for(seconds: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "UPDATE trial_heartbeats SET heartbeat = datetime('now', :ago)"
                    " WHERE trial_id = :tid"
                ),
                {"ago": f"-{seconds} seconds", "tid": trial._trial_id},
            )

    silent_for(50)
    optuna.storages.fail_stale_trials(study)
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
    grace = StorageSettings().stale_after()
    assert grace is not None
    silent_for(grace + 5)
    optuna.storages.fail_stale_trials(study)
    assert storage.get_trial(trial._trial_id).state == TrialState.FAIL
    engine.dispose()
    dispose(storage)
