"""The promotion margin: a finite number >= 0, refused otherwise by the gate itself (the
cluster path reaches it without the CLI's check)."""

from __future__ import annotations

import math

import pytest

from ctrflow.components.registry.margin import check_margin
from ctrflow.components.registry.promotion import promote


@pytest.mark.parametrize("margin", [0.0, 0.001, 1.0])
def test_finite_non_negative_margins_are_accepted(margin: float) -> None:
    check_margin(margin)


@pytest.mark.parametrize("margin", [math.nan, math.inf, -math.inf, -0.001])
def test_the_gate_refuses_a_margin_that_is_not_finite_and_non_negative(margin: float) -> None:
    # NaN and +inf compare false with every gain, so before this check they silently kept
    # every champion forever. The refusal comes before the registry is touched (no client).
    with pytest.raises(ValueError, match=rf"^margin must be a finite number >= 0, got {margin}$"):
        promote(
            client=None,
            tracking_uri="",
            model_name="m",
            version="1",
            challenger=None,  # type: ignore[arg-type]
            challenger_logloss=0.5,
            test=None,  # type: ignore[arg-type]
            margin=margin,
        )
