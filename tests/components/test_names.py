"""The shared names: one list of model types that every concern follows; old tags and old model
entry files still read."""

from __future__ import annotations

from ctrflow.components import names
from ctrflow.components.hpo.search_space import get_space


def test_every_model_type_has_a_search_space_and_a_model_file() -> None:
    for model_type in names.MODEL_TYPES:
        assert get_space(model_type).model_type == model_type
    assert set(names.MODEL_FILES) == set(names.MODEL_TYPES)


def test_promotion_decisions_tagged_the_old_way_still_read() -> None:
    assert names.read_decision("kept") == names.DECISION_KEPT == "kept_champion"
    assert names.read_decision("kept_champion") == names.DECISION_KEPT
    assert names.read_decision("promoted") == names.DECISION_PROMOTED
    assert names.read_decision(None) is None


def test_models_logged_before_the_layout_change_still_find_their_class() -> None:
    from ctrflow.components import serving_model
    from ctrflow.components.registry import serving_model as moved

    assert serving_model.CtrModel is moved.CtrModel
