"""`ctrflow run --runner container`: every step of the compiled spec in the project image, run by
``kfp.local.DockerRunner`` (KFP's own executor, as on a cluster), through whatever Docker API this
machine has: $DOCKER_HOST, Docker's socket, or a private ``podman system service`` started for
the run.

The containers run as the manifests run them: the image's user (10001), a read-only root
filesystem with a tmpfs on /tmp and HOME=/tmp, no capabilities, and the host's network, so the
Optuna storage (PostgreSQL) and the MLflow server on this machine's loopback are reachable. Local
input data is mounted read-only at the same path; the pipeline root is mounted by kfp.local.

One kfp.local 2.17 behaviour is corrected here: it starts containers with ``auto_remove=True``
and reads a container that is already gone at ``wait()`` as exit code 0, so with podman (which
removes them fast) a failed step passed as SUCCESS with no outputs. The replacement keeps the
container until its exit code is read. It is installed only when kfp.local's function still has
the signature it was written against; otherwise the run stops with a clear error.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["ContainerRunError", "container_runner", "docker_host", "mounted_dirs"]

_DOCKER_SOCKET = pathlib.Path("/var/run/docker.sock")
# kfp.local.docker_task_handler.run_docker_container(client, image, command, volumes, **args)
_PATCHED_SIGNATURE = ["client", "image", "command", "volumes", "container_run_args"]


class ContainerRunError(RuntimeError):
    """The container runner cannot start: no Docker API, no image, an unsupported kfp.local."""


def mounted_dirs(data_uri: str) -> list[pathlib.Path]:
    """Host directories a step needs to read ``data_uri`` (none for s3://, gs://, ...)."""
    if "://" in data_uri:
        return []
    path = pathlib.Path(data_uri)
    # A glob: its directory part without wildcards; a file: its folder; a directory: itself.
    while any(c in path.name for c in "*?[") or not path.exists():
        if path.parent == path:
            break
        path = path.parent
    return [path if path.is_dir() else path.parent]


@contextlib.contextmanager
def docker_host(scratch: pathlib.Path) -> Iterator[str]:
    """A Docker API endpoint for this run: $DOCKER_HOST, Docker's own socket, or podman's API
    served on a private socket under ``scratch`` until the run ends."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    if _DOCKER_SOCKET.exists():
        yield f"unix://{_DOCKER_SOCKET}"
        return
    podman = shutil.which("podman")
    if podman is None:
        raise ContainerRunError(
            "--runner container needs a Docker API: set DOCKER_HOST, run Docker, or install podman"
        )
    sock = scratch / "podman.sock"
    service = subprocess.Popen(
        [podman, "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if service.poll() is not None:
                raise ContainerRunError(
                    f"podman system service exited: {service.communicate()[1][-2000:]}"
                )
            if time.monotonic() > deadline:
                raise ContainerRunError("podman system service did not open its socket in 60 s")
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()


def _run_keeping_the_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
) -> int:
    """kfp.local's run_docker_container without auto_remove: every log line and the exit code
    are read before the container is removed."""
    run_args.pop("auto_remove", None)
    container = client.containers.run(
        image=image, command=command, detach=True, volumes=volumes, **run_args
    )
    try:
        for line in container.logs(stream=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def _exit_codes_read() -> Iterator[None]:
    from kfp.local import docker_task_handler

    original = getattr(docker_task_handler, "run_docker_container", None)
    found = list(inspect.signature(original).parameters) if callable(original) else None
    if found != _PATCHED_SIGNATURE:
        import kfp

        raise ContainerRunError(
            f"kfp {kfp.__version__}: kfp.local.docker_task_handler.run_docker_container has "
            f"parameters {found}, not {_PATCHED_SIGNATURE}; ctrflow cannot read the steps' "
            "exit codes with this kfp (ctrflow pins kfp 2.17)"
        )
    docker_task_handler.run_docker_container = _run_keeping_the_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def _check_image(host: str, image: str) -> None:
    import docker

    try:
        client = docker.DockerClient(base_url=host)
    except docker.errors.DockerException as exc:
        raise ContainerRunError(f"the Docker API at {host} does not answer: {exc}") from None
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ContainerRunError(
            f"image {image} is not on this machine ({host}): build it with `make image` "
            "(or `make image-local` without a registry), or pass --image"
        ) from None
    except docker.errors.DockerException as exc:
        raise ContainerRunError(f"the Docker API at {host} does not answer: {exc}") from None
    finally:
        client.close()


@contextlib.contextmanager
def container_runner(
    *, image: str, environment: Mapping[str, str], read_only_dirs: Sequence[pathlib.Path]
) -> Iterator[Any]:
    """A configured ``kfp.local.DockerRunner``, with DOCKER_HOST set for kfp.local while the
    run lasts. ``environment`` reaches every step (the stores' URLs: never run parameters)."""
    import docker
    from kfp import local

    with contextlib.ExitStack() as stack:
        scratch = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ctrflow-")))
        host = stack.enter_context(docker_host(scratch))
        _check_image(host, image)
        stack.enter_context(_exit_codes_read())
        saved = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = host  # kfp.local builds its client from the environment
        stack.callback(
            lambda: (
                os.environ.pop("DOCKER_HOST")
                if saved is None
                else os.environ.__setitem__("DOCKER_HOST", saved)
            )
        )
        mounts = [
            docker.types.Mount(str(d), str(d), type="bind", read_only=True)
            for d in dict.fromkeys(p.resolve() for p in read_only_dirs)
        ]
        yield local.DockerRunner(
            # The image's ENTRYPOINT is `ctrflow`; a step's command is `sh -c ...`. [""] resets
            # it, as `docker run --entrypoint ""` does ([] keeps it with podman).
            entrypoint=[""],
            network_mode="host",
            mounts=mounts,
            read_only=True,
            tmpfs={"/tmp": ""},
            environment={**environment, "HOME": "/tmp"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
