"""The project image, run for real with podman: fixtures and the hardened `podman run` flags.

Tests marked `container` run only with CTRFLOW_CONTAINER_TESTS=1 (images/ci-containers.sh sets
it after building the image); without it they are skipped with that reason. With it, a missing
podman, user namespace support or image FAILS them: a CI stage that silently skipped would pass
without having run anything.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
from podman_helpers import Podman

from ctrflow.pipelines._image import default_image

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENABLE_ENV = "CTRFLOW_CONTAINER_TESTS"
IMAGE_ENV = "CTRFLOW_TEST_IMAGE"  # default: the tag `make image` builds (default_image())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ENABLE_ENV) == "1":
        return
    skip = pytest.mark.skip(
        reason=f"container test: runs only with {ENABLE_ENV}=1 "
        "(images/ci-containers.sh builds the image and sets it)"
    )
    for item in items:
        if item.get_closest_marker("container") is not None:
            item.add_marker(skip)


def _preflight(binary: str | None, image: str, env: dict[str, str]) -> str | None:
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


@pytest.fixture(scope="session")
def podman() -> Podman:
    """podman and the image; fails (never skips) when either is missing."""
    env = dict(os.environ)
    # The runner defaults this machine needs (runc, ulimits), unless the caller chose others.
    env.setdefault("CONTAINERS_CONF", str(ROOT / "images" / "containers.conf"))
    image = os.environ.get(IMAGE_ENV) or default_image()
    binary = shutil.which("podman")
    reason = _preflight(binary, image, env)
    if reason is not None:
        pytest.fail(f"{ENABLE_ENV}=1 but containers cannot run: {reason}")
    assert binary is not None
    return Podman(binary=binary, image=image, env=env)
