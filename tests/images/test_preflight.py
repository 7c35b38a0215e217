"""The container tests' preflight: the reasons they fail with (never skip) under
CTRFLOW_CONTAINER_TESTS=1 when this machine cannot run the image. Runs in every `make test`."""

from __future__ import annotations

import os

from tests.testkit.podman import preflight


def test_no_podman_is_named() -> None:
    reason = preflight(None, "img:1", dict(os.environ))
    assert reason is not None and "podman is not installed" in reason


def test_a_podman_that_cannot_run_is_named() -> None:
    # `false` stands in for a podman whose `podman info` fails (no usable runtime or storage).
    reason = preflight("/bin/false", "img:1", dict(os.environ))
    assert reason is not None
    assert "podman info" in reason or "user namespaces" in reason
