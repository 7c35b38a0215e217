"""Issue #13: `ctrflow ffm ...` as a real subprocess on bad input: exit 1 and one line naming the
file and the index, never a traceback, never a model written from bad data."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import ffm_ext
from tests.testkit.bad_datasets import BAD_DATASETS, BadCase, bad_dataset, good_dataset

BY_NAME = {case.name: case for case in BAD_DATASETS}


def ctrflow(*args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctrflow.pipelines.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The single stderr line of a run that exited 1, after `prefix`."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    return lines[0][len(prefix) :]


def write_text(path: pathlib.Path, labels: list[int], fields: int = 3) -> pathlib.Path:
    rows = [
        f"{y} " + " ".join(f"{f}:{i % 7 + f}:1" for f in range(fields))
        for i, y in enumerate(labels)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("case", BAD_DATASETS, ids=lambda case: case.name)
def test_train_refuses_a_bad_dataset(case: BadCase, tmp_path: pathlib.Path) -> None:
    data = bad_dataset(case, tmp_path / "ds")
    model = tmp_path / "model.ffm"
    message = one_line_error(ctrflow("ffm", "train", data, "-o", model), "ctrflow ffm train: ")
    assert re.match(re.escape(str(data / case.file)) + ": " + case.words, message), message
    assert not model.exists()


@pytest.mark.parametrize("name", ["value nan", "field beyond meta", "truncated fields"])
def test_predict_refuses_a_bad_dataset(name: str, tmp_path: pathlib.Path) -> None:
    model = tmp_path / "model.ffm"
    trained = ctrflow(
        "ffm", "train", good_dataset(tmp_path / "train"), "--epochs", "1", "-o", model
    )
    assert trained.returncode == 0, trained.stderr
    data = bad_dataset(BY_NAME[name], tmp_path / "ds")
    out = tmp_path / "p.txt"
    message = one_line_error(
        ctrflow("ffm", "predict", model, data, "-o", out), "ctrflow ffm predict: "
    )
    assert re.match(re.escape(str(data / BY_NAME[name].file)) + ": " + BY_NAME[name].words, message)
    assert not out.exists()


def test_predict_refuses_fields_beyond_the_model(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "model.ffm"
    train = write_text(tmp_path / "train.ffm", [0, 1] * 10, fields=3)
    assert ctrflow("ffm", "train", train, "--epochs", "1", "-o", model).returncode == 0
    wide = write_text(tmp_path / "wide.ffm", [0, 1], fields=5)
    message = one_line_error(
        ctrflow("ffm", "predict", model, wide, "-o", tmp_path / "p.txt"), "ctrflow ffm predict: "
    )
    assert message.startswith(f"{wide}: fields[3] = 3 but the model has fields 0..2")


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("role", ["train", "valid", "test"])
def test_one_label_sets_are_refused_before_training(
    role: str, label: int, tmp_path: pathlib.Path
) -> None:
    paths = {r: write_text(tmp_path / f"{r}.ffm", [0, 1] * 10) for r in ("train", "valid", "test")}
    paths[role] = write_text(tmp_path / f"{role}.ffm", [label] * 20)
    model = tmp_path / "model.ffm"
    proc = ctrflow(
        "ffm", "train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
        "-o", model,
    )  # fmt: skip
    message = one_line_error(proc, "ctrflow ffm train: ")
    words = {"train": "training", "valid": "validation", "test": "test"}[role]
    assert message.startswith(
        f"{paths[role]}: the {words} set has one label only ({20 * label} clicks in 20 rows)"
    )
    assert "trained" not in proc.stdout and not model.exists()


def test_no_validate_is_the_explicit_opt_out(tmp_path: pathlib.Path) -> None:
    """With --no-validate a dataset with a feature beyond meta.json's n_features trains (the user
    vouches for it); without it, the same command is refused (test above)."""
    data = bad_dataset(BY_NAME["feature beyond meta"], tmp_path / "ds")
    model = tmp_path / "model.ffm"
    proc = ctrflow("ffm", "train", data, "--no-validate", "--epochs", "1", "-o", model)
    assert proc.returncode == 0, proc.stderr
    assert model.exists()


def test_corrupted_model_file_is_one_line(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "model.ffm"
    data = good_dataset(tmp_path / "ds")
    assert ctrflow("ffm", "train", data, "--epochs", "1", "-o", model).returncode == 0
    blob = bytearray(model.read_bytes())
    blob[40] ^= 1  # the normalisation flag
    model.write_bytes(blob)
    message = one_line_error(
        ctrflow("ffm", "predict", model, data, "-o", tmp_path / "p.txt"), "ctrflow ffm predict: "
    )
    assert message.startswith(f"{model}: the file fails its CRC32 check")


def test_huge_bad_token_is_cut(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "huge.ffm"
    path.write_text("1 0:1:1\n0 0:1:" + "7" * 2_000_000 + "z\n")
    message = one_line_error(
        ctrflow("ffm", "convert", path, tmp_path / "out"), "ctrflow ffm convert: "
    )
    assert message.endswith("... (2,000,005 bytes))") and len(message) < 200 + len(str(path))


def test_convert_of_a_good_dataset_round_trips(tmp_path: pathlib.Path) -> None:
    src = good_dataset(tmp_path / "ds")
    assert ctrflow("ffm", "convert", src, tmp_path / "copy").returncode == 0
    np.testing.assert_array_equal(
        ffm_ext.Dataset.load(tmp_path / "copy").labels, ffm_ext.Dataset.load(src).labels
    )


def test_huge_declared_sizes_are_one_line_not_a_crash(tmp_path: pathlib.Path) -> None:
    """meta.json may declare a hash space; one of 2**62 features once wrapped int64 in the
    weight allocation and killed the process with SIGSEGV."""
    data = good_dataset(tmp_path / "ds")
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "n_features": 2**62}))
    message = one_line_error(ctrflow("ffm", "train", data, "--epochs", "1"), "ctrflow ffm train: ")
    assert message.startswith("cannot allocate") and f"n={2**62}" in message


def test_diverging_fit_is_one_line_and_writes_no_model(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "big.ffm"
    path.write_text("".join(f"{i % 2} 0:{i % 5}:1e19 1:{i % 3}:1e19\n" for i in range(200)))
    model = tmp_path / "model.ffm"
    proc = ctrflow("ffm", "train", path, "--no-norm", "--epochs", "3", "-o", model)
    assert one_line_error(proc, "ctrflow ffm train: ").startswith("training diverged at epoch 1")
    assert not model.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "{tmp}/missing.ffm"], "No such file or directory"),
        (["train", "{good}", "-k", "0"], "k must be an integer >= 1, got 0"),
        (["train", "{good}", "--epochs", "1", "-o", "{tmp}/no/such/dir/m.ffm"], "No such file"),
        (["predict", "{tmp}/missing.model", "{good}", "-o", "{tmp}/p.txt"], "No such file"),
        (["predict", "{good}/meta.json", "{good}", "-o", "{tmp}/p.txt"], "not a ctrflow FFM"),
        (["convert", "{tmp}", "{tmp}/out"], "not a dataset directory (no meta.json)"),
    ],
)
def test_other_bad_input_is_one_line(args: list[str], words: str, tmp_path: pathlib.Path) -> None:
    good = good_dataset(tmp_path / "good")
    filled = [arg.format(tmp=tmp_path, good=good) for arg in args]
    message = one_line_error(ctrflow("ffm", *filled), f"ctrflow ffm {args[0]}: ")
    assert words in message, message
