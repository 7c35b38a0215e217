"""The rendered overlays, shared by the manifest tests (see test_manifests.py's docstring)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from tests.manifests.render import real_secrets, tool
from tests.testkit.paths import REPO_ROOT as ROOT

OVERLAYS = ("dev", "prod")


@pytest.fixture(scope="module")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    work = tmp_path_factory.mktemp("render") / "manifests"
    shutil.copytree(ROOT / "manifests", work, ignore=real_secrets)
    for example in work.glob("overlays/*/secrets/*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return work


@pytest.fixture(scope="module")
def rendered(manifests_copy: pathlib.Path) -> dict[str, str]:
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run(
            [tool("kubectl"), "kustomize", str(manifests_copy / "overlays" / overlay)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay}: {proc.stderr}"
        out[overlay] = proc.stdout
    return out
