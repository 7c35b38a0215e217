"""train_final and evaluate on prepared synthetic Criteo data (no MLflow here).

The final model must be the model its trial measured: same code, same seed -> the same
validation logloss as the HPO objective gives for the same parameters. evaluate's numbers are
checked against scikit-learn and against the predictions themselves.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import optuna
import pytest
import xgboost as xgb
from kfp import dsl
from sklearn.metrics import log_loss, roc_auc_score

import ffm_ext
from ctrflow.components.hpo.objectives import make_objective
from ctrflow.components.hpo.search_space import Scalar, get_space
from ctrflow.components.kfp_components import evaluate_component, train_final_component
from ctrflow.components.training._calibration import calibration_bins, expected_calibration_error
from ctrflow.components.training.evaluate import EvalResult, evaluate, score
from ctrflow.components.training.models import xgb_matrices, xgb_train
from ctrflow.components.training.train_final import TrainResult, train_final
from ctrflow.components.training.trained_model import load_trained_model
from tests.testkit.ctr_data import Week, make_week
from tests.testkit.reports import read_page

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Week:
    return make_week(tmp_path_factory.mktemp("week"), rows=4000, seed=0)


def _trial_value(
    week: Week, model_type: str, params: dict[str, Scalar]
) -> optuna.trial.FrozenTrial:
    objective = make_objective(
        space=get_space(model_type), train_dir=week.train, valid_dir=week.valid, seed=0
    )
    study = optuna.create_study(direction="minimize")
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    return study.trials[0]


@pytest.mark.parametrize("model_type", ["ffm", "xgboost"])
def test_final_model_reproduces_the_trial_that_chose_its_parameters(
    week: Week, model_type: str, tmp_path: pathlib.Path
) -> None:
    params = dict(get_space(model_type).defaults)
    trial = _trial_value(week, model_type, params)
    result = train_final(
        model_type=model_type, params=params, train_dir=week.train, valid_dir=week.valid,
        output_dir=tmp_path, seed=0,
    )  # fmt: skip
    assert result.valid_logloss == pytest.approx(trial.value, rel=1e-6)
    assert result.valid_auc == pytest.approx(trial.user_attrs["auc"], rel=1e-6)
    key = "best_epoch" if model_type == "ffm" else "best_rounds"
    assert result.best_iteration == trial.user_attrs[key]
    assert result.best_iteration <= result.iterations_run
    assert (result.train_rows, result.valid_rows) == (2800, 600)
    assert result.data_fingerprint.startswith("sha256:")
    # The saved model predicts what the summary says about the validation set.
    loaded = load_trained_model(tmp_path)
    valid = ffm_ext.Dataset.load(str(week.valid))
    scores = loaded.predict(valid)
    assert log_loss(np.asarray(valid.labels), scores) == pytest.approx(result.valid_logloss, 1e-5)
    assert TrainResult.load(tmp_path) == result


def test_xgboost_file_holds_only_the_trees_up_to_the_best_round(
    week: Week, tmp_path: pathlib.Path
) -> None:
    space = get_space("xgboost")
    params = dict(space.defaults)
    result = train_final(
        model_type="xgboost", params=params, train_dir=week.train, valid_dir=week.valid,
        output_dir=tmp_path,
    )  # fmt: skip
    assert result.stopped_early and result.best_iteration < result.iterations_run
    saved = xgb.Booster(model_file=result.model_path)
    assert saved.num_boosted_rounds() == result.best_iteration
    # The same training, unsliced: its best-iteration predictions are the saved model's.
    train, valid = ffm_ext.Dataset.load(str(week.train)), ffm_ext.Dataset.load(str(week.valid))
    dtrain, dvalid = xgb_matrices(train, valid)
    full = xgb_train(params, space.fixed, dtrain, dvalid, n_threads=1, seed=0)
    assert full.num_boosted_rounds() == result.iterations_run
    expected = full.predict(dvalid, iteration_range=(0, result.best_iteration))
    np.testing.assert_array_equal(load_trained_model(tmp_path).predict(valid), expected)


def test_integer_parameters_that_arrive_as_floats_train_as_integers(
    week: Week, tmp_path: pathlib.Path
) -> None:
    """What the pipeline's train-final step gets from finalize-study: numbers as doubles."""
    space = get_space("xgboost")
    as_doubles = {name: float(value) for name, value in space.defaults.items()}
    result = train_final(
        model_type="xgboost", params=as_doubles, train_dir=week.train, valid_dir=week.valid,
        output_dir=tmp_path,
    )  # fmt: skip
    assert result.params == space.defaults
    assert type(result.params["max_depth"]) is int
    assert TrainResult.load(tmp_path).params == space.defaults


