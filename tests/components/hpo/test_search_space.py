"""Search spaces: one definition per model type; a version that moves with each change."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from ctrflow.components.hpo.search_space import (
    MODEL_TYPES,
    Param,
    SearchSpace,
    default_params,
    get_space,
    space_version,
    suggest,
)


def _with_param(space: SearchSpace, name: str, **change: Any) -> SearchSpace:
    params = tuple(dataclasses.replace(p, **change) if p.name == name else p for p in space.params)
    return dataclasses.replace(space, params=params)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_version_is_stable_and_survives_a_json_round_trip(model_type: str) -> None:
    space = get_space(model_type)
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space
    assert again.version() == space.version() == space_version(model_type)
    assert space_version(model_type).startswith(f"{model_type}-")


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("eta", {"high": 0.9}),  # a range, same names: Optuna would happily reuse these trials
        ("eta", {"low": 0.01}),
        ("lam", {"log": False}),  # a scale
        ("k", {"kind": "float"}),  # a type
    ],
)
def test_any_change_of_a_range_scale_or_type_changes_the_version(
    name: str, change: dict[str, object]
) -> None:
    space = get_space("ffm")
    changed = _with_param(space, name, **change)
    assert [p.name for p in changed.params] == [p.name for p in space.params]
    assert changed.version() != space.version()


def test_renamed_parameter_fixed_setting_and_manual_tag_change_the_version() -> None:
    space = get_space("xgboost")
    renamed = dataclasses.replace(
        space,
        params=tuple(
            dataclasses.replace(p, name="reg_alpha") if p.name == "alpha" else p
            for p in space.params
        ),
        defaults={("reg_alpha" if k == "alpha" else k): v for k, v in space.defaults.items()},
    )
    more_rounds = dataclasses.replace(space, fixed={**space.fixed, "max_rounds": 1000})
    versions = {
        space.version(),
        renamed.version(),
        more_rounds.version(),
        space.version("2024w07"),
    }
    assert len(versions) == 4
    assert space.version("2024w07").endswith("-2024w07")
    # The defaults are the start point, not the space: they do not move the version.
    assert dataclasses.replace(space, defaults={**space.defaults, "max_depth": 4}).version() == (
        space.version()
    )


def test_bad_definitions_are_refused_with_the_offending_name() -> None:
    with pytest.raises(ValueError, match="default eta=5.0 lies outside"):
        dataclasses.replace(get_space("ffm"), defaults={"k": 4, "eta": 5.0, "lam": 2e-5})
    with pytest.raises(ValueError, match="'x': a log scale needs low > 0"):
        Param("x", "float", 0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="duplicate parameter names"):
        SearchSpace("m", (Param("a", "int", 1, 2), Param("a", "int", 1, 3)), {"a": 1})
    with pytest.raises(ValueError, match=r"tag 'a b'"):
        space_version("ffm", "a b")
    with pytest.raises(ValueError, match="unknown model type 'lgbm'; known: ffm, xgboost"):
        get_space("lgbm")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_enqueued_defaults_come_back_from_suggest_and_lie_in_the_space(model_type: str) -> None:
    study = optuna.create_study()
    study.enqueue_trial(default_params(model_type))
    trial = study.ask()
    assert suggest(trial, model_type) == default_params(model_type)
    assert trial.distributions == get_space(model_type).distributions()


def test_library_defaults_are_the_first_trial() -> None:
    assert default_params("ffm") == {"k": 4, "eta": 0.2, "lam": 2e-5}
    xgb = default_params("xgboost")
    assert (xgb["learning_rate"], xgb["max_depth"], xgb["lambda"], xgb["alpha"]) == (
        0.3,
        6,
        1.0,
        0.0,
    )


def test_values_that_crossed_a_protobuf_boundary_get_their_types_back() -> None:
    """KFP hands a dict parameter over as a protobuf Struct: every number becomes a double."""
    space = get_space("xgboost")
    ints = [p.name for p in space.params if p.kind == "int"]
    assert ints, "the xgboost space has int parameters (max_depth)"
    as_doubles = {name: float(value) for name, value in space.defaults.items()}
    typed = space.typed(as_doubles)
    assert typed == space.defaults
    assert all(type(typed[name]) is int for name in ints)
    assert all(type(typed[p.name]) is float for p in space.params if p.kind == "float")
    with pytest.raises(ValueError, match=rf"int parameter {ints[0]}=6.5 is not a whole number"):
        space.typed({**as_doubles, ints[0]: 6.5})
    with pytest.raises(ValueError, match=r"unknown \['depth'\], missing \['max_depth'\]"):
        space.typed({**{k: v for k, v in as_doubles.items() if k != "max_depth"}, "depth": 6})
    with pytest.raises(ValueError, match="is not a number"):
        space.typed({**as_doubles, ints[0]: "6"})
    choice = Param("booster", "categorical", choices=("gbtree", 1, True))
    assert choice.typed(1.0) == 1 and type(choice.typed(1.0)) is int
    assert choice.typed(True) is True
    with pytest.raises(ValueError, match="is not one of"):
        choice.typed("dart")
