"""Roll alias ``champion`` back to an earlier version, by hand, with the reason recorded.

Which versions may be rolled back to (checked before anything is written, and again under the
registry lock):
- the version exists, its registration is READY, and it is not the current champion;
- it served as champion before (it is in ``promotion_history``): a model that was served and
  watched. ``force`` also admits a version that never served but whose register step completed
  (decision ``kept_champion``: it lost the gate's comparison, or a version registered outside
  ctrflow without a decision);
- never, even forced: a version whose register step failed (``failed``: nothing vouches for what
  was logged) or is still in flight (``pending``/``promoting``: another pipeline's gate owns it).

The move takes the same lock as the register step (``_registry_lock``), so it cannot interleave
with a promotion: under the lock what a killed step left is settled first, the champion is read
again, the record is written as an intent, the alias moves (the commit point) and is read back,
the legacy Production stage follows if the replaced champion held it, and the record is marked
done. Any failure after the alias moved puts it back and marks the record failed.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mlflow.exceptions import MlflowException

from ctrflow.components.names import (
    CHAMPION_ALIAS,
    DECISION_FAILED,
    DECISION_PENDING,
    DECISION_PROMOTING,
    LEGACY_STAGE,
    TAG_PROMOTION_DECISION,
)
from ctrflow.components.registry._registry_lock import RegistryLock
from ctrflow.components.registry._rollback_records import (
    BY_MAX,
    REASON_MAX,
    STATE_DONE,
    STATE_FAILED,
    STATE_ROLLING_BACK,
    RollbackRecord,
    write_record,
)
from ctrflow.components.registry._test_kill import with_test_kill
from ctrflow.components.registry.model_names import check_model_name
from ctrflow.components.registry.promotion import (
    _mirror_stage,
    champion_version,
    promotion_history,
    registered_model_exists,
    repair_interrupted,
    verify_champion,
)

__all__ = ["RollbackRefusedError", "RollbackResult", "default_requester", "rollback"]

_log = logging.getLogger(__name__)
Event = Callable[[str], None]
_NEVER = {
    DECISION_FAILED: "its register step failed, so nothing vouches for the logged model",
    DECISION_PENDING: "its register step is still deciding about it",
    DECISION_PROMOTING: "its register step is promoting it right now",
}


class RollbackRefusedError(ValueError):
    """The rollback was refused before anything was written; the message is one line."""


@dataclass(frozen=True)
class RollbackResult:
    model_name: str
    from_version: str
    to_version: str
    reason: str
    by: str
    at: str
    forced: bool
    stage_mirrored: bool


def default_requester() -> str:
    """Who asks, for the record: the local user at this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _check_request(model_name: str, version: str, reason: str, by: str) -> None:
    try:
        check_model_name(model_name)
    except ValueError as exc:
        raise RollbackRefusedError(str(exc)) from None
    if not version.isdigit() or int(version) < 1:
        raise RollbackRefusedError(f"version {version!r} is not a model version number (1, 2, ...)")
    if not reason.strip():
        raise RollbackRefusedError("the reason is empty: say why the champion is rolled back")
    if len(reason) > REASON_MAX:
        raise RollbackRefusedError(
            f"the reason is {len(reason)} characters; at most {REASON_MAX} fit in the record"
        )
    if not by.strip() or len(by) > BY_MAX:
        raise RollbackRefusedError(f"who asks must be 1-{BY_MAX} characters, got {len(by)}")


