"""The registry tests' shared data: one small week, a finished study on it, and four trained
candidates whose test loglosses are in a known order (made once for the package)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import pytest

from ctrflow.components.hpo.finalize_study import FinalizeResult
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.training.evaluate import EvalResult, evaluate
from ctrflow.components.training.train_final import train_final
from tests.testkit.ctr_data import Week, make_week, run_study


@dataclasses.dataclass(frozen=True)
class Candidate:
    model_dir: pathlib.Path
    eval_dir: pathlib.Path
    evaluation: EvalResult


def train_candidate(
    week: Week, out: pathlib.Path, model_type: str, params: dict[str, Any], **fixed: Any
) -> Candidate:
    space = get_space(model_type)
    space = dataclasses.replace(space, fixed={**space.fixed, **fixed})
    train_final(
        model_type=model_type, params=params, train_dir=week.train, valid_dir=week.valid,
        output_dir=out / "model", space=space,
    )  # fmt: skip
    result = evaluate(model_path=out / "model", test_dir=week.test, output_dir=out / "eval")
    return Candidate(out / "model", out / "eval", result)


@pytest.fixture(scope="package")
def week(tmp_path_factory: pytest.TempPathFactory) -> Week:
    return make_week(tmp_path_factory.mktemp("week-a"), rows=5000, seed=0)


@pytest.fixture(scope="package")
def study(week: Week) -> FinalizeResult:
    return run_study(week, model_type="ffm", name="week-a", budget=12)


@pytest.fixture(scope="package")
def models(week: Week, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Candidate]:
    base = tmp_path_factory.mktemp("models")
    defaults = dict(get_space("ffm").defaults)
    found = {
        "mediocre": train_candidate(week, base / "mediocre", "ffm", defaults, max_epochs=2),
        "worse": train_candidate(
            week, base / "worse", "ffm", {**defaults, "eta": 0.02}, max_epochs=1
        ),
        "better": train_candidate(week, base / "better", "ffm", defaults),
        "xgboost": train_candidate(
            week, base / "xgboost", "xgboost", dict(get_space("xgboost").defaults)
        ),
    }
    loss = {name: c.evaluation.logloss for name, c in found.items()}
    # The story needs this order; check it rather than assume it.
    assert loss["worse"] > loss["mediocre"] > loss["better"] > loss["xgboost"], loss
    return found
