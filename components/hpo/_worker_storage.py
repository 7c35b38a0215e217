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
WAITING either there is nothing to pop (the ``LIMIT 1`` query above). With no other trial
RUNNING, the sampler's snapshot read (``_CachedStorage._read_trials_from_remote_storage``: the
trials newer than the last finished one it holds, and its unfinished ones; 7 statements) most
likely finds only this thread's trials: the one it just created and the one it just told. One
query of their ids and states checks that; then the trials as this thread wrote them (see
below) go into the cache as that read would have put them. Any other trial, or a state that
differs (failed elsewhere), and the read is done as Optuna does it.

Writes to this thread's own RUNNING trial (the one ``create_new_trial`` inserted without a
template; not an enqueued trial it popped) go through ``TrialWrites`` on PostgreSQL and SQLite:
one guarded Core statement per write instead of an ORM session of 3-5, the same rows. A write
it cannot apply (the trial was failed as stale meanwhile, a row exists already) falls back to
Optuna's method, which raises or updates as Optuna does. ``create_new_trial`` itself is one
transaction of two statements under Optuna's study row lock, and the heartbeat one upsert. A
parameter's distribution is checked against the study's stored one by Optuna on its first
write in this process, then against that cached one (as ``_CachedStorage`` does). Each write is
also applied to this thread's copy of the trial, so a successful final write leaves a copy equal
to the stored trial (``told``). Single statements and the reads here run on autocommit
connections: BEGIN and COMMIT/ROLLBACK would be two more round trips each.

Everything else goes to Optuna's classes unchanged. Optuna 5.0 internals relied on:
``_CachedStorage``'s ``_studies``/``_StudyInfo`` (``trials``, ``param_distribution``),
``_trial_id_to_study_id_and_number``, ``_add_trials_to_cache``, ``_lock``, ``_backend``,
``_read_trials_from_remote_storage`` and its bookkeeping (``last_finished_trial_id``,
``unfinished_trial_ids``);
RDBStorage's schema (see ``_trial_writes``); ``Study._pop_waiting_trial_id`` asking
``get_all_trials(states=(WAITING,))`` and pruners asking ``states=(COMPLETE,)``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage, _CachedStorage
from optuna.storages._cached_storage import _StudyInfo
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo._trial_budget import StudyLock
from ctrflow.components.hpo._trial_writes import TrialWrites

__all__ = ["WorkerStorage"]

_ANY_WAITING = sqlalchemy.text(
    "SELECT 1 FROM trials WHERE study_id = :sid AND state = 'WAITING' LIMIT 1"
)


