"""A worker's Optuna storage that rides out an outage (``_outage``), on the fast path and off it.

``riding(cls)`` is ``cls`` (Optuna's ``_CachedStorage`` or the fast path's ``WorkerStorage``)
with every database call Optuna makes retried through the worker's ``Outage``, but one rule:
while the calling thread holds the study lock, nothing is retried. The lock is a PostgreSQL
session lock, and a server that went away took it along: what the worker counted under it may no
longer hold, so the loop (``hpo_worker``) gives that iteration up and starts over under a new
lock. The lock is released as soon as the new trial is RUNNING; from then on every write is to
this worker's own trial, guarded by its RUNNING state, and is retried:

- a write repeated after a lost answer finds its row and updates it (params, steps, attributes,
  heartbeats are upserts in Optuna and in ``TrialWrites``);
- a ``tell`` whose commit went through but whose answer was lost finds the trial finished on the
  retry; when it is stored with the state and values this worker sent, that is its own write;
- a trial made RUNNING while the lock was lost (``StudyLock.release`` cannot confirm it) may
  have raced another worker's count: ``StudyLockLostError`` hands it back (FAIL and its retry
  enqueued, ``TrialBudget.give_back``) so that it never overshoots the budget.

The heartbeat thread retries too; when the worker gives up it stops quietly (the loop reports).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo._outage import Outage, StorageOutageError, is_connection_loss
from ctrflow.components.hpo._trial_budget import StudyLock

__all__ = ["RidesOutages", "StudyLockLostError", "riding"]

T = TypeVar("T")

# BaseStorage methods Optuna calls during a worker's trials that are safe to repeat as they are.
_RETRIED = (
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "set_study_user_attr",
    "set_study_system_attr",
    "set_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "_get_stale_trial_ids",
)


class StudyLockLostError(Exception):
    """A trial became RUNNING but the study lock was lost meanwhile: give the trial back."""

    def __init__(self, trial_id: int) -> None:
        super().__init__(
            f"the study lock was lost while trial id {trial_id} was started (another worker "
            "may have counted the budget meanwhile)"
        )
        self.trial_id = trial_id


class RidesOutages:
    """The mixin; first in the bases, before the storage class it wraps."""

    _outage: Outage
    _fence: StudyLock | None = None

    def rides(self, outage: Outage) -> None:
        self._outage = outage

    def use_lock(self, lock: StudyLock | None) -> None:
        self._fence = lock
        parent = getattr(super(), "use_lock", None)
        if parent is not None:
            parent(lock)

    def counted(self, running: int, waiting: int) -> AbstractContextManager[None]:
        parent = getattr(super(), "counted", None)
        return contextlib.nullcontext() if parent is None else parent(running, waiting)

    def _ride(self, func: Callable[[], T]) -> T:
        fence = self._fence
        if fence is not None and fence.held_here:
            return func()  # a loss aborts the worker's iteration instead (see the docstring)
        return self._outage.call(func)

    def _admitted(self, trial_id: int) -> None:
        """The new trial is RUNNING: release the study lock, or give the trial back if the lock
        was lost before this point."""
        fence = self._fence
        if fence is not None and not fence.release():
            raise StudyLockLostError(trial_id)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        parent = super().create_new_trial  # type: ignore[misc]
        trial_id: int = self._ride(lambda: parent(study_id, template_trial))
        if template_trial is None:  # a trial to run now (with a template: an enqueued one)
            self._admitted(trial_id)
        return trial_id

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        parent = super().set_trial_state_values  # type: ignore[misc]
        losses: list[BaseException] = []

        def attempt() -> bool:
            try:
                return bool(parent(trial_id, state=state, values=values))
            except UpdateFinishedTrialError:
                if losses and self._stored_as(trial_id, state, values):
                    return True  # the lost answer's commit went through: it was this write
                raise
            except Exception as exc:
                if is_connection_loss(exc):
                    losses.append(exc)
                raise

        done = self._ride(attempt)
        if done and state == TrialState.RUNNING:  # a WAITING trial popped to run now
            self._admitted(trial_id)
        return done

    def _stored_as(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        stored = self._backend.get_trial(trial_id)  # type: ignore[attr-defined]
        return bool(stored.state == state and stored.values == (list(values) if values else None))

    def record_heartbeat(self, trial_id: int) -> None:
        parent = super().record_heartbeat  # type: ignore[misc]
        # Optuna's heartbeat thread: the worker's own thread reports the outage and stops.
        with contextlib.suppress(StorageOutageError):
            self._ride(lambda: parent(trial_id))


def _retried(name: str) -> Callable[..., Any]:
    def method(self: RidesOutages, *args: Any, **kwargs: Any) -> Any:
        parent = getattr(super(RidesOutages, self), name)
        return self._ride(lambda: parent(*args, **kwargs))

    method.__name__ = method.__qualname__ = name
    return method


for _name in _RETRIED:
    setattr(RidesOutages, _name, _retried(_name))


@functools.cache
def riding(cls: type[Any]) -> type[Any]:
    """``cls`` with the mixin: construct it as ``cls``, then call ``rides(outage)``."""
    return type(f"Riding{cls.__name__}", (RidesOutages, cls), {"__module__": __name__})
