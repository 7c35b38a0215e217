"""Fixtures shared by the component tests: an MLflow registry in a SQLite file."""

from __future__ import annotations

import pathlib

import pytest

from tests.testkit.mlflow_registry import migrated_registry, registry_copy


@pytest.fixture(scope="session")
def mlflow_registry_template(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A migrated MLflow database, made once: the migrations take most of the setup."""
    return migrated_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def registry_db(mlflow_registry_template: pathlib.Path, tmp_path: pathlib.Path) -> str:
    """The URI of a fresh MLflow registry (SQLite file) of this test's own."""
    return registry_copy(mlflow_registry_template, tmp_path)
