"""The `ctrflow` command line: one argparse tree, each command group in its own module.

Each `_cli_<group>.py` module exposes `register(subparsers)`, which adds its sub-commands and sets
`func` on them; `func(args) -> int` is the exit code. Groups are listed here so that a missing
optional dependency of one group (say, the Kubernetes client) does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import ctrflow

COMMAND_GROUPS = ("_cli_pipeline", "_cli_data", "_cli_hpo", "_cli_cluster", "_cli_ffm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrflow",
        description="Weekly CTR/CVR retraining: FFM engine, distributed HPO, MLflow, Kubeflow.",
    )
    parser.add_argument("--version", action="version", version=f"ctrflow {ctrflow.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        try:
            module = importlib.import_module(f"ctrflow.pipelines.{group}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ctrflow.pipelines.{group}":
                raise
            continue  # that group is not part of this build
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
