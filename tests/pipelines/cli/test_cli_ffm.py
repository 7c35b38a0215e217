"""`ctrflow ffm train|predict|convert` on LIBFFM text files (generated, plus the Criteo sample
beside the checkout when present) and on bad input."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import ffm_ext
from ctrflow.pipelines.cli import main


def test_train_convert_predict(
    libffm_dir: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path, binary, out = tmp_path / "m.ffm", tmp_path / "train_bin", tmp_path / "p.txt"
    train, valid, test = (str(libffm_dir / f"{split}.ffm") for split in ("train", "valid", "test"))
    assert main(["ffm", "convert", train, str(binary)]) == 0
    code = main([
        "ffm", "train", str(binary), "--valid", valid, "--test", test,
        "--epochs", "4", "--patience", "4", "-o", str(model_path),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "best epoch" in printed and "test logloss" in printed
    assert main(["ffm", "predict", str(model_path), test, "-o", str(out)]) == 0
    model = ffm_ext.FFM.load(model_path)
    expected = model.predict(ffm_ext.read_libffm(test))
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


# What an `ffm` command leaves numpy's OpenBLAS, in a fresh process (the setting only takes
# before numpy's import, so not in this one).
_OPENBLAS_THREADS_AFTER_CONVERT = """
import json, sys
from ctrflow.pipelines.cli import main
assert "numpy" not in sys.modules
assert main(["ffm", "convert", sys.argv[1], sys.argv[2]]) == 0
from threadpoolctl import threadpool_info
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"]))
"""


@pytest.mark.parametrize(("users_setting", "expected"), [(None, [1]), ("2", [2])])
def test_ffm_commands_keep_numpys_openblas_to_one_thread_unless_the_user_says(
    tmp_path: pathlib.Path, users_setting: str | None, expected: list[int]
) -> None:
    """The engine uses no BLAS: OpenBLAS's other threads would only spin at start-up."""
    text = tmp_path / "t.ffm"
    text.write_text("1 0:1:1 1:2:1\n0 0:3:1 1:2:1\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if users_setting is not None:
        env["OPENBLAS_NUM_THREADS"] = users_setting
    done = subprocess.run(
        [sys.executable, "-c", _OPENBLAS_THREADS_AFTER_CONVERT, str(text), str(tmp_path / "b")],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
