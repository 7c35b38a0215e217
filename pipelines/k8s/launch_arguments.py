"""The command line of `ctrflow hpo launch` (the command itself is launch.py).

Building it imports no Kubernetes client: `ctrflow` builds every command's parser at each start.
"""

from __future__ import annotations

import argparse
from typing import Any

from ctrflow.components.names import SA_HPO_WORKER
from ctrflow.pipelines.k8s.arguments import add_connection_arguments
from ctrflow.pipelines.k8s.requirements import STORAGE_SECRET, STORAGE_SECRET_KEY

__all__ = ["DESCRIPTION", "register_launch"]

DESCRIPTION = (
    "Creates the Job (credentials only as a Secret reference), follows its pods, reports failures"
    " with their reason, and ends with the Job: exit 0 when every worker finished (the study's"
    " budget is reached), 1 when the Job failed, a pod cannot start (image pull, missing Secret)"
    " or --timeout passed, 130 on Ctrl-C. On a fatal problem, a timeout or Ctrl-C it deletes the"
    " Job and its pods; a finished Job is removed by the cluster after --ttl seconds."
)


def register_launch(hpo_subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `launch` to the `ctrflow hpo` sub-commands."""
    parser = hpo_subparsers.add_parser(
        "launch",
        help="run N HPO workers as an Indexed Kubernetes Job and follow it",
        description=DESCRIPTION,
    )
    parser.add_argument("--workers", type=int, required=True, help="number of worker pods")
    parser.add_argument(
        "--study", required=True, help="existing study (made by `ctrflow hpo create`)"
    )
    parser.add_argument(
        "--train", required=True, help="training Dataset directory, as the pods see it"
    )
    parser.add_argument(
        "--valid", required=True, help="validation Dataset directory, as the pods see it"
    )
    parser.add_argument(
        "--image",
        help="image reference (default: $CTRFLOW_IMAGE_REGISTRY or ghcr.io/ctrflow, then "
        "/ctrflow:<ctrflow version>, the tag `make image` builds)",
    )
    parser.add_argument(
        "--secret",
        default=STORAGE_SECRET,
        help=f"Secret with the storage URL under key --secret-key (default: {STORAGE_SECRET})",
    )
    parser.add_argument("--secret-key", default=STORAGE_SECRET_KEY, help="(default: %(default)s)")
    parser.add_argument(
        "--timeout",
        type=int,
        help="seconds the Job may run (its activeDeadlineSeconds); none by default",
    )
    parser.add_argument(
        "--cpu",
        default="1",
        help="cpu per worker, request = limit (default: 1); a whole number is also the "
        "worker's --threads",
    )
    parser.add_argument("--memory", default="2Gi", help="memory per worker (default: 2Gi)")
    parser.add_argument(
        "--backoff-limit", type=int, default=2, help="failed pods tolerated (default: 2)"
    )
    parser.add_argument(
        "--ttl", type=int, default=3600, help="seconds a finished Job is kept (default: 3600)"
    )
    parser.add_argument(
        "--service-account",
        default=SA_HPO_WORKER,
        help="ServiceAccount of the worker pods (default: %(default)s, the only one the "
        "admission policy lets the launcher's ServiceAccount use)",
    )
    parser.add_argument("--data-pvc", help="PersistentVolumeClaim mounted read-only at /data")
    parser.add_argument(
        "--log-lines", type=int, default=20, help="log lines shown for a failed pod (default: 20)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the Job as JSON and create nothing"
    )
    parser.add_argument(
        "worker_args",
        nargs=argparse.REMAINDER,
        help="after `--`: more arguments for `ctrflow hpo worker` (e.g. -- --budget 200)",
    )
    add_connection_arguments(parser)
    parser.set_defaults(func=_launch)


def _launch(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.k8s.launch import launch

    return launch(args)
