"""Warm start and the search-space version, part by part, without MLflow: the version string,
the source study read from a file, the trials kept, and the sampler rebuilt from the study's
attrs (the warm start must reach CMA-ES as its source trials).

Fast checks that `make mutation` runs against every mutant of search_space.version,
_warm_start.py and _study_config.py; the MLflow champion lookup is in test_warm_start.py."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState, create_trial

from ctrflow.components.hpo._study_config import (
    DEFAULT_PRUNERS,
    SnapshotCmaEsSampler,
    StudyConfig,
    build_pruner,
    build_sampler,
    source_trials,
)
from ctrflow.components.hpo._warm_start import (
    MIN_SOURCE_TRIALS,
    WarmStart,
    _from_file,
    find_warm_start,
    warm_start_from_file,
)
from ctrflow.components.hpo.search_space import Param, get_space, space_version
from ctrflow.components.names import (
    ATTR_BUDGET,
    ATTR_MODEL_TYPE,
    ATTR_PRUNER,
    ATTR_READY,
    ATTR_SAMPLER,
    ATTR_SEED,
    ATTR_SPACE,
    ATTR_SPACE_VERSION,
    ATTR_WARM_START,
    TAG_SPACE_VERSION,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
SPACE = get_space("ffm")
VERSION = SPACE.version()


def _value(d: BaseDistribution, i: int) -> float:
    """Trial i's value of a parameter: spread over a float range, 0 to 2 above an int's low."""
    if isinstance(d, FloatDistribution):
        return d.low + (d.high - d.low) * (i % 7) / 7
    assert isinstance(d, IntDistribution)  # the ffm space has no choice list
    return d.low + i % 3


def _trial(
    i: int,
    space_distributions: dict[str, BaseDistribution] | None = None,
    state: TrialState = TrialState.COMPLETE,
) -> FrozenTrial:
    dists = space_distributions or SPACE.distributions()
    params = {name: _value(d, i) for name, d in dists.items()}
    value = 0.5 - i / 1000 if state == TrialState.COMPLETE else None
    return create_trial(params=params, distributions=dists, value=value, state=state)


def _source(
    path: pathlib.Path, n: int, *, name: str = "last-week", version: str | None = VERSION,
    extra: int = 0,
) -> optuna.Study:  # fmt: skip
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}")
    if version is not None:
        study.set_user_attr(TAG_SPACE_VERSION, version)
    for i in range(n):
        study.add_trial(_trial(i))
    other = {**SPACE.distributions(), "k": IntDistribution(2, 8, log=True)}
    for i in range(extra):
        study.add_trial(_trial(i, other))
    study.add_trial(_trial(99, state=TrialState.FAIL))
    return study


def test_the_version_is_the_type_and_12_hex_of_the_definition() -> None:
    assert re.fullmatch(r"ffm-[0-9a-f]{12}", VERSION)
    assert space_version("ffm") == VERSION == SPACE.version(None) == SPACE.version("")
    assert space_version("ffm", "exp-1.a_b") == f"{VERSION}-exp-1.a_b"
    assert space_version("xgboost").startswith("xgboost-")
    assert space_version("xgboost")[8:] != VERSION[4:]
    # pinned: champions in the registry carry it, and a new hash would start every search cold
    assert VERSION == PINNED_FFM_VERSION


PINNED_FFM_VERSION = "ffm-bd1cf69315ac"


@pytest.mark.parametrize("tag", ["-x", ".x", "a b", "x" * 65, "é"])
def test_a_bad_tag_is_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        SPACE.version(tag)
    assert SPACE.version("x" * 64).endswith("-" + "x" * 64)


def test_the_version_follows_ranges_and_fixed_settings_not_defaults() -> None:
    assert (
        dataclasses.replace(SPACE, defaults={"k": 8, "eta": 0.1, "lam": 1e-5}).version() == VERSION
    )
    wider = (Param("k", "int", 2, 32, log=True), *SPACE.params[1:])
    assert dataclasses.replace(SPACE, params=wider).version() != VERSION
    linear = (Param("k", "int", 2, 16), *SPACE.params[1:])
    assert dataclasses.replace(SPACE, params=linear).version() != VERSION
    assert dataclasses.replace(SPACE, fixed={**SPACE.fixed, "max_epochs": 31}).version() != VERSION
    reordered = dict(reversed(list(SPACE.fixed.items())))
    assert dataclasses.replace(SPACE, fixed=reordered).version() == VERSION


def test_ten_matching_completed_trials_warm_start(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "study.db"
    _source(path, MIN_SOURCE_TRIALS, extra=3)
    warm = warm_start_from_file(path, space=SPACE, space_version=VERSION)
    assert warm.warm, warm.reason
    assert len(warm.trials) == MIN_SOURCE_TRIALS == 10
    assert all(t.distributions == SPACE.distributions() for t in warm.trials)
    assert warm.to_attrs() == {
        "warm": True, "reason": "", "model_name": None, "model_version": None,
        "found_via": f"file:{path}", "run_id": None, "source_study_name": "last-week",
        "source_space_version": VERSION, "n_source_trials": 10,
    }  # fmt: skip


def test_nine_matching_trials_start_cold_and_say_why(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "study.db"
    _source(path, MIN_SOURCE_TRIALS - 1, extra=3)
    cold = warm_start_from_file(path, space=SPACE, space_version=VERSION)
    assert not cold.warm and cold.trials == []
    assert cold.reason == (
        "source study 'last-week' has 9 completed trials in this search space (12 completed in "
        "all); Warm Starting CMA-ES needs at least 10"
    )
    assert cold.to_attrs()["n_source_trials"] == 0 and cold.to_attrs()["warm"] is False


def test_another_space_version_starts_cold(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "study.db"
    _source(path, 20, version="ffm-0123456789ab")
    cold = warm_start_from_file(path, space=SPACE, space_version=VERSION)
    assert not cold.warm
    assert cold.reason == (
        f"search space changed: study 'last-week' in {path} used ffm-0123456789ab, this study "
        f"uses {VERSION}"
    )
    assert cold.source_space_version == "ffm-0123456789ab"
    assert cold.source_study_name == "last-week"
    unversioned = tmp_path / "old.db"
    _source(unversioned, 20, version=None)
    assert not warm_start_from_file(unversioned, space=SPACE, space_version=VERSION).warm


def test_missing_corrupt_or_ambiguous_files_start_cold(tmp_path: pathlib.Path) -> None:
    missing = warm_start_from_file(tmp_path / "nope.db", space=SPACE, space_version=VERSION)
    assert missing.reason == f"warm-start file {tmp_path / 'nope.db'} does not exist"
    assert missing.found_via == f"file:{tmp_path / 'nope.db'}"
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 100)
    assert warm_start_from_file(corrupt, space=SPACE, space_version=VERSION).reason.startswith(
        "cannot read optuna/study.db: "
    )
    two = tmp_path / "two.db"
    _source(two, 12, name="a")
    _source(two, 11, name="b")
    ambiguous = warm_start_from_file(two, space=SPACE, space_version=VERSION)
    assert ambiguous.reason == "optuna/study.db holds 2 studies ['a', 'b'], none named by the run"
    # the run's tag names one of them
    named = _from_file(two, SPACE, VERSION, "b", {}, TAG_SPACE_VERSION)
    assert named.warm and named.source_study_name == "b" and len(named.trials) == 11
    # a run naming a study that is not there, in a file of one study: that one
    one = tmp_path / "one.db"
    _source(one, 10, name="renamed")
    fallback = _from_file(one, SPACE, VERSION, "gone", {}, None)
    assert fallback.warm and fallback.source_study_name == "renamed"
    assert fallback.source_space_version is None  # not compared without a version attr


def test_no_tracking_uri_or_model_name_starts_cold(tmp_path: pathlib.Path) -> None:
    for uri, model in [(None, "m"), ("http://x", None), ("", "m")]:
        cold = find_warm_start(
            tracking_uri=uri, model_name=model, space=SPACE, space_version=VERSION, workdir=tmp_path
        )
        assert cold.reason == "no MLflow tracking URI or model name given" and not cold.warm
    assert WarmStart().to_attrs()["n_source_trials"] == 0


PRUNER = {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2}


def _study_with_attrs(
    tmp_path: pathlib.Path, sampler: dict[str, Any], **more: object
) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    attrs = {
        ATTR_MODEL_TYPE: "ffm", ATTR_SPACE: SPACE.to_dict(), ATTR_SPACE_VERSION: VERSION,
        ATTR_SAMPLER: sampler, ATTR_PRUNER: PRUNER, **more,
    }  # fmt: skip
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def test_a_study_config_needs_the_ready_mark(tmp_path: pathlib.Path) -> None:
    study = _study_with_attrs(tmp_path, {"name": "tpe"})
    with pytest.raises(
        ValueError,
        match=r"study 's' was not set up by `ctrflow hpo create` "
        r"\(user attr 'ctrflow.ready' missing\)",
    ):
        StudyConfig.from_study(study)
    study.set_user_attr(ATTR_READY, True)
    config = StudyConfig.from_study(study)
    assert (config.model_type, config.space, config.space_version) == ("ffm", SPACE, VERSION)
    assert (config.sampler, config.warm_start, config.budget, config.seed) == (
        {"name": "tpe"},
        {},
        None,
        0,
    )
    study.set_user_attr(ATTR_BUDGET, 40)
    study.set_user_attr(ATTR_SEED, 7)
    study.set_user_attr(ATTR_WARM_START, {"warm": True})
    config = StudyConfig.from_study(study)
    assert (config.budget, config.seed, config.warm_start) == (40, 7, {"warm": True})
    assert config.pruner == {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2}


def test_the_warm_start_source_trials_reach_cma_es(tmp_path: pathlib.Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    source = optuna.create_study(study_name="source", storage=storage)
    for i in range(12):
        source.add_trial(_trial(i))
    source.add_trial(_trial(50, state=TrialState.FAIL))
    kept = source_trials(storage, "source")
    assert [t.number for t in kept] == list(range(12))
    sampler = build_sampler({"name": "cmaes", "source_study": "source"}, storage, seed=3)
    assert isinstance(sampler, SnapshotCmaEsSampler) and sampler._source_trials is not None
    assert [t.number for t in sampler._source_trials] == list(range(12))
    cold = build_sampler({"name": "cmaes"}, storage, seed=3)
    assert isinstance(cold, SnapshotCmaEsSampler) and cold._source_trials is None
    assert cold._warn_independent_sampling is False and sampler._warn_independent_sampling is False
    empty = optuna.create_study(study_name="empty", storage=storage)
    empty.add_trial(_trial(1, state=TrialState.FAIL))
    with pytest.raises(
        ValueError, match="warm-start source study 'empty' holds no completed trials"
    ):
        build_sampler({"name": "cmaes", "source_study": "empty"}, storage, seed=3)


def test_tpe_is_built_for_parallel_workers(tmp_path: pathlib.Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    tpe = build_sampler({"name": "tpe"}, storage, seed=1)
    assert isinstance(tpe, TPESampler)
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._constant_liar) == (10, True, True)
    tuned = build_sampler(
        {"name": "tpe", "n_startup_trials": "4", "multivariate": False}, storage, seed=1
    )
    assert isinstance(tuned, TPESampler)
    assert (tuned._n_startup_trials, tuned._multivariate) == (4, False)
    with pytest.raises(
        ValueError, match="unknown sampler 'grid' in the study's ctrflow.sampler user attr"
    ):
        build_sampler({"name": "grid"}, storage, seed=1)


def test_seeded_samplers_repeat_their_suggestions(tmp_path: pathlib.Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"

    def first(seed: int) -> float:
        study = optuna.create_study(sampler=build_sampler({"name": "tpe"}, storage, seed=seed))
        x: float = study.ask({"x": FloatDistribution(0, 1)}).params["x"]
        return x

    assert first(5) == first(5)
    assert first(5) != first(6)


def test_the_median_pruner_is_rebuilt_from_its_attrs() -> None:
    pruner = build_pruner({"name": "median", "n_startup_trials": "3", "n_warmup_steps": 7})
    assert isinstance(pruner, MedianPruner)
    assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (3, 7)
    with pytest.raises(
        ValueError, match="unknown pruner 'hyperband' in the study's ctrflow.pruner"
    ):
        build_pruner({"name": "hyperband"})


def test_cma_es_searches_only_numeric_ranges() -> None:
    study = optuna.create_study()
    dists = {
        "x": FloatDistribution(0, 1), "n": IntDistribution(1, 9), "one": FloatDistribution(2, 2),
        "c": CategoricalDistribution(["a", "b"]),
    }  # fmt: skip
    for i in range(3):
        study.add_trial(
            create_trial(
                params={"x": i / 4, "n": i + 1, "one": 2.0, "c": "a"}, distributions=dists, value=i
            )
        )
    sampler = SnapshotCmaEsSampler(seed=0)
    space = sampler.infer_relative_search_space(study, study.trials[0])
    assert space == {"x": dists["x"], "n": dists["n"]}


def test_a_study_config_is_frozen(tmp_path: pathlib.Path) -> None:
    study = _study_with_attrs(tmp_path, {"name": "tpe"}, **{ATTR_READY: True})
    with pytest.raises(dataclasses.FrozenInstanceError):
        StudyConfig.from_study(study).seed = 1  # type: ignore[misc]


def test_the_default_pruners_wait_out_a_slow_start() -> None:
    # FFM steps are epochs, XGBoost steps boosting rounds: compared with the median only after
    # 2 epochs or 50 rounds, and only once 5 trials have finished (DESIGN: pruning).
    assert DEFAULT_PRUNERS == {
        "ffm": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
        "xgboost": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 50},
    }
