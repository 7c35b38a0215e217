"""A StudyLock's state read through a call, for the checks after acquire() or release().

To mypy, ``lock.connection`` and ``lock.held_here`` are attributes: an ``assert`` narrows one and
the narrowing outlives the acquire() or release() that changes it, so mypy would call a check
of the new state unreachable. What a call returns is never narrowed."""

from __future__ import annotations

import sqlalchemy

from ctrflow.components.hpo._trial_budget import StudyLock


def lock_connection(lock: StudyLock) -> sqlalchemy.Connection | None:
    """``lock.connection`` now."""
    return lock.connection


def lock_held_here(lock: StudyLock) -> bool:
    """``lock.held_here`` now."""
    return lock.held_here
