"""`ctrflow hpo launch`: contract tests against a local stand-in for the Kubernetes API.

These are contract tests, not end-to-end tests: no Kubernetes API server can run on this machine
(no container runtime, no etcd), so the real `kubernetes` client talks HTTP to
tests/testkit/k8s_fake_api.py on 127.0.0.1, which speaks the API's wire format (Job create,
pod list and watch streams, pod logs, Job status, delete), records each request and moves the
Job's pods through a scripted scenario. The Job the command submits is validated against the
Kubernetes 1.30 and newest bundled OpenAPI schemas (kubernetes-validate, strict).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ctrflow.pipelines._image import default_image
from ctrflow.pipelines.k8s.client import Cluster
from ctrflow.pipelines.k8s.follow import JobFollower
from ctrflow.pipelines.k8s.launch import build_job_from_args
from ctrflow.pipelines.k8s.launch_arguments import register_launch
from ctrflow.pipelines.k8s.pods import pod_problems
from tests.testkit import k8s_fake_api
from tests.testkit.cli import ctrflow_in_process as _ctrflow
from tests.testkit.paths import REPO_ROOT as ROOT

SCHEMA_VERSIONS = k8s_fake_api.SCHEMA_VERSIONS  # what the stand-in admits POSTs with

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake(tmp_path: pathlib.Path) -> Iterator[Any]:
    server = k8s_fake_api.FakeKubernetes()
    url = server.start()
    server.kubeconfig = tmp_path / "kubeconfig"
    server.write_kubeconfig(server.kubeconfig, url)
    yield server
    server.stop()


def _launch(fake: Any, *extra: str) -> int:
    return _ctrflow(
        [
            "hpo",
            "launch",
            "--workers",
            "2",
            "--study",
            "ctr-week-48",
            "--train",
            "/data/train",
            "--valid",
            "/data/valid",
            "--image",
            "registry.example/ctrflow:1.2.3",
            "--kubeconfig",
            str(fake.kubeconfig),
            *extra,
        ]
    )


def _created_job(fake: Any) -> dict[str, Any]:
    posts = fake.requests_to("POST", f"/apis/batch/v1/namespaces/{fake.namespace}/jobs")
    assert len(posts) == 1, [r.path for r in fake.requests]
    return dict(posts[0].body)


def _validate(manifest: dict[str, Any]) -> None:
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


OOM_LOG = "\n".join([f"epoch {i} valid logloss 0.45" for i in range(40)] + ["Killed"])


def test_oom_killed_worker_is_reported_with_reason_and_logs_and_exits_nonzero(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.steps = ["expire", {0: "running", 1: "running"}, {0: "oom", 1: "succeeded"}]
    fake.logs = {0: OOM_LOG}
    rc = _launch(fake, "--backoff-limit", "0", "--memory", "512Mi", "--log-lines", "5")
    out = capsys.readouterr().out

    assert rc == 1
    assert "OOMKilled (exit code 137)" in out
    assert "raise --memory" in out
    assert "| Killed" in out and "| epoch 39 valid logloss 0.45" in out
    assert "epoch 30 " not in out  # only the last --log-lines lines
    assert "failed: BackoffLimitExceeded" in out
    assert "(worker 1): Succeeded" in out

    job = _created_job(fake)
    _validate(job)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "hpo",
        "worker",
        "--study",
        "ctr-week-48",
        "--train",
        "/data/train",
        "--valid",
        "/data/valid",
        "--threads",
        "1",
    ]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    storage = next(e for e in container["env"] if e["name"] == "CTRFLOW_STORAGE_URL")
    assert storage == {
        "name": "CTRFLOW_STORAGE_URL",
        "valueFrom": {"secretKeyRef": {"name": "ctrflow-storage", "key": "CTRFLOW_STORAGE_URL"}},
    }

    # Pods are selected by the Job's own launch label; the expired watch was answered by a relist.
    launch_id = job["metadata"]["labels"]["ctrflow.io/launch-id"]
    pod_reads = fake.requests_to("GET", f"/api/v1/namespaces/{fake.namespace}/pods")
    assert {r.query.get("labelSelector") for r in pod_reads} == {
        f"ctrflow.io/launch-id={launch_id}"
    }
    lists = [r for r in pod_reads if r.query.get("watch", "").lower() != "true"]
    assert len(lists) == 3  # the first, the one after 410 Gone, the final sweep
    logs = [r for r in fake.requests if r.path.endswith("/log")]
    assert len(logs) == 1
    assert logs[0].query["tailLines"] == "5" and logs[0].query["container"] == "hpo-worker"
    assert all(r.headers["authorization"] == "Bearer fake-token" for r in fake.requests)
    assert not [r for r in fake.requests if r.method == "DELETE"]  # ttlSecondsAfterFinished does it


def test_all_workers_succeeding_exits_zero(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake.steps = [{0: "running", 1: "running"}, {0: "succeeded"}, {1: "succeeded"}]
    rc = _launch(fake)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "complete: 2 worker(s) finished" in out
    assert "FAILED" not in out and "FATAL" not in out
    assert not [r for r in fake.requests if r.method == "DELETE"]


def test_image_pull_backoff_stops_deletes_the_job_and_exits_nonzero(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.steps = [{0: "errimagepull", 1: "running"}, {0: "imagepullbackoff"}]
    rc = _launch(fake)
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED pod" in out and "ErrImagePull" in out  # reported, not fatal yet
    assert "FATAL pod" in out and "ImagePullBackOff" in out
    assert 'Back-off pulling image "registry.example/ctrflow:1.2.3"' in out
    assert "imagePullSecrets" in out
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert len(deletes) == 1
    assert deletes[0].path.endswith(f"/jobs/{_created_job(fake)['metadata']['generateName']}x7k2p")
    assert deletes[0].query.get("propagationPolicy") == "Background"
    assert "deleted job" in out
    assert not fake.jobs and not fake.pods


def test_crash_loop_shows_the_previous_containers_last_log_lines(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.steps = [{0: "crashloop", 1: "running"}, {0: "error", 1: "succeeded"}]
    fake.logs = {0: "Traceback (most recent call last):\nValueError: study 'x' was not set up"}
    rc = _launch(fake, "--backoff-limit", "0")
    out = capsys.readouterr().out
    assert rc == 1
    assert "CrashLoopBackOff" in out and "3 restart(s)" in out
    assert "| ValueError: study 'x' was not set up" in out
    assert "Error (exit code 1)" in out
    previous = [r.query["previous"].lower() for r in fake.requests if r.path.endswith("/log")]
    assert previous == ["true", "false"]


def test_ctrl_c_deletes_the_job_and_exits_130(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    fake.block_watch = True
    fake.on_watch = lambda: signal.pthread_kill(main_thread, signal.SIGINT)
    # Ctrl-C as in a terminal: a suite started in the background without job control (`cmd &`
    # in a script) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc = _launch(fake)
    finally:
        signal.signal(signal.SIGINT, inherited)
    out = capsys.readouterr().out
    assert rc == 130
    assert "interrupted: deleting job" in out
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert len(deletes) == 1 and not fake.jobs


def test_forbidden_create_points_to_cluster_check(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.role_rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    rc = _launch(fake)
    err = capsys.readouterr().err
    assert rc == 1
    assert "answered 403" in err and "cannot create jobs.batch" in err
    assert "ctrflow cluster check" in err


def test_unreachable_api_server_is_a_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = k8s_fake_api.FakeKubernetes()
    url = server.start()
    server.stop()  # nothing listens on that port any more
    kubeconfig = tmp_path / "kubeconfig"
    server.write_kubeconfig(kubeconfig, url)
    rc = _ctrflow(
        [
            "hpo",
            "launch",
            "--workers",
            "1",
            "--study",
            "s",
            "--train",
            "t",
            "--valid",
            "v",
            "--kubeconfig",
            str(kubeconfig),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert f"cannot reach the Kubernetes API at {url}" in err


def test_follower_gives_up_at_its_deadline(fake: Any) -> None:
    fake.steps = [{0: "running"}]
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(fake.kubeconfig), persist_config=False)
    job = build_job_from_args(_args("--workers", "1"), "abc123")
    created = fake._create_job(job)
    ticks = iter([0.0, 0.0, 5.0, 99.0, 99.0, 99.0])
    follower = JobFollower(
        Cluster(api, fake.namespace, "fake"),
        created["metadata"]["name"],
        "ctrflow.io/launch-id=abc123",
        sys.stdout,
        clock=lambda: next(ticks),
    )
    result = follower.run(deadline=10.0)
    assert result.timed_out and result.outcome is None


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_launch(parser.add_subparsers(dest="hpo_command"))
    base = ["launch", "--study", "s", "--train", "/data/train", "--valid", "/data/valid"]
    if "--workers" not in argv:
        base += ["--workers", "3"]
    return parser.parse_args([*base, *argv])


@pytest.mark.parametrize(
    "argv",
    [
        (),
        (
            "--data-pvc",
            "ctrflow-data",
            "--timeout",
            "7200",
            "--service-account",
            "ctrflow",
            "--cpu",
            "2",
            "--memory",
            "4Gi",
            "--",
            "--budget",
            "200",
            "--seed",
            "7",
        ),
        ("--cpu", "500m", "--", "--threads", "3"),
    ],
)
def test_job_validates_against_kubernetes_schemas(argv: tuple[str, ...]) -> None:
    job = build_job_from_args(_args(*argv), "0123456789ab")
    _validate(job)
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == default_image()
    assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ctrflow"
    if "--timeout" in argv:
        assert spec["activeDeadlineSeconds"] == 7200
        assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
        assert container["args"][-6:] == ["--threads", "2", "--budget", "200", "--seed", "7"]
    else:
        assert "activeDeadlineSeconds" not in spec
    assert container["args"].count("--threads") == 1


def _kubectl() -> str:
    """kubectl from this virtualenv (.ci/run puts one there if needed) or else from PATH."""
    bin_dir = pathlib.Path(sys.executable).parent
    found = shutil.which("kubectl", path=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail("kubectl not found (.ci/run installs it)")
    return found


def _manifest_worker_job() -> dict[str, Any]:
    rendered = subprocess.run(
        [_kubectl(), "kustomize", str(ROOT / "manifests/base")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    return next(
        d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "ctrflow-hpo-worker"
    )


def test_launched_job_matches_the_manifest_worker_template() -> None:
    """The launcher and manifests/base describe the same worker pod where it matters: security,
    failure policy, credentials, labels the NetworkPolicies admit."""
    launched = build_job_from_args(_args(), "0123456789ab")
    template = _manifest_worker_job()
    lpod, tpod = launched["spec"]["template"]["spec"], template["spec"]["template"]["spec"]
    assert lpod["securityContext"] == tpod["securityContext"]
    assert lpod["automountServiceAccountToken"] is tpod["automountServiceAccountToken"] is False
    assert lpod["restartPolicy"] == tpod["restartPolicy"] == "Never"
    lc, tc = lpod["containers"][0], tpod["containers"][0]
    assert lc["name"] == tc["name"]
    assert lc["securityContext"] == tc["securityContext"]
    assert launched["spec"]["podFailurePolicy"] == template["spec"]["podFailurePolicy"]
    secret_env = [e for e in tc["env"] if "valueFrom" in e]
    assert secret_env == [e for e in lc["env"] if "valueFrom" in e]
    assert lc["args"][:2] == ["hpo", "worker"] and tc["args"][:2] == ["hpo", "worker"]
    for labels in (
        launched["spec"]["template"]["metadata"]["labels"],
        template["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels["app.kubernetes.io/part-of"] == "ctrflow"


def test_study_names_cannot_inject_kubelet_variables() -> None:
    job = build_job_from_args(_args("--study", "week$(CTRFLOW_STORAGE_URL)"), "0123456789ab")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "week$$(CTRFLOW_STORAGE_URL)" in args
    assert job["metadata"]["generateName"] == "ctrflow-hpo-week-ctrflow-storage-url-"
    _validate(job)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--memory", "2GB"), "memory '2GB' is not a Kubernetes quantity"),
        (("--image", "registry.example/ctrflow:latest"), "needs a pinned tag or digest"),
        (("--image", "registry.example/ctrflow"), "needs a pinned tag or digest"),
        (("--workers", "0"), "workers must be >= 1"),
        (("--secret", "Bad_Name"), "secret name 'Bad_Name' is not a valid Kubernetes name"),
    ],
)
def test_bad_options_are_named(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _ctrflow(
        [
            "hpo",
            "launch",
            "--study",
            "s",
            "--train",
            "t",
            "--valid",
            "v",
            *(() if "--workers" in argv else ("--workers", "2")),
            *argv,
            "--dry-run",
        ]
    )
    assert rc == 2
    assert message in capsys.readouterr().err


def test_dry_run_prints_the_job_without_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    rc = _ctrflow(
        [
            "hpo",
            "launch",
            "--workers",
            "4",
            "--study",
            "s",
            "--train",
            "t",
            "--valid",
            "v",
            "--dry-run",
            "--kubeconfig",
            "/nonexistent",
        ]
    )
    job = json.loads(capsys.readouterr().out)
    assert rc == 0 and job["spec"]["completions"] == 4
    _validate(job)


def test_pod_problem_reasons_beyond_containers() -> None:
    unschedulable = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                }
            ],
        },
    }
    evicted = {
        "metadata": {"name": "q"},
        "status": {"phase": "Failed", "reason": "Evicted", "message": "low on ephemeral-storage"},
    }
    config_error = {
        "metadata": {"name": "r"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "hpo-worker",
                    "restartCount": 0,
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "ctrflow-storage" not found',
                        }
                    },
                }
            ],
        },
    }
    (u,), (e,), (c,) = (
        pod_problems(unschedulable),
        pod_problems(evicted),
        pod_problems(config_error),
    )
    assert (u.reason, u.fatal) == ("Unschedulable", False) and "Insufficient memory" in u.describe()
    assert (e.reason, e.fatal) == ("Evicted", False)
    assert c.fatal and 'secret "ctrflow-storage" not found' in c.describe()
    assert "ctrflow cluster check" in c.describe()
    running = {
        "metadata": {"name": "s"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "hpo-worker", "restartCount": 0, "state": {"running": {}}}
            ],
        },
    }
    assert pod_problems(running) == []


def test_losing_track_of_the_job_says_how_to_follow_or_delete_it(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.role_rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]
    rc = _launch(fake)
    err = capsys.readouterr().err
    assert rc == 1
    assert "lost track of job ctrflow-hpo-ctr-week-48-x7k2p" in err and "answered 403" in err
    assert "kubectl -n hpo-test delete job ctrflow-hpo-ctr-week-48-x7k2p" in err
    assert fake.jobs  # not deleted: it may well be running fine
