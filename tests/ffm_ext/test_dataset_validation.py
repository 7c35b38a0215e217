"""Issue #13: a binary dataset is checked when it loads; only validate=False skips the checks."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import ffm_ext
from tests.testkit.bad_datasets import BAD_DATASETS, BadCase, bad_dataset, good_dataset


@pytest.mark.parametrize("case", BAD_DATASETS, ids=lambda case: case.name)
@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_bad_dataset_is_refused_naming_file_and_index(
    case: BadCase, mmap: bool, tmp_path: pathlib.Path
) -> None:
    path = bad_dataset(case, tmp_path / "ds")
    with pytest.raises(ffm_ext.FFMDatasetError) as caught:
        ffm_ext.Dataset.load(path, mmap=mmap)
    expected = f"{path / case.file}: {case.words}"
    assert re.match(re.escape(str(path / case.file)) + ": " + case.words, str(caught.value)), (
        str(caught.value),
        expected,
    )


def test_good_dataset_loads(tmp_path: pathlib.Path) -> None:
    data = ffm_ext.Dataset.load(good_dataset(tmp_path / "ds"))
    assert (data.n_rows, data.n_fields, data.n_features) == (40, 3, 30)


def test_opt_out_skips_the_content_checks(tmp_path: pathlib.Path) -> None:
    """validate=False loads a dataset whose labels and ids break the contract (the caller
    vouches for it); the structural checks still run."""
    by_name = {case.name: case for case in BAD_DATASETS}
    for name in ("label 2", "value nan", "meta understates n_fields"):
        path = bad_dataset(by_name[name], tmp_path / name.replace(" ", "_"))
        assert ffm_ext.Dataset.load(path, validate=False).n_rows == 40
    for name in ("indptr decreases", "truncated fields"):
        path = bad_dataset(by_name[name], tmp_path / name.replace(" ", "_"))
        with pytest.raises(ffm_ext.FFMDatasetError):
            ffm_ext.Dataset.load(path, validate=False)


def test_predict_checks_fields_even_when_validation_was_skipped(tmp_path: pathlib.Path) -> None:
    """meta.json may understate n_fields when validation is skipped: predict scans the fields
    themselves, so a field beyond the model is still a ValueError (README), not a 0 margin."""
    model = ffm_ext.FFM(k=2, epochs=1)
    model.fit(ffm_ext.Dataset.load(good_dataset(tmp_path / "train")))
    wide = good_dataset(tmp_path / "wide")
    fields = np.load(wide / "fields.npy")
    fields[4] = 7
    np.save(wide / "fields.npy", fields)
    data = ffm_ext.Dataset.load(wide, validate=False)  # meta.json still says n_fields=3
    with pytest.raises(ValueError, match=r"fields\[4\] = 7 but the model has fields 0..2"):
        model.predict(data)


@pytest.mark.parametrize(
    "labels", [np.zeros(40, np.float32), np.ones(40, np.float32)], ids=["all 0", "all 1"]
)
def test_fit_refuses_a_set_with_one_label(labels: np.ndarray, tmp_path: pathlib.Path) -> None:
    good = ffm_ext.Dataset.load(good_dataset(tmp_path / "ds"))
    one = ffm_ext.Dataset(good.indptr, good.fields, good.features, good.values, labels)
    label = f"{labels[0]:g}"
    with pytest.raises(ValueError, match=f"the training set has only label {label} in all 40"):
        ffm_ext.FFM(epochs=1).fit(one)
    model = ffm_ext.FFM(epochs=2)
    with pytest.raises(ValueError, match=f"the validation set has only label {label} in all 40"):
        model.fit(good, one)  # early stopping on a one-label set would pick epochs by nothing
    assert not model.is_fitted


def test_long_bad_token_is_cut_to_a_prefix_and_its_length(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "huge.ffm"
    token = "0:1:" + "9" * 3_000_000 + "x"
    path.write_text(f"1 0:1:1\n0 {token}\n")
    with pytest.raises(ffm_ext.FFMFormatError) as caught:
        ffm_ext.read_libffm(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2:3: value is not a number (token '0:1:9999")
    assert message.endswith(f"... ({len(token):,} bytes))") and len(message) < 250 + len(str(path))
