"""The promotion gate: a challenger becomes champion only when it beats the champion's test
logloss by at least the margin (exactly the margin included), or when there is no champion.

Fast checks that `make mutation` runs against every mutant of `promotion._decide`."""

from __future__ import annotations

import pytest

from ctrflow.components.registry.promotion import _decide, _Score


def _score(champion: float, challenger: float) -> _Score:
    return _Score(champion_logloss=champion, challenger_logloss=challenger, compared_on="test")


def test_without_a_champion_the_challenger_is_promoted() -> None:
    assert _decide(None, None, 0.9, 0.5) == (True, "no champion yet")


def test_a_champion_that_cannot_be_scored_is_kept() -> None:
    assert _decide("3", _Score(problem="it would not load"), 0.1, 0.0) == (
        False,
        "champion kept: it would not load",
    )


def test_a_gain_of_at_least_the_margin_promotes() -> None:
    promoted, reason = _decide("3", _score(0.5, 0.4), 0.4, 0.05)
    assert promoted
    assert reason == (
        "test logloss 0.400000 beats champion version 3's 0.500000 by 0.100000 (margin 0.05)"
    )
    # exactly the margin, with numbers exact in binary floating point
    assert _decide("3", _score(0.75, 0.5), 0.5, 0.25)[0]
    assert not _decide("3", _score(0.75, 0.5), 0.5, 0.25 + 2**-50)[0]


@pytest.mark.parametrize(
    ("champion", "challenger", "margin"),
    [(0.5, 0.5, 0.0), (0.5, 0.6, 0.0), (0.5, 0.45, 0.1), (0.5, 0.6, -0.5)],
)
def test_no_gain_or_less_than_the_margin_keeps_the_champion(
    champion: float, challenger: float, margin: float
) -> None:
    promoted, reason = _decide("7", _score(champion, challenger), challenger, margin)
    assert not promoted
    assert reason == (
        f"champion kept: test logloss {challenger:.6f} is not lower than champion version 7's "
        f"{champion:.6f} by at least the margin {margin} (difference {champion - challenger:+.6f})"
    )


def test_any_gain_promotes_with_a_zero_margin() -> None:
    assert _decide("1", _score(0.5, 0.5 - 2**-40), 0.5, 0.0)[0]


@pytest.mark.parametrize("score", [_Score(champion_logloss=0.5), _Score(challenger_logloss=0.4)])
def test_a_score_without_both_loglosses_or_a_problem_is_a_bug_not_a_decision(
    score: _Score,
) -> None:
    with pytest.raises(AssertionError):
        _decide("3", score, 0.4, 0.0)
