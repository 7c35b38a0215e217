"""Test data for the train/evaluate/register/serving tests: a few thousand synthetic raw Criteo
rows (``synth_data``), split in time order, a feature spec fitted on the training part, the three
prepared Datasets, and the raw test rows (label + feature columns) as a served model gets them;
or the same made by prepare_data itself from a generated log (``prepared_week``).
Also a small finished Optuna study (create_study -> hpo_worker -> finalize_study on SQLite), the
input the register step takes from finalize_study.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import pandas as pd

from ctrflow.components.data.feature_spec import FeatureSpec, FittedFeatureSpec
from ctrflow.components.data.prepare_data import prepare_data
from ctrflow.components.data.synth_data import _plain_schema, synth_table, write_synth
from ctrflow.components.hpo.create_study import create_study
from ctrflow.components.hpo.finalize_study import FinalizeResult, finalize_study
from ctrflow.components.hpo.hpo_worker import run_worker
from ctrflow.components.hpo.search_space import get_space
from ctrflow.components.hpo.storage import StorageSettings


def raw_frame(rows: int, seed: int) -> pd.DataFrame:
    """Raw rows as pandas reads a Criteo CSV: str categoricals, float/int numerics, NaN missing."""
    table = synth_table(rows=rows, days=3, seed=seed)
    frame: pd.DataFrame = table.cast(_plain_schema(table.schema)).to_pandas()
    return frame


@dataclass(frozen=True)
class Week:
    base: pathlib.Path
    train: pathlib.Path
    valid: pathlib.Path
    test: pathlib.Path
    spec_path: pathlib.Path
    spec: FittedFeatureSpec
    test_raw: pd.DataFrame  # label + the spec's feature columns
    test_raw_path: pathlib.Path | None = None  # prepare_data's file of them, if it made them


def make_week(base: pathlib.Path, *, rows: int = 5000, seed: int = 0) -> Week:
    frame = raw_frame(rows, seed)
    n_train, n_valid = int(rows * 0.7), int(rows * 0.15)
    parts = {
        "train": frame.iloc[:n_train],
        "valid": frame.iloc[n_train : n_train + n_valid],
        "test": frame.iloc[n_train + n_valid :],
    }
    spec = FeatureSpec.criteo(rare_threshold=3).fit([parts["train"]])
    base.mkdir(parents=True, exist_ok=True)
    spec_path = base / "feature_spec.json"
    spec.save(str(spec_path))
    for name, part in parts.items():
        spec.transform(part).save(str(base / name))
    test_raw = parts["test"][[spec.spec.label, *spec.raw_columns]].reset_index(drop=True)
    return Week(base, base / "train", base / "valid", base / "test", spec_path, spec, test_raw)


def prepared_week(
    base: pathlib.Path, *, rows: int, days: int, seed: int, rare_threshold: int = 3
) -> Week:
    """A generated Parquet log through prepare_data (time split: the last day is test)."""
    base.mkdir(parents=True, exist_ok=True)
    write_synth(str(base / "log.parquet"), rows=rows, days=days, seed=seed)
    result = prepare_data(
        input_uri=str(base / "log.parquet"), output_dir=str(base / "prepared"),
        rare_threshold=rare_threshold, threads=1,
    )  # fmt: skip
    out = base / "prepared"
    spec = FittedFeatureSpec.load(str(out / "feature_spec.json"))
    raw_path = pathlib.Path(result.test_raw_path)
    return Week(
        base, out / "train", out / "valid", out / "test", out / "feature_spec.json", spec,
        pd.read_parquet(raw_path), raw_path,
    )  # fmt: skip


def _quick_objective(model_type: str) -> Callable[[optuna.Trial], float]:
    """Suggests from the real search space but costs nothing: a smooth bowl around the defaults
    (the register tests need a finished study, not trained trial models)."""
    space = get_space(model_type)

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        value = 0.5 + sum(
            (
                math.log(float(params[p.name]) + 1e-9)
                - math.log(float(space.defaults[p.name]) + 1e-9)
            )
            ** 2
            / 100
            for p in space.params
        )
        trial.set_user_attr("auc", 0.8 - value / 10)
        return value

    return objective


def run_study(week: Week, *, model_type: str, name: str, budget: int = 12) -> FinalizeResult:
    """A finished study on SQLite under ``week.base`` (real create_study/hpo_worker/finalize_study,
    a cheap objective), finalized into ``<base>/<name>-final``."""
    url = f"sqlite:///{week.base / f'{name}.db'}"
    create_study(storage_url=url, study_name=name, model_type=model_type, budget=budget)
    run_worker(
        storage_url=url,
        study_name=name,
        objective=_quick_objective(model_type),
        settings=StorageSettings(heartbeat_interval=None, grace_period=None),
        seed=0,
        progress=False,
    )
    return finalize_study(storage_url=url, study_name=name, out_dir=week.base / f"{name}-final")
