"""podman with the project image, and the `podman run` flags the cluster's pods correspond to."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from ctrflow.components.names import RUN_AS_USER

RUN_AS = f"{RUN_AS_USER}:{RUN_AS_USER}"
# As the manifests run the image: numeric non-root user, read-only root filesystem, an emptyDir
# on /tmp and HOME=/tmp, no capabilities, no privilege escalation.
HARDENED = [
    "--read-only",
    "--user",
    RUN_AS,
    "--tmpfs",
    "/tmp",
    "-e",
    "HOME=/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


@dataclass(frozen=True)
class Podman:
    """podman with this project's image; `env` is the environment every podman call gets."""

    binary: str
    image: str
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        return [self.binary, *args]

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 300,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args),
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"podman {' '.join(args[:3])}... exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def run_image(
        self,
        *args: str,
        options: Sequence[str] = (),
        timeout: float = 300,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`podman run --rm` of the image, hardened as in the cluster, on the host network."""
        return self.run(
            ["run", "--rm", "--network", "host", *HARDENED, *options, self.image, *args],
            timeout=timeout,
            check=check,
            extra_env=extra_env,
        )


_MEMORY_UNITS = {"Ki": "k", "Mi": "m", "Gi": "g", "k": "k", "M": "m", "G": "g"}


def _memory(quantity: str) -> str:
    for suffix, unit in _MEMORY_UNITS.items():
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + unit
    return quantity


def _kubelet_arg(arg: str, env: Mapping[str, str]) -> str:
    """The kubelet's expansion of a container arg: `$$` is a literal `$`, `$(VAR)` a declared
    variable (an undeclared one stays as written)."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
        elif arg.startswith("$(", i) and ")" in arg[i:]:
            end = arg.index(")", i)
            name = arg[i + 2 : end]
            out.append(env.get(name, arg[i : end + 1]))
            i = end + 1
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class PodRun:
    """`podman run` arguments for one pod of a Job, and the environment podman needs for them
    (Secret values travel as `-e NAME` from podman's own environment: never in its argv)."""

    args: list[str]
    env: dict[str, str]


def pod_as_podman_run(
    job: Mapping[str, Any],
    *,
    name: str,
    secrets: Mapping[tuple[str, str], str],
    claims: Mapping[str, pathlib.Path],
) -> PodRun:
    """The Job's pod template as `podman run` flags (the parts a single host can honour).

    secrets: (Secret name, key) -> value; claims: PersistentVolumeClaim name -> host directory.
    """
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    args = ["run", "--name", name, "--network", "host"]
    if context.get("runAsNonRoot") and not context.get("runAsUser"):
        raise ValueError("runAsNonRoot without runAsUser: podman would need a name lookup")
    if "runAsUser" in context:
        group = context.get("runAsGroup")
        args += [
            "--user",
            f"{context['runAsUser']}:{group}" if group else str(context["runAsUser"]),
        ]
    if context.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for capability in context.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        cpu = limits["cpu"]
        args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    if "memory" in limits:
        args += ["--memory", _memory(limits["memory"])]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            options = f"rw,size={_memory(size)}" if size else "rw"
            args += ["--tmpfs", f"{mount['mountPath']}:{options}"]
        elif "persistentVolumeClaim" in volume:
            host = claims[volume["persistentVolumeClaim"]["claimName"]]
            mode = "ro" if mount.get("readOnly") else "rw"
            args += ["--volume", f"{host}:{mount['mountPath']}:{mode}"]
        else:
            raise ValueError(f"volume {mount['name']}: only emptyDir and PVC are translated")

    env: dict[str, str] = {}
    podman_env: dict[str, str] = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            args += ["--env", f"{variable['name']}={variable['value']}"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = secrets[(ref["name"], ref["key"])]
            env[variable["name"]] = podman_env[variable["name"]] = value
            args += ["--env", variable["name"]]  # value from podman's environment
    command: list[str] = container.get("command") or []
    if command:
        args += ["--entrypoint", json.dumps(command[:1])]
    args.append(container["image"])
    args += [_kubelet_arg(a, env) for a in [*command[1:], *container.get("args", [])]]
    return PodRun(args=args, env=podman_env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def preflight(binary: str | None, image: str, env: dict[str, str]) -> str | None:
    """Why containers cannot run here, or None."""
    if binary is None:
        return "podman is not installed (apt-get install podman runc uidmap fuse-overlayfs)"
    if not pathlib.Path("/proc/self/uid_map").exists():
        return "this kernel has no user namespaces (/proc/self/uid_map is missing)"
    if os.geteuid() != 0:
        unshare = shutil.which("unshare")
        probe = subprocess.run(
            [unshare or "unshare", "--user", "--map-root-user", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            return f"user namespaces are not usable by this user: {probe.stderr.strip()}"
    info = subprocess.run(
        [binary, "info"], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    if info.returncode != 0:
        return f"`podman info` failed: {info.stderr.strip()[-1500:]}"
    exists = subprocess.run(
        [binary, "image", "exists", image], capture_output=True, env=env, check=False
    )
    if exists.returncode != 0:
        return f"image {image} is not built: run `make image-local` (or images/ci-containers.sh)"
    return None
