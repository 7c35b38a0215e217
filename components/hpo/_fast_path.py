"""The one way a worker gets its storage: Optuna's fast path when it fits, else Optuna's own.

The fast path (``WorkerStorage`` over ``TrialWrites``) replaces parts of Optuna's private RDB
storage internals, written against Optuna 5.0. A later Optuna may rename a private method, move
a cache field or change a table, and the fast path would then break or, worse, store something
different. So ``worker_storage`` checks, before the fast path is even imported, the Optuna
version and every private name it relies on: ``_CachedStorage``'s methods (with their
parameters) and the instance attributes it reads, ``_StudyInfo``'s fields, the RDBStorage
attributes and methods it uses, ``Study._pop_waiting_trial_id``, and the tables, columns,
unique constraints and stored forms in ``optuna.storages._rdb.models``. Anything that does not
match, and the worker uses Optuna's stock storage (the plain RDBStorage, which
``optuna.load_study`` wraps in Optuna's own ``_CachedStorage``) with one warning per process
naming what did not match. Slower, never wrong.

``$CTRFLOW_OPTUNA_FAST_PATH`` (``0/off/false/no``), ``fast_path=False`` or ``ctrflow hpo worker
--optuna-fast-path off`` turn it off. The schema of a live database is not inspected here (it
would cost queries and connections per worker): ``create_study`` runs Optuna's own schema check
and the workers skip it (``make_storage(existing=True)``), so the models are what the tables are.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage, _CachedStorage

from ctrflow.components.hpo._outage import Outage
from ctrflow.components.hpo._outage_storage import riding
from ctrflow.components.hpo._trial_budget import StudyLock
from ctrflow.components.names import OPTUNA_FAST_PATH_ENV

__all__ = [
    "SUPPORTED_OPTUNA",
    "ChosenStorage",
    "LoopHints",
    "fast_path_setting",
    "mismatches",
    "worker_storage",
]

_log = logging.getLogger(__name__)

# Optuna major.minor versions the fast path was written and tested against.
SUPPORTED_OPTUNA = ((5, 0),)

_ON = frozenset({"1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})

# _CachedStorage methods WorkerStorage overrides or calls, with their parameters in Optuna 5.0.
# Optuna calls the overrides, some by keyword: a renamed one would be silently bypassed, a
# renamed parameter would fail mid-trial. __getstate__ must be _CachedStorage's (it copies the
# __dict__; object's returns the live one, which WorkerStorage's would then change).
_CACHED_STORAGE_METHODS: dict[str, tuple[str, ...]] = {
    "__getstate__": ("self",),
    "__setstate__": ("self", "state"),
    "_get_stale_trial_ids": ("self", "study_id"),
    "_read_trials_from_remote_storage": ("self", "study_id"),
    "_add_trials_to_cache": ("self", "study_id", "trials"),
    "create_new_trial": ("self", "study_id", "template_trial"),
    "get_trial": ("self", "trial_id"),
    "get_all_trials": ("self", "study_id", "deepcopy", "states"),
    "set_trial_param": ("self", "trial_id", "param_name", "param_value_internal", "distribution"),
    "set_trial_state_values": ("self", "trial_id", "state", "values"),
    "set_trial_intermediate_value": ("self", "trial_id", "step", "intermediate_value"),
    "set_trial_user_attr": ("self", "trial_id", "key", "value"),
    "set_trial_system_attr": ("self", "trial_id", "key", "value"),
    "record_heartbeat": ("self", "trial_id"),
}
# Instance attributes of _CachedStorage and fields of _StudyInfo, with the type they must have.
_CACHED_STORAGE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "_backend": RDBStorage,
    "_studies": dict,
    "_trial_id_to_study_id_and_number": dict,
    "_lock": type(threading.Lock()),
}
_STUDY_INFO_FIELDS: dict[str, type | tuple[type, ...]] = {
    "trials": dict,
    "unfinished_trial_ids": set,
    "last_finished_trial_id": int,
    "param_distribution": dict,
}
# RDBStorage: _STALE in _worker_storage repeats _get_stale_trial_ids; the rest is read directly.
_RDB_METHODS: dict[str, tuple[str, ...]] = {
    "_get_stale_trial_ids": ("self", "study_id"),
    "record_heartbeat": ("self", "trial_id"),
}
_RDB_FIELDS = ("engine", "heartbeat_interval", "grace_period")
# Model class -> (table, columns used by TrialWrites and the raw SQL in _worker_storage).
_SCHEMA: dict[str, tuple[str, tuple[str, ...]]] = {
    "StudyModel": ("studies", ("study_id",)),
    "TrialModel": (
        "trials",
        ("trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"),
    ),
    "TrialParamModel": (
        "trial_params",
        ("param_id", "trial_id", "param_name", "param_value", "distribution_json"),
    ),
    "TrialValueModel": (
        "trial_values",
        ("trial_value_id", "trial_id", "objective", "value", "value_type"),
    ),
    "TrialIntermediateValueModel": (
        "trial_intermediate_values",
        (
            "trial_intermediate_value_id",
            "trial_id",
            "step",
            "intermediate_value",
            "intermediate_value_type",
        ),
    ),
    "TrialUserAttributeModel": ("trial_user_attributes", ("trial_id", "key", "value_json")),
    "TrialSystemAttributeModel": ("trial_system_attributes", ("trial_id", "key", "value_json")),
    "TrialHeartbeatModel": ("trial_heartbeats", ("trial_id", "heartbeat")),
}
# The unique constraints TrialWrites' ON CONFLICT and "row exists already" fallbacks rely on.
_UNIQUE: dict[str, tuple[str, ...]] = {
    "trial_params": ("trial_id", "param_name"),
    "trial_values": ("trial_id", "objective"),
    "trial_intermediate_values": ("trial_id", "step"),
    "trial_user_attributes": ("trial_id", "key"),
    "trial_system_attributes": ("trial_id", "key"),
    "trial_heartbeats": ("trial_id",),
}
# The raw SQL compares trials.state with these names (SQLAlchemy stores an Enum by name).
_STATES = frozenset({"RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL"})
_STORED_FORMS = {
    "TrialValueModel": "value_to_stored_repr",
    "TrialIntermediateValueModel": "intermediate_value_to_stored_repr",
}

# The fallback warning is given once per process (threads of one process share it).
_warned = False
_warned_lock = threading.Lock()


class LoopHints(Protocol):
    """What the worker loop tells its storage: the study lock it holds, and what it counted."""

    def use_lock(self, lock: StudyLock | None) -> None: ...

    def counted(self, running: int, waiting: int) -> AbstractContextManager[None]: ...


class _StockHints:
    """The stock path needs neither hint. Optuna's storage does every read itself (the stale
    scan and the WAITING read on each ask: correct, only slower), and the worker's objective
    wrapper releases the study lock once ask has committed the RUNNING trial, which keeps the
    budget exact. During ask the lock's connection and a pooled one are both in use: on
    PostgreSQL 2 per worker for that moment (pool_size 1 + max_overflow 1), not 1, and the
    second is closed and reopened per trial (4 workers, 24 trials: 41 sessions opened, at most
    6 at once; 5 and 4 on the fast path). Keeping both open would hold 2 per worker always,
    100 for 50 workers: over PostgreSQL's default limit."""

    def use_lock(self, lock: StudyLock | None) -> None:
        pass

    def counted(self, running: int, waiting: int) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


