"""Calibration of predicted click probabilities: per-bin predicted vs observed rate, and the plot.

Bins hold equal numbers of rows (quantiles of the predictions): CTR predictions crowd near 0, so
equal-width bins would leave almost every row in the first bin.
"""

from __future__ import annotations

import pathlib
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from ctrflow.components.training._figure import diagonal_figure

__all__ = ["CalibrationBin", "calibration_bins", "expected_calibration_error", "reliability_plot"]


@dataclass(frozen=True)
class CalibrationBin:
    low: float  # smallest prediction in the bin
    high: float  # largest prediction in the bin
    rows: int
    mean_prediction: float
    observed_rate: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def calibration_bins(
    labels: npt.NDArray[np.floating], scores: npt.NDArray[np.floating], n_bins: int
) -> list[CalibrationBin]:
    """Up to ``n_bins`` bins of (about) equal row counts, in order of prediction."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    order = np.argsort(scores, kind="stable")
    bins = []
    for part in np.array_split(order, min(n_bins, order.size)):
        s, y = scores[part], labels[part]
        bins.append(
            CalibrationBin(
                low=float(s.min()),
                high=float(s.max()),
                rows=int(part.size),
                mean_prediction=float(s.mean()),
                observed_rate=float(y.mean()),
            )
        )
    return bins


def expected_calibration_error(bins: list[CalibrationBin]) -> float:
    """Row-weighted mean of |mean prediction - observed rate| over the bins."""
    total = sum(b.rows for b in bins)
    return float(sum(b.rows * abs(b.mean_prediction - b.observed_rate) for b in bins) / total)


def reliability_plot(bins: list[CalibrationBin], path: pathlib.Path, title: str) -> pathlib.Path:
    """Observed rate against mean prediction per bin, with the diagonal of perfect calibration."""
    predicted = [b.mean_prediction for b in bins]
    observed = [b.observed_rate for b in bins]
    top = max(*predicted, *observed) * 1.05 or 1.0
    with diagonal_figure(
        path,
        title,
        top=top,
        diagonal="perfectly calibrated",
        xlabel="mean predicted click probability",
        ylabel="observed click rate",
        legend="upper left",
    ) as ax:
        ax.plot(predicted, observed, marker="o", label="model (equal-count bins)")
    return path
