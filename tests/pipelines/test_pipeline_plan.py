"""plan-hpo, the pipeline's first step: the ParallelFor items and the study name."""

from __future__ import annotations

import pytest

from ctrflow.components.names import MAX_WORKERS
from ctrflow.pipelines._pipeline_steps import plan_hpo_component


def test_items_and_study_name() -> None:
    items, study_name = plan_hpo_component(3, 20, "ctr-ffm", "4f1c2d9e")
    assert study_name == "ctr-ffm-4f1c2d9e"
    assert items == [{"index": i, "study_name": "ctr-ffm-4f1c2d9e"} for i in range(3)]
    assert len(plan_hpo_component(MAX_WORKERS, 100, "m", "r")[0]) == MAX_WORKERS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 10, "m", "r"), "n_workers must be between 1 and 50, got 0"),
        ((51, 100, "m", "r"), "n_workers must be between 1 and 50, got 51"),
        ((2, 0, "m", "r"), "trial_budget must be >= 1, got 0"),
        ((5, 4, "m", "r"), "n_workers (5) exceeds trial_budget (4)"),
        ((2, 4, "", "r"), "model_name '' must be non-empty"),
        ((2, 4, "ctr ffm", "r"), "without spaces or '/'"),
        ((2, 4, "m", "{{$.pipeline_job_uuid}}"), "was not replaced by the pipeline runner"),
    ],
)
def test_rejects_bad_run_parameters(args: tuple[int, int, str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        plan_hpo_component(*args)
    assert message in str(info.value)
