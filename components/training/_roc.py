"""The ROC curve of test predictions, as a PNG."""

from __future__ import annotations

import pathlib

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_curve

__all__ = ["roc_plot"]


def roc_plot(
    labels: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    path: pathlib.Path,
    title: str,
) -> pathlib.Path:
    """True against false positive rate, with the diagonal of a random ranking."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod or CI
    import matplotlib.pyplot as plt

    # drop_intermediate keeps only the corners: a few thousand points even for millions of rows.
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random ranking")
        ax.plot(fpr, tpr, label="model")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.legend(loc="lower right")
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
