"""`ctrflow hpo worker`'s storage outage limit: a flag, an environment variable, and bad values
refused in one line before anything connects. (Riding out an outage, and exit 3 past the limit,
run against a real PostgreSQL in tests/components/hpo/test_outage.py.)"""

from __future__ import annotations

import pathlib

import pytest

from ctrflow.components.names import STORAGE_OUTAGE_LIMIT_ENV
from ctrflow.pipelines.cli import main


def test_worker_help_names_the_outage_limit_and_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["hpo", "worker", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--storage-outage-limit S" in text
    assert f"${STORAGE_OUTAGE_LIMIT_ENV}, else 60" in text and "exit 3" in text


@pytest.mark.parametrize(
    ("env", "flag", "says"),
    [
        ("in a minute", None, f"${STORAGE_OUTAGE_LIMIT_ENV}='in a minute' is not a number"),
        ("-5", None, f"${STORAGE_OUTAGE_LIMIT_ENV}='-5' must be a number of seconds >= 0"),
        ("", "-1", "the storage outage limit must be a number of seconds >= 0"),
    ],
)
def test_a_bad_outage_limit_exits_1_in_one_line(
    env: str,
    flag: str | None,
    says: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(STORAGE_OUTAGE_LIMIT_ENV, env)
    db = tmp_path / "never-made.db"
    args = ["hpo", "worker", "--storage", f"sqlite:///{db}", "--study", "s", "--train", "t",
            "--valid", "v"]  # fmt: skip
    if flag is not None:
        args += ["--storage-outage-limit", flag]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ctrflow hpo worker: ") and says in err[-1], err
    assert not db.exists()  # refused before anything connected
