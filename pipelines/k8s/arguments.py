"""The Kubernetes connection options shared by the commands that talk to a cluster.

Apart from the client (pipelines/k8s/client.py) so that building the command line does not
import the Kubernetes client library: that import alone took 0.3 s of every `ctrflow` command.
"""

from __future__ import annotations

import argparse

__all__ = ["add_connection_arguments"]


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes connection")
    group.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: in-cluster credentials inside a pod, else $KUBECONFIG "
        "or ~/.kube/config)",
    )
    group.add_argument("--context", help="kubeconfig context (default: the current context)")
    group.add_argument(
        "--namespace",
        "-n",
        help="namespace (default: the context's namespace, the pod's own namespace, or 'default')",
    )
