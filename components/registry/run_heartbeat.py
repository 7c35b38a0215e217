"""Liveness of register steps, read from their MLflow runs.

A register step killed outright (SIGKILL, OOM, a lost node) cannot end its run: MLflow leaves it
RUNNING for ever. So while it runs, the step rewrites the run tag ``ctrflow.register.heartbeat``
(its wall clock) every few seconds, and a later register run treats a RUNNING run whose heartbeat
is older than ``orphan_after`` (default 2 minutes: many beats, and room for clock skew between
pods) as dead: it marks the run KILLED with the reason, and the promotion gate marks that run's
undecided model version failed. A run without the tag (written before it existed) counts as dead
6 hours after its start, longer than any register step takes. A run of the same pipeline run id
is dead at once: it is an earlier attempt of this very step (KFP retries a step only after its
previous attempt ended), so a retry after a kill repairs without waiting for ``orphan_after``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from types import TracebackType
from typing import Any

from ctrflow.components.names import TAG_CODE, TAG_HEARTBEAT, TAG_PIPELINE_RUN, TAG_STOPPED

__all__ = ["HEARTBEAT_EVERY", "ORPHAN_AFTER", "RunHeartbeat", "end_orphan_runs", "silent_for"]

_log = logging.getLogger(__name__)
HEARTBEAT_EVERY = 5.0
ORPHAN_AFTER = 120.0
_UNTAGGED_GRACE = 6 * 3600.0


def beat_value() -> str:
    return f"{time.time():.3f}"


class RunHeartbeat:
    """``with RunHeartbeat(client, run_id): ...`` renews the run's heartbeat tag in a thread."""

    def __init__(self, client: Any, run_id: str, every: float = HEARTBEAT_EVERY) -> None:
        self.client, self.run_id, self.every = client, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.client.set_tag(self.run_id, TAG_HEARTBEAT, beat_value())
            except Exception:  # the server is unreachable for now; the step itself will notice
                _log.warning("could not renew the heartbeat of run %s", self.run_id, exc_info=True)

    def __enter__(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


def silent_for(run: Any) -> float:
    """Seconds since the run's last heartbeat (its start plus a long grace if it has none)."""
    beat = run.data.tags.get(TAG_HEARTBEAT)
    try:
        last = float(beat) if beat else run.info.start_time / 1000 + _UNTAGGED_GRACE
    except ValueError:
        last = run.info.start_time / 1000 + _UNTAGGED_GRACE
    return time.time() - last


def is_dead(run: Any, orphan_after: float) -> bool:
    """Ended, or RUNNING without a heartbeat for ``orphan_after`` seconds."""
    return bool(run.info.status != "RUNNING" or silent_for(run) > orphan_after)


def end_orphan_runs(
    client: Any,
    experiment_id: str,
    *,
    found_by: str,
    pipeline_run_id: str = "",
    orphan_after: float = ORPHAN_AFTER,
) -> list[str]:
    """Mark the RUNNING register runs of ``experiment_id`` whose heartbeat stopped, or which are
    earlier attempts of ``pipeline_run_id``, as KILLED; returns their ids. Only ctrflow's register
    runs (code version tag) are looked at."""
    ended = []
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        run_id = run.info.run_id
        tags = run.data.tags
        earlier_attempt = bool(pipeline_run_id) and tags.get(TAG_PIPELINE_RUN) == pipeline_run_id
        if run_id == found_by or TAG_CODE not in tags:
            continue
        if not (earlier_attempt or is_dead(run, orphan_after)):
            continue
        silent = silent_for(run)
        last = dt.datetime.fromtimestamp(time.time() - silent, dt.UTC).isoformat(timespec="seconds")
        client.set_tag(
            run_id,
            TAG_STOPPED,
            f"the register step stopped without ending its run (last heartbeat {last}); "
            f"marked KILLED by register run {found_by}",
        )
        client.set_terminated(run_id, "KILLED")
        _log.warning(
            "register run %s stopped %.0f s ago without ending: marked KILLED", run_id, silent
        )
        ended.append(run_id)
    return ended
