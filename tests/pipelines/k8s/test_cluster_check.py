"""`ctrflow cluster check`: contract tests against a local stand-in for the Kubernetes API.

These are contract tests: no Kubernetes API server can run on this machine, so the real
`kubernetes` client talks to tests/testkit/k8s_fake_api.py on 127.0.0.1, which answers
SelfSubjectAccessReviews and Secret reads by evaluating the rules of the Role in
manifests/base/rbac.yaml (RBAC's matching: apiGroups, resources with subresources, verbs,
resourceNames), and records each request.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ctrflow.pipelines.k8s.requirements import REQUIRED_PERMISSIONS
from tests.testkit import k8s_fake_api
from tests.testkit.cli import ctrflow_in_process as _ctrflow
from tests.testkit.paths import REPO_ROOT as ROOT

SECRET_VALUE = "postgresql+psycopg://ctrflow:s3cr3t-pw@ctrflow-postgres:5432/optuna"

pytestmark = pytest.mark.timeout(120)


def _base_role_rules() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "manifests/base/rbac.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "Role")
    return list(role["rules"])


def _storage_secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "ctrflow-storage", "namespace": "hpo-test"},
        "data": data,
    }


@pytest.fixture
def fake(tmp_path: pathlib.Path) -> Iterator[Any]:
    server = k8s_fake_api.FakeKubernetes(role_rules=_base_role_rules())
    server.secrets["ctrflow-storage"] = _storage_secret(
        CTRFLOW_STORAGE_URL=SECRET_VALUE, MLFLOW_BACKEND_STORE_URI=SECRET_VALUE
    )
    server.kubeconfig = tmp_path / "kubeconfig"
    server.write_kubeconfig(server.kubeconfig, server.start(), extra_context="staging")
    yield server
    server.stop()


def _check(fake: Any, *extra: str) -> int:
    return _ctrflow(["cluster", "check", "--kubeconfig", str(fake.kubeconfig), *extra])


def test_namespace_with_the_base_role_and_secret_passes(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _check(fake)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"all {len(REQUIRED_PERMISSIONS) + 1} requirements met" in out
    assert "namespace hpo-test" in out
    assert SECRET_VALUE not in out and "s3cr3t" not in out

    reviews = fake.requests_to("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    asked = [r.body["spec"]["resourceAttributes"] for r in reviews]
    assert all(r.body["kind"] == "SelfSubjectAccessReview" for r in reviews)
    assert all(a["namespace"] == "hpo-test" for a in asked)
    assert [(a["group"], a["resource"], a.get("subresource", ""), a["verb"]) for a in asked] == [
        (p.group, p.resource, p.subresource, p.verb) for p in REQUIRED_PERMISSIONS
    ]
    assert {
        "group": "",
        "resource": "pods",
        "subresource": "log",
        "verb": "get",
        "namespace": "hpo-test",
    } in asked
    assert fake.requests_to("GET", "/api/v1/namespaces/hpo-test/secrets/ctrflow-storage")


def test_missing_permission_and_missing_secret_are_listed(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.role_rules = [r for r in _base_role_rules() if r["resources"] != ["pods/log"]]
    del fake.secrets["ctrflow-storage"]
    rc = _check(fake)
    out = capsys.readouterr().out
    assert rc == 1
    assert "MISSING get pods/log" in out
    assert "MISSING secret 'ctrflow-storage' with key(s) CTRFLOW_STORAGE_URL: not found" in out
    assert "2 of 11 requirement(s) missing" in out
    assert out.count("MISSING") == 2


def test_secret_without_the_key_is_named_and_values_never_printed(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.secrets["ctrflow-storage"] = _storage_secret(MLFLOW_BACKEND_STORE_URI=SECRET_VALUE)
    rc = _check(fake)
    out = capsys.readouterr().out
    assert rc == 1
    assert "missing key(s): CTRFLOW_STORAGE_URL" in out
    assert SECRET_VALUE not in out


def test_unreadable_secret_is_reported_as_forbidden(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.role_rules = [r for r in _base_role_rules() if r["resources"] != ["secrets"]]
    rc = _check(fake)
    out = capsys.readouterr().out
    assert rc == 1
    assert "MISSING get secrets 'ctrflow-storage'" in out
    assert "cannot read it (forbidden)" in out


def test_context_and_namespace_flags_choose_the_namespace(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fake serves only namespace hpo-test: the context's namespace `staging-ns` has no
    # Secret there (404), and --namespace overrides the context.
    assert _check(fake, "--context", "staging") == 1
    assert "namespace staging-ns" in capsys.readouterr().out
    assert _check(fake, "--context", "staging", "--namespace", "hpo-test") == 0
    assert _check(fake, "--context", "nope") == 1
    assert "context 'nope' not found" in capsys.readouterr().err


def test_missing_kubeconfig_is_a_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _ctrflow(["cluster", "check", "--kubeconfig", str(tmp_path / "absent")])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err


def _expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """Every (group, resource[/sub], verb, resourceName) a list of Role rules grants."""
    granted = set()
    for rule in rules:
        names = rule.get("resourceNames") or [""]
        for combo in itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"], names):
            granted.add(combo)
    return granted


def test_base_role_grants_exactly_what_the_check_requires() -> None:
    """Least privilege both ways: every permission the launcher and check need is in the Role,
    and the Role grants nothing they do not use (no wildcards)."""
    required = {
        (p.group, f"{p.resource}/{p.subresource}" if p.subresource else p.resource, p.verb, p.name)
        for p in REQUIRED_PERMISSIONS
    }
    granted = _expand(_base_role_rules())
    assert granted == required
    assert not any("*" in part for grant in granted for part in grant)


def test_fake_rbac_evaluation_denies_what_the_role_lacks() -> None:
    """The fake's RBAC matcher (which the tests above rely on) is not permissive."""
    fake = k8s_fake_api.FakeKubernetes(role_rules=copy.deepcopy(_base_role_rules()))
    assert fake.allowed("get", "", "pods", "log")
    assert not fake.allowed("get", "", "pods", "exec")
    assert not fake.allowed("create", "", "pods")
    assert fake.allowed("get", "", "secrets", name="ctrflow-storage")
    assert not fake.allowed("get", "", "secrets", name="other")
    assert not fake.allowed("list", "", "secrets")
    assert not fake.allowed("create", "apps", "jobs")


def test_in_cluster_credentials_and_namespace_are_used_inside_a_pod(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a pod (no --kubeconfig/--context): the ServiceAccount token, CA and namespace
    files that Kubernetes mounts; --namespace still wins."""
    from kubernetes.config import incluster_config

    from ctrflow.pipelines.k8s import client as _k8s_client

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (sa / "namespace").write_text("team-a\n")
    monkeypatch.setattr(_k8s_client, "_SA_DIR", sa)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(sa / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(sa / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    args = argparse.Namespace(kubeconfig=None, context=None, namespace=None)
    cluster = _k8s_client.connect(args)
    assert cluster.namespace == "team-a"
    assert cluster.host == "https://10.96.0.1:443"
    assert cluster.api.configuration.api_key["authorization"].lower() == "bearer pod-token"
    args.namespace = "team-b"
    assert _k8s_client.connect(args).namespace == "team-b"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")  # outside a pod: kubeconfig, here absent
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    with pytest.raises(_k8s_client.ClusterError, match="not running in a cluster"):
        _k8s_client.connect(args)
