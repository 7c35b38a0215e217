"""Wall time of one call, for the benchmarks that time Python callables in-process."""

from __future__ import annotations

import time
from collections.abc import Callable


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds `fn()` took (perf_counter: monotonic, the finest clock there is)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
