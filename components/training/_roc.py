"""The ROC curve of test predictions, as a PNG."""

from __future__ import annotations

import pathlib

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_curve

from ctrflow.components.training._figure import diagonal_figure

__all__ = ["roc_plot"]


def roc_plot(
    labels: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    path: pathlib.Path,
    title: str,
) -> pathlib.Path:
    """True against false positive rate, with the diagonal of a random ranking."""
    # drop_intermediate keeps only the corners: a few thousand points even for millions of rows.
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    with diagonal_figure(
        path,
        title,
        top=1.0,
        diagonal="random ranking",
        xlabel="false positive rate",
        ylabel="true positive rate",
        legend="lower right",
    ) as ax:
        ax.plot(fpr, tpr, label="model")
    return path
