"""Fixtures shared by the component tests."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from optuna.storages import RDBStorage

from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage


@pytest.fixture(params=["postgresql", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def rdb(storage_url: str) -> Iterator[RDBStorage]:
    """Optuna's RDBStorage on each backend, without heartbeats (a test that needs them makes
    its own storage)."""
    settings = StorageSettings(heartbeat_interval=None, grace_period=None, connect_attempts=2)
    storage = make_storage(storage_url, settings)
    yield storage
    dispose(storage)
