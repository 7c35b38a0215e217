"""Registered model names: which ones ctrflow accepts, and how one goes into an MLflow filter.

MLflow's search filter grammar (``mlflow/utils/search_utils.py``, 3.17) has no escape character:
a string value is whatever lies between a pair of ``'`` or of ``"``, and neither ``''`` nor
``\\'`` stands for a quote (both were tried against a real ``mlflow server``: no match). So a
name containing ``'`` is quoted with ``"`` and the other way round; a name containing both
cannot be written in a filter at all, and is refused up front, with the names MLflow itself
refuses (empty, ``/``, ``:``).
"""

from __future__ import annotations

__all__ = ["check_model_name", "name_filter"]


def check_model_name(name: str) -> None:
    """Raise ValueError, naming the name and the offending characters, if ctrflow cannot use it."""
    if not name or not name.strip():
        raise ValueError(f"model name {name!r} is empty")
    bad = [c for c in ("/", ":") if c in name]
    if bad:
        raise ValueError(
            f"model name {name!r} contains {' and '.join(map(repr, bad))}: MLflow does not "
            "allow '/' or ':' in registered model names"
        )
    if "'" in name and '"' in name:
        raise ValueError(
            f"model name {name!r} contains both ' and \": MLflow's search filters have no escape "
            "for quotes, so it could not be looked up; use at most one kind of quote"
        )


def name_filter(name: str) -> str:
    """``name = '<name>'`` for ``search_model_versions``, quoted so the name stays one value."""
    check_model_name(name)
    quote = '"' if "'" in name else "'"
    return f"name = {quote}{name}{quote}"
