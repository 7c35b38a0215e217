"""register + promotion gate against a real `mlflow server` (SQLite backend store, and once more
with the PostgreSQL fixture as backend store).

The weekly story, in order, on one registered model: a first run becomes version 1 and champion;
a worse model stays challenger with the reason on its version; a failure injected after the
version exists, or after the alias moved, leaves the champion where it was; a better model becomes
champion with its promotion history on the version tags (and the legacy Production stage
mirrored); next week's create_study finds this run's optuna/study.db through the alias.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import threading
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

import ctrflow
import ffm_ext
from ctrflow.components.data.fingerprint import spec_fingerprint
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.finalize_study import FinalizeResult
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.registry.model_names import name_filter
from ctrflow.components.registry.promotion import (
    _decide,
    _Score,
    download_version,
    promotion_history,
)
from ctrflow.components.registry.register import DATA_WINDOW_ARTIFACT, RegisterResult, register
from ctrflow.components.training.evaluate import logloss
from ctrflow.pipelines.cli import main as cli_main
from ctrflow.pipelines.runs.local import _local_mlflow
from tests.components.registry.conftest import Candidate, train_candidate
from tests.testkit.ctr_data import Week, prepared_week

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _register(
    tracking_uri: str,
    name: str,
    week: Week,
    study: FinalizeResult,
    model: Candidate,
    **options: Any,
) -> RegisterResult:
    return register(
        tracking_uri=tracking_uri,
        model_name=name,
        model_dir=model.model_dir,
        evaluation_dir=model.eval_dir,
        feature_spec_path=week.spec_path,
        study=study.to_dict(),
        study_db=study.study_db,
        test_dir=week.test,
        hpo_plots_dir=pathlib.Path(study.study_db).parent,
        **{"test_raw": week.test_raw, "pipeline_run_id": f"run-{uuid.uuid4().hex[:8]}", **options},
    )


def fail_at(stage: str) -> Callable[[str], None]:
    def hook(event: str) -> None:
        if event == stage:
            raise RuntimeError(f"injected failure at {stage}")

    return hook


def _champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def _tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags)


def _production(client: MlflowClient, name: str) -> list[str]:
    versions = client.search_model_versions(name_filter(name))
    return sorted(str(v.version) for v in versions if v.current_stage == "Production")


def _latest_version(client: MlflowClient, name: str) -> str:
    return str(max(int(v.version) for v in client.search_model_versions(name_filter(name))))


# ---- the weekly story, on both backend stores --------------------------------------------------


@pytest.fixture(scope="module", params=["mlflow_server", "mlflow_server_postgres"])
def registry(request: pytest.FixtureRequest) -> str:
    uri: str = request.getfixturevalue(request.param)
    return uri


@pytest.fixture(scope="module")
def name(registry: str) -> str:
    # An apostrophe: MLflow's filter grammar has no escape, the lookups must quote it with ".
    return f"ctr's-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def first(
    registry: str, name: str, week: Week, study: FinalizeResult, models: dict[str, Candidate]
) -> RegisterResult:
    return _register(
        registry, name, week, study, models["mediocre"], pipeline_run_id="week-1",
        mirror_stage=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def second_report(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("second") / "promotion.md"


@pytest.fixture(scope="module")
def second(
    first: RegisterResult, registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate], second_report: pathlib.Path,
) -> RegisterResult:  # fmt: skip
    return _register(registry, name, week, study, models["worse"], decision_report=second_report)


@pytest.fixture(scope="module")
def failed_early(
    second: RegisterResult, registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate],
) -> str:  # fmt: skip
    with pytest.raises(RuntimeError, match="injected failure at version_created"):
        _register(
            registry, name, week, study, models["better"], on_event=fail_at("version_created")
        )
    return _latest_version(MlflowClient(registry), name)


@pytest.fixture(scope="module")
def failed_late(
    failed_early: str, registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate],
) -> str:  # fmt: skip
    # After the alias moved and the Production stage was mirrored: both must go back.
    with pytest.raises(RuntimeError, match="injected failure at history_written"):
        _register(
            registry, name, week, study, models["better"], on_event=fail_at("history_written"),
            mirror_stage=True,
        )  # fmt: skip
    return _latest_version(MlflowClient(registry), name)


@pytest.fixture(scope="module")
def third(
    failed_late: str, registry: str, name: str, week: Week, study: FinalizeResult,
    models: dict[str, Candidate],
) -> RegisterResult:  # fmt: skip
    return _register(registry, name, week, study, models["better"], mirror_stage=True)


def test_first_run_registers_version_1_as_champion_with_its_run(
    first: RegisterResult, registry: str, name: str, study: FinalizeResult,
    models: dict[str, Candidate], tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    client = MlflowClient(registry)
    assert (first.version, first.promoted, first.champion) == ("1", True, "1")
    assert first.reason == "no champion yet"
    assert _champion(client, name) == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "1"

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == name
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    # The parameters the model was trained with (the defaults here; the study's best ones in
    # the pipeline, which the tag says).
    assert {k: params[k] for k in ("k", "eta", "lam")} == {"k": "4", "eta": "0.2", "lam": "2e-05"}
    assert tags["ctrflow.trained_with_best_params"] == str(study.best_params == {
        "k": 4, "eta": 0.2, "lam": 2e-5
    }).lower()  # fmt: skip
    assert params["model_type"] == "ffm" and params["fixed.max_epochs"] == "2"
    assert (params["train_rows"], params["valid_rows"], params["test_rows"]) == (
        "3500",
        "750",
        "750",
    )
    assert metrics["best_trial_logloss"] == study.best_value
    assert metrics["default_trial_logloss"] == study.default_value
    assert metrics["best_trial_auc"] == study.best_auc
    assert metrics["default_trial_auc"] == study.default_auc
    assert metrics["test_logloss"] == models["mediocre"].evaluation.logloss
    assert metrics["test_auc"] == models["mediocre"].evaluation.auc
    assert tags["ctrflow.search_space_version"] == study.search_space_version
    assert tags["ctrflow.study_name"] == study.study_name == "week-a"
    assert tags["ctrflow.code_version"] == ctrflow.__version__
    assert tags["ctrflow.pipeline_run_id"] == "week-1"
    assert tags["ctrflow.data_fingerprint"].startswith("sha256:")

    def listing(path: str) -> set[str]:
        return {a.path for a in client.list_artifacts(first.run_id, path)}

    assert {"optuna/study.db", "optuna/summary.json", "optuna/plots"} <= listing("optuna")
    assert listing("optuna/plots") == {
        "optuna/plots/optimization_history.png", "optuna/plots/param_importances.png",
        "optuna/plots/report.html",
    }  # fmt: skip
    assert listing("evaluation") == {
        "evaluation/calibration.png", "evaluation/evaluation.json", "evaluation/report.html",
        "evaluation/roc.png",
    }  # fmt: skip
    assert listing("feature_spec") == {"feature_spec/feature_spec.json"}
    db = client.download_artifacts(first.run_id, "optuna/study.db", str(tmp_path))
    exported = optuna.load_study(study_name="week-a", storage=f"sqlite:///{db}")
    assert len(exported.trials) == 12 and exported.best_value == study.best_value

    v1 = _tags(client, name, "1")
    assert v1["ctrflow.promotion.decision"] == "promoted"
    assert v1["ctrflow.champion.previous_version"] == "none"
    assert "ctrflow.champion.since" in v1
    assert client.get_model_version(name, "1").run_id == first.run_id
    assert _production(client, name) == ["1"]


def test_worse_model_stays_challenger_with_the_reason_on_its_version(
    second: RegisterResult, registry: str, name: str, models: dict[str, Candidate],
    second_report: pathlib.Path,
) -> None:  # fmt: skip
    client = MlflowClient(registry)
    assert (second.version, second.promoted, second.champion) == ("2", False, "1")
    assert _champion(client, name) == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
    worse, champion = models["worse"].evaluation.logloss, models["mediocre"].evaluation.logloss
    # The champion was scored anew on this run's test set: the same number evaluate gave it.
    assert second.decision["champion_logloss"] == pytest.approx(champion, rel=1e-9)
    assert second.decision["compared_on"] == "test dataset, same feature spec (750 rows)"
    tags = _tags(client, name, "2")
    assert tags["ctrflow.promotion.decision"] == "kept_champion"
    assert tags["ctrflow.promotion.reason"] == (
        f"champion kept: test logloss {worse:.6f} is not lower than champion version 1's "
        f"{champion:.6f} by at least the margin 0.0 (difference {champion - worse:+.6f})"
    )
    assert float(tags["ctrflow.promotion.champion_test_logloss"]) == pytest.approx(champion)
    assert tags["ctrflow.promotion.champion_version"] == "1"
    assert "ctrflow.champion.since" not in tags
    # The run and the version record the decision with the same word.
    assert client.get_run(second.run_id).data.tags["ctrflow.promotion.decision"] == "kept_champion"
    # AUCs are reported with it, the champion's measured anew on the same rows.
    assert second.decision["champion_auc"] == pytest.approx(models["mediocre"].evaluation.auc)
    assert second.decision["challenger_auc"] == models["worse"].evaluation.auc

    # The Markdown the KFP UI shows says what the tags say.
    markdown = second_report.read_text(encoding="utf-8")
    assert markdown.splitlines()[0] == f"# Promotion of {name} version 2: kept_champion"
    assert f"**Reason:** {tags['ctrflow.promotion.reason']}" in markdown
    assert f"| champion | 1 | {champion:.6f} | {models['mediocre'].evaluation.auc:.4f} |" in (
        markdown
    )
    assert f"| challenger | 2 | {worse:.6f} |" in markdown
    assert f"| MLflow run | `{second.run_id}` (experiment {second.experiment_id}) |" in markdown


def test_failure_after_the_version_exists_leaves_the_champion(
    failed_early: str, registry: str, name: str
) -> None:
    client = MlflowClient(registry)
    assert failed_early == "3"
    assert _champion(client, name) == "1"
    tags = _tags(client, name, "3")
    assert tags["ctrflow.promotion.decision"] == "failed"
    assert tags["ctrflow.promotion.reason"] == "RuntimeError: injected failure at version_created"
    run_id = client.get_model_version(name, "3").run_id
    assert run_id is not None
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"


def test_failure_after_the_alias_moved_puts_it_back(
    failed_late: str, registry: str, name: str
) -> None:
    client = MlflowClient(registry)
    assert failed_late == "4"
    assert _champion(client, name) == "1"
    tags = _tags(client, name, "4")
    assert tags["ctrflow.promotion.decision"] == "failed"
    assert "ctrflow.champion.since" not in tags
    assert "ctrflow.champion.until" not in _tags(client, name, "1")
    assert _production(client, name) == ["1"]


def test_better_model_becomes_champion_with_its_promotion_history(
    third: RegisterResult, registry: str, name: str, models: dict[str, Candidate]
) -> None:
    client = MlflowClient(registry)
    assert (third.version, third.promoted, third.champion) == ("5", True, "5")
    assert _champion(client, name) == "5"
    better, mediocre = models["better"].evaluation.logloss, models["mediocre"].evaluation.logloss
    v5, v1 = _tags(client, name, "5"), _tags(client, name, "1")
    assert v5["ctrflow.promotion.decision"] == "promoted"
    assert v5["ctrflow.promotion.reason"] == (
        f"test logloss {better:.6f} beats champion version 1's {mediocre:.6f} by "
        f"{mediocre - better:.6f} (margin 0.0)"
    )
    assert float(v5["ctrflow.promotion.challenger_test_logloss"]) == pytest.approx(better)
    assert float(v5["ctrflow.promotion.champion_test_logloss"]) == pytest.approx(mediocre)
    assert v5["ctrflow.champion.previous_version"] == "1"
    assert v1["ctrflow.champion.replaced_by"] == "5"
    assert v1["ctrflow.champion.until"] == v5["ctrflow.champion.since"]
    history = promotion_history(client, name)
    assert [(h["version"], h["previous_version"], h["replaced_by"]) for h in history] == [
        ("1", "none", "5"),
        ("5", "1", None),
    ]
    # Mirrored for readers of the deprecated stages.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        production = client.get_latest_versions(name, stages=["Production"])
        stages = {
            v.version: v.current_stage for v in client.search_model_versions(name_filter(name))
        }
    assert [v.version for v in production] == ["5"]
    assert [v for v, stage in stages.items() if stage == "Production"] == ["5"]


def test_registry_history_command_prints_the_champions_in_order(
    third: RegisterResult, registry: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["registry", "history", "--model-name", name, "--mlflow-uri", registry]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert printed.index("version 1: champion") < printed.index("version 5: champion")
    assert "version 5: champion" in printed and ".. now" in printed
    assert "beats champion version 1's" in printed
    assert cli_main([*args, "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["version"], h["replaced_by"], h["decision"]) for h in history] == [
        ("1", "5", "promoted"),
        ("5", None, "promoted"),
    ]
    missing = ["registry", "history", "--model-name", "no-such-model", "--mlflow-uri", registry]
    assert cli_main(missing) == 2  # a usage error: the name given does not exist
    assert "'no-such-model'" in capsys.readouterr().err


def test_next_weeks_create_study_warm_starts_from_this_runs_study_through_the_alias(
    third: RegisterResult, registry: str, name: str, study: FinalizeResult,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    info = create_study(
        storage_url=f"sqlite:///{tmp_path / 'next.db'}", study_name="week-b", model_type="ffm",
        mlflow_tracking_uri=registry, model_name=name, budget=4,
    )  # fmt: skip
    assert info.sampler == "cmaes", info.warm_start
    assert info.warm_start["found_via"] == "alias:champion"
    assert info.warm_start["model_version"] == "5"
    assert info.warm_start["run_id"] == third.run_id
    assert info.warm_start["source_study_name"] == "week-a"
    assert info.warm_start["n_source_trials"] == study.counts["COMPLETE"] == 12


# ---- another feature spec, concurrency (SQLite backend store) -------------------------------


def test_champion_with_another_feature_spec_is_judged_on_prepare_datas_raw_test_rows(
    mlflow_server: str, week: Week, study: FinalizeResult, models: dict[str, Candidate],
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    """Next week, as the pipeline runs it: prepare_data refits the spec on new rows (other
    vocabularies, other feature ids), so the champion can only be scored on prepare_data's raw
    test rows, each model through its own spec."""
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server)
    _register(mlflow_server, name, week, study, models["mediocre"])  # version 1, champion
    # Same planted signal as `week`, other rows (a later "week"), through the real step.
    week_b = prepared_week(tmp_path / "week-b", rows=6000, days=4, seed=0)
    assert week_b.test_raw_path is not None
    assert spec_fingerprint(week_b.spec) != spec_fingerprint(week.spec)
    defaults = dict(get_space("ffm").defaults)
    worse = train_candidate(
        week_b, tmp_path / "worse", "ffm", {**defaults, "eta": 0.02}, max_epochs=1
    )
    better = train_candidate(week_b, tmp_path / "better", "ffm", defaults)
    # The champion on week b's raw test rows, as it is served (its own pyfunc, its own spec).
    raw = pd.read_parquet(week_b.test_raw_path)
    local = download_version(client, mlflow_server, name, "1", str(tmp_path / "champion"))
    served = mlflow.pyfunc.load_model(local).predict(raw[list(week.spec.raw_columns)])
    champion_loss = logloss(raw["label"].to_numpy(), served)
    losses = (worse.evaluation.logloss, champion_loss, better.evaluation.logloss)
    assert losses[0] > losses[1] > losses[2], losses  # the story needs this order: check it
    rows = len(raw)
    assert rows == ffm_ext.Dataset.load(week_b.test).n_rows

    # Without the raw rows the two cannot be compared: the champion stays, and the reason says so.
    blind = _register(mlflow_server, name, week_b, study, worse, test_raw=None)
    assert (blind.version, blind.promoted, blind.champion) == ("2", False, "1")
    assert blind.reason == (
        "champion kept: champion version 1 uses another feature spec and no raw test rows were "
        "given to score both models on"
    )

    # With prepare_data's file the worse model is kept out, on the numbers of the raw rows.
    kept = _register(mlflow_server, name, week_b, study, worse, test_raw=week_b.test_raw_path)
    assert (kept.version, kept.promoted, kept.champion) == ("3", False, "1")
    on_raw = f"raw test rows through each model's feature spec ({rows} rows)"
    assert kept.decision["compared_on"] == on_raw
    assert kept.decision["champion_logloss"] == pytest.approx(champion_loss, rel=1e-12)
    # Through its own spec the challenger scores the raw rows as evaluate scored its Dataset.
    assert kept.decision["challenger_logloss"] == pytest.approx(worse.evaluation.logloss, rel=1e-9)
    assert kept.decision["champion_auc"] == pytest.approx(roc_auc_score(raw["label"], served))
    assert kept.decision["challenger_auc"] == pytest.approx(worse.evaluation.auc, rel=1e-9)
    tags = _tags(client, name, "3")
    assert tags["ctrflow.promotion.decision"] == "kept_champion"
    assert tags["ctrflow.promotion.compared_on"] == on_raw
    assert tags["ctrflow.promotion.reason"] == (
        f"champion kept: test logloss {worse.evaluation.logloss:.6f} is not lower than champion "
        f"version 1's {champion_loss:.6f} by at least the margin 0.0 "
        f"(difference {champion_loss - worse.evaluation.logloss:+.6f})"
    )
    assert _champion(client, name) == "1"

    # The better one is promoted over the champion of the other spec.
    won = _register(mlflow_server, name, week_b, study, better, test_raw=week_b.test_raw_path)
    assert (won.version, won.promoted, won.champion) == ("4", True, "4")
    assert won.decision["compared_on"] == on_raw
    assert _champion(client, name) == "4"
    tags = _tags(client, name, "4")
    assert tags["ctrflow.promotion.reason"] == (
        f"test logloss {better.evaluation.logloss:.6f} beats champion version 1's "
        f"{champion_loss:.6f} by {champion_loss - better.evaluation.logloss:.6f} (margin 0.0)"
    )
    assert [(h["version"], h["replaced_by"]) for h in promotion_history(client, name)] == [
        ("1", "4"),
        ("4", None),
    ]


def test_two_pipelines_promoting_at_once_end_with_the_better_one_as_champion(
    mlflow_server: str, week: Week, study: FinalizeResult, models: dict[str, Candidate]
) -> None:
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    _register(mlflow_server, name, week, study, models["mediocre"])
    # Both score champion version 1 before either takes the lock: a real race for the alias.
    barrier = threading.Barrier(2, timeout=120)
    results: dict[str, RegisterResult] = {}
    errors: list[BaseException] = []

    def pipeline(key: str) -> None:
        scored = 0

        def hook(event: str) -> None:
            nonlocal scored
            if event == "champion_scored":
                scored += 1
                if scored == 1:
                    barrier.wait()

        try:
            results[key] = _register(mlflow_server, name, week, study, models[key], on_event=hook)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pipeline, args=(k,)) for k in ("better", "xgboost")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    client = MlflowClient(mlflow_server)
    best = results["xgboost"]
    assert _champion(client, name) == best.version
    first, late = sorted(results.values(), key=lambda r: r.decision["attempts"])
    # The first to get the lock promoted over version 1; the other found the champion moved,
    # scored the new one and decided against it, not against the stale version 1.
    assert (first.decision["attempts"], late.decision["attempts"]) == (1, 2)
    assert first.promoted and first.decision["previous_champion"] == "1"
    assert late.decision["previous_champion"] == first.version
    assert late.promoted == (late is best)
    history = promotion_history(client, name)
    assert [h["version"] for h in history][-1] == best.version
    lock = f"{name}.ctrflow-promotion-lock"
    assert lock not in {m.name for m in client.search_registered_models()}  # released


# ---- the decision rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("champion", "challenger", "margin", "promoted"),
    [
        (0.50, 0.49, 0.0, True),
        (0.50, 0.50, 0.0, False),  # a tie does not move the champion
        (0.50, 0.51, 0.0, False),
        (0.50, 0.49, 0.01, True),  # the margin as written (0.50 - 0.49 is 0.010000000000000009)
        (0.50, 0.495, 0.01, False),
        # Exactly the margin in binary floating point (dyadic fractions): gain == margin holds
        # bit for bit, so only ``gain >= margin`` promotes (``gain > margin`` would keep).
        (0.75, 0.625, 0.125, True),
        (0.5, 0.25, 0.25, True),
        (0.75, 0.625, math.nextafter(0.125, 1.0), False),  # one ulp above the gain
    ],
)
def test_decision_rule(champion: float, challenger: float, margin: float, promoted: bool) -> None:
    if margin in (0.125, 0.25):
        assert champion - challenger == margin  # the case really is exact
    score = _Score(champion_logloss=champion, challenger_logloss=challenger, compared_on="x")
    decided, reason = _decide("7", score, challenger, margin)
    assert decided is promoted
    assert ("beats champion version 7" in reason) is promoted


def test_no_champion_promotes_and_an_unscorable_champion_stays() -> None:
    assert _decide(None, None, 0.5, 0.0) == (True, "no champion yet")
    assert _decide("3", _Score(problem="it broke"), 0.1, 0.0) == (False, "champion kept: it broke")


def test_kfp_step_function_registers_from_artifact_paths(
    mlflow_server: str, week: Week, study: FinalizeResult, models: dict[str, Candidate],
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from kfp import dsl

    from ctrflow.components.kfp_components import register_component

    # KFP hands over artifact paths: the spec inside prepare_data's directory, the study export
    # under whatever file name the artifact got.
    spec_dir = tmp_path / "feature_spec"
    spec_dir.mkdir()
    (spec_dir / "feature_spec.json").write_bytes(week.spec_path.read_bytes())
    db = tmp_path / "study_db"
    db.write_bytes(pathlib.Path(study.study_db).read_bytes())
    raw = tmp_path / "test_raw"  # prepare_data's artifact: a directory with test_raw.parquet
    raw.mkdir()
    week.test_raw.to_parquet(raw / "test_raw.parquet")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    uris = ["gs://logs/2026/11/30/*.parquet", "gs://logs/2026/12/01/*.parquet"]
    window = {
        "data_uri": "gs://logs/{date-2d..date:%Y/%m/%d}/*.parquet", "data_date": "2026-12-02",
        "data_window_start": "2026-11-30", "data_window_end": "2026-12-02", "data_uri_count": "2",
    }  # fmt: skip
    out = register_component(
        model_name=name, pipeline_run_id="kfp-run-1", study_summary=study.to_dict(), margin=0.0,
        mirror_stage=False, model=dsl.Model(uri=str(models["better"].model_dir)),
        evaluation=dsl.Artifact(uri=str(models["better"].eval_dir)),
        feature_spec=dsl.Artifact(uri=str(spec_dir)), study_db=dsl.Artifact(uri=str(db)),
        plots=dsl.Artifact(uri=str(pathlib.Path(study.study_db).parent)),
        test=dsl.Dataset(uri=str(week.test)), test_raw=dsl.Dataset(uri=str(raw)),
        data_window=window, data_uris=uris,
        promotion_report=dsl.Markdown(uri=str(tmp_path / "promotion_report")),
    )  # fmt: skip
    assert (out.model_version, out.promoted, out.reason) == ("1", True, "no champion yet")
    report = (tmp_path / "promotion_report").read_text(encoding="utf-8")
    assert report.startswith(f"# Promotion of {name} version 1: promoted\n")
    # A link to the run on the tracking server, which the KFP UI renders.
    assert f"]({mlflow_server}/#/experiments/" in report
    client = MlflowClient(mlflow_server)
    run_id = client.get_model_version(name, "1").run_id
    assert run_id is not None
    run = client.get_run(run_id)
    assert run.data.tags["ctrflow.pipeline_run_id"] == "kfp-run-1"
    # The week's data (data-window's outputs) as params, every URI in an artifact.
    assert {k: v for k, v in run.data.params.items() if k.startswith("data_")} == window
    recorded = client.download_artifacts(run.info.run_id, DATA_WINDOW_ARTIFACT, str(tmp_path))
    assert json.loads(pathlib.Path(recorded).read_text()) == {**window, "data_uris": uris}
    assert "optuna/study.db" in {a.path for a in client.list_artifacts(run.info.run_id, "optuna")}

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(RuntimeError, match="MLFLOW_TRACKING_URI is not set"):
        register_component(
            model_name=name, pipeline_run_id="x", study_summary=study.to_dict(), margin=0.0,
            mirror_stage=False, model=dsl.Model(uri=str(models["better"].model_dir)),
            evaluation=dsl.Artifact(uri=str(models["better"].eval_dir)),
            feature_spec=dsl.Artifact(uri=str(spec_dir)), study_db=dsl.Artifact(uri=str(db)),
            plots=dsl.Artifact(uri=str(tmp_path)), test=dsl.Dataset(uri=str(week.test)),
            data_window=window, data_uris=uris,
            promotion_report=dsl.Markdown(uri=str(tmp_path / "unwritten")),
        )  # fmt: skip
    assert not (tmp_path / "unwritten").exists()


def test_bad_inputs_fail_before_anything_is_written(
    mlflow_server: str, week: Week, study: FinalizeResult, models: dict[str, Candidate],
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    missing = dataclasses.replace(study, study_db=str(tmp_path / "missing.db"))
    with pytest.raises(FileNotFoundError, match="study export .*missing.db does not exist"):
        _register(mlflow_server, name, week, missing, models["better"])
    with pytest.raises(ValueError, match="model name 'a/b' contains '/': MLflow does not"):
        _register(mlflow_server, "a/b", week, study, models["better"])
    no_version = dataclasses.replace(study, search_space_version="")
    with pytest.raises(ValueError, match="the study summary has no search_space_version"):
        _register(mlflow_server, name, week, no_version, models["better"])
    with pytest.raises(ValueError, match="data window param 'seed' would replace the model"):
        _register(mlflow_server, name, week, study, models["better"], data_window={"seed": "1"})
    with pytest.raises(ValueError, match="data window param 'data_uri_count' is int, not text"):
        _register(
            mlflow_server, name, week, study, models["better"], data_window={"data_uri_count": 3}
        )
    with pytest.raises(ValueError, match="raw test rows must be .parquet, .csv or .tsv"):
        (tmp_path / "rows.xlsx").write_text("x")
        _register(
            mlflow_server, name, week, study, models["better"], test_raw=tmp_path / "rows.xlsx"
        )
    assert MlflowClient(mlflow_server).get_experiment_by_name(name) is None


def test_register_on_a_plain_sqlite_store_as_ctrflow_run_uses_it(
    week: Week, study: FinalizeResult, models: dict[str, Candidate], tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No server: the step's writes and its heartbeat thread's share one SQLite file. The store
    and the experiment are made as `ctrflow run` makes them, artifacts under the work dir: the
    step writes nothing in the directory it runs in (an SQLite store alone puts them in
    ./mlruns there, which this test left in the checkout)."""
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    uri, _ = _local_mlflow(tmp_path / "work", name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _register(uri, name, week, study, models["mediocre"])
    # Beats every 0.25 s (orphan_after / 4) while the step runs, as often as its own writes.
    won = _register(uri, name, week, study, models["better"], orphan_after=1.0)
    assert (won.version, won.promoted, won.champion) == ("2", True, "2")
    client = MlflowClient(uri)
    run = client.get_run(won.run_id)
    assert run.info.status == "FINISHED"
    assert float(run.data.tags["ctrflow.register.heartbeat"]) > run.info.start_time / 1000
    assert [h["version"] for h in promotion_history(client, name)] == ["1", "2"]
    assert list(cwd.iterdir()) == []
    assert list((tmp_path / "work" / "mlartifacts" / name).iterdir())
