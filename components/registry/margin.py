"""The promotion margin's valid values, checked by the gate and, up front, by the CLI.

A margin is a logloss difference: a finite number >= 0. NaN would never promote a challenger
over a champion (every comparison with it is false) and infinity would never either, both
silently; a negative margin would promote a worse model. Kept apart from ``promotion`` so the
CLI checks it without importing MLflow.
"""

from __future__ import annotations

import math


def check_margin(margin: float) -> None:
    """Raise ValueError unless ``margin`` is a finite number >= 0."""
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"must be a finite number >= 0, got {margin}")
