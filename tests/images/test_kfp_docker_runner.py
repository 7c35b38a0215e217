"""Single steps of the compiled pipeline run by `kfp.local.DockerRunner` in the image, set up as
`ctrflow run --runner container` sets it up (pipelines/runs/containers.py): podman's Docker API
served for the run, the hardened container settings, local data mounted read-only.

kfp.local 2.17 alone reads a container podman already removed as exit code 0, so a failed step
passed as SUCCESS with no outputs; the runner keeps containers until their exit code is read, and
the failed step below must fail.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from ctrflow.pipelines.runs.containers import container_runner
from tests.testkit.podman import Podman

pytestmark = [
    pytest.mark.container,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]


def _open_for(path: pathlib.Path, mode: int) -> None:
    """Let user 10001 through: pytest's temp directories are root's, mode 0700."""
    for parent in [path, *path.parents]:
        if parent == pathlib.Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | mode)


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
    root.chmod(0o1777)  # as `ctrflow run --runner container` leaves its runs/ directory
    return data, root


@pytest.fixture
def podman_conf(podman: Podman, monkeypatch: pytest.MonkeyPatch) -> Podman:
    """This machine's podman defaults for the service the runner starts; no DOCKER_HOST."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    for name, value in podman.env.items():
        if name == "CONTAINERS_CONF":
            monkeypatch.setenv(name, value)
    return podman


def test_prepare_data_runs_in_the_image_and_writes_as_its_user(
    podman_conf: Podman, tmp_path: pathlib.Path
) -> None:
    from kfp import local

    from ctrflow.pipelines.ctr_pipeline import _components

    data, root = _layout(tmp_path)
    with container_runner(image=podman_conf.image, environment={}, read_only_dirs=[data]) as run:
        local.init(
            runner=run, pipeline_root=str(root), workspace_root=str(tmp_path), raise_on_error=True
        )
        task = _components(podman_conf.image)["prepare-data"](data_uris=[str(data / "log.parquet")])
        train = task.outputs["train"]
        assert train.metadata["rows"] > 0
        owners = {p.stat().st_uid for p in pathlib.Path(train.path).rglob("*")}
        assert owners == {10001}, owners  # written in the container, as the image's user
    assert "DOCKER_HOST" not in os.environ  # the runner's podman service is gone with it


def test_a_failed_step_fails_the_run(podman_conf: Podman, tmp_path: pathlib.Path) -> None:
    from kfp import local

    from ctrflow.pipelines.ctr_pipeline import _components

    data, root = _layout(tmp_path)
    with container_runner(image=podman_conf.image, environment={}, read_only_dirs=[data]) as run:
        local.init(
            runner=run, pipeline_root=str(root), workspace_root=str(tmp_path), raise_on_error=True
        )
        prepare = _components(podman_conf.image)["prepare-data"]
        with pytest.raises(RuntimeError, match="prepare-data"):
            prepare(data_uris=[str(data / "missing.parquet")])
