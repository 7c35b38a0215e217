"""`ctrflow hpo create|worker|finalize|retire`: the HPO steps as commands, e.g. for a Kubernetes
Job, and retire-studies for an operator (with --dry-run to see what it would delete).

The storage URL comes from --storage or $CTRFLOW_STORAGE_URL (keep it in a Secret: a flag shows
up in `ps` and in the Job spec). Errors print one line naming what is wrong and exit 1 (bad
input) or 3 (database unreachable: at start after the connection attempts, or for a worker, lost
for longer than --storage-outage-limit while it ran).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pathlib
import sys
from typing import Any

from ctrflow.components.names import (
    MODEL_TYPES,
    OPTUNA_FAST_PATH_ENV,
    STORAGE_OUTAGE_LIMIT_ENV,
    STUDY_ABANDONED_AFTER_S,
)
from ctrflow.pipelines.cli._parsing import logs_progress
from ctrflow.pipelines.k8s.launch_arguments import register_launch

_log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 1
EXIT_UNREACHABLE = 3


def _settings(args: argparse.Namespace) -> Any:
    from ctrflow.components.hpo.storage import StorageSettings

    return StorageSettings(
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        connect_attempts=args.connect_attempts,
        backoff_initial=args.backoff,
        outage_limit=getattr(args, "storage_outage_limit", None),
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: $CTRFLOW_STORAGE_URL); postgresql+psycopg://... "
        "or sqlite:///path",
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--connect-attempts", type=int, default=6, metavar="N")
    parser.add_argument(
        "--backoff", type=float, default=0.5, metavar="S", help="first retry delay, doubling"
    )
    parser.add_argument("--heartbeat-interval", type=int, default=10, metavar="S")
    parser.add_argument(
        "--grace-period",
        type=int,
        default=None,
        metavar="S",
        help="a running trial without a heartbeat for this long is taken for a dead worker's "
        "and retried (default: longer than the storage outage limit plus a heartbeat interval "
        "and a backoff step, and the 20 s it may take to notice a vanished server: 101 s with the "
        "defaults; a worker riding out an outage keeps its trial)",
    )


def _emit(data: dict[str, Any], out: str | None) -> None:
    text = json.dumps(data, indent=2, default=str)
    if out:
        pathlib.Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)


def _run(args: argparse.Namespace, step: Any) -> int:
    from ctrflow.components.hpo.storage import StorageOutageError, StorageUnavailableError

    try:
        return int(step(args))
    except (StorageUnavailableError, StorageOutageError) as exc:
        print(f"ctrflow hpo {args.hpo_command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (ValueError, FileNotFoundError) as exc:
        print(f"ctrflow hpo {args.hpo_command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _storage(args: argparse.Namespace) -> str:
    from ctrflow.components.hpo.storage import storage_url_from_env

    return storage_url_from_env(args.storage)


def _create(args: argparse.Namespace) -> int:
    from ctrflow.components.hpo.create_study import create_study

    info = create_study(
        storage_url=_storage(args),
        study_name=args.study,
        model_type=args.model_type,
        mlflow_tracking_uri=args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
        model_name=args.model_name,
        space_tag=args.space_tag,
        seed=args.seed,
        budget=args.budget,
        warm_start_db=args.warm_start_db,
        sampler=args.sampler,
        settings=_settings(args),
    )
    _emit(info.to_dict(), args.out)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import optuna

    from ctrflow.components.hpo.hpo_worker import run_worker

    # The worker logs one line per trial itself (or draws a bar); Optuna's own INFO line for the
    # same trial would double it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    progress = None if args.progress == "auto" else args.progress == "on"
    fast_path = None if args.optuna_fast_path is None else args.optuna_fast_path == "on"
    result = run_worker(
        storage_url=_storage(args),
        study_name=args.study,
        budget=args.budget,
        train_dir=args.train,
        valid_dir=args.valid,
        n_threads=args.threads,
        seed=args.seed,
        settings=_settings(args),
        progress=progress,
        fast_path=fast_path,
    )
    _emit(result.to_dict(), args.out)
    return 0


def _finalize(args: argparse.Namespace) -> int:
    from ctrflow.components.hpo.finalize_study import finalize_study

    result = finalize_study(
        storage_url=_storage(args),
        study_name=args.study,
        out_dir=args.out_dir,
        settings=_settings(args),
    )
    _emit(result.to_dict(), None)
    return 0


def _retire(args: argparse.Namespace) -> int:
    from ctrflow.components.hpo.retention import retire_studies

    if args.abandoned_after < 0:
        raise ValueError(f"--abandoned-after must be >= 0 hours, got {args.abandoned_after}")
    # MLflow prints a "View run" link to stdout for each export run it ends: stdout is the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        result = retire_studies(
            storage_url=_storage(args),
            model_name=args.model_name,
            keep=args.keep,
            current_study=args.study or "",
            tracking_uri=args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
            abandoned_after=args.abandoned_after * 3600.0,
            dry_run=args.dry_run,
        )
    _emit(result.to_dict(), args.out)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hpo = subparsers.add_parser(
        "hpo", help="distributed hyperparameter search (create | worker | finalize | retire)"
    )
    hpo_sub = hpo.add_subparsers(dest="hpo_command", metavar="HPO_COMMAND", required=True)

    create = hpo_sub.add_parser("create", help="create the shared study once, before workers")
    _add_common(create)
    create.add_argument("--model-type", required=True, choices=MODEL_TYPES)
    create.add_argument(
        "--model-name", default=None, help="MLflow registered model to warm start from"
    )
    create.add_argument("--mlflow-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    create.add_argument("--space-tag", default=None, help="manual tag added to the space version")
    create.add_argument(
        "--warm-start-db",
        default=None,
        metavar="STUDY_DB",
        help="warm start from this exported study.db instead of the MLflow champion",
    )
    create.add_argument(
        "--sampler",
        choices=("auto", "tpe", "cmaes"),
        default="auto",
        help="auto: Warm Starting CMA-ES when a source is found, else TPE",
    )
    create.add_argument("--budget", type=int, default=None, help="global trial budget to record")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--out", default=None, help="also write the study info JSON here")
    create.set_defaults(func=lambda a: _run(a, _create))
    logs_progress(create)

    worker = hpo_sub.add_parser("worker", help="run trials until the global budget is reached")
    _add_common(worker)
    worker.add_argument("--budget", type=int, default=None, help="default: the study's budget")
    worker.add_argument("--train", required=True, help="training Dataset directory")
    worker.add_argument("--valid", required=True, help="validation Dataset directory")
    worker.add_argument("--threads", type=int, default=1)
    worker.add_argument("--seed", type=int, default=None, help="sampler seed of this worker")
    worker.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    worker.add_argument(
        "--optuna-fast-path",
        choices=("on", "off"),
        default=None,
        help=f"off: Optuna's stock storage (default: ${OPTUNA_FAST_PATH_ENV}, else on when the "
        "installed Optuna matches what the fast path was written for)",
    )
    worker.add_argument(
        "--storage-outage-limit",
        type=float,
        default=None,
        metavar="S",
        help="ride out a storage outage this long, reconnecting with backoff, then exit 3 "
        f"(default: ${STORAGE_OUTAGE_LIMIT_ENV}, else 60)",
    )
    worker.add_argument("--out", default=None, help="also write the worker result JSON here")
    worker.set_defaults(func=lambda a: _run(a, _worker))
    logs_progress(worker)

    finalize = hpo_sub.add_parser("finalize", help="best params, study.db export, plots")
    _add_common(finalize)
    finalize.add_argument("--out-dir", required=True)
    finalize.set_defaults(func=lambda a: _run(a, _finalize))
    logs_progress(finalize)

    retire = hpo_sub.add_parser(
        "retire",
        help="keep a model's newest studies, export the older ones to MLflow and delete them "
        "(the pipeline's retire-studies step)",
    )
    retire.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: $CTRFLOW_STORAGE_URL)",
    )
    retire.add_argument("--model-name", required=True, help="the model whose studies to retire")
    retire.add_argument(
        "--keep", type=int, required=True, metavar="N", help="newest studies to keep (0: all)"
    )
    retire.add_argument("--mlflow-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    retire.add_argument(
        "--study", default=None, help="a study to keep whatever its age (a run's own)"
    )
    retire.add_argument(
        "--abandoned-after",
        type=float,
        default=STUDY_ABANDONED_AFTER_S / 3600.0,
        metavar="HOURS",
        help="an unfinalized study idle this long may go (default: %(default)g)",
    )
    retire.add_argument(
        "--dry-run", action="store_true", help="write nothing; list what would be deleted"
    )
    retire.add_argument("--out", default=None, help="also write the result JSON here")
    retire.set_defaults(func=lambda a: _run(a, _retire))
    logs_progress(retire)

    register_launch(hpo_sub)
