"""Connecting to the Kubernetes API: in-cluster credentials or a kubeconfig, and the namespace.

Shared by `ctrflow hpo launch` and `ctrflow cluster check`. Every request goes through one
`ApiClient` built here (never the client library's global configuration), so tests can point a
kubeconfig at a local server and two commands in one process cannot disturb each other.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

__all__ = [
    "Cluster",
    "ClusterError",
    "api_error_message",
    "connect",
    "read_json",
]

_SA_DIR = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ClusterError(RuntimeError):
    """The Kubernetes API could not be configured or reached; the message says why."""


@dataclass(frozen=True)
class Cluster:
    """An API client and the namespace the command works in."""

    api: client.ApiClient
    namespace: str
    host: str


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (_SA_DIR / "token").exists()


def _kubeconfig_path(explicit: str | None) -> str:
    if explicit:
        if not pathlib.Path(explicit).expanduser().is_file():
            raise ClusterError(f"kubeconfig {explicit!r} does not exist")
        return explicit
    return os.environ.get("KUBECONFIG") or str(pathlib.Path("~/.kube/config").expanduser())


def _context_namespace(path: str, context: str | None) -> str | None:
    contexts, active = config.list_kube_config_contexts(config_file=path)
    chosen = active
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            names = ", ".join(sorted(str(c.get("name")) for c in contexts)) or "none"
            raise ClusterError(f"context {context!r} not found in {path} (contexts: {names})")
    namespace = (chosen or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else None


def connect(args: argparse.Namespace) -> Cluster:
    """The API client and namespace from --kubeconfig/--context/--namespace (or in-cluster)."""
    kubeconfig: str | None = getattr(args, "kubeconfig", None)
    context: str | None = getattr(args, "context", None)
    namespace: str | None = getattr(args, "namespace", None)
    try:
        if kubeconfig is None and context is None and _in_cluster():
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = client.ApiClient(configuration)
            if namespace is None:
                namespace = (_SA_DIR / "namespace").read_text().strip() or None
        else:
            path = _kubeconfig_path(kubeconfig)
            if not any(pathlib.Path(p).expanduser().is_file() for p in path.split(os.pathsep)):
                raise ClusterError(
                    f"no Kubernetes configuration: not running in a cluster and no kubeconfig "
                    f"at {path} (pass --kubeconfig)"
                )
            # Resolves (and checks) the context first, for a message naming the known ones.
            context_namespace = _context_namespace(path, context)
            api = config.new_client_from_config(
                config_file=path, context=context, persist_config=False
            )
            namespace = namespace or context_namespace
    except ConfigException as exc:
        raise ClusterError(f"invalid Kubernetes configuration: {exc}") from exc
    return Cluster(api=api, namespace=namespace or "default", host=api.configuration.host)


def read_json(response: Any) -> dict[str, Any]:
    """The JSON body of a response fetched with _preload_content=False."""
    data = json.loads(response.data or b"{}")
    if not isinstance(data, dict):
        raise ClusterError(f"unexpected response from the Kubernetes API: {data!r:.200}")
    return data


def api_error_message(exc: BaseException, host: str) -> str:
    """One line for an API failure: the HTTP status and server message, or why it is unreachable."""
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or message
        except (ValueError, AttributeError):
            pass
        return f"Kubernetes API {host} answered {exc.status}: {message}"
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return f"cannot reach the Kubernetes API at {host}: {exc}"
    return f"Kubernetes API {host}: {exc}"
