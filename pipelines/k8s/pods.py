"""Reading pod and Job status: what went wrong with a pod, in words, and whether a Job is done.

Pure functions over the API's JSON (dicts as the server sends them), so they are tested on
recorded shapes without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FATAL_WAITING_REASONS",
    "JobOutcome",
    "PodProblem",
    "job_outcome",
    "pod_problems",
]

# Waiting reasons that no amount of waiting fixes: the launcher stops and cleans up at once.
FATAL_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",  # the kubelet already failed to pull and is backing off
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",  # e.g. the Secret or one of its keys is missing
    }
)
# Waiting reasons worth a line but not fatal by themselves.
_REPORTED_WAITING = frozenset({"ErrImagePull", "CrashLoopBackOff", "CreateContainerError"})
_HINTS = {
    "OOMKilled": "the worker used more memory than its limit: raise --memory",
    "ImagePullBackOff": "check the image reference and the namespace's imagePullSecrets",
    "ErrImagePull": "check the image reference and the namespace's imagePullSecrets",
    "InvalidImageName": "the image reference is malformed",
    "CreateContainerConfigError": "a Secret/ConfigMap or one of its keys is missing "
    "(run `ctrflow cluster check`)",
    "CrashLoopBackOff": "the worker keeps exiting with an error: see its last log lines",
    "Unschedulable": "no node has room for the requested cpu/memory (or a taint forbids it)",
    "Evicted": "the node ran short of resources and evicted the pod",
    "DeadlineExceeded": "the Job's --timeout passed",
}


@dataclass(frozen=True)
class PodProblem:
    """One thing wrong with one container (or the pod), worth reporting once."""

    pod: str
    container: str | None
    reason: str
    message: str
    exit_code: int | None
    restart_count: int
    fatal: bool
    wants_logs: bool  # crashed or was killed: its last log lines tell why
    previous_logs: bool  # the logs are those of the previous (restarted) container

    @property
    def key(self) -> tuple[str, str | None, str, int]:
        return (self.pod, self.container, self.reason, self.restart_count)

    @property
    def hint(self) -> str | None:
        return _HINTS.get(self.reason)

    def describe(self) -> str:
        where = f"pod {self.pod}" + (f" container {self.container}" if self.container else "")
        text = f"{where}: {self.reason}"
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.restart_count:
            text += f", {self.restart_count} restart(s)"
        if self.message:
            text += f": {self.message.strip()}"
        if self.hint:
            text += f" [{self.hint}]"
        return text


def _container_problems(pod: str, status: dict[str, Any]) -> list[PodProblem]:
    name = str(status.get("name", "?"))
    restarts = int(status.get("restartCount") or 0)
    state = status.get("state") or {}
    problems: list[PodProblem] = []
    waiting = state.get("waiting")
    if waiting:
        reason = str(waiting.get("reason") or "")
        if reason in FATAL_WAITING_REASONS or reason in _REPORTED_WAITING:
            crash = reason == "CrashLoopBackOff"
            problems.append(
                PodProblem(
                    pod,
                    name,
                    reason,
                    str(waiting.get("message") or ""),
                    None,
                    restarts,
                    fatal=reason in FATAL_WAITING_REASONS,
                    wants_logs=crash,
                    previous_logs=crash,
                )
            )
        if reason == "CrashLoopBackOff":
            # Why the last run died (OOMKilled, Error): the waiting state alone does not say.
            last = (status.get("lastState") or {}).get("terminated")
            if last and last.get("reason") == "OOMKilled":
                problems.append(
                    PodProblem(
                        pod,
                        name,
                        "OOMKilled",
                        "",
                        last.get("exitCode"),
                        restarts,
                        fatal=False,
                        wants_logs=False,
                        previous_logs=True,
                    )
                )
    terminated = state.get("terminated")
    if terminated:
        exit_code = terminated.get("exitCode")
        reason = str(terminated.get("reason") or "")
        if reason == "OOMKilled" or (exit_code not in (None, 0)):
            problems.append(
                PodProblem(
                    pod,
                    name,
                    reason or "Error",
                    str(terminated.get("message") or ""),
                    exit_code,
                    restarts,
                    fatal=False,
                    wants_logs=True,
                    previous_logs=False,
                )
            )
    return problems


def pod_problems(pod: dict[str, Any]) -> list[PodProblem]:
    """Every reportable problem of `pod` (a Pod as JSON), containers and init containers."""
    name = str((pod.get("metadata") or {}).get("name", "?"))
    status = pod.get("status") or {}
    problems: list[PodProblem] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            problems.extend(_container_problems(name, container))
    if status.get("phase") == "Failed" and status.get("reason") and not problems:
        # Pod-level failure with no container verdict: eviction, deadline, node loss.
        problems.append(
            PodProblem(
                name,
                None,
                str(status["reason"]),
                str(status.get("message") or ""),
                None,
                0,
                fatal=False,
                wants_logs=False,
                previous_logs=False,
            )
        )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            problems.append(
                PodProblem(
                    name,
                    None,
                    "Unschedulable",
                    str(condition.get("message") or ""),
                    None,
                    0,
                    fatal=False,
                    wants_logs=False,
                    previous_logs=False,
                )
            )
    return problems


@dataclass(frozen=True)
class JobOutcome:
    """Whether a Job finished, and how."""

    finished: bool
    succeeded: bool
    reason: str
    message: str


def job_outcome(job: dict[str, Any]) -> JobOutcome:
    """Finished once a Complete/SuccessCriteriaMet or Failed/FailureTarget condition is true."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        reason = str(condition.get("reason") or kind)
        message = str(condition.get("message") or "")
        if kind in ("Failed", "FailureTarget"):
            return JobOutcome(True, False, reason, message)
        if kind in ("Complete", "SuccessCriteriaMet"):
            return JobOutcome(True, True, reason, message)
    return JobOutcome(False, False, "", "")
