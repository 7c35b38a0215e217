"""`ctrflow cluster check`: does this namespace have what ctrflow needs?

Asks the API server itself, with one SelfSubjectAccessReview per verb and resource the launcher
uses (so the answer reflects every Role, ClusterRole and webhook that applies to the caller), and
reads the required Secrets to check their keys (values are never printed). Lists what is missing
and exits 1 if anything is, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ctrflow.pipelines.k8s.arguments import add_connection_arguments
from ctrflow.pipelines.k8s.requirements import REQUIRED_PERMISSIONS, REQUIRED_SECRETS, Permission

# The Kubernetes client library (0.3 s to import) is imported by the commands that use it, not
# by `ctrflow` building its command line.
if TYPE_CHECKING:
    from kubernetes import client

    from ctrflow.pipelines.k8s.client import Cluster

__all__ = ["Finding", "check_cluster", "register"]


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    cluster = subparsers.add_parser("cluster", help="check a namespace for ctrflow")
    commands = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="verify permissions and Secrets the pipeline needs, list what is missing",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_connection_arguments(check)
    check.set_defaults(func=run_check)
    users = commands.add_parser(
        "mlflow-users",
        help="create MLflow's registering and read-only users (the bootstrap Job runs this)",
        description="Signs in to MLFLOW_TRACKING_URI as the admin (MLFLOW_TRACKING_USERNAME/"
        "PASSWORD) and creates, or sets the password of, the users named by "
        "CTRFLOW_MLFLOW_REGISTER_USERNAME/PASSWORD and CTRFLOW_MLFLOW_READER_USERNAME/PASSWORD. "
        "Credentials come only from the environment.",
    )
    users.set_defaults(func=run_mlflow_users)
    render = commands.add_parser(
        "render",
        help="render an overlay (kubectl kustomize); --require-digests refuses unpinned images",
        description="Print the overlay's manifests for `kubectl apply -f -`. With "
        "--require-digests, exit 1 naming every container whose image is not pinned by a real "
        "digest (a tag alone, or the committed all-zero placeholder).",
    )
    render.add_argument("overlay", help="a kustomization directory, e.g. manifests/overlays/prod")
    render.add_argument("--require-digests", action="store_true")
    render.set_defaults(func=run_render)


def _review(api: client.AuthorizationV1Api, namespace: str, need: Permission) -> Finding:
    from ctrflow.pipelines.k8s.client import read_json

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
    from kubernetes.client.rest import ApiException

    from ctrflow.pipelines.k8s.client import read_json

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
    from kubernetes import client

    authz = client.AuthorizationV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    findings = [_review(authz, cluster.namespace, need) for need in REQUIRED_PERMISSIONS]
    findings += [_secret(core, cluster.namespace, n, k) for n, k in REQUIRED_SECRETS.items()]
    return findings


def run_render(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.k8s.render import RenderError, render

    try:
        sys.stdout.write(render(args.overlay, require_digests=args.require_digests))
    except (RenderError, OSError) as exc:
        print(f"ctrflow cluster render: {exc}", file=sys.stderr)
        return 1
    return 0


def run_mlflow_users(args: argparse.Namespace) -> int:
    import os

    from ctrflow.pipelines.k8s.mlflow_users import MlflowUsersError, ensure_users, users_from_env

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        if not uri:
            raise MlflowUsersError("MLFLOW_TRACKING_URI is not set")
        for line in ensure_users(uri, users_from_env()):
            print(line)
    except (MlflowUsersError, OSError) as exc:
        print(f"ctrflow cluster mlflow-users: {exc}", file=sys.stderr)
        return 1
    return 0


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import urllib3.exceptions
    from kubernetes.client.rest import ApiException

    from ctrflow.pipelines.k8s.client import ClusterError, api_error_message, connect

    out = out or sys.stdout
    try:
        cluster = connect(args)
    except ClusterError as exc:
        print(f"ctrflow cluster check: {exc}", file=sys.stderr)
        return 1
    try:
        findings = check_cluster(cluster)
    except (ClusterError, ApiException, urllib3.exceptions.HTTPError) as exc:
        print(f"ctrflow cluster check: {api_error_message(exc, cluster.host)}", file=sys.stderr)
        return 1
    print(f"namespace {cluster.namespace} on {cluster.host}:", file=out)
    for finding in findings:
        print(
            f"  {'ok     ' if finding.ok else 'MISSING'} {finding.what}: {finding.detail}", file=out
        )
    missing = [f for f in findings if not f.ok]
    if missing:
        print(f"{len(missing)} of {len(findings)} requirement(s) missing", file=out)
        return 1
    print(f"all {len(findings)} requirements met", file=out)
    return 0
