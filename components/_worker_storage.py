"""Optuna's per-process trial cache over RDBStorage, without two reads per trial it can skip.

``optuna.load_study(storage=RDBStorage)`` wraps the storage in Optuna's ``_CachedStorage``. Each
``Study.ask`` then reads the database twice more than it needs to, 6-7 SQL statements and a pool
checkout each, which is most of the per-trial storage cost of a short trial:

- ``_pop_waiting_trial_id`` reads every unfinished or new trial (``get_all_trials`` with
  ``states=(WAITING,)``) to look for an enqueued trial; there is almost never one (the defaults,
  a stale trial's retry). Here one indexed ``LIMIT 1`` query answers "none" first.
- ``Trial.__init__`` reads back the trial ``create_new_trial`` has just inserted. That trial is
  RUNNING, owned by this thread, and nothing has written it since, so the row built at insert
  time is what the read returns; it is handed out (a copy) once, to that first read only.

And, when the worker loop passes what its budget count saw under the study lock (``counted``):
while that lock is held no other worker starts, pops or reclaims a trial, so with no RUNNING
trial Optuna's stale-trial scan before ``ask`` has nothing to find (2 statements), and with none
WAITING either there is nothing to pop (the ``LIMIT 1`` query above).

Everything else, writes included, goes to Optuna's class unchanged.
"""

from __future__ import annotations

import copy
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

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        self._local.fresh = None
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None:  # a new RUNNING trial of this thread (not an enqueued one)
            with self._lock:
                sid, number = self._trial_id_to_study_id_and_number[trial_id]
                self._local.fresh = copy.deepcopy(self._studies[sid].trials[number])
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        fresh = self._take_fresh()
        if fresh is not None and fresh._trial_id == trial_id:
            return fresh
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

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._take_fresh()
        return super().set_trial_state_values(trial_id, state=state, values=values)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._take_fresh()
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._take_fresh()
        super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._take_fresh()
        super().set_trial_system_attr(trial_id, key, value)