@dataclass(frozen=True)
class ChosenStorage:
    storage: BaseStorage  # what optuna.load_study gets
    hints: LoopHints
    fast: bool


def fast_path_setting(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else $CTRFLOW_OPTUNA_FAST_PATH (unset or empty: on). An invalid
    value is an error even when ``explicit`` is given: a typo should not pass unnoticed."""
    raw = os.environ.get(OPTUNA_FAST_PATH_ENV, "")
    value = raw.strip().lower()
    if value and value not in _ON | _OFF:
        raise ValueError(
            f"${OPTUNA_FAST_PATH_ENV}={raw!r} is not a valid setting: use 0/off/false/no to "
            "turn the Optuna fast path off, 1/on/true/yes (or unset) to leave it on"
        )
    if explicit is not None:
        return explicit
    return value not in _OFF


def _params(func: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(func).parameters)


def _methods(cls: type, expected: dict[str, tuple[str, ...]], where: str) -> list[str]:
    out = []
    for name, params in expected.items():
        func = getattr(cls, name, None)
        # An abstract one is a base class's (BaseStorage, BaseHeartbeat): not what it was.
        if (
            func is None
            or func is getattr(object, name, None)
            or getattr(func, "__isabstractmethod__", False)
        ):
            out.append(f"{where}.{name} is missing")
        elif _params(func) != params:
            out.append(f"{where}.{name}{_params(func)} is not {where}.{name}{params}")
    return out


def _fields(obj: object, expected: dict[str, type | tuple[type, ...]], where: str) -> list[str]:
    out = []
    for name, kind in expected.items():
        if not hasattr(obj, name):
            out.append(f"{where}.{name} is missing")
        elif not isinstance(getattr(obj, name), kind):
            out.append(f"{where}.{name} is a {type(getattr(obj, name)).__name__}")
    return out


def _schema(models: Any) -> list[str]:
    where = "optuna.storages._rdb.models"
    out = []
    tables: dict[str, sqlalchemy.Table] = {}
    for model, (name, columns) in _SCHEMA.items():
        table = getattr(getattr(models, model, None), "__table__", None)
        if not isinstance(table, sqlalchemy.Table):
            out.append(f"{where}.{model} is missing")
            continue
        if table.name != name:
            out.append(f"{where}.{model} is table {table.name!r}, not {name!r}")
        missing = [c for c in columns if c not in table.c]
        if missing:
            out.append(f"{where}.{model} has no column {', '.join(missing)} ({name})")
        tables[name] = table
    for name, columns in _UNIQUE.items():
        table = tables.get(name)
        if table is not None and not any(
            isinstance(c, sqlalchemy.UniqueConstraint)
            and {col.name for col in c.columns} == set(columns)
            for c in table.constraints
        ):
            out.append(f"{name} has no unique constraint on ({', '.join(columns)})")
    trials = tables.get("trials")
    if trials is not None and "state" in trials.c:
        kind = trials.c.state.type
        if not isinstance(kind, sqlalchemy.Enum) or not set(kind.enums) >= _STATES:
            out.append(f"trials.state does not store the names {', '.join(sorted(_STATES))}")
    for model, func in _STORED_FORMS.items():
        if not callable(getattr(getattr(models, model, None), func, None)):
            out.append(f"{where}.{model}.{func} is missing")
    return out


def _version() -> list[str]:
    version = str(getattr(optuna, "__version__", "unknown"))
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) not in SUPPORTED_OPTUNA:
        written = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_OPTUNA)
        return [f"optuna {version} is installed, the fast path was written for {written}"]
    return []


def mismatches(backend: RDBStorage) -> list[str]:
    """What in the installed Optuna differs from what the fast path relies on; [] if nothing.
    Needs no database access: the instance attributes are read from objects made here."""
    out = _version()
    try:
        cached_module = importlib.import_module("optuna.storages._cached_storage")
        models = importlib.import_module("optuna.storages._rdb.models")
    except ImportError as exc:
        return [*out, f"cannot import {exc.name}"]
    cached_cls = getattr(cached_module, "_CachedStorage", None)
    info_cls = getattr(cached_module, "_StudyInfo", None)
    where = "optuna.storages._cached_storage"
    if not isinstance(cached_cls, type) or not isinstance(info_cls, type):
        out.append(f"{where}._CachedStorage or _StudyInfo is missing")
    else:
        out += _methods(cached_cls, _CACHED_STORAGE_METHODS, "_CachedStorage")
        try:
            out += _fields(cached_cls(backend), _CACHED_STORAGE_FIELDS, "_CachedStorage()")
            out += _fields(info_cls(), _STUDY_INFO_FIELDS, "_StudyInfo()")
        except Exception as exc:  # a changed constructor: whatever it raises is a mismatch
            out.append(f"{where}: cannot make a _CachedStorage or _StudyInfo: {exc!r}")
    out += _methods(RDBStorage, _RDB_METHODS, "RDBStorage")
    out += [f"RDBStorage.{name} is missing" for name in _RDB_FIELDS if not hasattr(backend, name)]
    if not callable(getattr(optuna.study.Study, "_pop_waiting_trial_id", None)):
        out.append("optuna.study.Study._pop_waiting_trial_id is missing")
    return out + _schema(models)


def worker_storage(
    backend: RDBStorage, *, fast_path: bool | None = None, outage: Outage | None = None
) -> ChosenStorage:
    """The storage a worker passes to ``optuna.load_study``, and where its loop's hints go.

    ``fast_path``: None follows $CTRFLOW_OPTUNA_FAST_PATH (default on). On, the fast path is used
    when ``mismatches`` finds nothing; otherwise Optuna's stock storage (``backend`` itself),
    with one warning per process naming what did not match. ``outage``: either one then rides
    out a database outage through it (``_outage_storage``; the stock one as the
    ``_CachedStorage`` that ``optuna.load_study`` would wrap ``backend`` in).
    """
    if not fast_path_setting(fast_path):
        _log.info("Optuna fast path off: the worker uses Optuna's stock storage")
        return _stock(backend, outage)
    found = mismatches(backend)
    if not found:
        try:
            # Imported only now: the module reads Optuna's private names at import.
            from ctrflow.components.hpo._worker_storage import WorkerStorage

            if outage is None:
                fast = WorkerStorage(backend)
            else:
                fast = riding(WorkerStorage)(backend)
                fast.rides(outage)
            return ChosenStorage(fast, fast, fast=True)
        except Exception as exc:  # anything the checks above did not foresee
            found = [f"the fast path failed to load: {exc!r}"]
    _warn_once(found)
    return _stock(backend, outage)


def _stock(backend: RDBStorage, outage: Outage | None) -> ChosenStorage:
    if outage is None:
        return ChosenStorage(backend, _StockHints(), fast=False)
    stock = riding(_CachedStorage)(backend)
    stock.rides(outage)
    return ChosenStorage(stock, stock, fast=False)


def _warn_once(found: list[str]) -> None:
    global _warned
    with _warned_lock:
        first, _warned = not _warned, True
    if first:
        _log.warning(
            "Optuna fast path off, using Optuna's stock storage (correct, slower): the installed "
            "Optuna does not match what the fast path relies on: %s. Set %s=0 to choose the "
            "stock storage without this warning.",
            "; ".join(found),
            OPTUNA_FAST_PATH_ENV,
        )
