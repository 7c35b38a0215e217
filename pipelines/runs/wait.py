"""A KFP run's outcome, once or followed to its end: for `ctrflow status` and `submit --wait`.

A failed run names the task(s) that failed: the failed tasks of the run's details that are not
the parent of another failed task (a failed worker fails its loop and the root DAG too; the
worker is the one to name), each with its error message when KFP recorded one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctrflow.pipelines.runs.remote import KfpTarget, _api_errors, _sdk_prints

__all__ = ["FINISHED", "RunStatus", "follow_run", "run_status"]

FINISHED = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
SUCCESSFUL = frozenset({"SUCCEEDED", "SKIPPED"})


@dataclass(frozen=True)
class FailedTask:
    name: str
    error: str


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    name: str
    state: str
    error: str  # the run's own error message, if any
    failed_tasks: tuple[FailedTask, ...]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCESSFUL

    def summary(self) -> str:
        head = f"run {self.run_id} ({self.name}): {self.state}"
        if self.failed_tasks:
            tasks = "; ".join(
                f"task {t.name} failed" + (f": {t.error}" if t.error else "")
                for t in self.failed_tasks
            )
            return f"{head}: {tasks}"
        return f"{head}: {self.error}" if self.error else head

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "failed_tasks": [t.__dict__ for t in self.failed_tasks],
        }


def _message(status: Any) -> str:
    return str(getattr(status, "message", None) or "") if status is not None else ""


def _failed_tasks(run: Any) -> tuple[FailedTask, ...]:
    details = run.run_details.task_details if run.run_details else None
    failed = [t for t in details or [] if str(t.state or "") == "FAILED"]
    parents = {t.parent_task_id for t in failed if t.parent_task_id}
    return tuple(
        FailedTask(str(t.display_name or t.task_id or "?"), _message(t.error))
        for t in failed
        if t.task_id not in parents
    )


def run_status(target: KfpTarget, run_id: str, client: Any = None) -> RunStatus:
    client = client or target.client()
    with _sdk_prints(), _api_errors(target.host, f"reading run {run_id}"):
        run = client.get_run(run_id)
    return RunStatus(
        run_id=str(run.run_id or run_id),
        name=str(run.display_name or ""),
        state=str(run.state or "RUNTIME_STATE_UNSPECIFIED"),
        error=_message(run.error),
        failed_tasks=_failed_tasks(run),
    )


def follow_run(
    target: KfpTarget,
    run_id: str,
    *,
    poll_seconds: float,
    on_change: Callable[[RunStatus], None] = lambda status: None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Poll the run until it finishes; ``on_change`` hears every new state. Ctrl-C stops the
    following, not the run."""
    client = target.client()
    last = ""
    while True:
        status = run_status(target, run_id, client)
        if status.state != last:
            on_change(status)
            last = status.state
        if status.finished:
            return status
        sleep(poll_seconds)