def test_evaluate_metrics_match_scikit_learn_and_the_predictions(
    week: Week, tmp_path: pathlib.Path
) -> None:
    train_final(
        model_type="ffm", params=get_space("ffm").defaults, train_dir=week.train,
        valid_dir=week.valid, output_dir=tmp_path / "model",
    )  # fmt: skip
    result = evaluate(model_path=tmp_path / "model", test_dir=week.test, output_dir=tmp_path / "e")
    test = ffm_ext.Dataset.load(str(week.test))
    labels = np.asarray(test.labels)
    scores = load_trained_model(tmp_path / "model").predict(test)
    assert result.rows == test.n_rows == 600
    assert result.positives == int(labels.sum())
    assert result.logloss == pytest.approx(log_loss(labels, scores), rel=1e-9)
    assert result.auc == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert result.observed_rate == pytest.approx(labels.mean())
    assert result.mean_prediction == pytest.approx(scores.mean())
    assert result.calibration_ratio == pytest.approx(scores.mean() / labels.mean())
    assert sum(b["rows"] for b in result.bins) == 600 and len(result.bins) == 10
    lows = [b["low"] for b in result.bins]
    assert lows == sorted(lows)
    assert 0.5 < result.auc < 1.0  # the planted signal is learnable
    plot = pathlib.Path(result.calibration_plot)
    assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 5000
    assert EvalResult.load(tmp_path / "e") == result
    assert result.metrics()["test_logloss"] == result.logloss
    assert result.test_fingerprint.startswith("sha256:")

    # The page the KFP UI shows: both plots inline, the numbers in its tables.
    page = read_page(result.report)
    assert page.title == "Test evaluation: ffm"
    assert page.images["Calibration (reliability curve)"] == plot.read_bytes()
    assert page.images["ROC curve"] == pathlib.Path(result.roc_plot).read_bytes()
    assert len(page.images["ROC curve"]) > 5000
    assert f"{result.logloss:.6g}" in page.cells and f"{result.auc:.6g}" in page.cells
    assert page.cells.count(f"{result.bins[0]['rows']}") >= 1 and len(page.cells) > 60


def test_calibration_bins_by_hand() -> None:
    labels = np.array([0, 0, 1, 0, 1, 1], dtype=np.float64)
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.6, 0.7])
    bins = calibration_bins(labels, scores, 3)
    assert [(b.rows, b.low, b.high) for b in bins] == [(2, 0.1, 0.2), (2, 0.3, 0.6), (2, 0.7, 0.9)]
    assert [b.mean_prediction for b in bins] == pytest.approx([0.15, 0.45, 0.8])
    assert [b.observed_rate for b in bins] == pytest.approx([0.5, 0.5, 0.5])
    assert expected_calibration_error(bins) == pytest.approx((0.35 + 0.05 + 0.3) / 3)
    # More bins than rows: one row per bin.
    assert len(calibration_bins(labels, scores, 50)) == 6


def test_score_rejects_non_finite_predictions_and_single_class_labels() -> None:
    with pytest.raises(ValueError, match="1 predictions are not finite"):
        score(np.array([0.0, 1.0]), np.array([0.5, np.nan]), model_type="ffm")
    with pytest.raises(ValueError, match="AUC needs both labels; all 2 test rows have label 1"):
        score(np.array([1.0, 1.0]), np.array([0.5, 0.4]), model_type="ffm")
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        score(np.array([1.0, 2.0]), np.array([0.5, 0.4]), model_type="ffm")


def test_train_final_rejects_wrong_parameter_names_before_training(
    week: Week, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ValueError, match=r"unknown \['kk'\], missing \['k'\]"):
        train_final(
            model_type="ffm", params={"kk": 4, "eta": 0.2, "lam": 2e-5}, train_dir=week.train,
            valid_dir=week.valid, output_dir=tmp_path,
        )  # fmt: skip
    with pytest.raises(ValueError, match="unknown model type 'lgbm'"):
        train_final(
            model_type="lgbm", params={}, train_dir=week.train, valid_dir=week.valid,
            output_dir=tmp_path,
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="validation dataset directory .*nowhere"):
        train_final(
            model_type="ffm", params=get_space("ffm").defaults, train_dir=week.train,
            valid_dir=tmp_path / "nowhere", output_dir=tmp_path,
        )  # fmt: skip
    assert not list(tmp_path.iterdir())  # nothing written


