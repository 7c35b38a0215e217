"""Test-only fault hook shared by the register step and `ctrflow model rollback`."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from ctrflow.components.names import TEST_KILL_AT_ENV

__all__ = ["with_test_kill"]

Event = Callable[[str], None]


def with_test_kill(on_event: Event | None) -> Event:
    """With $CTRFLOW_TEST_KILL_AT naming a checkpoint, the process SIGKILLs itself there (no
    cleanup runs, as with an OOM kill or a lost node). Unset in production."""
    kill_at = os.environ.get(TEST_KILL_AT_ENV, "")

    def event(name: str) -> None:
        if on_event is not None:
            on_event(name)
        if name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return event
