"""How many threads to use: explicit counts win; -1 means every CPU this process may use."""

from __future__ import annotations

from ffm_ext import _core

__all__ = ["resolve_threads"]


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
