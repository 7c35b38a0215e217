"""Plumbing step of the pipeline itself (no model logic): name the study, list the HPO workers.

KFP's ParallelFor needs a list to loop over, and the number of workers is a run parameter, so a
small first step turns it into one item per worker: ``{"index": i, "study_name": name}`` (the
index seeds that worker's sampler). The study name, ``<model name>-<run id>`` (docs/architecture.md,
Contracts), is made here too, from the run id placeholder passed as a whole value, because
KFP's backend replaces ``{{$.pipeline_job_uuid}}`` only when it is an argument's entire value
(an f-string around it would reach the step unreplaced). Bad run parameters fail here, in
seconds, before data preparation.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["plan_hpo_component"]


def plan_hpo_component(
    n_workers: int, budget: int, model_name: str, run_id: str
) -> NamedTuple("Outputs", [("Output", list), ("study_name", str)]):  # type: ignore[valid-type]  # fmt: skip
    """KFP step. ``Output``: the ParallelFor items (named so because kfp.local looks a loop's
    items up under the producer's output called "Output"); ``study_name``: for create-study."""
    from collections import namedtuple

    from ctrflow.components.names import MAX_WORKERS

    if not 1 <= n_workers <= MAX_WORKERS:
        raise ValueError(f"n_workers must be between 1 and {MAX_WORKERS}, got {n_workers}")
    if budget < 1:
        raise ValueError(f"trial_budget must be >= 1, got {budget}")
    if n_workers > budget:
        raise ValueError(
            f"n_workers ({n_workers}) exceeds trial_budget ({budget}): workers beyond the budget "
            "would start, find no trial left and only cost pods"
        )
    if not model_name.strip() or any(c.isspace() or c == "/" for c in model_name):
        raise ValueError(f"model_name {model_name!r} must be non-empty, without spaces or '/'")
    if not run_id or "{{" in run_id:
        raise ValueError(f"run_id {run_id!r} was not replaced by the pipeline runner")
    study_name = f"{model_name}-{run_id}"
    items = [{"index": i, "study_name": study_name} for i in range(n_workers)]
    outputs = namedtuple("outputs", ["Output", "study_name"])
    return outputs(items, study_name)
