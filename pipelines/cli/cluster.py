"""`ctrflow cluster check`: does this namespace have what ctrflow needs?

Asks the API server itself, with one SelfSubjectAccessReview per verb and resource the launcher
uses (so the answer reflects every Role, ClusterRole and webhook that applies to the caller), and
reads the required Secrets to check their keys (values are never printed). Lists what is missing
and exits 1 if anything is, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from ctrflow.pipelines.k8s.arguments import add_connection_arguments

__all__ = ["register"]


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
    # Imported here, not at the top: building `ctrflow`'s command line must not pay the
    # Kubernetes client library's 0.3 s import.
    import urllib3.exceptions
    from kubernetes.client.rest import ApiException

    from ctrflow.pipelines.k8s.client import ClusterError, api_error_message, connect
    from ctrflow.pipelines.k8s.cluster_check import check_cluster

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
