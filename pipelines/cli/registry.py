"""`ctrflow registry history --model-name NAME`: the older spelling of `ctrflow model history NAME`
(pipelines/cli/model.py), kept so scripts written against it go on working."""

from __future__ import annotations

import argparse
from typing import Any

from ctrflow.pipelines.cli.model import _registry_errors, add_store_options, print_history


def _history(args: argparse.Namespace) -> int:
    return _registry_errors("registry history", lambda: print_history(args, args.model_name))


def register(subparsers: Any) -> None:
    registry = subparsers.add_parser(
        "registry", help="the MLflow model registry: champion history (see also `model`)"
    )
    registry_sub = registry.add_subparsers(
        dest="registry_command", metavar="COMMAND", required=True
    )
    history = registry_sub.add_parser("history", help="the same as `ctrflow model history NAME`")
    history.add_argument("--model-name", metavar="NAME", default="ctr-ffm", help="registered model")
    add_store_options(history)
    history.add_argument("--json", action="store_true", help="print the history as JSON")
    history.set_defaults(func=_history)
