"""Following a Job's pods until the Job ends: progress lines, failures with reason and last logs.

List the pods once, then watch from that resourceVersion (relisting when the server says 410
Gone); after each pod event, read the Job's conditions, which decide the end. A fatal pod problem
(image pull back-off, missing Secret) ends the wait at once: the Job would never finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from ctrflow.pipelines.k8s.client import Cluster, read_json
from ctrflow.pipelines.k8s.pods import JobOutcome, PodProblem, job_outcome, pod_problems

__all__ = ["FollowResult", "JobFollower"]

_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
_NO_PODS_HINT_AFTER = 60.0  # seconds without a single pod before saying where to look


@dataclass
class FollowResult:
    """How following ended: the Job's own outcome, a fatal pod problem, or our deadline."""

    outcome: JobOutcome | None = None
    fatal: PodProblem | None = None
    timed_out: bool = False
    problems: list[PodProblem] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.outcome is not None and self.outcome.succeeded and self.fatal is None


class JobFollower:
    """Follows the pods of one Job (selected by label) and reports to `out`."""

    def __init__(
        self,
        cluster: Cluster,
        job_name: str,
        label_selector: str,
        out: TextIO,
        *,
        log_lines: int = 20,
        watch_timeout: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.job_name = job_name
        self.selector = label_selector
        self.out = out
        self.log_lines = log_lines
        self.watch_timeout = watch_timeout
        self.clock = clock
        self.core = client.CoreV1Api(cluster.api)
        self.batch = client.BatchV1Api(cluster.api)
        self._phases: dict[str, str] = {}
        self._seen: set[tuple[str, str | None, str, int]] = set()
        self._result = FollowResult()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # -- API calls ------------------------------------------------------------------------
    def _list_pods(self) -> tuple[list[dict[str, Any]], str | None]:
        response = self.core.list_namespaced_pod(
            self.cluster.namespace, label_selector=self.selector, _preload_content=False
        )
        body = read_json(response)
        return list(body.get("items") or []), (body.get("metadata") or {}).get("resourceVersion")

    def _read_job(self) -> dict[str, Any]:
        return read_json(
            self.batch.read_namespaced_job_status(
                self.job_name, self.cluster.namespace, _preload_content=False
            )
        )

    def _last_logs(self, problem: PodProblem) -> list[str]:
        try:
            response = self.core.read_namespaced_pod_log(
                problem.pod,
                self.cluster.namespace,
                container=problem.container,
                tail_lines=self.log_lines,
                previous=problem.previous_logs,
                _preload_content=False,
            )
        except ApiException as exc:
            return [f"(logs unavailable: {exc.status} {exc.reason})"]
        text = bytes(response.data or b"").decode("utf-8", errors="replace")
        lines = text.rstrip("\n").splitlines()[-self.log_lines :]
        return lines if any(line.strip() for line in lines) else ["(no log output)"]

    # -- reporting ------------------------------------------------------------------------
    def _handle_pod(self, pod: dict[str, Any]) -> PodProblem | None:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name", "?"))
        phase = str((pod.get("status") or {}).get("phase") or "Pending")
        if self._phases.get(name) != phase:
            self._phases[name] = phase
            index = (meta.get("annotations") or {}).get(_INDEX_ANNOTATION)
            where = f"pod {name}" + (f" (worker {index})" if index is not None else "")
            self.say(f"{where}: {phase}")
        fatal = None
        for problem in pod_problems(pod):
            if problem.key in self._seen:
                continue
            self._seen.add(problem.key)
            self._result.problems.append(problem)
            self.say(("FATAL " if problem.fatal else "FAILED ") + problem.describe())
            if problem.wants_logs and problem.container:
                self.say(f"  last log lines of {problem.pod}/{problem.container}:")
                for line in self._last_logs(problem):
                    self.say(f"  | {line}")
            if problem.fatal and fatal is None:
                fatal = problem
        return fatal

    def _check_job(self) -> bool:
        outcome = job_outcome(self._read_job())
        if outcome.finished:
            self._result.outcome = outcome
            # Final sweep: the last state of every pod, including events not yet delivered.
            for pod in self._list_pods()[0]:
                self._handle_pod(pod)
        return outcome.finished

    # -- the loop -------------------------------------------------------------------------
    def run(self, deadline: float | None = None) -> FollowResult:
        """Follow until the Job ends, a fatal problem shows, or `deadline` (clock time) passes."""
        started = self.clock()
        hinted = False
        resource_version: str | None = None
        while True:
            if resource_version is None:
                pods, resource_version = self._list_pods()
                for pod in pods:
                    fatal = self._handle_pod(pod)
                    if fatal is not None:
                        self._result.fatal = fatal
                        return self._result
                if self._check_job():
                    return self._result
            now = self.clock()
            if deadline is not None and now >= deadline:
                self._result.timed_out = True
                return self._result
            if not self._phases and not hinted and now - started >= _NO_PODS_HINT_AFTER:
                hinted = True
                self.say(
                    f"no pods after {int(now - started)} s: see `kubectl -n "
                    f"{self.cluster.namespace} describe job {self.job_name}` (quota, admission "
                    "policy, missing service account)"
                )
            timeout = self.watch_timeout
            if deadline is not None:
                timeout = max(1, min(timeout, int(deadline - now) + 1))
            try:
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.cluster.namespace,
                    label_selector=self.selector,
                    resource_version=resource_version,
                    timeout_seconds=timeout,
                    _request_timeout=(10, timeout + 15),
                )
                for event in stream:
                    pod = event.get("raw_object") or {}
                    version = (pod.get("metadata") or {}).get("resourceVersion")
                    resource_version = version or resource_version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        fatal = self._handle_pod(pod)
                        if fatal is not None:
                            self._result.fatal = fatal
                            return self._result
                        if self._check_job():
                            return self._result
            except ApiException as exc:
                if exc.status != 410:
                    raise
                resource_version = None  # our version expired: list again
                continue
            if self._check_job():
                return self._result
