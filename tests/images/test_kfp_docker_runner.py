"""One step of the pipeline (prepare-data, the component `ctrflow compile` puts in the spec) run by
`kfp.local.DockerRunner` in the image, through podman's Docker-compatible API.

What a `ctrflow run --runner container` needs, as found here: DOCKER_HOST naming podman's socket;
`entrypoint=[""]` (the image's ENTRYPOINT is `ctrflow`, the step's command `sh -c ...`); a
pipeline root writable by user 10001 (the step's outputs are written there, under the same path);
inputs outside the pipeline root as `mounts` (kfp.local reserves `volumes`); `network_mode="host"`
to reach servers on loopback. And one kfp.local limitation: it runs containers with
auto_remove=True and takes a container already gone at `wait` for exit code 0, which with podman
is the usual case, so a failed step passes as SUCCESS with no outputs (and its last log lines are
lost) unless the runner keeps the container until it has read its exit code.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.testkit.podman import Podman

pytestmark = [
    pytest.mark.container,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def podman_socket(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`podman system service` on a private socket: the Docker API that docker-py talks to."""
    sock = tmp_path_factory.mktemp("podman-api") / "podman.sock"
    proc = subprocess.Popen(
        podman.command("system", "service", "--time=0", f"unix://{sock}"),
        env=podman.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "podman system service did not start"
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _open_for(path: pathlib.Path, mode: int) -> None:
    """Let user 10001 through: pytest's temp directories are root's, mode 0700."""
    for parent in [path, *path.parents]:
        if parent == pathlib.Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | mode)


def _runner(data: pathlib.Path) -> Any:
    import docker
    from kfp import local

    return local.DockerRunner(
        # The image's ENTRYPOINT is `ctrflow` and the step's command is `sh -c ...`: [""]
        # resets it, as `docker run --entrypoint ""` does ([] and "" keep it, with podman).
        entrypoint=[""],
        network_mode="host",  # MLflow, PostgreSQL on this host's loopback
        mounts=[docker.types.Mount("/data", str(data), type="bind", read_only=True)],
        read_only=True,
        tmpfs={"/tmp": ""},
        environment={"HOME": "/tmp"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )


def _layout(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A data directory (read-only in the step) and a pipeline root the step's user can write."""
    from ctrflow.components.data.synth_data import write_synth

    data = tmp_path / "data"
    data.mkdir()
    write_synth(str(data / "log.parquet"), rows=3000, days=3, seed=1)
    root = tmp_path / "pipeline-root"
    root.mkdir()
    _open_for(data, 0o005)
    _open_for(tmp_path, 0o005)
    root.chmod(0o777)  # outputs are written by the step's user 10001, read by this process
    return data, root


def test_docker_runner_runs_prepare_data_in_the_image(
    podman: Podman,
    podman_socket: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kfp import local

    from ctrflow.pipelines.ctr_pipeline import _components

    data, root = _layout(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", podman_socket)
    local.init(runner=_runner(data), pipeline_root=str(root), raise_on_error=True)
    prepare = _components(podman.image)["prepare-data"]
    task = prepare(data_uri="/data/log.parquet")
    train = task.outputs["train"]
    assert train.metadata["rows"] > 0
    assert pathlib.Path(train.path).is_dir() and any(pathlib.Path(train.path).iterdir())
    owners = {p.stat().st_uid for p in pathlib.Path(train.path).rglob("*")}
    assert owners == {10001}, owners  # written in the container, as the image's user
    assert os.environ["DOCKER_HOST"] == podman_socket


def _run_keeping_the_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
) -> int:
    """kfp.local's run_docker_container without auto_remove: the exit code and every log line
    are read before the container is removed."""
    container = client.containers.run(
        image=image, command=command, detach=True, volumes=volumes, **run_args
    )
    try:
        for line in container.logs(stream=True):
            print(line.decode(), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


def test_a_failed_step_is_a_failure_only_when_the_runner_reads_its_exit_code(
    podman: Podman,
    podman_socket: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kfp import local
    from kfp.local import docker_task_handler

    from ctrflow.pipelines.ctr_pipeline import _components

    data, root = _layout(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", podman_socket)
    local.init(runner=_runner(data), pipeline_root=str(root), raise_on_error=True)
    prepare = _components(podman.image)["prepare-data"]

    # kfp.local as it is: the container (exit 1: no such input) is auto-removed before `wait`,
    # which kfp.local reads as success. Whichever way the race goes, a failed step has no outputs.
    try:
        silent = prepare(data_uri="/data/missing.parquet")
    except RuntimeError:
        print("kfp.local saw the failure this time")
    else:
        assert not silent.outputs, silent.outputs
        print("kfp.local reported the failed step as SUCCESS with no outputs")

    monkeypatch.setattr(docker_task_handler, "run_docker_container", _run_keeping_the_container)
    with pytest.raises(RuntimeError, match="prepare-data"):
        prepare(data_uri="/data/missing.parquet")
