"""A warm-start file that holds no Optuna study is read, never written: the champion's
artifact stays as it was, and the search starts cold with the reason.

Fast checks that `make mutation` runs against every mutant of `_warm_start.py`."""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

from ctrflow.components.hpo._warm_start import warm_start_from_file
from ctrflow.components.hpo.search_space import get_space


def test_a_database_without_optuna_tables_is_not_written(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "study.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE other (x INTEGER)")
    before = path.read_bytes()
    space = get_space("ffm")
    cold = warm_start_from_file(path, space=space, space_version=space.version())
    assert not cold.warm
    assert cold.reason.startswith("cannot read optuna/study.db: ")
    assert path.read_bytes() == before
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["other"]


def test_a_warm_start_record_is_frozen() -> None:
    import dataclasses

    from ctrflow.components.hpo._warm_start import WarmStart

    with pytest.raises(dataclasses.FrozenInstanceError):
        WarmStart().reason = "changed"  # type: ignore[misc]