def test_evaluate_errors(week: Week, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="exactly one of model_path and model"):
        evaluate(test_dir=week.test, output_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"expected exactly one of model.ffm, model.json"):
        evaluate(model_path=tmp_path, test_dir=week.test, output_dir=tmp_path / "e")
    bad = tmp_path / "model.ffm"
    bad.write_bytes(b"not a model")
    with pytest.raises(ffm_ext.FFMModelFileError, match="not a ctrflow FFM model file"):
        evaluate(model_path=bad, test_dir=week.test, output_dir=tmp_path / "e")


def test_kfp_step_functions_train_and_evaluate(week: Week, tmp_path: pathlib.Path) -> None:
    model = dsl.Model(uri=str(tmp_path / "model"))
    train_metrics = dsl.Metrics(uri=str(tmp_path / "m1"))
    train_final_component(
        model_type="ffm", best_params=dict(get_space("ffm").defaults), n_threads=1, seed=0,
        train=dsl.Dataset(uri=str(week.train)), valid=dsl.Dataset(uri=str(week.valid)),
        model=model, metrics=train_metrics,
    )  # fmt: skip
    saved = TrainResult.load(tmp_path / "model")
    assert model.metadata["best_iteration"] == saved.best_iteration
    assert train_metrics.metadata["final_valid_logloss"] == saved.valid_logloss
    evaluation = dsl.Artifact(uri=str(tmp_path / "evaluation"))
    eval_metrics = dsl.Metrics(uri=str(tmp_path / "m2"))
    report = dsl.HTML(uri=str(tmp_path / "evaluation_report"))  # KFP makes the parent
    out = evaluate_component(
        test=dsl.Dataset(uri=str(week.test)), model=model, evaluation=evaluation,
        metrics=eval_metrics, evaluation_report=report,
    )  # fmt: skip
    stored = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert out.test_logloss == stored["logloss"] == eval_metrics.metadata["test_logloss"]
    assert out.test_auc == stored["auc"]
    assert (tmp_path / "evaluation" / "calibration.png").read_bytes()[:8] == PNG_MAGIC
    assert read_page(report.path).headings[0] == "Test evaluation: ffm"


def _part_of(test_dir: pathlib.Path, out: pathlib.Path, rows: int, label: float | None) -> str:
    """The first `rows` rows of a Dataset (labels all `label` if given), saved under `out`."""
    test = ffm_ext.Dataset.load(str(test_dir))
    m = test.n_fields
    labels = np.asarray(test.labels)[:rows].copy()
    if label is not None:
        labels[:] = label
    ffm_ext.Dataset(
        np.arange(rows + 1, dtype=np.int64) * m,
        np.asarray(test.fields)[: rows * m],
        np.asarray(test.features)[: rows * m],
        np.asarray(test.values)[: rows * m],
        labels.astype(np.float32),
        n_features=test.n_features,
        n_fields=m,
    ).save(str(out))
    return str(out)


@pytest.mark.parametrize(
    ("rows", "label", "message"),
    [
        (3, None, r"has 3 rows, fewer than 100: too few to judge a model by"),
        (99, None, r"has 99 rows, fewer than 100"),
        (600, 0.0, r"needs both positive and negative labels"),
        (600, 1.0, r"needs both positive and negative labels"),
    ],
)
def test_evaluate_refuses_a_degenerate_test_set(
    week: Week, tmp_path: pathlib.Path, rows: int, label: float | None, message: str
) -> None:
    # Defence in depth behind prepare_data's split check: a test set like this scored AUC 0.0
    # on 3 rows and made the model champion; evaluate must fail so register never runs.
    train_final(
        model_type="ffm", params=get_space("ffm").defaults, train_dir=week.train,
        valid_dir=week.valid, output_dir=tmp_path / "model",
    )  # fmt: skip
    small = _part_of(week.test, tmp_path / "small", rows, label)
    with pytest.raises(ValueError, match=message):
        evaluate(model_path=tmp_path / "model", test_dir=small, output_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()
    # The same rows pass when the caller lowers the minimum on purpose (both labels present).
    if label is None:
        result = evaluate(
            model_path=tmp_path / "model", test_dir=small, output_dir=tmp_path / "e", min_rows=3
        )
        assert result.rows == rows
