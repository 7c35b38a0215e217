"""hpo_worker step: join the shared study and run trials until its global budget is exact.

Any number of these run at once (pods in a ParallelFor, processes here). Each trial starts only
after the budget check under the study lock (see ``_trial_budget``), so exactly ``budget`` trials
end COMPLETE or PRUNED. A worker whose slots are all taken by other workers' running trials waits
and keeps failing stale trials (a killed worker's trial ends FAIL, its retry is enqueued and run
here), so the budget is reached as long as one worker lives.

A PostgreSQL outage is ridden out (``_outage``): a trial in flight waits in its next write and
goes on once the database is back; a loss while the study lock is held (the server dropped the
lock with the session) abandons that iteration, which starts over under a new lock. Past the
limit the worker stops with ``StorageOutageError`` (``ctrflow hpo worker`` exits 3); its trial
stays RUNNING and is retried by the heartbeat machinery of the workers that remain. The
stale-trial grace period is derived from that limit (``StorageSettings.stale_after``), so a
worker that rides out an outage keeps its trial: no other worker takes it for dead meanwhile.

A worker that freezes (a stopped container, a paused VM) keeps its PostgreSQL sessions, so its
locks would outlive it: a row lock held inside a transaction, or the study lock. The server ends
such a session once it has been idle in a transaction, or idle holding the study lock, for the
grace period; the locks go with it and the others go on (``storage._engine_kwargs``,
``StudyLock``). A server or worker that vanishes without closing its connections is noticed at
both ends within ``StorageSettings.dead_server_after`` (``_dead_peer``).
"""

from __future__ import annotations

import functools
import logging
import math
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ctrflow.components.hpo._fast_path import ChosenStorage, fast_path_setting, worker_storage
from ctrflow.components.hpo._outage import Outage, is_connection_loss, quiet_optuna_fallback
from ctrflow.components.hpo._outage_storage import StudyLockLostError
from ctrflow.components.hpo._study_config import StudyConfig, build_pruner, build_sampler
from ctrflow.components.hpo._trial_budget import BudgetCounts, TrialBudget
from ctrflow.components.hpo.objectives import make_objective
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage, outage_of

__all__ = ["WorkerResult", "run_worker"]

_log = logging.getLogger(__name__)
Objective = Callable[[optuna.Trial], float]


@dataclass(frozen=True)
class WorkerResult:
    study_name: str
    budget: int
    trials_run: int  # trials this worker ran, whatever their end state
    finished: int  # COMPLETE + PRUNED in the whole study when this worker stopped
    by_state: dict[str, int]
    fast_path: bool  # Optuna's fast path was used (False: Optuna's stock storage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Outcome:
    """How a trial of this worker ended, for the progress report. Known without reading the
    trial back (an optimize() callback costs a get_trial: 6 SQL statements per trial)."""

    number: int
    state: str  # TrialState name, as Optuna's tell decides it
    value: float | None

    @classmethod
    def of(cls, number: int, value: Any) -> _Outcome:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return cls(number, "FAIL", None)
        # Optuna's tell fails a trial whose value is NaN or infinite.
        return cls(number, "COMPLETE" if math.isfinite(value) else "FAIL", value)


