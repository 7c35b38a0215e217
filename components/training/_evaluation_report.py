"""evaluate's report.html: the test metrics, the reliability plot with its bins, the ROC curve."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from ctrflow.components.html_report import Section, write_html

if TYPE_CHECKING:
    from ctrflow.components.training.evaluate import EvalResult

__all__ = ["write_evaluation_report"]


def write_evaluation_report(result: EvalResult, path: pathlib.Path) -> pathlib.Path:
    metrics: list[tuple[object, ...]] = [
        ("metric", "value"),
        ("test rows", result.rows),
        ("clicks (label 1)", result.positives),
        ("logloss", result.logloss),
        ("AUC", result.auc),
        ("mean predicted CTR", result.mean_prediction),
        ("observed CTR", result.observed_rate),
        ("calibration ratio (predicted / observed)", result.calibration_ratio),
        ("expected calibration error", result.expected_calibration_error),
    ]
    bins: list[tuple[object, ...]] = [
        ("bin", "predictions from", "to", "rows", "mean prediction", "observed rate")
    ]
    bins += [
        (i + 1, b["low"], b["high"], b["rows"], b["mean_prediction"], b["observed_rate"])
        for i, b in enumerate(result.bins)
    ]
    sections = [
        Section("Test metrics", table=metrics),
        Section(
            "Calibration (reliability curve)",
            image=result.calibration_plot,
            notes=["Equal-count bins of the predictions; on the diagonal is calibrated."],
        ),
        Section("Calibration bins", table=bins),
        Section("ROC curve", image=result.roc_plot),
    ]
    return write_html(path, f"Test evaluation: {result.model_type}", sections)
