"""How many threads to use: explicit counts win; -1 means every CPU this process may use."""

from __future__ import annotations

import os

from ffm_ext import _core

__all__ = ["resolve_threads", "scan_threads"]

# A dataset's checks read memory and page in a memory map; a few threads take all the bandwidth.
_SCAN_THREADS_MAX = 4


def available_cpus() -> int:
    """CPUs this process may use, honouring affinity and cgroup CPU quotas (containers)."""
    from joblib import cpu_count  # scikit-learn's dependency; reads cgroup quotas

    return max(1, int(cpu_count()))


def resolve_threads(n_threads: int) -> int:
    """1..N threads from a user value: positive as given, -1 = all available CPUs."""
    if n_threads == -1:
        return min(available_cpus(), max(1, _core.max_threads()))
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1 or -1 (all CPUs), got {n_threads}")
    return n_threads


def scan_threads() -> int:
    """Threads for a dataset's one-pass checks (``_core.scan_tokens``). From the CPU affinity
    only: joblib's cgroup-aware count costs a 0.2-s import, more than the scan itself, and a
    scan that briefly exceeds a container's CPU quota just runs a little slower."""
    return max(1, min(_SCAN_THREADS_MAX, len(os.sched_getaffinity(0))))
