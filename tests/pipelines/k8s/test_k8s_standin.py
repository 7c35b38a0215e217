"""The Kubernetes API stand-in (tests/testkit/k8s_fake_api.py) refuses what a real API server
refuses: every POST body is checked against the official OpenAPI schemas (kubernetes-validate,
strict, Kubernetes 1.30 and the newest bundled version) and a failure is answered 422 Invalid
with a Status naming the field, the way the API server's validation answers. No Kubernetes API
server can run here; each refusal has an accepted twin, so a test fails if the stand-in
refuses for another reason or accepts anything.
"""

from __future__ import annotations

import copy
import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ctrflow.pipelines.k8s import launch
from tests.testkit import k8s_fake_api
from tests.testkit.cli import ctrflow_in_process

JOBS = "/apis/batch/v1/namespaces/hpo-test/jobs"
REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@pytest.fixture
def fake() -> Iterator[tuple[k8s_fake_api.FakeKubernetes, str]]:
    server = k8s_fake_api.FakeKubernetes()
    url = server.start()
    yield server, url
    server.stop()


def _post(url: str, path: str, body: Any, token: str = "fake-token") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"generateName": "hpo-"},
    "spec": {
        "completions": 2,
        "parallelism": 2,
        "completionMode": "Indexed",
        "template": {
            "metadata": {"labels": {"app": "hpo"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "hpo-worker", "image": "registry.example/ctrflow:1"}],
            },
        },
    },
}
REVIEW: dict[str, Any] = {
    "apiVersion": "authorization.k8s.io/v1",
    "kind": "SelfSubjectAccessReview",
    "spec": {"resourceAttributes": {"namespace": "hpo-test", "verb": "create", "group": "batch",
                                    "resource": "jobs"}},
}  # fmt: skip


def _edit(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node: Any = body  # a dict or, below an index, a list
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


def test_the_well_formed_twins_are_accepted(fake: tuple[Any, str]) -> None:
    server, url = fake
    status, job = _post(url, JOBS, JOB)
    assert status == 201, job
    assert len(server.jobs) == 1
    status, review = _post(url, REVIEWS, REVIEW)
    assert status == 201 and review["status"]["allowed"] is True
    # apiVersion and kind left out: the server takes them from the endpoint.
    bare = {k: v for k, v in REVIEW.items() if k not in ("apiVersion", "kind")}
    assert _post(url, REVIEWS, bare)[0] == 201


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("spec.completions", "two", "spec.completions"),
        ("spec.completionMode", 1, "spec.completionMode"),
        ("spec.template.spec.containers", ..., "spec.template.spec"),
        ("spec.template.spec.containers.0.name", ..., "spec.template.spec.containers[0]"),
        ("spec.template.spec.containers.0.resources", {"limits": {"cpu": []}},
         "spec.template.spec.containers[0].resources.limits.cpu"),
        ("spec.template.spec.containers.0.imagePullPolicy", {"always": True},
         "spec.template.spec.containers[0].imagePullPolicy"),
        ("spec.backoffLimitt", 0, "spec"),
        ("spec.template.spec.containers.0.env", [{"value": "x"}],
         "spec.template.spec.containers[0].env[0]"),
        ("spec.template", ..., "spec"),
    ],
)  # fmt: skip
def test_an_invalid_job_is_refused_with_422(
    fake: tuple[Any, str], field: str, value: Any, where: str
) -> None:
    server, url = fake
    status, answer = _post(url, JOBS, _edit(JOB, field, value))
    assert status == 422, answer
    assert answer["kind"] == "Status" and answer["reason"] == "Invalid" and answer["code"] == 422
    assert answer["message"].startswith(f'Job.batch "" is invalid: {where}: ')
    cause = answer["details"]["causes"][0]
    assert cause["field"] == where and answer["details"]["kind"] == "Job"
    assert server.jobs == {} and server.pods == {}


@pytest.mark.parametrize(
    ("edit", "status", "message"),
    [
        (("spec", ...), 422, "<root>: 'spec' is a required property"),
        (("spec.resourceAttributes.verbs", ["get"]), 422, "spec.resourceAttributes: Additional"),
        (("spec.resourceAttributes.verb", 3), 422, "spec.resourceAttributes.verb: 3 is not"),
        (("kind", "SubjectAccessReview"), 400, "the kind in the data (SubjectAccessReview)"),
        (("apiVersion", "authorization.k8s.io/v1beta1"), 400, "the API version in the data"),
    ],
)
def test_an_invalid_access_review_is_refused(
    fake: tuple[Any, str], edit: tuple[str, Any], status: int, message: str
) -> None:
    _, url = fake
    code, answer = _post(url, REVIEWS, _edit(REVIEW, *edit))
    assert code == status, answer
    assert message in answer["message"] and answer["kind"] == "Status"


def test_a_body_that_is_not_a_json_object_is_refused(fake: tuple[Any, str]) -> None:
    server, url = fake
    assert _post(url, JOBS, b"kind: Job")[0] == 400
    assert _post(url, JOBS, ["a", "list"])[0] == 400
    assert _post(url, REVIEWS, b"")[0] == 400
    assert server.jobs == {}


def test_launch_reports_a_refused_job_in_one_line(
    fake: tuple[Any, str],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `ctrflow hpo launch` does when the server refuses its Job: one line naming the
    field, exit 1, nothing created."""
    server, url = fake
    kubeconfig = tmp_path / "kubeconfig"
    server.write_kubeconfig(kubeconfig, url)
    build = launch.build_job_from_args

    def with_a_typo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return _edit(build(*args, **kwargs), "spec.ttlSecondsAfterFinish", 60)

    monkeypatch.setattr(launch, "build_job_from_args", with_a_typo)
    code = ctrflow_in_process([
        "hpo", "launch", "--workers", "2", "--study", "s", "--train", "/d/t", "--valid", "/d/v",
        "--image", "registry.example/ctrflow:1", "--kubeconfig", str(kubeconfig),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ctrflow hpo launch: cannot create the Job: Kubernetes API")
    assert "answered 422: Job.batch" in err and "ttlSecondsAfterFinish" in err
    assert len(err.strip().splitlines()) == 1
    assert server.jobs == {}