_STATE = sqlalchemy.text("SELECT state FROM trials WHERE trial_id = :tid")
_TRIALS = models.TrialModel.__table__
# The rows _CachedStorage._read_trials_from_remote_storage reads, their ids and states only.
_TO_READ = (
    sqlalchemy.select(_TRIALS.c.trial_id, _TRIALS.c.state)
    .where(
        _TRIALS.c.study_id == sqlalchemy.bindparam("sid"),
        sqlalchemy.or_(
            _TRIALS.c.trial_id > sqlalchemy.bindparam("last"),
            _TRIALS.c.trial_id.in_(sqlalchemy.bindparam("ids", expanding=True)),
        ),
    )
    .order_by(_TRIALS.c.trial_id)
)
# RDBStorage._get_stale_trial_ids as one query: RUNNING trials whose heartbeat is older than the
# grace period by the server's clock (LOCALTIMESTAMP is Optuna's now() with the zone dropped).
_STALE = sqlalchemy.text(
    "SELECT t.trial_id FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id"
    " WHERE t.study_id = :sid AND t.state = 'RUNNING'"
    " AND LOCALTIMESTAMP - h.heartbeat > make_interval(secs => :grace) ORDER BY t.trial_id"
)
_COUNT_COMPLETE = sqlalchemy.text(
    "SELECT COUNT(*) FROM trials WHERE study_id = :sid AND state = 'COMPLETE'"
)


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy whose containers can be changed apart from ``trial``'s, as ``copy.deepcopy`` makes
    but in a fraction of its time: the values in params and intermediate values are scalars,
    datetimes are immutable, and distributions are never changed after construction (Optuna
    shares them the same way between a Trial and its storage); attrs may nest, so they are
    deep-copied."""
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,  # copied by the constructor
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=copy.deepcopy(trial.user_attrs),
        system_attrs=copy.deepcopy(trial.system_attrs),
        intermediate_values=dict(trial.intermediate_values),
        trial_id=trial._trial_id,
    )


class WorkerStorage(_CachedStorage):
    """What a worker passes to ``optuna.load_study`` instead of its RDBStorage."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._local = threading.local()  # the trial this thread just created, until first read
        self._writes = self._fast_writes()
        self._beaten: set[int] = set()  # trials whose first heartbeat came with their creation

    def _fast_writes(self) -> TrialWrites | None:
        engine = self._backend.engine
        return TrialWrites(engine) if TrialWrites.supported(engine) else None

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        del state["_local"], state["_writes"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()
        self._writes = self._fast_writes()
        self._beaten = set()

    def use_lock(self, lock: StudyLock | None) -> None:
        """The worker loop's study lock, for this thread: while it is held, this thread's reads
        and its trial creation run on the lock's own connection (PostgreSQL), so a worker needs
        one connection, not two, until its new trial is committed; then the lock is released
        at once (the next worker's count includes the trial)."""
        self._local.lock = lock

    def _borrowed(self) -> sqlalchemy.Connection | None:
        lock: StudyLock | None = getattr(self._local, "lock", None)
        return None if lock is None else lock.connection

    @contextmanager
    def counted(self, running: int, waiting: int) -> Iterator[None]:
        """Around one ``optimize(n_trials=1)`` started under the study lock right after the
        budget count saw ``running`` RUNNING and ``waiting`` WAITING trials."""
        self._local.counted = (running, waiting)
        self._local.alone = running == 0
        try:
            yield
        finally:
            self._local.counted = None
            self._local.alone = False

    def _query(self, stmt: sqlalchemy.Executable, params: dict[str, Any]) -> sqlalchemy.Result[Any]:
        """One read on an autocommit connection (no BEGIN and ROLLBACK round trips); the rows
        are fetched before the connection goes back to the pool."""
        borrowed = self._borrowed()
        if borrowed is not None:  # autocommit already
            return borrowed.execute(stmt, params).freeze()()
        with self._backend.engine.connect() as conn:
            autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
            return autocommit.execute(stmt, params).freeze()()

    def _counted(self) -> tuple[int, int] | None:
        counted: tuple[int, int] | None = getattr(self._local, "counted", None)
        return counted

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        counted = self._counted()
        if counted is not None and counted[0] == 0:
            return []
        self._local.counted = None  # a stale trial's retry may be enqueued from here on
        interval = self._backend.heartbeat_interval
        if self._borrowed() is None or interval is None:
            return super()._get_stale_trial_ids(study_id)
        grace = self._backend.grace_period or 2 * interval  # as Optuna's default
        rows = self._query(_STALE, {"sid": study_id, "grace": float(grace)})
        return [int(trial_id) for (trial_id,) in rows]

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
        if template_trial is not None:  # an enqueued trial: not this thread's own
            return super().create_new_trial(study_id, template_trial)
        created = None
        if self._writes is not None:
            # The first heartbeat goes in with the trial: Optuna's heartbeat thread beats at
            # once when the objective starts, and that beat (skipped, see record_heartbeat)
            # would need a second connection while this thread writes its parameters.
            heartbeat = self._backend.heartbeat_interval is not None
            # On an error (e.g. a deadlock) Optuna's method retries, and raises its own errors.
            with contextlib.suppress(StorageInternalError):
                created = self._writes.create_running(
                    study_id, heartbeat=heartbeat, on=self._borrowed()
                )
            if created is not None and heartbeat:
                with self._lock:
                    self._beaten.add(created._trial_id)
        if created is None:
            trial_id = super().create_new_trial(study_id)
        else:
            trial_id = created._trial_id
            with self._lock:  # what _CachedStorage.create_new_trial does with its trial
                self._studies.setdefault(study_id, _StudyInfo())
                self._add_trials_to_cache(study_id, [created])
        lock: StudyLock | None = getattr(self._local, "lock", None)
        if lock is not None:
            lock.release()  # the RUNNING trial is committed: the budget guard needs no more
        # A new RUNNING trial of this thread.
        with self._lock:
            sid, number = self._trial_id_to_study_id_and_number[trial_id]
            created = self._studies[sid].trials[number]
            self._local.fresh = _copy(created)
            self._local.own = _copy(created)
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        fresh = self._take_fresh()
        if fresh is not None and fresh._trial_id == trial_id:
            return fresh
        own = self._own(trial_id)
        if own is not None:
            state = self._query(_STATE, {"tid": trial_id}).scalar_one()
            if state == TrialState.RUNNING.name:
                return _copy(own)
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
            if self._query(_ANY_WAITING, {"sid": study_id}).first() is None:
                return []
        if states == (TrialState.COMPLETE,):  # a pruner's query, once per reported step
            with self._lock:
                info = self._studies.get(study_id)
                cached = (
                    [] if info is None else [t for t in info.trials.values() if t.state in states]
                )
            if cached:
                stored = self._query(_COUNT_COMPLETE, {"sid": study_id}).scalar_one()
                if stored == len(cached):
                    cached.sort(key=lambda t: t.number)
                    return copy.deepcopy(cached) if deepcopy else cached
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        if not (getattr(self._local, "alone", False) and self._read_known(study_id)):
            super()._read_trials_from_remote_storage(study_id)

    def _read_known(self, study_id: int) -> bool:
        """``_CachedStorage``'s incremental read, when every trial it would read is one of this
        thread's whose stored content is known here: its RUNNING trial and the ones it told
        (fast path). One query of (id, state) checks that; False (nothing done) otherwise."""
        known = dict(self._told())
        own: FrozenTrial | None = getattr(self._local, "own", None)
        if own is not None:
            known[own._trial_id] = own
        if not known or self._writes is None:
            return False
        with self._lock:
            study = self._studies.setdefault(study_id, _StudyInfo())
            params = {
                "sid": study_id,
                "last": study.last_finished_trial_id,
                "ids": sorted(study.unfinished_trial_ids),
            }
            rows = [(int(row.trial_id), row.state) for row in self._query(_TO_READ, params)]
            if not rows or any(
                trial_id not in known or known[trial_id].state != state for trial_id, state in rows
            ):
                return False  # another worker's trial, or one changed elsewhere: read them all
            # A told trial is referenced from `told` alone: it moves into the cache as it is.
            own_id = None if own is None else own._trial_id
            trials = [known[t] if t != own_id else _copy(known[t]) for t, _ in rows]
            # The rest is _CachedStorage._read_trials_from_remote_storage after its read.
            self._add_trials_to_cache(study_id, trials)
            for trial in trials:
                if not trial.state.is_finished():
                    study.unfinished_trial_ids.add(trial._trial_id)
                    continue
                study.last_finished_trial_id = max(study.last_finished_trial_id, trial._trial_id)
                study.unfinished_trial_ids.discard(trial._trial_id)
                self._told().pop(trial._trial_id, None)  # cached as finished: never read again
        return True

    # Any write to a trial ends the "nothing has written it since" of a fresh trial. A write to
    # this thread's own trial is tried the fast way first, and applied to its copy.
    def _fast(self, trial_id: int) -> TrialWrites | None:
        return None if self._own(trial_id) is None else self._writes

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._take_fresh()
        fast = self._fast(trial_id)
        if not (
            fast is not None
            and self._cached_compatible(trial_id, param_name, distribution)
            and fast.param(trial_id, param_name, param_value_internal, distribution)
        ):
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        own = self._own(trial_id)
        if own is not None and param_name not in own.params:  # a duplicate is not stored
            own.params[param_name] = distribution.to_external_repr(param_value_internal)
            own.distributions[param_name] = distribution

    def _cached_compatible(self, trial_id: int, name: str, distribution: BaseDistribution) -> bool:
        """True when the study's distribution of ``name`` is cached and compatible; a first one
        is checked by Optuna against the stored one, an incompatible one raises there too."""
        with self._lock:
            study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
            cached = self._studies[study_id].param_distribution.get(name)
        if cached is None:
            return False
        try:
            check_distribution_compatibility(cached, distribution)
        except ValueError:
            return False
        return True

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._take_fresh()
        own, fast = self._own(trial_id), self._fast(trial_id)
        if own is not None and state != TrialState.RUNNING:
            self._local.own = None
        if own is not None and fast is not None and state.is_finished():
            done = fast.finish(trial_id, state, values)
            if done is not None:
                own.state, own.values, own.datetime_complete = state, values, done
                told = self._told()
                told[trial_id] = own  # as it is stored now, for the next snapshot read
                while len(told) > 8:  # never read back (no further ask): forget the oldest
                    del told[next(iter(told))]
                return True
        return super().set_trial_state_values(trial_id, state=state, values=values)

    def _told(self) -> dict[int, FrozenTrial]:
        told: dict[int, FrozenTrial] | None = getattr(self._local, "told", None)
        if told is None:
            told = self._local.told = {}
        return told

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._take_fresh()
        fast = self._fast(trial_id)
        if fast is None or not fast.intermediate(trial_id, step, intermediate_value):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        own = self._own(trial_id)
        if own is not None:
            own.intermediate_values[step] = float(intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr("user", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr("system", trial_id, key, value)

    def _set_attr(self, kind: str, trial_id: int, key: str, value: Any) -> None:
        self._take_fresh()
        fast = self._fast(trial_id)
        if fast is None or not fast.attr(kind, trial_id, key, value):
            if kind == "user":
                super().set_trial_user_attr(trial_id, key, value)
            else:
                super().set_trial_system_attr(trial_id, key, value)
        own = self._own(trial_id)
        if own is not None:
            attrs = own.user_attrs if kind == "user" else own.system_attrs
            attrs[key] = json.loads(json.dumps(value))  # as stored: tuples -> lists

    def record_heartbeat(self, trial_id: int) -> None:
        with self._lock:
            if trial_id in self._beaten:  # its first beat was written with the trial
                self._beaten.discard(trial_id)
                return
        if self._writes is None:
            super().record_heartbeat(trial_id)
        else:
            self._writes.heartbeat(trial_id)
