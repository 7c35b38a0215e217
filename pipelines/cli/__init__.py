"""The `ctrflow` command line: one argparse tree, each command group in its own module.

Each group module (`pipeline`, `schedule`, `status`, `data`, `hpo`, `model`, `registry`,
`cluster`, `ffm`) exposes `register(subparsers)`, which adds its sub-commands and sets `func`
on them; `func(args) -> int` is the exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import ctrflow
from ctrflow.pipelines.cli import (
    cluster,
    data,
    ffm,
    hpo,
    model,
    pipeline,
    registry,
    schedule,
    status,
)
from ctrflow.pipelines.cli._parsing import (
    LOG_LEVEL,
    HelpFormatter,
    Parser,
    UsageError,
    command_name,
    finish,
    report,
)

COMMAND_GROUPS = (pipeline, schedule, status, data, hpo, model, registry, cluster, ffm)


def build_parser() -> argparse.ArgumentParser:
    # Parser: sub-parsers inherit its class, so every usage error is one line and exit code 2.
    parser = Parser(
        prog="ctrflow",
        formatter_class=HelpFormatter,
        description="Weekly CTR/CVR retraining: FFM engine, distributed HPO, MLflow, Kubeflow.",
    )
    parser.add_argument("--version", action="version", version=f"ctrflow {ctrflow.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    finish(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return int(exc.code or 0)
    if extra:  # named after the sub-command, not "ctrflow" as argparse would
        return report(command_name(args), f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else getattr(args, LOG_LEVEL, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except UsageError as exc:
        return report(command_name(args), exc)
    except KeyboardInterrupt:
        return 130
