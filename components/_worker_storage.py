"""Optuna's per-process trial cache over RDBStorage, without the reads per trial it can skip.

``optuna.load_study(storage=RDBStorage)`` wraps the storage in Optuna's ``_CachedStorage``. A
trial then reads the database more often than it needs to, 6-7 SQL statements and a pool checkout
each read, which is most of the per-trial storage cost of a short trial:

- ``_pop_waiting_trial_id`` reads every unfinished or new trial (``get_all_trials`` with
  ``states=(WAITING,)``) to look for an enqueued trial; there is almost never one (the defaults,
  a stale trial's retry). Here one indexed ``LIMIT 1`` query answers "none" first.
- ``Trial.__init__`` reads back the trial ``create_new_trial`` has just inserted. That trial is
  RUNNING, owned by this thread, and nothing has written it since, so the row built at insert
  time is what the read returns; it is handed out (a copy) once, to that first read only.

- ``tell`` reads the trial back to check it is still RUNNING and to see what it reported. For a
  trial this thread created, every write went through here and was applied to a copy; one query
  for the state stands in for the read while the state is RUNNING (no other process writes a
  RUNNING trial; one that fails it as stale changes the state, and then the read is done).
- A pruner's ``should_prune`` (per epoch) reads the COMPLETE trials (``get_all_trials`` with
  ``states=(COMPLETE,)``). A finished trial never changes and the cache's COMPLETE trials are a
  subset of the stored ones, so when one ``COUNT`` finds as many stored as cached, the cached
  ones are the answer.

And, when the worker loop passes what its budget count saw under the study lock (``counted``):
while that lock is held no other worker starts, pops or reclaims a trial, so with no RUNNING
trial Optuna's stale-trial scan before ``ask`` has nothing to find (2 statements), and with none
WAITING either there is nothing to pop (the ``LIMIT 1`` query above).

Everything else, writes included, goes to Optuna's class unchanged.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage, _CachedStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = ["WorkerStorage"]

_ANY_WAITING = sqlalchemy.text(
    "SELECT 1 FROM trials WHERE study_id = :sid AND state = 'WAITING' LIMIT 1"
)


_STATE = sqlalchemy.text("SELECT state FROM trials WHERE trial_id = :tid")
_COUNT_COMPLETE = sqlalchemy.text(
    "SELECT COUNT(*) FROM trials WHERE study_id = :sid AND state = 'COMPLETE'"
)


class WorkerStorage(_CachedStorage):
    """What a worker passes to ``optuna.load_study`` instead of its RDBStorage."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._local = threading.local()  # the trial this thread just created, until first read

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        del state["_local"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()

    @contextmanager
    def counted(self, running: int, waiting: int) -> Iterator[None]:
        """Around one ``optimize(n_trials=1)`` started under the study lock right after the
        budget count saw ``running`` RUNNING and ``waiting`` WAITING trials."""
        self._local.counted = (running, waiting)
        try:
            yield
        finally:
            self._local.counted = None

    def _counted(self) -> tuple[int, int] | None:
        counted: tuple[int, int] | None = getattr(self._local, "counted", None)
        return counted

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        counted = self._counted()
        if counted is not None and counted[0] == 0:
            return []
        self._local.counted = None  # a stale trial's retry may be enqueued from here on
        return super()._get_stale_trial_ids(study_id)

    def _take_fresh(self) -> FrozenTrial | None:
        fresh: FrozenTrial | None = getattr(self._local, "fresh", None)
        self._local.fresh = None
        return fresh

    def _own(self, trial_id: int) -> FrozenTrial | None:
        """This thread's trial as written through here, if ``trial_id`` is that trial."""
        own: FrozenTrial | None = getattr(self._local, "own", None)
        return own if own is not None and own._trial_id == trial_id else None

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        self._local.fresh = self._local.own = None
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None:  # a new RUNNING trial of this thread (not an enqueued one)
            with self._lock:
                sid, number = self._trial_id_to_study_id_and_number[trial_id]
                created = self._studies[sid].trials[number]
                self._local.fresh = copy.deepcopy(created)
                self._local.own = copy.deepcopy(created)
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        fresh = self._take_fresh()
        if fresh is not None and fresh._trial_id == trial_id:
            return fresh
        own = self._own(trial_id)
        if own is not None:
            with self._backend.engine.connect() as conn:
                state = conn.execute(_STATE, {"tid": trial_id}).scalar_one()
            if state == TrialState.RUNNING.name:
                return copy.deepcopy(own)
            self._local.own = None  # failed as stale (or finished) elsewhere: read it all
        return super().get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states == (TrialState.WAITING,):  # Study._pop_waiting_trial_id's query
            counted, self._local.counted = self._counted(), None
            if counted == (0, 0):
                return []
            with self._backend.engine.connect() as conn:
                if conn.execute(_ANY_WAITING, {"sid": study_id}).first() is None:
                    return []
        if states == (TrialState.COMPLETE,):  # a pruner's query, once per reported step
            with self._lock:
                info = self._studies.get(study_id)
                cached = (
                    [] if info is None else [t for t in info.trials.values() if t.state in states]
                )
            if cached:
                with self._backend.engine.connect() as conn:
                    stored = conn.execute(_COUNT_COMPLETE, {"sid": study_id}).scalar_one()
                if stored == len(cached):
                    cached.sort(key=lambda t: t.number)
                    return copy.deepcopy(cached) if deepcopy else cached
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    # Any write to a trial ends the "nothing has written it since" of a fresh trial.
    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._take_fresh()
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        own = self._own(trial_id)
        if own is not None:
            own.params[param_name] = distribution.to_external_repr(param_value_internal)
            own.distributions[param_name] = distribution

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._take_fresh()
        if self._own(trial_id) is not None and state != TrialState.RUNNING:
            self._local.own = None
        return super().set_trial_state_values(trial_id, state=state, values=values)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._take_fresh()
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        own = self._own(trial_id)
        if own is not None:
            own.intermediate_values[step] = float(intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._take_fresh()
        super().set_trial_user_attr(trial_id, key, value)
        own = self._own(trial_id)
        if own is not None:
            own.user_attrs[key] = json.loads(json.dumps(value))  # as stored: tuples -> lists

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._take_fresh()
        super().set_trial_system_attr(trial_id, key, value)
        own = self._own(trial_id)
        if own is not None:
            own.system_attrs[key] = json.loads(json.dumps(value))
