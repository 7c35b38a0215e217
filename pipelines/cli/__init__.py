"""The `ctrflow` command line: one argparse tree, each command group in its own module.

Each group module (`pipeline`, `data`, `hpo`, `registry`, `cluster`, `ffm`) exposes
`register(subparsers)`, which adds its sub-commands and sets `func` on them; `func(args) -> int`
is the exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import ctrflow
from ctrflow.pipelines.cli import cluster, data, ffm, hpo, pipeline, registry

COMMAND_GROUPS = (pipeline, data, hpo, registry, cluster, ffm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrflow",
        description="Weekly CTR/CVR retraining: FFM engine, distributed HPO, MLflow, Kubeflow.",
    )
    parser.add_argument("--version", action="version", version=f"ctrflow {ctrflow.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
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
