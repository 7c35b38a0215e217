"""Checks of `ctrflow run`'s store and data options, made before any step runs.

Without them a mistyped --storage surfaces minutes later, after data preparation, as the
create-study step's failure. Each raises UsageError naming the option and what is wrong.
"""

from __future__ import annotations

import glob
import pathlib
import urllib.error
import urllib.parse
import urllib.request

from ctrflow.pipelines.cli._parsing import UsageError

#: The Optuna storage backends the steps support (components/hpo/storage.py refuses others).
STORAGE_BACKENDS = ("postgresql", "sqlite")
MLFLOW_SCHEMES = ("http", "https", "sqlite", "postgresql", "file", "databricks")


def check_storage_url(url: str) -> None:
    """A SQLAlchemy URL of a supported backend whose driver is installed."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    from ctrflow.components.hpo.storage import redact_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UsageError(
            "--storage is not a database URL; e.g. postgresql+psycopg://USER@HOST:5432/optuna "
            "or sqlite:///optuna.db"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in STORAGE_BACKENDS:
        raise UsageError(
            f"--storage {redact_url(parsed)}: backend {backend!r} is not supported; use "
            f"{' or '.join(STORAGE_BACKENDS)}"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise UsageError(
            f"--storage {redact_url(parsed)}: driver {parsed.drivername!r} is not available "
            f"({exc}); for PostgreSQL use postgresql+psycopg://"
        ) from None


def check_mlflow_uri(uri: str, *, probe_seconds: float = 10.0) -> None:
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.partition("+")[0]
    if scheme not in MLFLOW_SCHEMES:
        raise UsageError(
            f"--mlflow-uri {uri.rpartition('@')[2]!r}: scheme {scheme or 'none'!r} is not a "
            f"tracking store; use one of {', '.join(MLFLOW_SCHEMES)}"
        )
    if scheme not in ("http", "https"):
        return
    # Every step would log the URI, password included: MLflow reads credentials from the env.
    if "@" in parts.netloc:
        raise UsageError(
            f"--mlflow-uri {parts.scheme}://***@{parts.netloc.rpartition('@')[2]}: credentials "
            f"in the URI would be logged by every step; set MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD instead"
        )
    # An unreachable server would otherwise cost minutes of MLflow's retries in each step.
    health = urllib.parse.urljoin(uri.rstrip("/") + "/", "health")
    try:
        with urllib.request.urlopen(health, timeout=probe_seconds):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered (an auth proxy may refuse /health): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"--mlflow-uri {uri}: no tracking server answers ({reason})") from None


def check_local_data(uri: str) -> None:
    """A local path or glob must match something; remote URIs are checked by the step."""
    if "://" in uri:
        return
    if glob.has_magic(uri):
        if not glob.glob(uri, recursive=True):  # noqa: PTH207 (absolute patterns too)
            raise UsageError(f"--data {uri}: no file matches")
    elif not pathlib.Path(uri).exists():
        raise UsageError(f"--data {uri}: no such file or directory")
