"""What ctrflow needs from a namespace: API permissions and Secrets.

One list, read by `ctrflow cluster check` and kept equal to the Role in
manifests/base/rbac.yaml by a test, so the check asks for exactly what the manifests grant.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctrflow.components.names import STORAGE_SECRET
from ctrflow.components.names import STORAGE_URL_ENV as STORAGE_SECRET_KEY

__all__ = [
    "REQUIRED_PERMISSIONS",
    "REQUIRED_SECRETS",
    "STORAGE_SECRET",
    "STORAGE_SECRET_KEY",
    "Permission",
]

# The Secret holding the Optuna storage URL: pipeline steps, HPO Jobs and optuna-dashboard read it
# as the environment variable of the same name as the key.


@dataclass(frozen=True)
class Permission:
    """One verb on one resource (`subresource` as in pods/log), and who needs it."""

    group: str
    resource: str
    verb: str
    why: str
    subresource: str = ""
    name: str = ""  # a single object (resourceNames), or any

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            resource = f"{resource}.{self.group}"
        if self.name:
            resource = f"{resource} {self.name!r}"
        return f"{self.verb} {resource}"


_LAUNCH = "ctrflow hpo launch"
REQUIRED_PERMISSIONS: tuple[Permission, ...] = (
    Permission("batch", "jobs", "create", f"{_LAUNCH}: create the worker Job"),
    Permission("batch", "jobs", "get", f"{_LAUNCH}: read the Job's status"),
    Permission("batch", "jobs", "list", f"{_LAUNCH}: follow the Job"),
    Permission("batch", "jobs", "watch", f"{_LAUNCH}: follow the Job"),
    Permission("batch", "jobs", "delete", f"{_LAUNCH}: clean up on failure or Ctrl-C"),
    Permission("", "pods", "get", f"{_LAUNCH}: read worker pods"),
    Permission("", "pods", "list", f"{_LAUNCH}: find the Job's pods"),
    Permission("", "pods", "watch", f"{_LAUNCH}: follow pod status"),
    Permission("", "pods", "get", f"{_LAUNCH}: last log lines of failed pods", subresource="log"),
    Permission(
        "",
        "secrets",
        "get",
        "ctrflow cluster check: verify the storage Secret's keys",
        name=STORAGE_SECRET,
    ),
)

# Secret name -> keys that must be present (values are never read out or printed).
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {STORAGE_SECRET: (STORAGE_SECRET_KEY,)}
