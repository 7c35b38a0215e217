"""The square figure with a dashed diagonal that the evaluation's plots share, saved as a PNG."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["diagonal_figure"]

LegendCorner = Literal["upper left", "lower right"]  # the corners the curves leave free


@contextmanager
def diagonal_figure(
    path: pathlib.Path,
    title: str,
    *,
    top: float,
    diagonal: str,
    xlabel: str,
    ylabel: str,
    legend: LegendCorner,
) -> Iterator[Axes]:
    """Axes from 0 to `top` on both sides, the diagonal labelled `diagonal`; the caller draws
    its curve on them, and the figure is saved to `path` when the block ends without error."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod or CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        ax.plot([0, top], [0, top], linestyle="--", color="grey", label=diagonal)
        yield ax
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc=legend)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
