"""Plumbing steps of the pipeline itself (no model logic): the fan-out list of the HPO workers.

KFP's ParallelFor needs a list to loop over, and the number of workers is a run parameter, so a
tiny step turns it into ``[0, 1, ..., n-1]`` (each item is one worker's index, which seeds its
sampler). It also rejects a worker count the shared database cannot carry before anything runs.
"""

from __future__ import annotations

__all__ = ["MAX_WORKERS", "worker_slots_component"]

# Each worker holds at most 3 PostgreSQL connections (components/_optuna_storage.py): 50 workers
# stay inside PostgreSQL's default max_connections=100 with room for MLflow and the dashboard.
MAX_WORKERS = 50


def worker_slots_component(n_workers: int, budget: int) -> list:  # type: ignore[type-arg]
    """KFP step: the ParallelFor items, one per HPO worker. ``budget`` is checked here too, so a
    bad run parameter fails in seconds, before data preparation."""
    max_workers = 50  # MAX_WORKERS; repeated because KFP ships only this function's source
    if not 1 <= n_workers <= max_workers:
        raise ValueError(f"n_workers must be between 1 and {max_workers}, got {n_workers}")
    if budget < 1:
        raise ValueError(f"trial_budget must be >= 1, got {budget}")
    if n_workers > budget:
        raise ValueError(
            f"n_workers ({n_workers}) exceeds trial_budget ({budget}): workers beyond the budget "
            "would start, find no trial left and only cost pods"
        )
    return list(range(n_workers))
