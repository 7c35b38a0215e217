"""Fixtures shared by the component tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture(params=["postgresql", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return str(request.getfixturevalue("postgres_url"))