def _check_target(client: Any, model_name: str, version: str, force: bool) -> str:
    """Raise RollbackRefusedError unless ``version`` may become champion; returns the current
    champion."""
    if not registered_model_exists(client, model_name):
        raise RollbackRefusedError(f"no registered model {model_name!r}")
    try:
        target = client.get_model_version(model_name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RollbackRefusedError(f"{model_name!r} has no version {version}") from None
        raise
    current = champion_version(client, model_name)
    if current is None:
        raise RollbackRefusedError(
            f"{model_name!r} has no champion: there is nothing to roll back from"
        )
    if current == version:
        raise RollbackRefusedError(f"version {version} of {model_name!r} is already champion")
    status = str(target.status)
    if status != "READY":
        raise RollbackRefusedError(
            f"version {version} of {model_name!r} is {status}, not READY: it cannot be served"
        )
    decision = (target.tags or {}).get(TAG_PROMOTION_DECISION)
    if decision in _NEVER:
        raise RollbackRefusedError(
            f"version {version} of {model_name!r} has decision {decision!r}: {_NEVER[decision]}"
        )
    served = {entry["version"] for entry in promotion_history(client, model_name)}
    if version not in served and not force:
        raise RollbackRefusedError(
            f"version {version} of {model_name!r} never served as champion (decision "
            f"{decision or 'none'}); pass --force to make it champion anyway"
        )
    return current


def _stamp_after(client: Any, model_name: str) -> str:
    """Now (UTC), but after the latest history entry: a clock behind the register step's must
    not put the rollback before the stint it ends."""
    now = dt.datetime.now(dt.UTC)
    history = promotion_history(client, model_name)
    if history:
        latest = dt.datetime.fromisoformat(history[-1]["since"])
        latest = latest if latest.tzinfo else latest.replace(tzinfo=dt.UTC)
        now = max(now, latest + dt.timedelta(milliseconds=1))
    return now.isoformat(timespec="milliseconds")


def _stage_holder(client: Any, model_name: str, version: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated in MLflow 3
        return str(client.get_model_version(model_name, version).current_stage) == LEGACY_STAGE


def rollback(
    client: Any,
    model_name: str,
    to_version: str,
    reason: str,
    *,
    by: str | None = None,
    force: bool = False,
    lock_ttl: float = 120.0,
    lock_wait: float = 600.0,
    on_event: Event | None = None,
) -> RollbackResult:
    """Make ``to_version`` champion again; see the module docstring. Raises
    RollbackRefusedError (nothing written) when the request or the version does not qualify."""
    event = with_test_kill(on_event)
    to_version, by = str(to_version).strip(), (by or default_requester())
    _check_request(model_name, to_version, reason, by)
    seen = _check_target(client, model_name, to_version, force)  # refuse early, before the lock
    lock = RegistryLock(client, model_name, ttl=lock_ttl, wait=lock_wait)
    with lock:
        event("lock_acquired")
        current = _check_target(client, model_name, to_version, force)  # it may have moved
        if current != seen:
            _log.warning(
                "%s: champion moved from version %s to %s while waiting for the lock; rolling "
                "back from %s", model_name, seen, current, current,
            )  # fmt: skip
        repair_interrupted(client, model_name)  # as the register step does under the lock
        if champion_version(client, model_name) != current:
            raise RuntimeError(f"alias {CHAMPION_ALIAS!r} of {model_name!r} moved under the lock")
        record = RollbackRecord(
            from_version=current, to_version=to_version, reason=reason.strip(), by=by,
            at=_stamp_after(client, model_name), forced=force, state=STATE_ROLLING_BACK,
        )  # fmt: skip
        write_record(client, model_name, record)
        event("intent_written")
        if not lock.held:
            lapsed = replace(record, state=STATE_FAILED, error="lock lapsed")
            write_record(client, model_name, lapsed)
            raise RuntimeError(
                f"the registry lock of {model_name!r} lapsed before alias {CHAMPION_ALIAS!r} "
                f"moved; champion left at version {current}"
            )
        mirror = _stage_holder(client, model_name, current)
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, to_version)
        try:
            event("champion_set")
            verify_champion(client, model_name, to_version)
            if mirror:
                _mirror_stage(client, model_name, to_version)
            write_record(client, model_name, replace(record, state=STATE_DONE))
        except BaseException as exc:
            _undo(client, model_name, record, mirror, exc)
            raise
    _log.info("%s: champion rolled back from version %s to %s", model_name, current, to_version)
    return RollbackResult(
        model_name=model_name, from_version=current, to_version=to_version,
        reason=record.reason, by=by, at=record.at, forced=force, stage_mirrored=mirror,
    )  # fmt: skip


def _undo(
    client: Any, model_name: str, record: RollbackRecord, mirror: bool, error: BaseException
) -> None:
    """Best effort: alias (and stage) back where they were, the record marked failed."""
    try:
        if champion_version(client, model_name) == record.to_version:
            client.set_registered_model_alias(model_name, CHAMPION_ALIAS, record.from_version)
        if mirror:
            _mirror_stage(client, model_name, record.from_version)
        failed = replace(record, state=STATE_FAILED, error=f"{type(error).__name__}: {error}"[:500])
        write_record(client, model_name, failed)
    except Exception:
        _log.critical(
            "could not put alias %r of %s back on version %s after a failed rollback to %s: "
            "fix it by hand", CHAMPION_ALIAS, model_name, record.from_version, record.to_version,
            exc_info=True,
        )  # fmt: skip
