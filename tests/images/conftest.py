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

import pytest

from ctrflow.pipelines._image import default_image
from tests.testkit.podman import Podman, preflight

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


@pytest.fixture(scope="session")
def podman() -> Podman:
    """podman and the image; fails (never skips) when either is missing."""
    env = dict(os.environ)
    # The runner defaults this machine needs (runc, ulimits), unless the caller chose others.
    env.setdefault("CONTAINERS_CONF", str(ROOT / "images" / "containers.conf"))
    image = os.environ.get(IMAGE_ENV) or default_image()
    binary = shutil.which("podman")
    reason = preflight(binary, image, env)
    if reason is not None:
        pytest.fail(f"{ENABLE_ENV}=1 but containers cannot run: {reason}")
    assert binary is not None
    return Podman(binary=binary, image=image, env=env)
