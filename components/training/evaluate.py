"""evaluate step: the trained model on the held-out test set.

Metrics: logloss, AUC, calibration (mean prediction vs observed click rate overall and per
equal-count bin, their ratio, the expected calibration error) and row counts; in ``output_dir`` a
reliability plot (``calibration.png``), the ROC curve (``roc.png``), ``evaluation.json`` and
``report.html``, all of it on one self-contained page (the KFP UI shows it as an HTML artifact).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from ctrflow.components.data.fingerprint import dataset_fingerprint
from ctrflow.components.names import MIN_SPLIT_ROWS
from ctrflow.components.training._calibration import (
    CalibrationBin,
    calibration_bins,
    expected_calibration_error,
    reliability_plot,
)
from ctrflow.components.training._evaluation_report import write_evaluation_report
from ctrflow.components.training._roc import roc_plot
from ctrflow.components.training.models import load_dataset
from ctrflow.components.training.trained_model import TrainedModel, load_trained_model

__all__ = ["EVALUATION_FILE", "REPORT_FILE", "EvalResult", "evaluate", "logloss"]

_log = logging.getLogger(__name__)
EVALUATION_FILE = "evaluation.json"
PLOT_FILE = "calibration.png"
ROC_FILE = "roc.png"
REPORT_FILE = "report.html"
_EPS = 1e-15


def logloss(labels: npt.NDArray[np.floating], scores: npt.NDArray[np.floating]) -> float:
    """Mean logistic loss; probabilities clipped to [1e-15, 1 - 1e-15] as scikit-learn does."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class EvalResult:
    model_type: str
    rows: int
    positives: int
    logloss: float
    auc: float
    mean_prediction: float
    observed_rate: float
    calibration_ratio: float  # mean prediction / observed rate; 1 is calibrated on average
    expected_calibration_error: float
    bins: list[dict[str, Any]] = field(default_factory=list)
    calibration_plot: str = ""
    roc_plot: str = ""
    report: str = ""  # report.html: the numbers and both plots on one page
    test_fingerprint: str = ""  # of the test Dataset files (``data.fingerprint``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat numbers for MLflow/KFP metrics."""
        names = ("logloss", "auc", "mean_prediction", "observed_rate", "calibration_ratio")
        out = {f"{prefix}{n}": float(getattr(self, n)) for n in names}
        out[f"{prefix}ece"] = self.expected_calibration_error
        out[f"{prefix}rows"] = float(self.rows)
        return out

    @classmethod
    def load(cls, path: str | pathlib.Path) -> EvalResult:
        """From ``evaluation.json`` (or the directory holding it)."""
        file = pathlib.Path(path)
        if file.is_dir():
            file = file / EVALUATION_FILE
        return cls(**json.loads(file.read_text(encoding="utf-8")))


def score(
    labels: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    *,
    model_type: str,
    n_bins: int = 10,
) -> EvalResult:
    """Metrics of predictions ``scores`` against 0/1 ``labels`` (no files written)."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.size == 0:
        raise ValueError(f"{s.size} predictions for {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} predictions are not finite")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if y.min() == y.max():
        # scikit-learn only warns and returns NaN here; a NaN AUC must not reach the registry.
        raise ValueError(f"AUC needs both labels; all {y.size} test rows have label {y[0]:g}")
    bins = calibration_bins(y, s, n_bins)
    observed = float(y.mean())
    mean_prediction = float(s.mean())
    return EvalResult(
        model_type=model_type,
        rows=int(y.size),
        positives=int(y.sum()),
        logloss=logloss(y, s),
        auc=float(roc_auc_score(y, s)),
        mean_prediction=mean_prediction,
        observed_rate=observed,
        calibration_ratio=mean_prediction / observed,
        expected_calibration_error=expected_calibration_error(bins),
        bins=[b.to_dict() for b in bins],
    )


def evaluate(
    *,
    test_dir: str | pathlib.Path,
    output_dir: str | pathlib.Path,
    model_path: str | pathlib.Path | None = None,
    model: TrainedModel | None = None,
    n_bins: int = 10,
    min_rows: int = MIN_SPLIT_ROWS,
) -> EvalResult:
    """Evaluate the model (a file/directory from train_final, or an in-memory one) on the
    test Dataset; writes evaluation.json, calibration.png, roc.png and report.html under
    ``output_dir``.

    Refuses (ValueError, nothing written) a test set of fewer than ``min_rows`` rows or of one
    label: its metrics cannot rank models, and register would judge the champion by them."""
    if (model_path is None) == (model is None):
        raise ValueError("give exactly one of model_path and model")
    if model is None:
        assert model_path is not None
        model = load_trained_model(model_path)
    test = load_dataset(test_dir, "test")  # both labels present, or a clear error
    if test.n_rows < min_rows:
        raise ValueError(
            f"test dataset {test_dir} has {test.n_rows:,} rows, fewer than {min_rows:,}: too few "
            "to judge a model by, so it is not evaluated (nor registered)"
        )
    labels, scores = np.asarray(test.labels), model.predict(test)
    result = score(labels, scores, model_type=model.model_type, n_bins=n_bins)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ece = result.expected_calibration_error
    title = f"{model.model_type}, {result.rows:,} test rows, ECE {ece:.4f}"
    plot = reliability_plot([CalibrationBin(**b) for b in result.bins], out / PLOT_FILE, title)
    roc = roc_plot(labels, scores, out / ROC_FILE, f"{model.model_type}, AUC {result.auc:.4f}")
    result = dataclasses.replace(
        result,
        calibration_plot=str(plot),
        roc_plot=str(roc),
        report=str(out / REPORT_FILE),
        test_fingerprint=dataset_fingerprint({"test": test_dir}),
    )
    write_evaluation_report(result, out / REPORT_FILE)
    (out / EVALUATION_FILE).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    _log.info(
        "test: %d rows, logloss %.5f, AUC %.4f, mean prediction %.4f vs observed %.4f",
        result.rows, result.logloss, result.auc, result.mean_prediction, result.observed_rate,
    )  # fmt: skip
    return result
