"""Rollback records: one tag on the registered model per ``ctrflow model rollback``.

A promotion is recorded on the promoted version's tags (``promotion``), which hold one stint
each; a rollback makes an earlier champion serve again, a second stint of the same version, so it
is recorded apart: tag ``ctrflow.rollback.<UTC time>`` on the registered model, its value JSON
(``from_version``, ``to_version``, ``reason``, ``by``, ``at``, ``forced``, ``state``,
``error``). ``promotion_history`` merges these records with the promotions into one timeline.

Like the gate's ``promoting``, the record is written as an intent (state ``rolling_back``) before
the alias moves and marked ``done`` after; a command killed in between leaves the intent, and the
next holder of the registry lock settles it by where the alias is (``settle_interrupted``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

from ctrflow.components.names import TAG_ROLLBACK_PREFIX

__all__ = [
    "REASON_MAX",
    "STATE_DONE",
    "STATE_FAILED",
    "STATE_ROLLING_BACK",
    "RollbackRecord",
    "read_records",
    "settle_interrupted",
    "write_record",
]

_log = logging.getLogger(__name__)
STATE_ROLLING_BACK = "rolling_back"
STATE_DONE = "done"
STATE_FAILED = "failed"
# The registry's tag values are VARCHAR(5000) on SQL stores: the reason and who must fit in the
# JSON with the rest.
REASON_MAX = 2000
BY_MAX = 200


@dataclass(frozen=True)
class RollbackRecord:
    from_version: str
    to_version: str
    reason: str  # as the user gave it
    by: str
    at: str  # ISO 8601 UTC, milliseconds: the same form as the promotion tags' timestamps
    forced: bool
    state: str
    error: str = ""

    @property
    def key(self) -> str:
        # Tag keys allow letters, digits, '_', '-', '.', ' ' and '/': no ':' or '+'.
        moment = dt.datetime.fromisoformat(self.at).astimezone(dt.UTC)
        millis = moment.microsecond // 1000
        return f"{TAG_ROLLBACK_PREFIX}{moment.strftime('%Y%m%dT%H%M%S')}{millis:03d}Z"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RollbackRecord | None:
        try:
            data = json.loads(text)
            return cls(
                from_version=str(data["from_version"]),
                to_version=str(data["to_version"]),
                reason=str(data["reason"]),
                by=str(data["by"]),
                at=str(data["at"]),
                forced=bool(data["forced"]),
                state=str(data["state"]),
                error=str(data.get("error", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def summary(self) -> str:
        """The history's reason line: "rollback from vN to vM: REASON"."""
        return f"rollback from v{self.from_version} to v{self.to_version}: {self.reason}"


def read_records(model_tags: dict[str, str]) -> list[RollbackRecord]:
    """The rollback records among a registered model's tags, oldest first; unreadable ones
    (edited by hand) are skipped with a warning rather than breaking the history."""
    records = []
    for key, value in sorted(model_tags.items()):
        if not key.startswith(TAG_ROLLBACK_PREFIX):
            continue
        record = RollbackRecord.from_json(value)
        if record is None:
            _log.warning("registry tag %s is not a rollback record; ignored", key)
            continue
        records.append(record)
    return sorted(records, key=lambda r: r.at)


def write_record(client: Any, model_name: str, record: RollbackRecord) -> None:
    client.set_registered_model_tag(model_name, record.key, record.to_json())


def settle_interrupted(client: Any, model_name: str, champion: str | None) -> list[tuple[str, str]]:
    """Settle the intents of killed rollbacks; call it holding the registry lock (nothing can
    have moved the alias since, so where it is tells whether the rollback took effect)."""
    tags = dict(client.get_registered_model(model_name).tags or {})
    done: list[tuple[str, str]] = []
    for record in read_records(tags):
        if record.state != STATE_ROLLING_BACK:
            continue
        if champion == record.to_version:
            write_record(client, model_name, replace(record, state=STATE_DONE))
            done.append((record.to_version, "rollback completed"))
        else:
            stopped = "rollback stopped before alias 'champion' moved"
            write_record(client, model_name, replace(record, state=STATE_FAILED, error=stopped))
            done.append((record.to_version, "rollback failed: alias had not moved"))
    return done
