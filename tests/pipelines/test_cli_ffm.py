"""`ctrflow ffm train|predict|convert` on the shared Criteo sample and on bad input."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import ffm_ext
from ctrflow.pipelines.cli import main

TINY = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "criteo_tiny"


@pytest.fixture
def tiny() -> pathlib.Path:
    if not TINY.exists():
        pytest.skip(f"{TINY} is absent (shared test data lives beside the checkout)")
    return TINY


def test_train_convert_predict(
    tiny: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path, binary, out = tmp_path / "m.ffm", tmp_path / "train_bin", tmp_path / "p.txt"
    assert main(["ffm", "convert", str(tiny / "train.ffm"), str(binary)]) == 0
    code = main([
        "ffm", "train", str(binary), "--valid", str(tiny / "valid.ffm"),
        "--test", str(tiny / "test.ffm"), "--epochs", "4", "--patience", "4", "-o", str(model_path),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "best epoch" in printed and "test logloss" in printed
    assert main(["ffm", "predict", str(model_path), str(tiny / "test.ffm"), "-o", str(out)]) == 0
    model = ffm_ext.FFM.load(model_path)
    expected = model.predict(ffm_ext.read_libffm(tiny / "test.ffm"))
    np.testing.assert_allclose(np.loadtxt(out), expected, atol=1e-6)


def test_bad_input_exits_1_naming_file_line_token(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.ffm"
    bad.write_text("1 0:1:1\n0 0:1:1 7:x:1\n")
    assert main(["ffm", "train", str(bad)]) == 1
    assert (
        f"{bad}:2:9: feature is not a non-negative integer (token '7:x:1')"
        in capsys.readouterr().err
    )
