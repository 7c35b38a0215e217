"""`ctrflow registry history`: which model version served as champion when, and why it moved.

Read from the version tags the promotion gate writes (MLflow itself keeps no alias history).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

EXIT_NOT_FOUND = 1
EXIT_BAD_NAME = 2


def _default_tracking_uri(workdir: str) -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store `ctrflow run` writes under its work dir."""
    from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV

    return os.environ.get(MLFLOW_TRACKING_URI_ENV) or (
        f"sqlite:///{(pathlib.Path(workdir) / 'mlflow.db').resolve()}"
    )


def _history(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ctrflow.components.registry.model_names import check_model_name
    from ctrflow.components.registry.promotion import promotion_history

    try:
        check_model_name(args.model_name)
    except ValueError as exc:
        print(f"ctrflow registry history: {exc}", file=sys.stderr)
        return EXIT_BAD_NAME
    uri = args.mlflow_uri or _default_tracking_uri(args.workdir)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(args.model_name)
        history = promotion_history(client, args.model_name)
    except MlflowException as exc:
        print(f"ctrflow registry history: {args.model_name!r}: {exc.message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(history, indent=2))
        return 0
    if not history:
        print(f"{args.model_name}: no version has been champion yet")
        return 0
    for entry in history:
        print(_line(entry))
    return 0


def _line(entry: dict[str, Any]) -> str:
    until = entry["until"] or "now"
    logloss = entry["test_logloss"]
    scored = f", test logloss {float(logloss):.6f}" if logloss not in (None, "None") else ""
    served = f"version {entry['version']}: champion {entry['since']} .. {until}{scored}"
    return f"{served}\n  {entry['reason']}"


def register(subparsers: Any) -> None:
    registry = subparsers.add_parser("registry", help="the MLflow model registry: champion history")
    registry_sub = registry.add_subparsers(
        dest="registry_command", metavar="COMMAND", required=True
    )
    history = registry_sub.add_parser(
        "history", help="every version that served as champion, oldest first, with the reason"
    )
    history.add_argument(
        "--model-name", default="ctr-ffm", help="registered model (default: %(default)s)"
    )
    history.add_argument(
        "--mlflow-uri",
        default=None,
        help="tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store of --workdir)",
    )
    history.add_argument(
        "--workdir",
        default="ctrflow-work",
        help="`ctrflow run`'s work directory (default: ./%(default)s)",
    )
    history.add_argument("--json", action="store_true", help="print the history as JSON")
    history.set_defaults(func=_history)
