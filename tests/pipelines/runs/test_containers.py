"""`ctrflow run --runner container`, the parts that need no container engine: the checks that
stop a run before any work, and what a step gets mounted. The runner itself runs the whole
pipeline in the image in tests/images (the containers CI stage)."""

from __future__ import annotations

import pathlib

import pytest

from ctrflow.pipelines.runs.containers import ContainerRunError, container_runner, mounted_dirs
from tests.testkit.cli import run_ctrflow


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([], "needs --storage with a database server"),
        (["--storage", "sqlite:////tmp/x.db"], "not an SQLite file"),
        (["--storage", "postgresql+psycopg://u@127.0.0.1:1/db"], "needs --mlflow-uri"),
        (
            ["--storage", "postgresql+psycopg://u@127.0.0.1:1/db", "--mlflow-uri", "sqlite:///m"],
            "not a file store",
        ),
    ],
)
def test_container_runner_refuses_file_stores_before_any_work(
    tmp_path: pathlib.Path, extra: list[str], words: str
) -> None:
    proc = run_ctrflow("run", "--runner", "container", "--workdir", str(tmp_path), *extra)
    assert proc.returncode == 2, proc.stderr  # a usage error (#16)
    assert words in proc.stderr
    assert not any(tmp_path.iterdir()), "nothing is generated or prepared before the check"


def test_a_step_reads_local_data_through_a_read_only_mount_of_its_folder(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.csv").write_text("label\n1\n")
    assert mounted_dirs(str(tmp_path / "logs" / "a.csv")) == [tmp_path / "logs"]
    assert mounted_dirs(str(tmp_path / "logs")) == [tmp_path / "logs"]
    assert mounted_dirs(str(tmp_path / "logs" / "2026-*" / "*.csv")) == [tmp_path / "logs"]
    # A template (filled in the data-window step): the folder above its first templated part.
    days = tmp_path / "logs" / "{date-3d..date}" / "*.csv"
    assert mounted_dirs(str(days)) == [tmp_path / "logs"]
    assert mounted_dirs("gs://bucket/week/*.parquet") == []


def test_an_unreachable_docker_api_is_a_clear_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-such.sock'}")
    with (
        pytest.raises(ContainerRunError, match="does not answer"),
        container_runner(image="ctrflow:test", environment={}, read_only_dirs=[]),
    ):
        pass
