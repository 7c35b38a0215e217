"""Study retention (`keep_studies`, issue #16) on real PostgreSQL and SQLite storages, against a
real `mlflow server`: the model's older studies are exported to MLflow and deleted; this run's,
the champion's, busy and unfinished ones, other models' (also one whose name starts with this
model's) and foreign studies stay.

Studies are made by the real steps (create_study, hpo worker with a cheap objective,
finalize_study); the champion is a registered version whose run names its study, as the register
step leaves it.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import uuid

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ctrflow.components.hpo.create_study import create_study, source_study_name
from ctrflow.components.hpo.finalize_study import finalize_study
from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.retention import retire_studies
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage
from ctrflow.components.names import ATTR_READY, ATTR_WARM_START, TAG_STUDY_NAME
from tests.testkit.cli import ctrflow_in_process
from tests.testkit.ctr_data import _quick_objective

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = StorageSettings(heartbeat_interval=None, grace_period=None)


def _study(url: str, mlflow: str, model: str, name: str, out: pathlib.Path, *,
           finish: bool = True) -> None:  # fmt: skip
    """A study as a pipeline run leaves it: created for ``model``, searched, finalized."""
    create_study(
        storage_url=url, study_name=name, model_type="ffm", budget=3,
        mlflow_tracking_uri=mlflow, model_name=model,
    )  # fmt: skip
    if finish:
        run_worker(storage_url=url, study_name=name, objective=_quick_objective("ffm"),
                   settings=QUIET, seed=0, progress=False)  # fmt: skip
        finalize_study(storage_url=url, study_name=name, out_dir=out / name)


def _names(url: str) -> set[str]:
    storage = make_storage(url, QUIET)
    try:
        return {s.study_name for s in storage.get_all_studies()}
    finally:
        dispose(storage)


def _crown(client: MlflowClient, model: str, study: str, export: pathlib.Path) -> str:
    """Make a run that logged ``study`` the champion of ``model`` (as register does)."""
    experiment = client.get_experiment_by_name(model)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(model)
    run = client.create_run(experiment_id, tags={TAG_STUDY_NAME: study})
    client.log_artifact(run.info.run_id, str(export), "optuna")
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # RESOURCE_ALREADY_EXISTS: a later champion
        client.create_registered_model(model)
    version = client.create_model_version(model, f"runs:/{run.info.run_id}/optuna", run.info.run_id)
    client.set_registered_model_alias(model, "champion", version.version)
    return str(run.info.run_id)


def test_older_studies_are_exported_then_deleted_and_the_needed_ones_stay(
    storage_url: str, mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    model = f"ctr-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server)
    s = [f"{model}-run{i}" for i in range(7)]  # s[0] oldest
    # A legacy study (created before ctrflow.model_name): its warm start names the model.
    legacy = optuna.create_study(storage=storage_url, study_name=f"{model}-legacy")
    legacy.set_user_attr(ATTR_WARM_START, {"warm": False, "model_name": model})
    legacy.set_user_attr(ATTR_READY, True)
    legacy.optimize(lambda _t: 0.5, n_trials=2)
    # A study whose worker is still running a trial (another pipeline searching).
    _study(storage_url, mlflow_server, model, s[0], tmp_path, finish=False)
    optuna.load_study(study_name=s[0], storage=storage_url).ask()
    for name in s[1:6]:
        _study(storage_url, mlflow_server, model, name, tmp_path)
    # s[4] had a warm start: its copy of the source trials goes with it.
    optuna.create_study(storage=storage_url, study_name=source_study_name(s[4]))
    # This run's study: created, not yet searched (its default trial is WAITING).
    _study(storage_url, mlflow_server, model, s[6], tmp_path, finish=False)
    # Neighbours that must never be touched: another model whose name starts with this one's,
    # and a study that is not ctrflow's at all.
    other = f"{model}-cvr"
    _study(storage_url, mlflow_server, other, f"{other}-run0", tmp_path)
    optuna.create_study(storage=storage_url, study_name=f"{model}-notebook")
    # s[2] is the champion's study; s[1] was logged by its register run (already in MLflow).
    _crown(client, model, s[1], tmp_path / s[1] / "study.db")
    _crown(client, model, s[2], tmp_path / s[2] / "study.db")
    experiment = client.get_experiment_by_name(model)
    assert experiment is not None
    archived_s1 = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_STUDY_NAME}` = '{s[1]}'",
    )[0].info.run_id
    before = _names(storage_url)

    result = retire_studies(
        storage_url=storage_url, model_name=model, keep=2, current_study=s[6],
        tracking_uri=mlflow_server,
    )  # fmt: skip

    assert sorted(result.deleted) == sorted([s[1], s[3], s[4]])
    assert result.deleted[s[1]] == archived_s1  # no second copy of what register logged
    assert result.protected == {
        s[2]: "the champion's study (next warm start)",
        s[0]: "has running or waiting trials",
        f"{model}-legacy": result.protected[f"{model}-legacy"],
    }
    assert result.protected[f"{model}-legacy"].startswith("not finalized and active 0.0 h ago")
    assert result.kept == [s[6], s[5], s[2], s[0], f"{model}-legacy"]
    gone = {s[1], s[3], s[4], source_study_name(s[4])}
    assert _names(storage_url) == before - gone
    # Each deleted study is in MLflow with all its trials, findable by its name tag.
    for name in (s[3], s[4]):
        run = client.get_run(result.deleted[name])
        assert run.data.tags[TAG_STUDY_NAME] == name
        assert run.data.tags["ctrflow.retired_study"] == "true"
        assert run.info.status == "FINISHED"
        db = client.download_artifacts(run.info.run_id, "optuna/study.db", str(tmp_path / name))
        exported = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        assert len(exported.trials) == 3 and exported.best_value is not None

    # Run again: nothing more to do; once idle long enough, the unfinished legacy study goes too.
    again = retire_studies(
        storage_url=storage_url, model_name=model, keep=2, current_study=s[6],
        tracking_uri=mlflow_server,
    )  # fmt: skip
    assert again.deleted == {}
    idle = retire_studies(
        storage_url=storage_url, model_name=model, keep=2, current_study=s[6],
        tracking_uri=mlflow_server, abandoned_after=0.0,
    )  # fmt: skip
    assert list(idle.deleted) == [f"{model}-legacy"]
    assert s[0] in idle.protected  # a running trial keeps it, however old
    # After a rollback to an older champion, its study is the one kept.
    _crown(client, model, s[5], tmp_path / s[5] / "study.db")
    last = retire_studies(
        storage_url=storage_url, model_name=model, keep=1, current_study=s[6],
        tracking_uri=mlflow_server,
    )  # fmt: skip
    assert list(last.deleted) == [s[2]]
    assert last.protected == {s[5]: "the champion's study (next warm start)",
                              s[0]: "has running or waiting trials"}  # fmt: skip
    assert {f"{other}-run0", f"{model}-notebook"} <= _names(storage_url)


def test_keep_zero_or_no_mlflow_deletes_nothing_and_a_negative_keep_is_refused(
    storage_url: str, mlflow_server: str, tmp_path: pathlib.Path
) -> None:
    model = f"ctr-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        _study(storage_url, mlflow_server, model, f"{model}-run{i}", tmp_path)
    before = _names(storage_url)
    kept = retire_studies(storage_url=storage_url, model_name=model, keep=0,
                          current_study=f"{model}-run2", tracking_uri=mlflow_server)  # fmt: skip
    assert kept.deleted == {} and "every study is kept" in kept.note
    blind = retire_studies(storage_url=storage_url, model_name=model, keep=1,
                           current_study=f"{model}-run2", tracking_uri=None)  # fmt: skip
    assert blind.deleted == {} and "champion's study is unknown" in blind.note
    assert _names(storage_url) == before
    with pytest.raises(ValueError, match="keep_studies must be >= 0"):
        retire_studies(storage_url=storage_url, model_name=model, keep=-1,
                       current_study="x", tracking_uri=mlflow_server)  # fmt: skip


def test_the_retire_command_lists_first_with_dry_run_then_deletes(
    storage_url: str,
    mlflow_server: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ctrflow hpo retire`, through the real argument tree: a dry run writes nothing (no
    study deleted, no MLflow run), then the same command deletes what it listed."""
    model = f"ctr-{uuid.uuid4().hex[:8]}"
    s = [f"{model}-run{i}" for i in range(4)]  # s[0] oldest
    for name in s:
        _study(storage_url, mlflow_server, model, name, tmp_path)
    client = MlflowClient(mlflow_server)
    _crown(client, model, s[0], tmp_path / s[0] / "study.db")
    experiment = client.get_experiment_by_name(model)
    assert experiment is not None
    runs_before = len(client.search_runs([experiment.experiment_id]))
    before = _names(storage_url)
    argv = ["hpo", "retire", "--storage", storage_url, "--mlflow-uri", mlflow_server,
            "--model-name", model, "--keep", "1", "--study", s[2]]  # fmt: skip

    capsys.readouterr()  # what making the studies printed
    assert ctrflow_in_process([*argv, "--dry-run"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["would_delete"] == [s[1]] and listed["deleted"] == {}
    assert listed["protected"] == {
        s[2]: "this run's study",
        s[0]: "the champion's study (next warm start)",
    }
    assert _names(storage_url) == before
    assert len(client.search_runs([experiment.experiment_id])) == runs_before

    out = tmp_path / "retired.json"
    assert ctrflow_in_process([*argv, "--out", str(out)]) == 0
    done = json.loads(capsys.readouterr().out)  # only the JSON: MLflow's run links go to stderr
    assert list(done["deleted"]) == [s[1]] and done["would_delete"] == []
    assert json.loads(out.read_text()) == done
    assert _names(storage_url) == before - {s[1]}
    run = client.get_run(done["deleted"][s[1]])
    assert run.data.tags[TAG_STUDY_NAME] == s[1]

    # Bad input: one line naming it, exit 1, nothing touched.
    assert ctrflow_in_process([*argv, "--abandoned-after", "-1"]) == 1
    assert "--abandoned-after must be >= 0" in capsys.readouterr().err
    assert ctrflow_in_process([*argv[:-4], "--keep", "-2"]) == 1
    assert "keep_studies must be >= 0" in capsys.readouterr().err
    assert _names(storage_url) == before - {s[1]}