class _Progress:
    """A tqdm bar of the study-wide budget on a terminal; plain log lines otherwise."""

    def __init__(self, budget: int, finished: int, enabled: bool | None, name: str) -> None:
        self._bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=budget, initial=finished, desc=name, unit="trial")

    def trial_done(self, outcome: _Outcome, counts: BudgetCounts) -> None:
        if self._bar is not None:
            self._bar.n = min(counts.finished, counts.budget)
            self._bar.set_postfix(last=outcome.state, refresh=False)
            self._bar.refresh()
        else:
            _log.info(
                "trial %d %s value=%s; study %d/%d finished",
                outcome.number,
                outcome.state,
                outcome.value,
                counts.finished,
                counts.budget,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _load(storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise ValueError(
            f"study {study_name!r} does not exist: run `ctrflow hpo create` first"
        ) from None


def _resolve_budget(config: StudyConfig, budget: int | None, study_name: str) -> int:
    if config.budget is not None and budget is not None and budget != config.budget:
        raise ValueError(
            f"budget {budget} differs from the {config.budget} study {study_name!r} was created "
            "with; all workers must share one budget"
        )
    resolved = budget if budget is not None else config.budget
    if resolved is None:
        raise ValueError(f"study {study_name!r} records no budget: pass one")
    return resolved


def run_worker(
    *,
    storage_url: str,
    study_name: str,
    budget: int | None = None,
    train_dir: str | pathlib.Path | None = None,
    valid_dir: str | pathlib.Path | None = None,
    n_threads: int = 1,
    seed: int | None = None,
    settings: StorageSettings | None = None,
    objective: Objective | None = None,
    poll_interval: float | None = None,
    progress: bool | None = None,
    fast_path: bool | None = None,
) -> WorkerResult:
    """Run trials of ``study_name`` until exactly ``budget`` are COMPLETE or PRUNED study-wide.

    ``objective`` replaces the model objective built from ``train_dir``/``valid_dir`` (tests,
    benchmarks). ``seed`` seeds this worker's sampler: give each worker its own (None: random).
    An exception raised by the objective fails that trial and stops this worker with it.
    ``fast_path``: False uses Optuna's stock storage; None follows $CTRFLOW_OPTUNA_FAST_PATH
    (see ``_fast_path``; an invalid value is an error before anything connects).
    A database outage longer than ``settings.outage_limit`` raises ``StorageOutageError``.
    """
    fast_path = fast_path_setting(fast_path)
    settings = settings or StorageSettings()
    outage = outage_of(storage_url, settings)
    quiet_optuna_fallback()
    storage = make_storage(storage_url, settings, existing=True)
    try:
        study = outage.call(lambda: _load(storage, study_name))
        config = outage.call(lambda: StudyConfig.from_study(study))
        total = _resolve_budget(config, budget, study_name)
        chosen = worker_storage(storage, fast_path=fast_path, outage=outage)
        study = outage.call(
            lambda: optuna.load_study(
                study_name=study_name,
                storage=chosen.storage,
                sampler=build_sampler(config.sampler, storage, seed),
                pruner=build_pruner(config.pruner),
            )
        )
        if objective is None:
            if train_dir is None or valid_dir is None:
                raise ValueError("train_dir and valid_dir are needed to build the objective")
            objective = make_objective(
                space=config.space,
                train_dir=train_dir,
                valid_dir=valid_dir,
                n_threads=n_threads,
                seed=config.seed,
            )
        study_id = outage.call(lambda: storage.get_study_id_from_name(study_name))
        guard = TrialBudget(storage, study_id, total)
        # Waiting workers re-check once a second: a finished trial frees its slot at once.
        poll = poll_interval or min(1.0, float(settings.heartbeat_interval or 1))
        return _loop(study, chosen, objective, guard, poll, progress, outage)
    finally:
        dispose(storage)


def _loop(
    study: optuna.Study,
    chosen: ChosenStorage,
    objective: Objective,
    guard: TrialBudget,
    poll: float,
    progress_enabled: bool | None,
    outage: Outage,
) -> WorkerResult:
    lock = guard.lock()
    hints = chosen.hints  # the fast path's shortcuts; no-ops on Optuna's stock storage
    hints.use_lock(lock)
    counts = outage.call(guard.counts)
    progress = _Progress(guard.budget, counts.finished, progress_enabled, study.study_name)
    trials_run = 0

    running: list[int] = []  # number of the trial in progress
    raised: list[BaseException] = []  # what the objective itself raised, if anything

    last: list[_Outcome] = []  # reported with the next count, which costs no extra query

    def admitted(trial: optuna.Trial) -> float:
        # The trial is RUNNING in the storage now, so the next worker's count includes it.
        # (The fast path released the lock once the trial was committed; this is a no-op then.)
        nonlocal trials_run
        lock.release()
        running[:] = [trial.number]
        trials_run += 1
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            last.append(_Outcome(trial.number, "PRUNED", None))
            raise
        except Exception as exc:
            raised[:] = [exc]
            last.append(_Outcome(trial.number, "FAIL", None))
            raise
        last.append(_Outcome.of(trial.number, value))
        return value

    try:
        while True:
            started = False
            try:
                lock.acquire()
            except Exception as exc:
                _lost(outage, exc)
                continue
            try:
                counts = guard.counts(lock)
                outage.recovered()  # the database answers: an outage seen here is over
                if counts.full and not counts.done:
                    # Every slot is taken; some may be held by dead workers' trials. (Optuna
                    # itself fails stale trials before each `ask`, so this runs only here.)
                    guard.reclaim(study, lock)
                    counts = guard.counts(lock)
                while last:
                    progress.trial_done(last.pop(), counts)
                if counts.done:
                    break
                if not counts.full:
                    started = True
                    running.clear()
                    raised.clear()
                    try:
                        with hints.counted(counts.running, counts.by_state.get("WAITING", 0)):
                            study.optimize(admitted, n_trials=1)
                    except StudyLockLostError as exc:
                        _log.warning("%s: handing the trial back (FAIL, retry enqueued)", exc)
                        outage.call(functools.partial(guard.give_back, study, exc.trial_id))
                    except Exception as exc:
                        if running or not is_connection_loss(exc):
                            if not _failed_as_stale(study, running, raised, exc):
                                raise
                            last[:] = [_Outcome(running[0], "FAIL", None)]
                        else:
                            raise  # lost under the lock, before a trial ran: start over
            except Exception as exc:
                lock.release()  # before waiting: the other workers go on meanwhile
                _lost(outage, exc)
                continue
            finally:
                lock.release()
            if not started:
                time.sleep(poll)  # all slots taken: wait for them to finish or go stale
    finally:
        progress.close()
    _log.info(
        "study %s: %d/%d trials finished; this worker ran %d",
        study.study_name,
        counts.finished,
        guard.budget,
        trials_run,
    )
    return WorkerResult(
        study_name=study.study_name,
        budget=guard.budget,
        trials_run=trials_run,
        finished=counts.finished,
        by_state=counts.by_state,
        fast_path=chosen.fast,
    )


def _lost(outage: Outage, exc: Exception) -> None:
    """A database error in the worker loop: an outage is waited out (the caller starts the
    iteration over) until it outlasts the limit; anything else is raised."""
    if not is_connection_loss(exc):
        raise exc
    outage.lost(exc)


def _failed_as_stale(
    study: optuna.Study, running: list[int], raised: list[BaseException], exc: Exception
) -> bool:
    """True when another worker failed this worker's trial as stale while it still ran (this
    process stalled longer than the grace period): Optuna then refuses to record the result
    ("Cannot tell a FAIL trial", or UpdateFinishedTrialError from inside the objective). The
    retry enqueued by that worker is the one that counts, so this worker just goes on."""
    if not running or (
        raised and raised[0] is exc and not isinstance(exc, UpdateFinishedTrialError)
    ):
        return False  # the objective's own error: the trial is FAIL and the worker stops
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == running[0])
    if trial.state != TrialState.FAIL:
        return False
    _log.warning(
        "trial %d was failed as stale by another worker while this one still ran it "
        "(stalled > grace period); its retry counts instead: %s",
        trial.number,
        exc,
    )
    return True
