"""finalize_study's report.html: what the search found against the defaults, and its plots."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from ctrflow.components.html_report import Section, write_html

if TYPE_CHECKING:
    from ctrflow.components.hpo.finalize_study import FinalizeResult

__all__ = ["write_study_report"]

_PLOTS = {
    "optimization_history": "Trial logloss over trials, and the best so far",
    "param_importances": "Hyperparameter importances (fANOVA)",
}


def _optional(value: float | None) -> float | str:
    return "-" if value is None else value


def write_study_report(result: FinalizeResult, path: pathlib.Path) -> pathlib.Path:
    gain = result.default_value - result.best_value if result.default_value is not None else None
    summary = [
        ("", "validation logloss", "validation AUC", "trial / state"),
        ("best trial", result.best_value, _optional(result.best_auc),
         f"#{result.best_trial_number}"),
        ("defaults trial", _optional(result.default_value), _optional(result.default_auc),
         result.default_trial_state),
        ("gain of the search over the defaults", _optional(gain), "", ""),
    ]  # fmt: skip
    params = [("parameter", "best", "default")]
    for name in sorted(set(result.best_params) | set(result.default_params)):
        params.append(
            (name, result.best_params.get(name, "-"), result.default_params.get(name, "-"))
        )
    states = [("state", "trials"), *sorted(result.counts.items())]
    warm = result.warm_start
    warm_note = (
        f"Warm-started from model version {warm.get('model_version')} "
        f"(study {warm.get('source_study_name')}, {warm.get('n_source_trials')} trials)."
        if warm.get("warm")
        else f"Cold start: {warm.get('reason', 'no warm-start source')}."
    )
    sections = [
        Section("Best against defaults", table=summary, notes=[warm_note]),
        Section("Hyperparameters", table=params),
        Section(
            f"Trials ({result.n_trials})",
            table=states,
            notes=[f"Search space {result.search_space_version}."],
        ),
    ]
    for name, heading in _PLOTS.items():
        if name in result.plots:
            sections.append(Section(heading, image=result.plots[name]))
        else:
            sections.append(Section(heading, notes=[f"Not drawn: {result.plot_notes.get(name)}"]))
    title = f"HPO study {result.study_name} ({result.model_type})"
    return write_html(path, title, sections)
