"""finalize_study step: summarise the finished study, export it, draw its plots.

Outputs: the best parameters and value, the value of the defaults trial (the first enqueued one:
the search must beat it, or the defaults are what the final model trains with), trial counts by
state, the study exported to a SQLite file (``optuna.copy_study``; logged to MLflow as
``optuna/study.db`` for next week's warm start), optimization history and parameter importance
PNGs, all of it as summary.json, and the numbers with the plots on one self-contained page,
report.html (the KFP UI shows it as an HTML artifact).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import pathlib
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from ctrflow.components.hpo._study_config import StudyConfig
from ctrflow.components.hpo._study_report import write_study_report
from ctrflow.components.hpo.storage import StorageSettings, dispose, make_storage
from ctrflow.components.names import ATTR_DEFAULT_TRIAL, ATTR_FINALIZED

__all__ = ["FinalizeResult", "finalize_study"]

_log = logging.getLogger(__name__)
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class FinalizeResult:
    study_name: str
    model_type: str
    search_space_version: str
    best_params: dict[str, Any]
    best_value: float
    best_trial_number: int
    best_auc: float | None
    default_params: dict[str, Any]
    default_value: float | None  # None when the defaults trial did not complete
    default_auc: float | None
    default_trial_state: str
    best_is_default: bool
    n_trials: int
    counts: dict[str, int]
    warm_start: dict[str, Any]
    study_db: str
    plots: dict[str, str] = field(default_factory=dict)
    plot_notes: dict[str, str] = field(default_factory=dict)  # why a plot was not drawn
    report: str = ""  # report.html

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The defaults trial; if its worker died, its retry (same params and user attrs)."""
    marked = [t for t in trials if t.user_attrs.get(ATTR_DEFAULT_TRIAL)]
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        found = [t for t in marked if t.state == state]
        if found:
            return min(found, key=lambda t: t.number)
    return None


def _plots(study: optuna.Study, out_dir: pathlib.Path) -> tuple[dict[str, str], dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod or CI
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    drawn: dict[str, str] = {}
    notes: dict[str, str] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    jobs: dict[str, tuple[Callable[[optuna.Study], Any], int]] = {
        "optimization_history": (ovm.plot_optimization_history, 1),
        "param_importances": (ovm.plot_param_importances, 2),
    }
    for name, (draw, needed) in jobs.items():
        if len(complete) < needed:
            notes[name] = f"needs {needed} completed trials, study has {len(complete)}"
            continue
        path = out_dir / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                ax = draw(study)
            if name == "optimization_history":
                ax.set_ylabel("validation logloss")  # Optuna's says "Objective Value"
            ax.figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a constant parameter
            notes[name] = str(exc)
            plt.close("all")
            continue
        drawn[name] = str(path)
    return drawn, notes


def _auc(trial: FrozenTrial | None) -> float | None:
    value = None if trial is None else trial.user_attrs.get("auc")
    return float(value) if value is not None else None


def finalize_study(
    *,
    storage_url: str,
    study_name: str,
    out_dir: str | pathlib.Path,
    settings: StorageSettings | None = None,
) -> FinalizeResult:
    """Write study.db, the PNGs, summary.json and report.html under ``out_dir``; return the
    summary."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = make_storage(
        storage_url, settings or StorageSettings(heartbeat_interval=None, grace_period=None)
    )
    try:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            raise ValueError(f"study {study_name!r} does not exist") from None
        config = StudyConfig.from_study(study)
        trials = study.get_trials(deepcopy=False)
        counts = dict(Counter(t.state.name for t in trials))
        if TrialState.RUNNING.name in counts or TrialState.WAITING.name in counts:
            _log.warning("study %s still has running or waiting trials: %s", study_name, counts)
        try:
            best = study.best_trial
        except ValueError:
            raise ValueError(
                f"study {study_name!r} has no completed trial (trials by state: {counts})"
            ) from None
        default = _default_trial(trials)

        db = out / "study.db"
        db.unlink(missing_ok=True)
        optuna.copy_study(
            from_study_name=study_name, from_storage=storage, to_storage=f"sqlite:///{db}"
        )
        plots, notes = _plots(study, out)
        default_value = None
        if default is not None and default.state == TrialState.COMPLETE:
            default_value = default.value
        result = FinalizeResult(
            study_name=study_name,
            model_type=config.model_type,
            search_space_version=config.space_version,
            best_params=dict(best.params),
            best_value=float(best.value),  # type: ignore[arg-type]
            best_trial_number=best.number,
            best_auc=_auc(best),
            default_params=dict(config.space.defaults),
            default_value=default_value,
            default_auc=_auc(default),
            default_trial_state=default.state.name if default is not None else "MISSING",
            best_is_default=bool(best.user_attrs.get(ATTR_DEFAULT_TRIAL)),
            n_trials=len(trials),
            counts=counts,
            warm_start=config.warm_start,
            study_db=str(db),
            plots=plots,
            plot_notes=notes,
            report=str(out / REPORT_FILE),
        )
        # Exported: no later step reads the study from the storage, retention may delete it.
        study.set_user_attr(ATTR_FINALIZED, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    finally:
        dispose(storage)
    write_study_report(result, out / REPORT_FILE)
    (out / "summary.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result
