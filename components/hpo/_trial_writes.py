"""Writes to a worker's own RUNNING trial in one guarded Core statement each, same rows as Optuna.

Optuna's RDBStorage writes through an ORM session: a pool checkout (a pre-ping), ``BEGIN``, a
``SELECT`` of the trial to check it is still RUNNING, often a ``SELECT`` of the row it will
update, the write, ``COMMIT``; about 1.5 ms of client CPU per write. Here each write is one
prebuilt Core statement on Optuna's own tables whose ``WHERE`` is the RUNNING check
(``INSERT ... SELECT ... FROM trials WHERE trial_id = :tid AND state = 'RUNNING' FOR SHARE``,
or ``UPDATE ... WHERE state = 'RUNNING'``), so the check and the write are one atomic step: on
PostgreSQL a transaction failing the trial at that moment is waited for, and then the write is
refused. A single statement runs on an autocommit connection (no BEGIN/COMMIT round trips). The
final state with one value is one statement on PostgreSQL (a data-modifying CTE), otherwise a
transaction; a new trial is one transaction of two statements under Optuna's study row lock.

Every method returns False/None when the statement did not apply (the trial is no longer
RUNNING, is missing, or the row exists already): the caller then runs Optuna's own method, which
raises Optuna's error (``UpdateFinishedTrialError``, ``KeyError``) or does what Optuna does with
an existing row (update it, ignore a duplicate parameter). Any other database error becomes
Optuna's ``StorageInternalError``, as in Optuna's session wrapper.

PostgreSQL and SQLite (>= 3.35, for ``RETURNING``) only; ``supported`` says whether an engine is
one of them. Relies on Optuna 5.0's schema (``optuna.storages._rdb.models``): the tables, their
unique constraints (trial_id+param_name, trial_id+step, trial_id+objective, trial_id+key,
trial_id for heartbeats) and the stored forms of values (``value_to_stored_repr``,
``intermediate_value_to_stored_repr``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
import sqlalchemy.exc
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.exceptions import StorageInternalError
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

__all__ = ["TrialWrites"]

_B = sqlalchemy.bindparam
_STUDIES = models.StudyModel.__table__
_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_VALUES = models.TrialValueModel.__table__
_INTERMEDIATE = models.TrialIntermediateValueModel.__table__
_USER_ATTRS = models.TrialUserAttributeModel.__table__
_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
_HEARTBEATS = models.TrialHeartbeatModel.__table__


def _typed(name: str, column: sqlalchemy.Column[Any]) -> sqlalchemy.ColumnElement[Any]:
    """A bind for ``column`` in a SELECT list. psycopg sends a str untyped and PostgreSQL then
    takes it for text, which an enum column refuses: enums get a CAST. Nothing else does (the
    dialect adds its own casts; on SQLite a CAST to DATETIME would make a date a number)."""
    bind = _B(name, type_=column.type)
    return sqlalchemy.cast(bind, column.type) if isinstance(column.type, sqlalchemy.Enum) else bind


def _running(trial_id: sqlalchemy.ColumnElement[Any]) -> sqlalchemy.ColumnElement[bool]:
    return sqlalchemy.and_(_TRIALS.c.trial_id == trial_id, _TRIALS.c.state == TrialState.RUNNING)


def _guarded_insert(table: sqlalchemy.Table, columns: Sequence[str]) -> sqlalchemy.Select[Any]:
    """SELECT of the bound values of ``columns`` (trial_id first), one row iff still RUNNING."""
    # FOR SHARE (PostgreSQL; SQLite has one writer at a time anyway): a concurrent transaction
    # failing the trial is waited for, and the row it leaves fails the RUNNING check.
    return (
        sqlalchemy.select(
            _TRIALS.c.trial_id, *(_typed(name, table.c[name]) for name in columns[1:])
        )
        .where(_running(_B("tid")))
        .with_for_update(read=True)
    )


_PARAM_COLUMNS = ("trial_id", "param_name", "param_value", "distribution_json")
_INSERT_PARAM = (
    _PARAMS.insert()
    .from_select(_PARAM_COLUMNS, _guarded_insert(_PARAMS, _PARAM_COLUMNS))
    .returning(_PARAMS.c.param_id)
)
_STEP_COLUMNS = ("trial_id", "step", "intermediate_value", "intermediate_value_type")
_INSERT_STEP = (
    _INTERMEDIATE.insert()
    .from_select(_STEP_COLUMNS, _guarded_insert(_INTERMEDIATE, _STEP_COLUMNS))
    .returning(_INTERMEDIATE.c.trial_intermediate_value_id)
)
_FINISH = (
    _TRIALS.update()
    .where(_running(_B("tid")))
    .values(state=_B("state", type_=_TRIALS.c.state.type), datetime_complete=_B("done"))
)
# PostgreSQL: the state and a single objective's value in one statement (a data-modifying CTE;
# SQLite has none): no value row unless the UPDATE matched, and all or nothing.
_FINISHED = _FINISH.returning(_TRIALS.c.trial_id).cte("finished")
_FINISH_WITH_VALUE = (
    _VALUES.insert()
    .from_select(
        ("trial_id", "objective", "value", "value_type"),
        sqlalchemy.select(
            _FINISHED.c.trial_id,
            _typed("objective", _VALUES.c.objective),
            _typed("value", _VALUES.c.value),
            _typed("value_type", _VALUES.c.value_type),
        ),
    )
    .add_cte(_FINISHED)
    .returning(_VALUES.c.trial_value_id)
)
_INSERT_VALUE = _VALUES.insert().values(
    trial_id=_B("tid"), objective=_B("objective"), value=_B("value"), value_type=_B("value_type")
)
_LOCK_STUDY = (
    sqlalchemy.select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == _B("sid")).with_for_update()
)
# Optuna numbers a trial by counting the study's trials with a smaller id, under the study row
# lock above; every one of them is committed before this insert, so that is a count of them all.
_INSERT_TRIAL = (
    _TRIALS.insert()
    .from_select(
        ("number", "study_id", "state", "datetime_start"),
        sqlalchemy.select(
            sqlalchemy.func.count(_TRIALS.c.trial_id),
            _typed("sid", _TRIALS.c.study_id),
            _typed("state", _TRIALS.c.state),
            _typed("start", _TRIALS.c.datetime_start),
        ).where(_TRIALS.c.study_id == _B("sid")),
    )
    .returning(_TRIALS.c.trial_id, _TRIALS.c.number)
)


def _upserts(dialect: Any) -> dict[str, Any]:
    """Attribute and heartbeat upserts: ``ON CONFLICT`` reads the same on both dialects, but
    SQLAlchemy builds it per dialect."""
    out: dict[str, Any] = {}
    columns = ("trial_id", "key", "value_json")
    for kind, table in (("user", _USER_ATTRS), ("system", _SYSTEM_ATTRS)):
        stmt = dialect.insert(table).from_select(columns, _guarded_insert(table, columns))
        out[kind] = stmt.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key],
            set_={"value_json": stmt.excluded.value_json},
        ).returning(table.c.trial_id)
    # Optuna inserts CURRENT_TIMESTAMP (the column default), later writes the server's now():
    # the same instant, in the same column type.
    beat = dialect.insert(_HEARTBEATS).values(
        trial_id=_B("tid"), heartbeat=sqlalchemy.func.current_timestamp()
    )
    out["heartbeat"] = beat.on_conflict_do_update(
        index_elements=[_HEARTBEATS.c.trial_id],
        set_={"heartbeat": sqlalchemy.func.current_timestamp()},
    )
    return out


_DIALECT_UPSERTS = {
    "postgresql": _upserts(postgresql),
    "sqlite": _upserts(sqlite_dialect),
}


@contextmanager
def _transaction_on(conn: sqlalchemy.Connection) -> Iterator[sqlalchemy.Connection]:
    """A transaction on an autocommit connection, which is autocommit again after it."""
    conn.commit()  # SQLAlchemy's autobegun (no-op) transaction, or the level cannot change
    conn.execution_options(isolation_level="READ COMMITTED")  # PostgreSQL's default
    try:
        with conn.begin():
            yield conn
    finally:
        conn.execution_options(isolation_level="AUTOCOMMIT")


class TrialWrites:
    """The fast writes on one engine (the RDBStorage's: its pool, its caps)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._engine = engine
        self._upsert = _DIALECT_UPSERTS[engine.name]

    @staticmethod
    def supported(engine: sqlalchemy.Engine) -> bool:
        if engine.name == "sqlite":
            return sqlite3.sqlite_version_info >= (3, 35, 0)
        return engine.name == "postgresql"

    @contextmanager
    def _transaction(
        self, single: bool = False, on: sqlalchemy.Connection | None = None
    ) -> Iterator[sqlalchemy.Connection]:
        """A transaction, or for a ``single`` statement an autocommit connection: the statement
        is atomic alone, and BEGIN and COMMIT would be two more round trips. ``on``: an
        autocommit connection to use instead of one from the pool (the study lock's)."""
        try:
            if on is not None:
                with contextlib.nullcontext(on) if single else _transaction_on(on) as conn:
                    yield conn
            elif single:
                with self._engine.connect() as conn:
                    yield conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                with self._engine.begin() as conn:
                    yield conn
        except sqlalchemy.exc.IntegrityError:
            raise
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StorageInternalError(f"a trial write failed: {exc!s}".splitlines()[0]) from exc

    def _applied(self, stmt: Any, params: dict[str, Any]) -> bool:
        """True when ``stmt`` (a guarded insert with RETURNING) wrote its row."""
        try:
            with self._transaction(single=True) as conn:
                return conn.execute(stmt, params).first() is not None
        except sqlalchemy.exc.IntegrityError:
            return False  # the row exists: Optuna's method decides (update, or ignore)

    def create_running(
        self, study_id: int, *, heartbeat: bool = False, on: sqlalchemy.Connection | None = None
    ) -> FrozenTrial | None:
        """A new RUNNING trial of ``study_id`` as Optuna's ``_create_new_trial`` stores and
        returns it, with its first heartbeat when ``heartbeat``; None when the study does not
        exist. ``on``: an autocommit connection to run the transaction on."""
        start = datetime.datetime.now()
        with self._transaction(on=on) as conn:
            if conn.execute(_LOCK_STUDY, {"sid": study_id}).first() is None:
                return None
            trial_id, number = conn.execute(
                _INSERT_TRIAL, {"sid": study_id, "state": TrialState.RUNNING, "start": start}
            ).one()
            if heartbeat:
                conn.execute(self._upsert["heartbeat"], {"tid": trial_id})
        return FrozenTrial(
            number=number,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=start,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=trial_id,
        )

    def param(
        self, trial_id: int, name: str, internal: float, distribution: BaseDistribution
    ) -> bool:
        return self._applied(
            _INSERT_PARAM,
            {
                "tid": trial_id,
                "param_name": name,
                "param_value": internal,
                "distribution_json": distribution_to_json(distribution),
            },
        )

    def intermediate(self, trial_id: int, step: int, value: float) -> bool:
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        return self._applied(
            _INSERT_STEP,
            {
                "tid": trial_id,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            },
        )

    def attr(self, kind: str, trial_id: int, key: str, value: Any) -> bool:
        """Set a user (``kind="user"``) or system attribute, as Optuna's upsert does."""
        return self._applied(
            self._upsert[kind], {"tid": trial_id, "key": key, "value_json": json.dumps(value)}
        )

    def finish(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None
    ) -> datetime.datetime | None:
        """State, values and ``datetime_complete`` of a finished trial, all or nothing; the
        time written, or None when the trial was no longer RUNNING (nothing written)."""
        assert state.is_finished()
        done = datetime.datetime.now()
        finish = {"tid": trial_id, "state": state, "done": done}
        rows = []
        for objective, value in enumerate(values or ()):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            rows.append(finish | {"objective": objective, "value": stored, "value_type": kind})
        try:
            if not rows:  # one statement: no transaction needed
                with self._transaction(single=True) as conn:
                    return done if conn.execute(_FINISH, finish).rowcount else None
            if len(rows) == 1 and self._engine.name == "postgresql":
                with self._transaction(single=True) as conn:
                    return done if conn.execute(_FINISH_WITH_VALUE, rows[0]).first() else None
            with self._transaction() as conn:
                if conn.execute(_FINISH, finish).rowcount:
                    conn.execute(_INSERT_VALUE, rows)
                    return done
                return None  # the UPDATE matched no row: nothing to undo
        except sqlalchemy.exc.IntegrityError:
            return None  # values stored already: Optuna's method updates them

    def heartbeat(self, trial_id: int) -> None:
        try:
            with self._transaction(single=True) as conn:
                conn.execute(self._upsert["heartbeat"], {"tid": trial_id})
        except sqlalchemy.exc.IntegrityError:
            pass  # no such trial: Optuna's record_heartbeat ignores it too
