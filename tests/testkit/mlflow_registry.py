"""An MLflow registry in a SQLite file (MLflow's own SQL store, no server), for fast tests.

Migrating a new MLflow database takes most of a second; the fixtures (tests/components/
conftest.py) migrate one template per session and give every test a copy of it."""

from __future__ import annotations

import pathlib
import shutil

from mlflow import MlflowClient


def sqlite_uri(path: pathlib.Path) -> str:
    return f"sqlite:///{path}"


def migrated_registry(folder: pathlib.Path) -> pathlib.Path:
    """A new MLflow database in folder, with every migration applied (the first query does it)."""
    path = folder / "mlflow.db"
    uri = sqlite_uri(path)
    MlflowClient(uri, uri).search_registered_models()
    return path


def registry_copy(template: pathlib.Path, folder: pathlib.Path) -> str:
    """The URI of a fresh copy of the template database in folder."""
    return sqlite_uri(pathlib.Path(shutil.copy(template, folder / "mlflow.db")))
