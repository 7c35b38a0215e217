"""What `ctrflow cluster check` asks the API server, and what it finds.

One SelfSubjectAccessReview per verb and resource the launcher uses, and a read of each required
Secret to check its keys (values are never printed). Imported by the command when it runs: the
Kubernetes client library takes 0.3 s to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from ctrflow.pipelines.k8s.client import Cluster, read_json
from ctrflow.pipelines.k8s.requirements import REQUIRED_PERMISSIONS, REQUIRED_SECRETS, Permission

__all__ = ["Finding", "check_cluster"]


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str


def _review(api: client.AuthorizationV1Api, namespace: str, need: Permission) -> Finding:
    attributes: dict[str, Any] = {
        "namespace": namespace,
        "verb": need.verb,
        "group": need.group,
        "resource": need.resource,
    }
    if need.subresource:
        attributes["subresource"] = need.subresource
    if need.name:
        attributes["name"] = need.name
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    status = (
        read_json(api.create_self_subject_access_review(body, _preload_content=False)).get("status")
        or {}
    )
    allowed = bool(status.get("allowed")) and not status.get("denied")
    detail = need.why
    if not allowed and status.get("reason"):
        detail += f" ({status['reason']})"
    return Finding(allowed, need.describe(), detail)


def _secret(api: client.CoreV1Api, namespace: str, name: str, keys: tuple[str, ...]) -> Finding:
    what = f"secret {name!r} with key(s) {', '.join(keys)}"
    try:
        secret = read_json(api.read_namespaced_secret(name, namespace, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return Finding(False, what, "not found: apply an overlay (manifests/overlays/...)")
        if exc.status == 403:
            return Finding(False, what, "cannot read it (forbidden): grant get on this Secret")
        raise
    present = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    missing = [k for k in keys if k not in present]
    if missing:
        return Finding(False, what, f"missing key(s): {', '.join(missing)}")
    return Finding(True, what, "present")


def check_cluster(cluster: Cluster) -> list[Finding]:
    authz = client.AuthorizationV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    findings = [_review(authz, cluster.namespace, need) for need in REQUIRED_PERMISSIONS]
    findings += [_secret(core, cluster.namespace, n, k) for n, k in REQUIRED_SECRETS.items()]
    return findings
