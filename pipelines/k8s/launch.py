"""`ctrflow hpo launch`: HPO workers as an Indexed Kubernetes Job, followed to the end.

What it does and its exit codes: launch_arguments.DESCRIPTION (the command's --help), where its
command line is built without importing the Kubernetes client.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any, TextIO

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.rest import ApiException

from ctrflow.pipelines._image import default_image
from ctrflow.pipelines.k8s.client import (
    Cluster,
    ClusterError,
    api_error_message,
    connect,
    read_json,
)
from ctrflow.pipelines.k8s.follow import FollowResult, JobFollower
from ctrflow.pipelines.k8s.job import LAUNCH_ID_LABEL, WorkerJobSpec, build_worker_job

__all__ = ["build_job_from_args", "launch"]

_DEADLINE_GRACE = 60  # s past the Job's activeDeadlineSeconds for it to report DeadlineExceeded


def build_job_from_args(args: argparse.Namespace, launch_id: str) -> dict[str, Any]:
    extra = list(args.worker_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    worker_args = ["--train", args.train, "--valid", args.valid]
    if args.cpu.isdigit() and not any(a.split("=")[0] == "--threads" for a in extra):
        worker_args += ["--threads", args.cpu]  # as many training threads as cores granted
    worker_args += extra
    spec = WorkerJobSpec(
        study=args.study,
        workers=args.workers,
        image=args.image or default_image(),
        launch_id=launch_id,
        secret=args.secret,
        secret_key=args.secret_key,
        cpu=args.cpu,
        memory=args.memory,
        backoff_limit=args.backoff_limit,
        timeout=args.timeout,
        ttl=args.ttl,
        service_account=args.service_account,
        data_pvc=args.data_pvc,
        worker_args=tuple(worker_args),
    )
    return build_worker_job(spec)


def _delete_job(cluster: Cluster, name: str, out: TextIO) -> None:
    try:
        client.BatchV1Api(cluster.api).delete_namespaced_job(
            name, cluster.namespace, propagation_policy="Background", _preload_content=False
        )
        print(f"deleted job {name} and its pods", file=out, flush=True)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        print(
            f"could not delete job {name}: {api_error_message(exc, cluster.host)}; delete it with "
            f"`kubectl -n {cluster.namespace} delete job {name}`",
            file=out,
            flush=True,
        )


def _summary(result: FollowResult, name: str, workers: int) -> tuple[int, str]:
    failed = sorted({p.reason for p in result.problems})
    seen = f" (pod failures: {', '.join(failed)})" if failed else ""
    if result.fatal is not None:
        return 1, f"job {name} stopped: {result.fatal.describe()}"
    if result.timed_out:
        return 1, f"job {name} did not finish within --timeout{seen}"
    assert result.outcome is not None
    if result.outcome.succeeded:
        return 0, f"job {name} complete: {workers} worker(s) finished{seen}"
    detail = f": {result.outcome.message}" if result.outcome.message else ""
    return 1, f"job {name} failed: {result.outcome.reason}{detail}{seen}"


def launch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    launch_id = uuid.uuid4().hex[:12]
    try:
        job = build_job_from_args(args, launch_id)
    except ValueError as exc:
        print(f"ctrflow hpo launch: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(job, indent=2), file=out)
        return 0
    try:
        cluster = connect(args)
    except ClusterError as exc:
        print(f"ctrflow hpo launch: {exc}", file=sys.stderr)
        return 1
    try:
        created = read_json(
            client.BatchV1Api(cluster.api).create_namespaced_job(
                cluster.namespace, body=job, _preload_content=False
            )
        )
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        hint = " (run `ctrflow cluster check`)" if getattr(exc, "status", None) == 403 else ""
        print(
            f"ctrflow hpo launch: cannot create the Job: {api_error_message(exc, cluster.host)}"
            + hint,
            file=sys.stderr,
        )
        return 1
    name = str(created["metadata"]["name"])
    print(
        f"created job {name} in namespace {cluster.namespace}: {args.workers} worker(s) on study "
        f"{args.study!r}, image {job['spec']['template']['spec']['containers'][0]['image']}",
        file=out,
        flush=True,
    )
    follower = JobFollower(
        cluster, name, f"{LAUNCH_ID_LABEL}={launch_id}", out, log_lines=args.log_lines
    )
    deadline = None
    if args.timeout is not None:
        deadline = follower.clock() + args.timeout + _DEADLINE_GRACE
    try:
        result = follower.run(deadline)
    except KeyboardInterrupt:
        print(f"interrupted: deleting job {name}", file=out, flush=True)
        _delete_job(cluster, name, out)
        return 130
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        print(
            f"ctrflow hpo launch: lost track of job {name}: "
            f"{api_error_message(exc, cluster.host)}; it keeps running: follow it with `kubectl "
            f"-n {cluster.namespace} get pods -l {LAUNCH_ID_LABEL}={launch_id}` or delete it "
            f"with `kubectl -n {cluster.namespace} delete job {name}`",
            file=sys.stderr,
        )
        return 1
    code, line = _summary(result, name, args.workers)
    print(line, file=out, flush=True)
    if result.fatal is not None or result.timed_out:
        _delete_job(cluster, name, out)
    return code
