"""Issue #13: every pipeline step that reads a dataset (HPO objective, train-final, evaluate;
register shares their load_dataset) refuses a broken one naming the file and the index, and a
set with one label, before any training."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import ffm_ext
from ctrflow.components.hpo.objectives import make_objective
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.training.evaluate import evaluate
from ctrflow.components.training.models import load_dataset
from ctrflow.components.training.train_final import train_final
from tests.testkit.bad_datasets import BAD_DATASETS, BadCase, bad_dataset, good_dataset


@pytest.mark.parametrize("case", BAD_DATASETS, ids=lambda case: case.name)
def test_load_dataset_refuses_every_bad_case(case: BadCase, tmp_path: pathlib.Path) -> None:
    path = bad_dataset(case, tmp_path / "ds")
    with pytest.raises(ffm_ext.FFMDatasetError) as caught:
        load_dataset(path, "training")
    assert re.match(re.escape(str(path / case.file)) + ": " + case.words, str(caught.value))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return good_dataset(tmp_path_factory.mktemp("good") / "ds")


STEPS = ["hpo objective (ffm, train)", "hpo objective (xgboost, valid)", "train_final (valid)",
         "evaluate (test)"]  # fmt: skip


def _run_step(step: str, good: pathlib.Path, bad: pathlib.Path, model_dir: pathlib.Path) -> None:
    """`step` called with `bad` in the dataset role its name gives."""
    ffm_defaults = dict(get_space("ffm").defaults)
    if step == "hpo objective (ffm, train)":
        make_objective(space=get_space("ffm"), train_dir=bad, valid_dir=good)
    elif step == "hpo objective (xgboost, valid)":
        make_objective(space=get_space("xgboost"), train_dir=good, valid_dir=bad)
    elif step == "train_final (valid)":
        train_final(model_type="ffm", params=ffm_defaults, train_dir=good, valid_dir=bad,
                    output_dir=model_dir)  # fmt: skip
    else:
        train_final(model_type="ffm", params=ffm_defaults, train_dir=good, valid_dir=good,
                    output_dir=model_dir)  # fmt: skip
        evaluate(test_dir=bad, output_dir=model_dir / "eval", model_path=model_dir)


@pytest.mark.parametrize("step", STEPS)
def test_every_step_refuses_a_bad_dataset(
    step: str, good: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    bad = bad_dataset(BAD_DATASETS[0], tmp_path / "bad")  # a label of 2
    with pytest.raises(ffm_ext.FFMDatasetError, match=re.escape(f"{bad}/labels.npy: labels[3]")):
        _run_step(step, good, bad, tmp_path / "trained")


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_one_label_dataset_is_refused(label: float, tmp_path: pathlib.Path) -> None:
    path = good_dataset(tmp_path / "ds")
    np.save(path / "labels.npy", np.full(40, label, np.float32))
    with pytest.raises(ValueError, match="validation dataset .* needs both positive and negative"):
        load_dataset(path, "validation")
